//! One replayed conveyor request, streamed: when its tool call started and finished arriving,
//! when the results arrived, and when the request completed (seconds from sending).

use std::time::Instant;

use anyhow::bail;
use serde::Serialize;
use serde_json::{json, Value};

use crate::bench::client::{for_each_event, Client};
use crate::bench::conveyor::workloads::Workload;

#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Marks {
    /// First `tool_calls` delta.
    pub call_start: f64,
    /// Last `tool_calls` delta before the results: the call's arguments are complete.
    pub args_end: f64,
    /// The `tool_results` delta.
    pub results: f64,
    /// `[DONE]`.
    pub total: f64,
    /// Longest server-reported `wait_s` of the results: how long after the call's arguments
    /// were complete its tool returned.
    pub tool_wait: f64,
    pub tool_error: bool,
    /// Characters of call arguments streamed before the results: fewer with partial execution
    /// than lazily only when a tool aborted its call before it was fully decoded.
    pub args_chars: usize,
}

pub async fn run_one(client: &Client, w: &Workload, partial: bool) -> anyhow::Result<Marks> {
    let body = json!({
        "model": client.model,
        "messages": [{"role": "user", "content": "Use the tool, then answer briefly."}],
        "stream": true, "max_tokens": 2048,
        "server_tools": [w.tool], "replay": w.replay, "partial_exec": partial,
    });
    let t0 = Instant::now();
    let resp = client.send(&body).await?;
    if !resp.status().is_success() {
        let status = resp.status();
        bail!("HTTP {status}: {}", resp.text().await.unwrap_or_default());
    }
    let (mut marks, mut seen_call, mut seen_results) = (Marks::default(), false, false);
    for_each_event(resp, |v| {
        let now = t0.elapsed().as_secs_f64();
        on_event(v, now, &mut marks, &mut seen_call, &mut seen_results);
        Ok(())
    })
    .await?;
    marks.total = t0.elapsed().as_secs_f64();
    if !(seen_call && seen_results) {
        bail!("{}: the stream had no tool call or no tool result", w.name);
    }
    Ok(marks)
}

fn on_event(v: &Value, now: f64, m: &mut Marks, seen_call: &mut bool, seen_results: &mut bool) {
    let delta = &v["choices"][0]["delta"];
    if delta.get("tool_calls").is_some() && !*seen_results {
        if !*seen_call {
            m.call_start = now;
        }
        *seen_call = true;
        m.args_end = now;
        m.args_chars += argument_chars(&delta["tool_calls"]);
    }
    if let Some(results) = delta["tool_results"].as_array() {
        *seen_results = true;
        m.results = now;
        m.tool_error = results.iter().any(|r| r["is_error"] == true);
        let waits = results.iter().filter_map(|r| r["wait_s"].as_f64());
        m.tool_wait = waits.fold(0.0, f64::max);
    }
}

fn argument_chars(calls: &Value) -> usize {
    let calls = calls.as_array().map(Vec::as_slice).unwrap_or_default();
    let args = calls
        .iter()
        .filter_map(|c| c["function"]["arguments"].as_str());
    args.map(|a| a.chars().count()).sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marks_follow_the_stream() {
        let (mut m, mut call, mut res) = (Marks::default(), false, false);
        let calls = json!({"choices": [{"delta": {"tool_calls": [
            {"index": 0, "function": {"arguments": "{\"a\""}}]}}]});
        let results = json!({"choices": [{"delta": {"tool_results": [
            {"is_error": true, "wait_s": 0.25}, {"is_error": false, "wait_s": 0.5}]}}]});
        let text = json!({"choices": [{"delta": {"content": "Done"}}]});
        on_event(&text, 0.1, &mut m, &mut call, &mut res);
        on_event(&calls, 0.2, &mut m, &mut call, &mut res);
        on_event(&calls, 0.5, &mut m, &mut call, &mut res);
        on_event(&results, 0.9, &mut m, &mut call, &mut res);
        on_event(&calls, 1.2, &mut m, &mut call, &mut res);
        assert_eq!((m.call_start, m.args_end, m.results), (0.2, 0.5, 0.9));
        assert!(m.tool_error && call && res);
        assert_eq!(m.tool_wait, 0.5, "the longest of parallel calls");
        assert_eq!(m.args_chars, 8, "two deltas before the results, none after");
    }
}
