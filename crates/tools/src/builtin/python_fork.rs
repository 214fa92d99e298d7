//! The python tool's fork server: one long-lived interpreter per `Python` tool, started on the
//! first call, that forks a child per call (`python_driver.py`'s `serve`). A call then costs
//! a fork of a warm interpreter instead of starting Python with the driver: 2.6 ms of CPU
//! against 33.6 ms (`python3 bench/python_call_cost.py 50`, 2 cores, 2026-11-22). On a
//! CPU-only server that start-up is taken from the decode the call runs alongside
//! (Conveyor): in `tandem bench --workload conveyor:plan` (two python steps) the decode
//! slowdown from tools running alongside fell from 1.14 to 1.02 and gain/bound alone rose
//! from 0.69 to 0.93.
//!
//! Written here because it is specific to the driver's protocol: a connection to the server's
//! Unix socket (in a private temporary directory) becomes the child's stdin/stdout; the child
//! writes its pid first; the server reports each child's wait status on its stdout, which a
//! task collects here. A call's [`Forked`] kills its child when dropped before the child ended
//! (a cancelled request, a timeout), so no tool process outlives its call.

use std::collections::HashMap;
use std::io;
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader, Lines};
use tokio::net::UnixStream;
use tokio::process::{Child, ChildStdout, Command};
use tokio::sync::oneshot;

const DRIVER: &str = include_str!("python_driver.py");

/// How long the server may take to start and bind its socket.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// The arguments every child is started with.
#[derive(Clone, Debug)]
pub struct ChildLimits {
    pub cpu_seconds: u64,
    pub memory_bytes: u64,
    pub nice: i32,
}

pub struct ForkServer {
    interpreter: String,
    limits: ChildLimits,
    running: tokio::sync::Mutex<Option<Server>>,
}

struct Server {
    /// Killed on drop; its stdin, held open here, ends it when this process goes away.
    process: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
    exits: Arc<Mutex<Exits>>,
}

/// Wait statuses reported by the server, and calls waiting for theirs.
#[derive(Default)]
struct Exits {
    slots: HashMap<u32, Slot>,
    /// The server's stdout ended: no more statuses will come.
    closed: bool,
}

enum Slot {
    Waiting(oneshot::Sender<ExitStatus>),
    Done(ExitStatus),
}

/// One call's child: its connection (stdin and stdout) and its exit status to come.
pub struct Forked {
    pub stream: UnixStream,
    pub exit: oneshot::Receiver<ExitStatus>,
    pub guard: KillGuard,
}

/// Kills the child when dropped, unless [`KillGuard::disarm`] was called after it ended.
pub struct KillGuard {
    pid: u32,
    armed: bool,
}

impl KillGuard {
    pub fn disarm(&mut self) {
        self.armed = false;
    }
}

impl Drop for KillGuard {
    fn drop(&mut self) {
        if self.armed {
            // SAFETY: kill(2) with a pid this call's child reported; the server has not
            // reported its exit, so it has not been reaped and the pid is not reused.
            unsafe {
                libc::kill(self.pid as libc::pid_t, libc::SIGKILL);
            }
        }
    }
}

impl ForkServer {
    pub fn new(interpreter: impl Into<String>, limits: ChildLimits) -> Self {
        Self {
            interpreter: interpreter.into(),
            limits,
            running: tokio::sync::Mutex::new(None),
        }
    }

    /// A new child, connected; the server is (re)started when it is not running.
    pub async fn fork(&self) -> io::Result<Forked> {
        let (socket, exits) = self.server().await?;
        let mut stream = UnixStream::connect(&socket).await?;
        let pid = read_pid(&mut stream).await?;
        let guard = KillGuard { pid, armed: true };
        let exit = register(&exits, pid)?;
        Ok(Forked {
            stream,
            exit,
            guard,
        })
    }

    async fn server(&self) -> io::Result<(PathBuf, Arc<Mutex<Exits>>)> {
        let mut running = self.running.lock().await;
        if let Some(s) = running.as_mut() {
            if s.process.try_wait()?.is_none() {
                return Ok((s.socket.clone(), s.exits.clone()));
            }
            tracing::warn!("the python fork server ended; starting a new one");
        }
        let s = tokio::time::timeout(START_TIMEOUT, self.start())
            .await
            .map_err(|_| io::Error::other("the python fork server did not start in time"))??;
        let out = (s.socket.clone(), s.exits.clone());
        *running = Some(s);
        Ok(out)
    }

    async fn start(&self) -> io::Result<Server> {
        let dir = tempfile::Builder::new()
            .prefix("tandem-python-")
            .tempdir()?;
        let socket = dir.path().join("fork.sock");
        let l = &self.limits;
        let mut process = Command::new(&self.interpreter)
            .args(["-I", "-S", "-u", "-c", DRIVER])
            .arg(&socket)
            .args([l.cpu_seconds, l.memory_bytes].map(|v| v.to_string()))
            .arg(l.nice.to_string())
            .env_clear()
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()?;
        let stdout = process.stdout.take().expect("piped stdout");
        let mut lines = BufReader::new(stdout).lines();
        match lines.next_line().await? {
            Some(l) if l == "ready" => {}
            other => {
                return Err(io::Error::other(format!(
                    "the python fork server did not start (it said {other:?})"
                )))
            }
        }
        let exits = Arc::new(Mutex::new(Exits::default()));
        tokio::spawn(collect_exits(lines, exits.clone()));
        Ok(Server {
            process,
            socket,
            _dir: dir,
            exits,
        })
    }
}

/// The child's first line: its pid.
async fn read_pid(stream: &mut UnixStream) -> io::Result<u32> {
    let mut line = Vec::new();
    while line.len() < 16 {
        match stream.read_u8().await? {
            b'\n' => break,
            b => line.push(b),
        }
    }
    std::str::from_utf8(&line)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| io::Error::other("the python child did not report its pid"))
}

fn register(exits: &Mutex<Exits>, pid: u32) -> io::Result<oneshot::Receiver<ExitStatus>> {
    let mut e = exits.lock().expect("exit table");
    let (tx, rx) = oneshot::channel();
    match e.slots.remove(&pid) {
        Some(Slot::Done(status)) => {
            let _ = tx.send(status);
        }
        _ if e.closed => return Err(io::Error::other("the python fork server ended")),
        _ => {
            e.slots.insert(pid, Slot::Waiting(tx));
        }
    }
    Ok(rx)
}

/// Reads `PID STATUS` lines until the server's stdout ends, then wakes every waiter with an
/// error (their senders dropped).
async fn collect_exits(mut lines: Lines<BufReader<ChildStdout>>, exits: Arc<Mutex<Exits>>) {
    while let Ok(Some(line)) = lines.next_line().await {
        let mut it = line.split_whitespace().map(str::parse::<i64>);
        let (Some(Ok(pid)), Some(Ok(status))) = (it.next(), it.next()) else {
            continue;
        };
        let (pid, status) = (pid as u32, ExitStatus::from_raw(status as i32));
        let mut e = exits.lock().expect("exit table");
        match e.slots.remove(&pid) {
            Some(Slot::Waiting(tx)) => {
                let _ = tx.send(status);
            }
            _ => {
                e.slots.insert(pid, Slot::Done(status));
            }
        }
    }
    let mut e = exits.lock().expect("exit table");
    e.closed = true;
    e.slots.clear();
}
