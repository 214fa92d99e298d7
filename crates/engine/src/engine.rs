//! The engine thread and its handle. One OS thread owns the runner (and through it the model
//! and KV cache); the handle sends it requests and cancels over a channel.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use crate::clock::Clock;
use crate::scheduler::{Scheduler, SchedulerConfig, SchedulerStats};
use crate::types::{NewRequest, RequestId, Token};
use crate::Runner;

enum Msg {
    Submit(RequestId, NewRequest),
    Cancel(RequestId),
    Resume(RequestId, Vec<Token>),
    Stage(RequestId, Vec<Token>),
    ResumeStaged(RequestId, usize, Vec<Token>),
}

/// Why a request was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SubmitError {
    #[error("the server is overloaded: {0} requests are already waiting")]
    QueueFull(usize),
    #[error("the engine has stopped")]
    Stopped,
}

/// Cheap to clone; every clone talks to the same engine thread.
#[derive(Clone)]
pub struct EngineHandle {
    tx: Sender<Msg>,
    next_id: Arc<AtomicU64>,
    load: Arc<Load>,
    max_queue: usize,
}

/// Requests not yet admitted: in the channel, and waiting in the scheduler.
#[derive(Default)]
struct Load {
    inbox: AtomicUsize,
    waiting: AtomicUsize,
}

impl Load {
    fn queued(&self) -> usize {
        // Acquire pairs with the engine's Release decrement: seeing a request gone from the
        // inbox implies seeing the waiting count that includes it.
        self.inbox.load(Ordering::Acquire) + self.waiting.load(Ordering::Relaxed)
    }
}

impl EngineHandle {
    /// Most requests that may wait for admission at once (beyond it `submit` refuses).
    pub fn max_queue(&self) -> usize {
        self.max_queue
    }

    /// Queues a request; its events arrive on the request's own channel.
    pub fn submit(&self, req: NewRequest) -> Result<RequestId, SubmitError> {
        let queued = self.load.queued();
        if queued >= self.max_queue {
            return Err(SubmitError::QueueFull(queued));
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.load.inbox.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Msg::Submit(id, req))
            .map_err(|_| SubmitError::Stopped)?;
        Ok(id)
    }

    /// Ends a request; its KV is released (or retained for reuse) within one step.
    pub fn cancel(&self, id: RequestId) {
        // A stopped engine has nothing left to cancel.
        let _ = self.tx.send(Msg::Cancel(id));
    }

    /// Continues a paused request with `appended` tokens (the tool's output) after its last
    /// generated token. Ignored if the request is not paused (e.g. cancelled meanwhile).
    pub fn resume(&self, id: RequestId, appended: Vec<Token>) {
        // A stopped engine has nothing left to resume.
        let _ = self.tx.send(Msg::Resume(id, appended));
    }

    /// Gives a paused request the known start of its tool output, to prefill while it still
    /// waits (see the engine's `stage` module). Ignored if the request is not paused.
    pub fn stage(&self, id: RequestId, tokens: Vec<Token>) {
        let _ = self.tx.send(Msg::Stage(id, tokens));
    }

    /// As `resume`, for a request given staged tokens: `output` is the tool's whole output,
    /// which begins with `keep` of the staged tokens (those past it are dropped, KV included).
    pub fn resume_staged(&self, id: RequestId, keep: usize, output: Vec<Token>) {
        let _ = self.tx.send(Msg::ResumeStaged(id, keep, output));
    }
}

/// Starts the engine thread. `make_runner` runs on that thread, so the runner need not be
/// `Send` (llama.cpp contexts are not). `max_queue` bounds requests not yet admitted.
pub fn spawn_engine<R, E, F>(
    cfg: SchedulerConfig,
    max_queue: usize,
    clock: Box<dyn Clock>,
    make_runner: F,
) -> Result<(EngineHandle, JoinHandle<()>), E>
where
    R: Runner,
    E: Send + 'static,
    F: FnOnce() -> Result<R, E> + Send + 'static,
{
    let (init_tx, init_rx) = mpsc::channel();
    let (tx, rx) = mpsc::channel();
    let load = Arc::new(Load::default());
    let handle = EngineHandle {
        tx,
        next_id: Arc::new(AtomicU64::new(1)),
        load: load.clone(),
        max_queue,
    };
    let join = std::thread::Builder::new()
        .name("tandem-engine".into())
        .spawn(move || {
            let mut runner = match make_runner() {
                Ok(r) => r,
                Err(e) => return drop(init_tx.send(Err(e))),
            };
            let mut sched = Scheduler::new(cfg);
            match runner.profile() {
                Ok(cost) => sched.set_costs(cost),
                Err(e) => tracing::warn!("cost profiling failed, using defaults: {e}"),
            }
            export_costs(&sched);
            let _ = init_tx.send(Ok(()));
            EngineLoop {
                sched,
                runner,
                clock,
                rx,
                load,
            }
            .run()
        })
        .expect("spawn engine thread");
    init_rx.recv().expect("engine thread reports its start")?;
    Ok((handle, join))
}

struct EngineLoop<R> {
    sched: Scheduler,
    runner: R,
    clock: Box<dyn Clock>,
    rx: Receiver<Msg>,
    load: Arc<Load>,
}

impl<R: Runner> EngineLoop<R> {
    fn run(mut self) {
        // The gauges from the start, not from the first step: /metrics shows an idle engine
        // as idle (zeros), not as absent.
        self.export_gauges();
        while self.drain_inbox() {
            self.step();
        }
        self.sched.evict_all_retained();
        let plan = self.sched.schedule(self.clock.now());
        let _ = self.runner.execute(&plan);
    }

    /// Takes every queued message, blocking while there is nothing to do. Returns false
    /// when every handle is gone and no work remains.
    fn drain_inbox(&mut self) -> bool {
        if self.sched.is_idle() {
            match self.rx.recv_timeout(Duration::from_millis(100)) {
                Ok(msg) => self.handle(msg),
                Err(RecvTimeoutError::Timeout) => return true,
                Err(RecvTimeoutError::Disconnected) => return false,
            }
        }
        while let Ok(msg) = self.rx.try_recv() {
            self.handle(msg);
        }
        true
    }

    fn handle(&mut self, msg: Msg) {
        let now = self.clock.now();
        match msg {
            Msg::Submit(id, req) => {
                // Count the request as waiting before it leaves the inbox count, so the queue
                // bound never sees it in neither (a burst could overfill the queue otherwise).
                self.sched.add(id, req, now);
                let waiting = self.sched.waiting_len();
                self.load.waiting.store(waiting, Ordering::Relaxed);
                self.load.inbox.fetch_sub(1, Ordering::Release);
            }
            Msg::Cancel(id) => self.sched.cancel(id, now),
            Msg::Resume(id, tokens) => self.sched.resume(id, tokens, now),
            Msg::Stage(id, tokens) => self.sched.stage(id, tokens),
            Msg::ResumeStaged(id, keep, tokens) => self.sched.resume_staged(id, keep, tokens, now),
        }
    }

    fn step(&mut self) {
        let plan = self.sched.schedule(self.clock.now());
        if plan.is_empty() {
            return;
        }
        let t0 = self.clock.now();
        let (recomputed, passes) = match self.runner.execute(&plan) {
            Ok(result) => (
                self.sched.update(&plan, &result, self.clock.now()),
                result.passes,
            ),
            Err(e) => {
                tracing::error!("step failed: {e}");
                self.sched.fail_plan(&plan, &e.to_string());
                (0, 0)
            }
        };
        let dt = self.clock.now() - t0;
        tracing::trace!(
            rows = plan.items.len(),
            tokens = plan.batch_tokens(),
            kv_ops = plan.kv_ops.len(),
            passes,
            ms = dt * 1e3,
            "step"
        );
        if !plan.items.is_empty() {
            let share = recomputed as f64 / plan.batch_tokens() as f64;
            metrics::histogram!("tandem_step_duration_seconds").record(dt);
            metrics::histogram!("tandem_step_batch_tokens").record(plan.batch_tokens() as f64);
            metrics::histogram!("tandem_step_passes").record(passes as f64);
            metrics::counter!("tandem_forward_passes_total").increment(passes as u64);
            metrics::counter!("tandem_forward_microseconds_total").increment(micros(dt));
            metrics::counter!("tandem_recompute_microseconds_total").increment(micros(dt * share));
        }
        self.export_gauges();
    }

    fn export_gauges(&self) {
        let s = self.sched.stats();
        self.load.waiting.store(s.waiting, Ordering::Relaxed);
        metrics::gauge!("tandem_queue_length").set(s.waiting as f64);
        metrics::gauge!("tandem_running_requests").set(s.running as f64);
        metrics::gauge!("tandem_retained_sequences").set(s.retained as f64);
        metrics::gauge!("tandem_kv_cells_used").set(s.kv_used as f64);
        metrics::gauge!("tandem_kv_cells_retained").set(s.kv_retained as f64);
        metrics::gauge!("tandem_kv_cells_free").set(s.kv_free as f64);
        export_intercept_stats(&s);
    }
}

/// Counters of seconds are kept in microseconds (metrics counters are integers).
fn micros(seconds: f64) -> u64 {
    (seconds * 1e6).round() as u64
}

fn export_intercept_stats(s: &SchedulerStats) {
    for (place, n) in [
        ("device", s.paused_device),
        ("host", s.paused_host),
        ("discarded", s.paused_discarded),
    ] {
        metrics::gauge!("tandem_paused_requests", "placement" => place).set(n as f64);
    }
    metrics::gauge!("tandem_swap_used_bytes").set(s.swap_used_bytes as f64);
    let c = &s.counters;
    metrics::counter!("tandem_swap_out_bytes_total").absolute(c.swap_out_bytes);
    metrics::counter!("tandem_swap_in_bytes_total").absolute(c.swap_in_bytes);
    metrics::counter!("tandem_recomputed_tokens_total").absolute(c.recomputed_tokens);
    metrics::counter!("tandem_interceptions_total").absolute(c.interceptions);
    metrics::counter!("tandem_partial_swaps_total").absolute(c.partial_swaps);
    metrics::counter!("tandem_retained_partial_swaps_total").absolute(c.retained_partial_swaps);
    metrics::counter!("tandem_prefix_copies_total").absolute(c.prefix_copies);
    metrics::counter!("tandem_prefix_copied_tokens_total").absolute(c.prefix_copied_tokens);
    metrics::counter!("tandem_prefix_copies_inflight_total").absolute(c.inflight_prefix_copies);
    metrics::counter!("tandem_shared_prefill_waits_total").absolute(c.shared_prefill_waits);
    metrics::counter!("tandem_slot_moves_total").absolute(c.slot_moves);
    metrics::counter!("tandem_slot_moved_tokens_total").absolute(c.slot_moved_tokens);
    if let Some(w) = c.waste {
        for (option, v) in [
            ("preserve", w.preserve),
            ("swap", w.swap),
            ("discard", w.discard),
        ] {
            metrics::gauge!("tandem_intercept_waste_token_seconds", "option" => option).set(v);
        }
    }
}

/// The measured costs, logged and exported once at startup.
fn export_costs(sched: &Scheduler) {
    let c = sched.costs();
    tracing::info!(
        "costs: forward {:.2} ms + {:.3} ms/token + attention {:.3} us per (token, earlier token) pair ({:.3} us in rows under {} tokens) + {:.3} ms per sampled row; swap out {:.2} us/token, in {:.2} us/token; {} KV bytes/token; swap budget {} tokens/step",
        c.fwd_base_s * 1e3,
        c.fwd_per_token_s * 1e3,
        c.attn_per_pair_s * 1e6,
        c.attn_row_per_pair_s * 1e6,
        crate::cost::TILED_ATTENTION_ROWS,
        c.sample_per_row_s * 1e3,
        c.swap_out_per_token_s * 1e6,
        c.swap_in_per_token_s * 1e6,
        c.kv_bytes_per_token,
        sched.swap_budget()
    );
    metrics::gauge!("tandem_cost_forward_base_seconds").set(c.fwd_base_s);
    metrics::gauge!("tandem_cost_forward_per_token_seconds").set(c.fwd_per_token_s);
    metrics::gauge!("tandem_cost_attention_per_pair_seconds").set(c.attn_per_pair_s);
    metrics::gauge!("tandem_cost_attention_row_per_pair_seconds").set(c.attn_row_per_pair_s);
    metrics::gauge!("tandem_cost_sample_per_row_seconds").set(c.sample_per_row_s);
    metrics::gauge!("tandem_cost_swap_out_per_token_seconds").set(c.swap_out_per_token_s);
    metrics::gauge!("tandem_cost_swap_in_per_token_seconds").set(c.swap_in_per_token_s);
    metrics::gauge!("tandem_cost_swap_base_seconds").set(c.swap_base_s);
    metrics::gauge!("tandem_cost_kv_bytes_per_token").set(c.kv_bytes_per_token as f64);
    metrics::gauge!("tandem_swap_budget_tokens").set(sched.swap_budget() as f64);
}
