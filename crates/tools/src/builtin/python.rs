//! The `python` tool: a Python 3 subprocess per call that runs each top-level statement as
//! soon as it is complete (a simple statement when its line ends, a compound one when its
//! block does), while the model is still writing the rest (`python_driver.py`). The result is the merged stdout/stderr and the value of a final
//! expression. Limits: CPU seconds and address space (rlimits in the child), wall time and
//! output size (here); network and process creation are refused inside the child.
//!
//! The child runs without `site` (`-S`: the standard library only, no site-packages and no
//! `.pth` start-up hooks, which cost tens of milliseconds of CPU per call). Its priority is
//! the server's plus `PythonLimits::nice` (`--tool-nice`, default 0). On a CPU-only server the
//! tools share cores with the decode: measured on 2 cores (`bench/conveyor.sh` with
//! `TOOL_NICE=10` and `TOOL_NICE=0`, 2026-11-22), nice 10 left the code workload's last
//! statement waiting for the turn's final tokens (partial wait 0.046 s against 0.011 s at
//! nice 0) and did not lower the plan workload's decode slowdown (`decode_ratio` 1.12 against
//! 1.14 alone, 1.10 against 1.09 with 8 concurrent requests); gain/bound at nice 0 was 0.93
//! (code), 1.09 (search), 0.69 (plan) alone. SCHED_IDLE starved the tools outright (no
//! overlap left).
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::arg_events::{ArgEvent, PathSeg};
use crate::defs::ToolDef;
use crate::runtime::{Tool, ToolFuture, ToolOutput};

const DRIVER: &str = include_str!("python_driver.py");

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
    pub interpreter: String,
    pub limits: PythonLimits,
}

impl Python {
    pub fn new(limits: PythonLimits) -> Self {
        Self {
            interpreter: "python3".into(),
            limits,
        }
    }

    fn spawn(&self) -> std::io::Result<Child> {
        let mut cmd = Command::new(&self.interpreter);
        let nice = self.limits.nice;
        // SAFETY: the closure runs in the forked child before exec and only calls nice(2),
        // which is async-signal-safe; its result is ignored (a failure leaves the priority).
        unsafe {
            cmd.pre_exec(move || {
                libc::nice(nice);
                Ok(())
            });
        }
        cmd.args(["-I", "-S", "-u", "-c", DRIVER])
            .arg(self.limits.cpu_seconds.to_string())
            .arg(self.limits.memory_bytes.to_string())
            .env_clear()
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .kill_on_drop(true)
            .spawn()
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

    fn run(&self, args: UnboundedReceiver<ArgEvent>) -> ToolFuture {
        let child = self.spawn();
        let limits = self.limits.clone();
        Box::pin(async move {
            match child {
                Ok(child) => execute(child, args, limits).await,
                Err(e) => ToolOutput::error(format!("cannot start python: {e}")),
            }
        })
    }
}

async fn execute(
    mut child: Child,
    args: UnboundedReceiver<ArgEvent>,
    limits: PythonLimits,
) -> ToolOutput {
    let stdin = child.stdin.take().expect("piped stdin");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let cap = limits.max_output_bytes;
    // Keeps the first `cap + 1` bytes and drains the rest, so a chatty program never blocks.
    let reader = tokio::spawn(async move {
        let (mut buf, mut chunk) = (Vec::new(), [0u8; 8192]);
        while let Ok(n) = stdout.read(&mut chunk).await {
            if n == 0 {
                break;
            }
            let room = (cap + 1).saturating_sub(buf.len());
            buf.extend_from_slice(&chunk[..n.min(room)]);
        }
        buf
    });
    let wall = Duration::from_secs_f64(limits.wall_seconds);
    let work = async {
        let fed = feed(stdin, args).await;
        let status = child.wait().await;
        (fed, status)
    };
    let (fed, status) = match tokio::time::timeout(wall, work).await {
        Ok(r) => r,
        Err(_) => {
            let _ = child.kill().await;
            return ToolOutput::error(format!("timed out after {} s", limits.wall_seconds));
        }
    };
    let out = reader.await.unwrap_or_default();
    result(fed, status, out, &limits)
}

/// Sends the code's lines to the driver as they arrive; `Err` when the arguments ended early.
async fn feed(mut stdin: ChildStdin, mut args: UnboundedReceiver<ArgEvent>) -> Result<(), String> {
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
