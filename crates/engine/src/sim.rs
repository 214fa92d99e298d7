//! Virtual-time simulation: the real [`Scheduler`] (admission, chunked prefill, interception
//! placement by policy, swap budget, resume order) driven step by step against a cost model
//! instead of a model, so workloads of GPU scale (thousands of requests, 2,000-token contexts,
//! a 6B model's costs) run in seconds on any machine (mission.md §3). Nothing here decides
//! anything the scheduler decides in `tandem serve`: the simulation only prices each plan
//! (`StepCost`) and moves time on, and plays each request's scripted tool calls (pause,
//! wait `duration_s`, resume with the result's tokens), as the server does for
//! `--allow-scripted` requests.
//!
//! ```text
//!  loop { arrivals and tool results due → Scheduler::add / resume
//!         plan = schedule(now); time += StepCost::seconds(plan)   (nothing to run: idle tick)
//!         FakeRunner::execute(plan) (checks every KV op)  → update → events per request }
//! ```
//!
//! Written here rather than taken from a crate: the point is to run tandem's own scheduler;
//! a discrete-event library would add nothing but its event queue (a `BinaryHeap` here).

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::cost::CostModel;
use crate::fake::FakeRunner;
use crate::plan::{KvOp, StepPlan};
use crate::prefix::Loc;
use crate::scheduler::{Scheduler, SchedulerConfig};
use crate::types::{Event, InterceptSpec, NewRequest, SamplingParams, Token};
use crate::ubatch::plan_passes;
use crate::{Runner, RunnerError};

/// What a step costs: the policy's model, plus what it leaves out.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepCost {
    /// Forward time against batch tokens and attention pairs, and copy times (also what the
    /// policy is told).
    pub model: CostModel,
    /// Seconds per token of KV a batch row reads (once per row per step, whatever its
    /// length): what makes a GPU's memory-bound decode step grow with context. 0 on the CPU
    /// profile, where attention's cost is its compute, priced per pair by the model.
    pub kv_read_per_token_s: f64,
    /// Copies run beside compute (a GPU's copy engine): a step takes the longer of the two.
    /// Off, they add up (llama.cpp on a CPU copies before it decodes).
    pub overlap_copies: bool,
}

impl StepCost {
    /// Seconds the plan takes; `tokens` gives the KV tokens a slot or a host buffer holds
    /// before the step.
    pub fn seconds(&self, plan: &StepPlan, tokens: impl Fn(Loc) -> usize) -> f64 {
        let m = &self.model;
        let copies: f64 = plan
            .kv_ops
            .iter()
            .map(|op| match *op {
                KvOp::SwapOut { tokens, .. } => m.t_swap_out(tokens),
                KvOp::SwapIn { handle, .. } => m.t_swap_in(tokens(Loc::Host(handle))),
                // The runner saves the whole source slot and restores it (then cuts it to
                // `keep`); a host buffer is only restored.
                KvOp::CopyPrefix { from, .. } => match from {
                    Loc::Device(_) => m.t_swap_out(tokens(from)) + m.t_swap_in(tokens(from)),
                    Loc::Host(_) => m.t_swap_in(tokens(from)),
                },
                _ => 0.0,
            })
            .sum();
        let compute = if plan.items.is_empty() {
            0.0
        } else {
            let (read, attend) = plan.items.iter().fold((0, 0.0), |(r, a), i| {
                let len = i.tokens.len();
                (r + i.start_pos + len, a + m.t_attend(i.start_pos, len))
            });
            let sampled = plan.items.iter().filter(|i| i.sample.is_some()).count();
            // llama.cpp runs the batch in passes (a stream per sequence, ubatches as large
            // as the batch); each past the first reads the weights again: the line's base.
            let passes = plan_passes(&plan.items, plan.batch_tokens(), true);
            let extra = m.fwd_base_s * passes.saturating_sub(1) as f64;
            m.t_fwd(plan.batch_tokens())
                + extra
                + attend
                + m.sample_per_row_s * sampled as f64
                + self.kv_read_per_token_s * read as f64
        };
        if self.overlap_copies {
            compute.max(copies)
        } else {
            compute + copies
        }
    }
}

/// One simulated request: a prompt, its output split by scripted tool calls.
#[derive(Clone, Debug)]
pub struct SimRequest {
    pub arrival_s: f64,
    pub prompt: Vec<Token>,
    /// Output tokens in all (every segment's).
    pub max_tokens: usize,
    /// Where it pauses: after so many generated tokens, for the named tool.
    pub intercept: InterceptSpec,
    /// Each pause's tool time and the result tokens appended on resume, in order.
    pub tools: VecDeque<(f64, Vec<Token>)>,
}

/// What happened to one request, in virtual seconds.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimOutcome {
    pub ok: bool,
    pub error: Option<String>,
    pub arrival_s: f64,
    pub first_token_s: Option<f64>,
    pub finish_s: f64,
    pub output_tokens: usize,
    /// The prompt, and once finished what the request's resumes appended to it (as a
    /// server's `usage.prompt_tokens` counts them).
    pub prompt_tokens: usize,
    pub cached_tokens: usize,
    /// Time spent in tools (excluded from normalized latency).
    pub tool_time_s: f64,
    /// Gaps between consecutive tokens within a segment (not across a tool call).
    pub itl_s: Vec<f64>,
}

impl SimOutcome {
    pub fn latency_s(&self) -> f64 {
        self.finish_s - self.arrival_s
    }
}

/// Totals of a simulation run.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SimTotals {
    /// Virtual time when the last request ended.
    pub end_s: f64,
    pub steps: usize,
    /// Time of steps that ran tokens, and the part of it that recomputed discarded KV
    /// (apportioned by tokens, as the engine's `/metrics` does).
    pub forward_s: f64,
    pub recompute_s: f64,
    /// Steps that ran tokens, and the forward passes (llama.cpp ubatches) they took.
    pub forward_steps: usize,
    pub passes: usize,
    pub counters: crate::scheduler::InterceptCounters,
}

#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("runner: {0}")]
    Runner(#[from] RunnerError),
    #[error("the scheduler stalled at {now:.3} s with {left} requests unfinished and nothing due")]
    Stalled { now: f64, left: usize },
    #[error("KV left behind after the run: {cells} device cells, {buffers} host buffers")]
    Leak { cells: usize, buffers: usize },
    #[error("the run passed the time limit of {0} s")]
    TimeLimit(f64),
}

/// How the simulation runs.
#[derive(Clone, Debug)]
pub struct SimConfig {
    pub scheduler: SchedulerConfig,
    pub cost: StepCost,
    /// Time moved on when a step has nothing to run but work is pending (the engine loop
    /// re-plans that often in real time, so time-based placement still happens).
    pub idle_tick_s: f64,
    /// Give up past this virtual time (a saturated run's queue only grows).
    pub time_limit_s: f64,
}

struct Live {
    rx: UnboundedReceiver<Event>,
    tools: VecDeque<(f64, Vec<Token>)>,
    out: SimOutcome,
    last_token_s: Option<f64>,
    done: bool,
}

/// Runs `requests` (any order; each starts at its `arrival_s`) to the end.
pub fn simulate(
    cfg: &SimConfig,
    requests: Vec<SimRequest>,
) -> Result<(Vec<SimOutcome>, SimTotals), SimError> {
    Sim::new(cfg, requests).run()
}

struct Sim<'a> {
    cfg: &'a SimConfig,
    sched: Scheduler,
    runner: FakeRunner,
    /// Requests not yet arrived, by arrival time (index into `live`).
    arrivals: BinaryHeap<Reverse<(Time, usize)>>,
    /// Tool results due: (time, request index).
    resumes: BinaryHeap<Reverse<(Time, usize)>>,
    pending: Vec<Option<SimRequest>>,
    live: Vec<Option<Live>>,
    left: usize,
    now: f64,
    totals: SimTotals,
}

/// An `f64` time that orders totally (for the heaps).
#[derive(Clone, Copy, Debug, PartialEq)]
struct Time(f64);
impl Eq for Time {}
impl PartialOrd for Time {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Time {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        self.0.total_cmp(&o.0)
    }
}

impl<'a> Sim<'a> {
    fn new(cfg: &'a SimConfig, requests: Vec<SimRequest>) -> Self {
        let s = &cfg.scheduler;
        let mut sched = Scheduler::new(s.clone());
        sched.set_costs(cfg.cost.model);
        let mut runner = FakeRunner::new(s.n_slots, s.cells_per_seq);
        runner.vocab = 32_000;
        let arrivals = requests
            .iter()
            .enumerate()
            .map(|(i, r)| Reverse((Time(r.arrival_s), i)))
            .collect();
        let n = requests.len();
        Self {
            cfg,
            sched,
            runner,
            arrivals,
            resumes: BinaryHeap::new(),
            pending: requests.into_iter().map(Some).collect(),
            live: (0..n).map(|_| None).collect(),
            left: n,
            now: 0.0,
            totals: SimTotals::default(),
        }
    }

    fn run(mut self) -> Result<(Vec<SimOutcome>, SimTotals), SimError> {
        while self.left > 0 {
            if self.now > self.cfg.time_limit_s {
                return Err(SimError::TimeLimit(self.cfg.time_limit_s));
            }
            self.deliver_due();
            let plan = self.sched.schedule(self.now);
            if plan.items.is_empty() && plan.kv_ops.is_empty() {
                self.collect(); // a request refused at admission failed without a step
                if self.left > 0 {
                    self.wait()?;
                }
                continue;
            }
            self.step(&plan)?;
        }
        self.totals.end_s = self.now;
        self.totals.counters = self.sched.stats().counters;
        self.check_empty()?;
        let outcomes = self.live.into_iter().flatten().map(|l| l.out).collect();
        Ok((outcomes, self.totals))
    }

    /// Adds requests that have arrived and resumes those whose tool is done.
    fn deliver_due(&mut self) {
        while let Some(&Reverse((Time(t), i))) = self.arrivals.peek() {
            if t > self.now {
                break;
            }
            self.arrivals.pop();
            let r = self.pending[i].take().expect("each request arrives once");
            self.admit(i, r);
        }
        while let Some(&Reverse((Time(t), i))) = self.resumes.peek() {
            if t > self.now {
                break;
            }
            self.resumes.pop();
            let live = self.live[i].as_mut().expect("a resumed request is live");
            let (_, tokens) = live.tools.pop_front().expect("a pause has its tool");
            live.last_token_s = None;
            self.sched.resume(i as u64 + 1, tokens, self.now);
        }
    }

    fn admit(&mut self, i: usize, r: SimRequest) {
        let (tx, rx) = unbounded_channel();
        let out = SimOutcome {
            arrival_s: r.arrival_s,
            prompt_tokens: r.prompt.len(),
            ..SimOutcome::default()
        };
        let req = NewRequest {
            prompt: r.prompt,
            max_tokens: r.max_tokens,
            ignore_eos: true,
            sampling: SamplingParams::default(),
            events: tx,
            intercept: r.intercept,
            constraint: None,
            prediction: Vec::new(),
        };
        self.sched.add(i as u64 + 1, req, r.arrival_s);
        self.live[i] = Some(Live {
            rx,
            tools: r.tools,
            out,
            last_token_s: None,
            done: false,
        });
    }

    /// Nothing to run: moves time to the next arrival or tool result, or by one idle tick
    /// when requests wait (placement may change as paused requests' tools run on).
    fn wait(&mut self) -> Result<(), SimError> {
        let next = [self.arrivals.peek(), self.resumes.peek()]
            .into_iter()
            .flatten()
            .map(|Reverse((Time(t), _))| *t)
            .fold(f64::INFINITY, f64::min);
        let waiting = self.sched.waiting_len() > 0;
        let to = if waiting {
            next.min(self.now + self.cfg.idle_tick_s)
        } else {
            next
        };
        if !to.is_finite() {
            return Err(SimError::Stalled {
                now: self.now,
                left: self.left,
            });
        }
        self.now = to.max(self.now);
        Ok(())
    }

    fn step(&mut self, plan: &StepPlan) -> Result<(), SimError> {
        let runner = &self.runner;
        let dt = self.cfg.cost.seconds(plan, |at| match at {
            Loc::Device(seq) => runner.seq(seq).len(),
            Loc::Host(h) => runner.host().get(&h).map_or(0, Vec::len),
        });
        let result = self.runner.execute(plan)?;
        self.now += dt;
        let recomputed = self.sched.update(plan, &result, self.now);
        self.totals.steps += 1;
        if !plan.items.is_empty() {
            self.totals.forward_s += dt;
            self.totals.recompute_s += dt * recomputed as f64 / plan.batch_tokens() as f64;
            self.totals.forward_steps += 1;
            self.totals.passes += result.passes;
        }
        self.collect();
        Ok(())
    }

    /// Reads every live request's events.
    fn collect(&mut self) {
        let now = self.now;
        for (i, slot) in self.live.iter_mut().enumerate() {
            let Some(l) = slot.as_mut().filter(|l| !l.done) else {
                continue;
            };
            while let Ok(e) = l.rx.try_recv() {
                on_event(l, e, now, i, &mut self.resumes);
            }
            if l.done {
                self.left -= 1;
            }
        }
    }

    /// Frees what finished requests left retained and checks the runner holds nothing.
    fn check_empty(&mut self) -> Result<(), SimError> {
        self.sched.evict_all_retained();
        let plan = self.sched.schedule(self.now);
        self.runner.execute(&plan)?;
        let (cells, buffers) = (self.runner.used_cells(), self.runner.host().len());
        if cells > 0 || buffers > 0 || self.sched.kv().used_cells() > 0 {
            return Err(SimError::Leak { cells, buffers });
        }
        Ok(())
    }
}

fn on_event(
    l: &mut Live,
    e: Event,
    now: f64,
    i: usize,
    resumes: &mut BinaryHeap<Reverse<(Time, usize)>>,
) {
    match e {
        Event::Token(_) => {
            l.out.output_tokens += 1;
            l.out.first_token_s.get_or_insert(now);
            if let Some(t) = l.last_token_s {
                l.out.itl_s.push(now - t);
            }
            l.last_token_s = Some(now);
        }
        Event::Admitted { cached_tokens } => l.out.cached_tokens = cached_tokens,
        Event::Intercepted { .. } => {
            let d = l.tools.front().map_or(0.0, |t| t.0);
            l.out.tool_time_s += d;
            resumes.push(Reverse((Time(now + d), i)));
        }
        Event::Finished { usage, .. } => {
            l.out.ok = true;
            l.out.prompt_tokens = usage.input_tokens();
            l.out.cached_tokens = usage.cached_tokens;
            l.out.finish_s = now;
            l.done = true;
        }
        Event::Failed(msg) => {
            l.out.error = Some(msg);
            l.out.finish_s = now;
            l.done = true;
        }
        Event::Logprobs(_) | Event::PromptLogprobs(_) | Event::Predicted { .. } => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PlanItem;

    fn item(start_pos: usize, n: usize) -> PlanItem {
        PlanItem {
            request: 1,
            seq: 0,
            start_pos,
            tokens: vec![5; n],
            sample: None,
            mask: None,
            score: None,
            draft: 0,
            draft_masks: Vec::new(),
        }
    }

    #[test]
    fn a_step_prices_its_tokens_the_kv_its_rows_read_and_its_copies() {
        let model = CostModel {
            fwd_base_s: 0.01,
            fwd_per_token_s: 0.001,
            attn_per_pair_s: 1e-7,
            attn_row_per_pair_s: 1e-6,
            sample_per_row_s: 1e-3,
            swap_out_per_token_s: 0.002,
            swap_in_per_token_s: 0.001,
            swap_base_s: 0.0,
            kv_bytes_per_token: 1,
        };
        let mut cost = StepCost {
            model,
            kv_read_per_token_s: 1e-5,
            overlap_copies: false,
        };
        let plan = StepPlan {
            kv_ops: vec![
                KvOp::SwapOut {
                    seq: 1,
                    handle: 9,
                    tokens: 100,
                },
                KvOp::SwapIn { seq: 2, handle: 8 },
            ],
            items: vec![
                PlanItem {
                    sample: Some(SamplingParams::default()),
                    ..item(1000, 1)
                },
                item(0, 64),
            ],
            released: Vec::new(),
        };
        let host = |at: Loc| if at == Loc::Host(8) { 40 } else { 0 };
        // 65 tokens; rows read 1001 + 64 cells; attention visits 1001 pairs in a one-token
        // row and 64*65/2 in a tiled one; one row samples; copies 0.2 + 0.04.
        let compute = 0.01 + 0.065 + 1e-5 * 1065.0 + 1e-6 * 1001.0 + 1e-7 * 2080.0 + 1e-3;
        assert!((cost.seconds(&plan, host) - (compute + 0.24)).abs() < 1e-12);
        cost.overlap_copies = true;
        assert!((cost.seconds(&plan, host) - 0.24).abs() < 1e-12);
        let copies_only = StepPlan {
            items: Vec::new(),
            ..plan
        };
        assert!((cost.seconds(&copies_only, host) - 0.24).abs() < 1e-12);
    }

    #[test]
    fn a_prefix_copy_pays_a_save_and_a_restore_of_its_source() {
        let cost = StepCost {
            model: CostModel::default(),
            kv_read_per_token_s: 0.0,
            overlap_copies: false,
        };
        let copy = |from: Loc| StepPlan {
            kv_ops: vec![KvOp::CopyPrefix {
                from,
                seq: 3,
                keep: 10,
            }],
            items: Vec::new(),
            released: Vec::new(),
        };
        // Slot 5 and buffer 7 hold 30 tokens: the whole of them is copied, whatever `keep`.
        let held = |_: Loc| 30;
        let m = CostModel::default();
        let from_slot = cost.seconds(&copy(Loc::Device(5)), held);
        assert!((from_slot - m.t_swap_out(30) - m.t_swap_in(30)).abs() < 1e-12);
        let from_host = cost.seconds(&copy(Loc::Host(7)), held);
        assert!((from_host - m.t_swap_in(30)).abs() < 1e-12);
    }

    #[test]
    fn each_pass_past_the_first_pays_the_base_again() {
        let cost = StepCost {
            model: CostModel::default(),
            kv_read_per_token_s: 0.0,
            overlap_copies: false,
        };
        let rows = |seqs: &[i32]| StepPlan {
            kv_ops: Vec::new(),
            items: seqs
                .iter()
                .map(|&seq| PlanItem { seq, ..item(0, 1) })
                .collect(),
            released: Vec::new(),
        };
        let side_by_side = cost.seconds(&rows(&[0, 1, 2, 3]), |_| 0);
        let scattered = cost.seconds(&rows(&[0, 2, 4, 6]), |_| 0);
        let base = CostModel::default().fwd_base_s;
        assert!((scattered - side_by_side - 3.0 * base).abs() < 1e-12);
    }
}
