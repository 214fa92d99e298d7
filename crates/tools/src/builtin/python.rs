//! The `python` tool: a Python 3 process per call (forked from a warm interpreter,
//! `python_fork.rs`) that runs each top-level statement as soon as it is complete (a simple
//! statement when its line ends, a compound one when its block does), while the model is
//! still writing the rest (`python_driver.py`). The result is the merged stdout/stderr and
//! the value of a final expression. Limits: CPU seconds and address space (rlimits in the child), wall time and
//! output size (here); network and process creation are refused inside the child.
//!
//! What the program has printed so far is published as the start of its result (the result is
//! that output followed by the rest), so the model can read a finished statement's output
//! while a later one still runs (docs/server-tools.md, "Partial results").
//!
//! The interpreter runs without `site` (`-S`: the standard library only, no site-packages and
//! no `.pth` start-up hooks). A child's priority is
//! the server's plus `PythonLimits::nice` (`--tool-nice`, default 0). On a CPU-only server the
//! tools share cores with the decode: measured on 2 cores (`bench/conveyor.sh` with
//! `TOOL_NICE=10` and `TOOL_NICE=0`, 2026-11-22), nice 10 left the code workload's last
//! statement waiting for the turn's final tokens (partial wait 0.046 s against 0.011 s at
//! nice 0) and did not lower the plan workload's decode slowdown (`decode_ratio` 1.12 against
//! 1.14 alone, 1.10 against 1.09 with 8 concurrent requests: interpreter start-up, since
//! removed by the fork server, was most of that CPU). SCHED_IDLE starved the tools outright (no
//! overlap left).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::python_fork::{ChildLimits, ForkServer, Forked};
use super::OutputSoFar;
use crate::arg_events::{ArgEvent, PathSeg};
use crate::defs::ToolDef;
use crate::runtime::{ResultPrefix, Tool, ToolFuture, ToolOutput};
use tokio::sync::mpsc::UnboundedReceiver;

#[derive(Clone, Debug)]
pub struct PythonLimits {
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub wall_seconds: f64,
    pub max_output_bytes: usize,
    /// Added to the child's nice value (0: same priority as the server).
    pub nice: i32,
}

impl Default for PythonLimits {
    fn default() -> Self {
        Self {
            cpu_seconds: 10,
            memory_bytes: 512 << 20,
            wall_seconds: 30.0,
            max_output_bytes: 16 << 10,
            nice: 0,
        }
    }
}

pub struct Python {
    pub limits: PythonLimits,
    forks: Arc<ForkServer>,
}

impl Python {
    /// Runs `python3` from the PATH; its fork server starts with the first call.
    pub fn new(limits: PythonLimits) -> Self {
        let child = ChildLimits {
            cpu_seconds: limits.cpu_seconds,
            memory_bytes: limits.memory_bytes,
            nice: limits.nice,
        };
        Self {
            forks: Arc::new(ForkServer::new("python3", child)),
            limits,
        }
    }
}

impl Tool for Python {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "python".into(),
            description: Some(
                "Runs Python 3 code and returns what it prints and the value of its last expression.".into(),
            ),
            parameters: json!({"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}),
        }
    }

    /// Publishes the program's output as it is printed (see the module doc).
    fn run(&self, args: UnboundedReceiver<ArgEvent>, prefix: ResultPrefix) -> ToolFuture {
        let (forks, limits) = (self.forks.clone(), self.limits.clone());
        Box::pin(async move {
            let wall = Duration::from_secs_f64(limits.wall_seconds);
            match tokio::time::timeout(wall, forks.fork()).await {
                Ok(Ok(child)) => execute(child, args, limits, prefix).await,
                Ok(Err(e)) => ToolOutput::error(format!("cannot start python: {e}")),
                Err(_) => ToolOutput::error(format!("timed out after {} s", limits.wall_seconds)),
            }
        })
    }
}

async fn execute(
    child: Forked,
    args: UnboundedReceiver<ArgEvent>,
    limits: PythonLimits,
    prefix: ResultPrefix,
) -> ToolOutput {
    let Forked {
        stream,
        exit,
        mut guard,
    } = child;
    let (stdout, stdin) = stream.into_split();
    let reader = tokio::spawn(read_capped(stdout, limits.max_output_bytes, prefix));
    let wall = Duration::from_secs_f64(limits.wall_seconds);
    let work = async {
        let fed = feed(stdin, args).await;
        let status = exit
            .await
            .map_err(|_| std::io::Error::other("the python fork server ended"));
        (fed, status)
    };
    // On a timeout the guard, dropped here, kills the child.
    let Ok((fed, status)) = tokio::time::timeout(wall, work).await else {
        return ToolOutput::error(format!("timed out after {} s", limits.wall_seconds));
    };
    guard.disarm();
    let out = reader.await.unwrap_or_default();
    result(fed, status, out, &limits)
}

/// Keeps the first `cap + 1` bytes and drains the rest, so a chatty program never blocks.
/// Each read that adds whole UTF-8 characters within `cap` publishes the output so far: the
/// start of a result that ends up within the cap (a longer one is an error, which nobody
/// prefills).
async fn read_capped(
    mut stdout: impl AsyncRead + Unpin,
    cap: usize,
    prefix: ResultPrefix,
) -> Vec<u8> {
    let (mut buf, mut chunk) = (Vec::new(), [0u8; 8192]);
    let mut so_far = OutputSoFar::new(prefix);
    while let Ok(n) = stdout.read(&mut chunk).await {
        if n == 0 {
            break;
        }
        let room = (cap + 1).saturating_sub(buf.len());
        buf.extend_from_slice(&chunk[..n.min(room)]);
        so_far.update(&buf[..buf.len().min(cap)]);
    }
    buf
}

/// Sends the code's lines to the driver as they arrive; `Err` when the arguments ended early.
async fn feed(
    mut stdin: impl AsyncWrite + Unpin,
    mut args: UnboundedReceiver<ArgEvent>,
) -> Result<(), String> {
    let code = [PathSeg::Key("code".into())];
    let mut sent = 0;
    while let Some(ev) = args.recv().await {
        let lines: Vec<String> = match ev {
            ArgEvent::Line { path, text, .. } if path == code => vec![text],
            ArgEvent::Value {
                path,
                value: Value::String(s),
            } if path == code => s.split('\n').skip(sent).map(str::to_string).collect(),
            ArgEvent::Complete(_) => {
                let _ = stdin.write_all(b"{\"end\": true}\n").await;
                return Ok(());
            }
            _ => continue,
        };
        for l in lines {
            sent += 1;
            let msg = format!("{}\n", json!({ "line": l }));
            if stdin.write_all(msg.as_bytes()).await.is_err() {
                return Ok(()); // the program already ended (an exception); its output says why
            }
        }
    }
    Err("the call ended before its arguments were complete".into())
}

fn result(
    fed: Result<(), String>,
    status: std::io::Result<std::process::ExitStatus>,
    mut out: Vec<u8>,
    limits: &PythonLimits,
) -> ToolOutput {
    let truncated = out.len() > limits.max_output_bytes;
    out.truncate(limits.max_output_bytes);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    if truncated {
        text.push_str(&format!(
            "\n[output truncated at {} bytes]",
            limits.max_output_bytes
        ));
    }
    if let Err(e) = fed {
        return ToolOutput::error(e);
    }
    match status {
        Ok(s) if s.success() && !truncated => ToolOutput::ok(text),
        Ok(s) if s.code().is_none() => {
            text.push_str(&format!(
                "\n[killed: CPU limit {} s or memory limit {} MiB]",
                limits.cpu_seconds,
                limits.memory_bytes >> 20
            ));
            ToolOutput::error(text)
        }
        Ok(_) => ToolOutput::error(text),
        Err(e) => ToolOutput::error(format!("python failed: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn output_past_the_cap_is_not_published() {
        let (prefix, mut rx) = ResultPrefix::channel();
        let out = read_capped(&b"0123456789"[..], 4, prefix).await;
        assert_eq!(out, b"01234");
        assert_eq!(rx.borrow_and_update().text, "0123");
    }
}
