//! One bench request against an OpenAI-compatible server: streamed chat completions, with the
//! tool loop played on the client side (end the turn after a segment, wait the tool's
//! duration, send the conversation back with a tool message of the given size).

use std::time::{Duration, Instant};

use anyhow::{anyhow, bail};
use futures::StreamExt;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::workload::{filler, initial_messages, WorkItem};

#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    pub id: String,
    pub ok: bool,
    pub error: Option<String>,
    pub ttft_s: Option<f64>,
    /// Gaps between streamed chunks within a segment.
    pub itl_s: Vec<f64>,
    pub latency_s: f64,
    pub tool_time_s: f64,
    pub output_tokens: usize,
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
}

impl Outcome {
    fn add_usage(&mut self, usage: &Value) {
        let n = |v: &Value| v.as_u64().unwrap_or(0) as usize;
        self.output_tokens += n(&usage["completion_tokens"]);
        self.prompt_tokens += n(&usage["prompt_tokens"]);
        self.cached_tokens += n(&usage["prompt_tokens_details"]["cached_tokens"]);
    }
}

pub struct Client {
    pub http: reqwest::Client,
    /// Keeps no idle connection: a retry through it always opens a new one (see `send`).
    pub fresh: reqwest::Client,
    pub url: String,
    pub model: String,
    /// Send the tool segments along and let the server pause for them (`--allow-scripted`).
    pub server_side_tools: bool,
}

/// What one streamed turn produced.
struct Turn {
    text: String,
    first_chunk: Option<Instant>,
    gaps: Vec<f64>,
    usage: Value,
}

impl Client {
    pub async fn run(&self, item: &WorkItem, seed: u64) -> Outcome {
        let start = Instant::now();
        let mut out = Outcome {
            id: item.id.clone().unwrap_or_default(),
            ..Default::default()
        };
        if let Err(e) = self.play(item, seed, start, &mut out).await {
            out.error = Some(format!("{e:#}"));
        } else {
            out.ok = true;
        }
        out.latency_s = start.elapsed().as_secs_f64();
        out.tool_time_s = item.tool_time();
        out
    }

    async fn play(
        &self,
        item: &WorkItem,
        seed: u64,
        start: Instant,
        out: &mut Outcome,
    ) -> anyhow::Result<()> {
        if self.server_side_tools {
            return self.play_server_side(item, seed, start, out).await;
        }
        let mut messages = initial_messages(item, seed);
        for (i, seg) in item.segments.iter().enumerate() {
            let turn = self.turn(&messages, seg.decode_tokens).await?;
            if out.ttft_s.is_none() {
                out.ttft_s = turn.first_chunk.map(|t| (t - start).as_secs_f64());
            }
            out.itl_s.extend(turn.gaps);
            out.add_usage(&turn.usage);
            let Some(tool) = &seg.tool else { continue };
            messages.push(json!({"role": "assistant", "content": turn.text}));
            tokio::time::sleep(Duration::from_secs_f64(tool.duration_s)).await;
            let result = filler(tool.result_tokens, seed.wrapping_add(i as u64 + 1));
            messages.push(json!({"role": "tool", "content": result}));
        }
        Ok(())
    }

    /// One request carrying all segments: the server pauses it for each tool. The chunk gaps
    /// that span a tool call (the largest ones, one per call) are not inter-token latency.
    async fn play_server_side(
        &self,
        item: &WorkItem,
        seed: u64,
        start: Instant,
        out: &mut Outcome,
    ) -> anyhow::Result<()> {
        let messages = initial_messages(item, seed);
        let total = crate::script::total_decode(&item.segments);
        let extra = json!({"segments": item.segments});
        let mut turn = self.turn_with(&messages, total, extra).await?;
        out.ttft_s = turn.first_chunk.map(|t| (t - start).as_secs_f64());
        turn.gaps.sort_by(f64::total_cmp);
        let tools = item.segments.iter().filter(|s| s.tool.is_some()).count();
        turn.gaps.truncate(turn.gaps.len().saturating_sub(tools));
        out.itl_s = turn.gaps;
        out.add_usage(&turn.usage);
        Ok(())
    }

    async fn turn(&self, messages: &[Value], max_tokens: usize) -> anyhow::Result<Turn> {
        self.turn_with(messages, max_tokens, json!({})).await
    }

    async fn turn_with(
        &self,
        messages: &[Value],
        max_tokens: usize,
        extra: Value,
    ) -> anyhow::Result<Turn> {
        let mut body = json!({
            "model": self.model, "messages": messages, "max_tokens": max_tokens,
            "ignore_eos": true, "temperature": 0.0, "stream": true,
            "stream_options": {"include_usage": true},
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let resp = self.send(&body).await?;
        if !resp.status().is_success() {
            let status = resp.status();
            bail!("HTTP {status}: {}", resp.text().await.unwrap_or_default());
        }
        read_stream(resp).await
    }
}

impl Client {
    /// Posts a chat request. A pooled keep-alive connection that the server closes just as it is
    /// reused fails before the request reaches the server (hyper: "connection closed before
    /// message completed"). That case, and only that one, is retried once, over a new
    /// connection: another pooled one may be just as stale. A server that is down fails the
    /// retry too, so nothing is hidden.
    pub async fn send(&self, body: &Value) -> reqwest::Result<reqwest::Response> {
        let url = format!("{}/v1/chat/completions", self.url);
        match self.http.post(&url).json(body).send().await {
            Err(e) if e.is_request() && !e.is_timeout() => {
                self.fresh.post(&url).json(body).send().await
            }
            r => r,
        }
    }
}

/// The bench's HTTP clients: a pool for the requests and one that keeps no idle connection for
/// their retries. Idle pooled connections are dropped after `IDLE_S`, before the 5 s after
/// which the servers a bench meets close them (llama-server's cpp-httplib and uvicorn, under
/// vLLM and SGLang): reusing one near that limit races the server's close.
pub fn http_clients() -> reqwest::Result<(reqwest::Client, reqwest::Client)> {
    const IDLE_S: u64 = 2;
    let pooled = reqwest::Client::builder()
        .pool_max_idle_per_host(1024)
        .pool_idle_timeout(Duration::from_secs(IDLE_S))
        .build()?;
    let fresh = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()?;
    Ok((pooled, fresh))
}

async fn read_stream(resp: reqwest::Response) -> anyhow::Result<Turn> {
    let mut turn = Turn {
        text: String::new(),
        first_chunk: None,
        gaps: vec![],
        usage: Value::Null,
    };
    let mut last: Option<Instant> = None;
    for_each_event(resp, |v| on_data(v, &mut turn, &mut last)).await?;
    Ok(turn)
}

/// Calls `f` with each JSON event of a server-sent event stream until `[DONE]`; an event
/// carrying `error` ends the stream with that error.
pub async fn for_each_event(
    resp: reqwest::Response,
    mut f: impl FnMut(&Value) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut buf = String::new();
    let mut stream = resp.bytes_stream();
    while let Some(chunk) = stream.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk?));
        while let Some(end) = buf.find("\n\n") {
            let event: String = buf.drain(..end + 2).collect();
            for data in event.lines().filter_map(|l| l.strip_prefix("data:")) {
                let data = data.trim();
                if data == "[DONE]" {
                    return Ok(());
                }
                let v: Value = serde_json::from_str(data)?;
                if let Some(e) = v.get("error") {
                    bail!("server error: {e}");
                }
                f(&v)?;
            }
        }
    }
    Err(anyhow!("stream ended without [DONE]"))
}

fn on_data(v: &Value, turn: &mut Turn, last: &mut Option<Instant>) -> anyhow::Result<()> {
    if v["usage"].is_object() {
        turn.usage = v["usage"].clone();
    }
    let Some(content) = v["choices"][0]["delta"]["content"].as_str() else {
        return Ok(());
    };
    if content.is_empty() {
        return Ok(());
    }
    let now = Instant::now();
    match *last {
        None => turn.first_chunk = Some(now),
        Some(t) => turn.gaps.push((now - t).as_secs_f64()),
    }
    *last = Some(now);
    turn.text.push_str(content);
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio::sync::Barrier;

    use super::*;

    /// Reads one HTTP/1.1 request (headers, then a body of its content-length); false at EOF.
    async fn read_request(s: &mut TcpStream) -> bool {
        let mut buf = Vec::new();
        let mut byte = [0u8; 1];
        while !buf.ends_with(b"\r\n\r\n") {
            if s.read(&mut byte).await.unwrap_or(0) == 0 {
                return false;
            }
            buf.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&buf).to_ascii_lowercase();
        let len = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length:"))
            .map_or(0, |v| v.trim().parse().unwrap());
        let mut body = vec![0u8; len];
        s.read_exact(&mut body).await.is_ok()
    }

    /// A server that answers the first request of each connection (keeping it alive) and closes
    /// a connection on its second request without answering, as a server whose keep-alive
    /// timeout has just run out does. The first two connections answer only once both have a
    /// request, so the client holds two idle connections afterwards.
    async fn stale_keep_alive_server() -> (String, Arc<AtomicUsize>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let conns = Arc::new(AtomicUsize::new(0));
        let (count, both) = (conns.clone(), Arc::new(Barrier::new(2)));
        tokio::spawn(async move {
            while let Ok((mut s, _)) = listener.accept().await {
                let (i, both) = (count.fetch_add(1, Ordering::SeqCst), both.clone());
                tokio::spawn(async move {
                    if !read_request(&mut s).await {
                        return;
                    }
                    if i < 2 {
                        both.wait().await;
                    }
                    let ok = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\nok";
                    s.write_all(ok).await.unwrap();
                    read_request(&mut s).await; // then dropped: closed, unanswered
                });
            }
        });
        (url, conns)
    }

    #[tokio::test]
    async fn a_request_on_a_stale_pooled_connection_is_sent_again_on_a_new_one() {
        let (url, conns) = stale_keep_alive_server().await;
        let (http, fresh) = http_clients().unwrap();
        let c = Client {
            http,
            fresh,
            url,
            model: "m".into(),
            server_side_tools: false,
        };
        let body = json!({});
        let (a, b) = tokio::join!(c.send(&body), c.send(&body));
        for r in [a, b] {
            assert_eq!(r.unwrap().text().await.unwrap(), "ok");
        }
        // Both pooled connections are now stale: the first try takes one, and a retry through
        // the pool would take the other.
        let r = c
            .send(&body)
            .await
            .expect("the retry opens a new connection");
        assert_eq!(r.text().await.unwrap(), "ok");
        assert_eq!(conns.load(Ordering::SeqCst), 3);
    }
}
