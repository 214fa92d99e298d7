//! The server-side tool runtime: tools registered at startup, and one running call per
//! `Running`. While the model decodes a call, the raw argument text is fed in as it arrives
//! and turned into [`ArgEvent`]s; with partial execution on, the tool gets each event at once
//! and can start work on it (Conveyor); off, it gets only the complete arguments. Dropping a
//! `Running` aborts the call (a tool's child process is killed with it).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::arg_events::{ArgEvent, ArgStream};
use crate::defs::ToolDef;

/// What a call returns to the model.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolOutput {
    pub content: String,
    pub is_error: bool,
}

impl ToolOutput {
    pub fn ok(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: false,
        }
    }

    pub fn error(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            is_error: true,
        }
    }
}

pub type ToolFuture = Pin<Box<dyn Future<Output = ToolOutput> + Send>>;

/// A server-side tool.
pub trait Tool: Send + Sync {
    /// Name, description and JSON-schema parameters (shown to the model).
    fn def(&self) -> ToolDef;
    /// Runs one call. `args` yields the argument events as they are decoded and ends with
    /// `ArgEvent::Complete` (or closes early: the call turned out malformed or was cancelled).
    /// The tool may return early with an error (e.g. a failed validation). A tool whose result
    /// is built piece by piece may publish its start to `prefix` as it becomes known (partial
    /// results): only text its successful result will begin with. Others ignore it.
    fn run(&self, args: UnboundedReceiver<ArgEvent>, prefix: ResultPrefix) -> ToolFuture;
}

/// Where a running call publishes the start of its result (the content of a successful
/// `ToolOutput`), each time longer. Publishing is a hint: an error result, or one that does
/// not begin with what was published, costs only the prefill done on the hint.
#[derive(Debug, Clone)]
pub struct ResultPrefix(Option<Arc<watch::Sender<ResultStart>>>);

/// What is known of a call's result: its start, or all of it once `complete`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResultStart {
    pub text: String,
    pub complete: bool,
}

impl ResultPrefix {
    /// A sink that drops what is published (a call nobody prefills ahead for).
    pub fn none() -> Self {
        Self(None)
    }

    pub(crate) fn channel() -> (Self, watch::Receiver<ResultStart>) {
        let (tx, rx) = watch::channel(ResultStart::default());
        (Self(Some(Arc::new(tx))), rx)
    }

    /// The result so far begins with `text`.
    pub fn publish(&self, text: String) {
        self.send(ResultStart {
            text,
            complete: false,
        });
    }

    fn send(&self, start: ResultStart) {
        if let Some(tx) = &self.0 {
            tx.send_replace(start);
        }
    }
}

/// The tools a server runs itself.
#[derive(Clone, Default)]
pub struct Registry {
    tools: HashMap<String, Arc<dyn Tool>>,
    /// Partial execution: events reach the tool as they are decoded.
    pub partial: bool,
    /// With partial execution, the start of a tool's result is prefilled while the rest
    /// runs (a server setting; the tools publish either way).
    pub partial_results: bool,
}

impl Registry {
    pub fn new(partial: bool) -> Self {
        Self {
            tools: HashMap::new(),
            partial,
            partial_results: true,
        }
    }

    pub fn add(&mut self, tool: Arc<dyn Tool>) {
        self.tools.insert(tool.def().name, tool);
    }

    pub fn def(&self, name: &str) -> Option<ToolDef> {
        self.tools.get(name).map(|t| t.def())
    }

    /// Registered names, sorted.
    pub fn names(&self) -> Vec<String> {
        let mut n: Vec<String> = self.tools.keys().cloned().collect();
        n.sort();
        n
    }

    /// Starts a call of `name` (must be registered; needs a tokio runtime).
    pub fn start(&self, name: &str) -> Option<Running> {
        self.start_with(name, self.partial)
    }

    /// Starts a call with partial execution on or off for this call only.
    pub fn start_with(&self, name: &str, partial: bool) -> Option<Running> {
        let tool = self.tools.get(name)?;
        let (tx, rx) = unbounded_channel();
        let (sink, prefix) = ResultPrefix::channel();
        let work = tool.run(rx, sink.clone());
        let task = tokio::spawn(async move {
            let out = work.await;
            if !out.is_error {
                let text = out.content.clone();
                sink.send(ResultStart {
                    text,
                    complete: true,
                });
            }
            (out, Instant::now())
        });
        Some(Running {
            prefix,
            tx: Some(tx),
            stream: ArgStream::new(),
            held: Vec::new(),
            partial,
            task: Some(task),
            args_done: None,
        })
    }
}

/// One call in progress.
pub struct Running {
    tx: Option<UnboundedSender<ArgEvent>>,
    stream: ArgStream,
    /// Events held back while partial execution is off.
    held: Vec<ArgEvent>,
    partial: bool,
    /// The tool's result and when it was ready.
    task: Option<JoinHandle<(ToolOutput, Instant)>>,
    /// When the arguments were complete (or ended early).
    args_done: Option<Instant>,
    /// The start of the result, as the tool publishes it.
    prefix: watch::Receiver<ResultStart>,
}

/// A call's result and how long it came after the call's arguments were complete: the time
/// the request waited on the tool (zero when the tool was done by then).
#[derive(Clone, Debug, PartialEq)]
pub struct Finished {
    pub output: ToolOutput,
    pub wait: Duration,
}

impl Running {
    /// Feeds a fragment of the raw arguments text.
    pub fn feed(&mut self, fragment: &str) {
        let events = self.stream.push(fragment);
        if let Some(e) = self.stream.error() {
            tracing::debug!("tool arguments are not JSON: {e}");
            self.tx = None; // the tool sees its input end early
            return;
        }
        for ev in events {
            let complete = matches!(ev, ArgEvent::Complete(_));
            if complete {
                self.args_done.get_or_insert_with(Instant::now);
            }
            if !self.partial && !complete {
                self.held.push(ev);
                continue;
            }
            // Events held back (partial execution off) go first; with it on there are none.
            for h in std::mem::take(&mut self.held) {
                self.send(h);
            }
            self.send(ev);
        }
    }

    fn send(&mut self, ev: ArgEvent) {
        if let Some(tx) = &self.tx {
            let _ = tx.send(ev);
        }
    }

    /// The start of the call's result as the tool publishes it (empty until it does), and
    /// the whole result once the tool has returned it without error.
    pub fn result_prefix(&self) -> watch::Receiver<ResultStart> {
        self.prefix.clone()
    }

    /// Whether the tool has already returned (e.g. an early abort on a bad argument).
    pub fn is_done(&self) -> bool {
        self.task.as_ref().is_none_or(JoinHandle::is_finished)
    }

    /// The result, if the tool has returned already (then the call is spent).
    pub fn try_output(&mut self) -> Option<ToolOutput> {
        use futures::FutureExt;
        if !self.is_done() {
            return None;
        }
        let task = self.task.take()?;
        Some(match task.now_or_never()? {
            Ok((out, _)) => out,
            Err(e) => crashed(e),
        })
    }

    /// The call's arguments are complete (or will never be): waits for the result.
    /// The task stays owned by `self` while awaited, so dropping this future (a cancelled
    /// request) still aborts the tool.
    pub async fn finish(self) -> ToolOutput {
        self.finish_timed().await.output
    }

    /// As `finish`, with how long the result came after the arguments were complete.
    pub async fn finish_timed(mut self) -> Finished {
        self.tx = None;
        let args_done = *self.args_done.get_or_insert_with(Instant::now);
        let Some(task) = self.task.as_mut() else {
            return Finished {
                output: ToolOutput::error("the call's result was already taken"),
                wait: Duration::ZERO,
            };
        };
        let (output, ready) = match task.await {
            Ok(done) => done,
            Err(e) => (crashed(e), Instant::now()),
        };
        self.task = None;
        Finished {
            output,
            wait: ready.saturating_duration_since(args_done),
        }
    }
}

fn crashed(e: tokio::task::JoinError) -> ToolOutput {
    ToolOutput::error(format!("the tool crashed: {e}"))
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}
