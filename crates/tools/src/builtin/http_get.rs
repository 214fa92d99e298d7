//! The `http_get` tool: fetches a URL whose prefix is on the allow-list given at startup,
//! as soon as the `url` argument is complete. A URL off the list fails at once. The body is
//! returned as text, cut at the output limit (the rest is not read). While it arrives, the
//! text so far of a successful response is published as the start of the result
//! (docs/server-tools.md, "Partial results").

use std::time::Duration;

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::OutputSoFar;
use crate::arg_events::ArgEvent;
use crate::defs::ToolDef;
use crate::runtime::{ResultPrefix, Tool, ToolFuture, ToolOutput};

pub struct HttpGet {
    /// URL prefixes that may be fetched (e.g. `http://127.0.0.1:9000/`).
    pub allow: Vec<String>,
    pub timeout: Duration,
    pub max_bytes: usize,
    client: reqwest::Client,
}

impl HttpGet {
    pub fn new(allow: Vec<String>, timeout: Duration) -> Self {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .unwrap_or_default();
        Self {
            allow,
            timeout,
            max_bytes: 16 << 10,
            client,
        }
    }
}

async fn fetch(
    client: reqwest::Client,
    url: String,
    max: usize,
    prefix: ResultPrefix,
) -> ToolOutput {
    let mut resp = match client.get(&url).send().await {
        Ok(r) => r,
        Err(e) => return ToolOutput::error(format!("GET {url}: {e}")),
    };
    let status = resp.status();
    // Only a success's result is its body; an error's begins with the status.
    let publish = if status.is_success() {
        prefix
    } else {
        ResultPrefix::none()
    };
    let (body, cut) = match read_body(&mut resp, max, publish).await {
        Ok(b) => b,
        Err(e) => return ToolOutput::error(format!("GET {url}: {e}")),
    };
    let mut text = String::from_utf8_lossy(&body).into_owned();
    if cut {
        text.push_str(&format!("\n[truncated at {max} bytes]"));
    }
    if status.is_success() {
        ToolOutput::ok(text)
    } else {
        ToolOutput::error(format!("HTTP {status}: {text}"))
    }
}

/// Reads the body up to `max` bytes, publishing its text so far after each chunk; true when
/// there was more (which is left unread, so a huge body costs no memory).
async fn read_body(
    resp: &mut reqwest::Response,
    max: usize,
    prefix: ResultPrefix,
) -> reqwest::Result<(Vec<u8>, bool)> {
    let (mut body, mut so_far) = (Vec::new(), OutputSoFar::new(prefix));
    while let Some(chunk) = resp.chunk().await? {
        if body.len() + chunk.len() > max {
            body.extend_from_slice(&chunk[..max - body.len()]);
            return Ok((body, true));
        }
        body.extend_from_slice(&chunk);
        so_far.update(&body);
    }
    Ok((body, false))
}

impl Tool for HttpGet {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "http_get".into(),
            description: Some(format!(
                "Fetches a web page (allowed: {}).",
                self.allow.join(", ")
            )),
            parameters: json!({"type": "object", "properties": {"url": {"type": "string"}}, "required": ["url"]}),
        }
    }

    /// Publishes the body's text as it arrives (see the module doc).
    fn run(&self, mut args: UnboundedReceiver<ArgEvent>, prefix: ResultPrefix) -> ToolFuture {
        let (allow, client, max) = (self.allow.clone(), self.client.clone(), self.max_bytes);
        Box::pin(async move {
            // The fetch runs in a JoinSet, so a cancelled call stops it.
            let (mut fetching, mut complete) = (tokio::task::JoinSet::new(), false);
            while let Some(ev) = args.recv().await {
                if matches!(ev, ArgEvent::Complete(_)) {
                    complete = true;
                    break;
                }
                let Some(url) = ev.field("url").and_then(Value::as_str) else {
                    continue;
                };
                if !allow.iter().any(|p| url.starts_with(p.as_str())) {
                    return ToolOutput::error(format!("{url} is not on this server's allow-list"));
                }
                fetching.spawn(fetch(client.clone(), url.to_string(), max, prefix.clone()));
            }
            if !complete {
                return ToolOutput::error("the call ended before its arguments were complete");
            }
            match fetching.join_next().await {
                Some(r) => r.unwrap_or_else(|e| ToolOutput::error(e.to_string())),
                None => ToolOutput::error("`url` must be a string"),
            }
        })
    }
}
