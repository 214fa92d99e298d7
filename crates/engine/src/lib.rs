//! tandem's engine: requests, the scheduler, KV-cell accounting, the step plan handed to a
//! runner and the result it gets back. It does no I/O and owns no model: a [`Runner`]
//! executes plans (llama.cpp in `tandem-llama`, [`fake::FakeRunner`] in tests), and time comes
//! from a [`Clock`] so the same code runs in real and in virtual time.
//!
//! ```text
//!  EngineHandle::submit/cancel ──mpsc──► engine thread
//!     loop { drain inbox → Scheduler::add/cancel
//!            plan   = Scheduler::schedule(now)      (kv ops + tokens per request)
//!            result = Runner::execute(&plan)         (decode + sample, nothing decided)
//!            Scheduler::update(&plan, result, now) } ──► per-request Event channel
//! ```
//!
//! A request is a token sequence with a KV slot; each step processes the tokens it has not yet
//! run (a prefill chunk or one decode token) within a shared token budget, so prefill and
//! decode mix freely and appended tokens (a resumed tool call) take the same path as a prompt.
//!
//! A request can pause at an interception (a tool call): `Event::Intercepted` goes to its
//! owner, its KV is kept, swapped to a host pool or discarded by the interception policy
//! (InferCept's min-waste over measured costs), and `EngineHandle::resume` appends the tool's
//! output and continues it. `EngineHandle::stage` gives it the known start of that output
//! ahead of the resume, prefilled while it waits (`stage.rs`).
//!
//! [`sim::simulate`] runs the same scheduler in virtual time against a cost model.

mod admit;
pub mod clock;
pub mod compact;
pub mod cost;
pub mod drafter;
pub mod engine;
pub mod fake;
mod inflight;
mod intercept;
pub mod kv;
pub mod lookup;
pub mod plan;
pub mod policy;
pub mod predict;
pub mod prefix;
pub mod request;
pub mod scheduler;
pub mod sim;
mod stage;
pub mod swap;
pub mod types;
pub mod ubatch;

pub use clock::{Clock, ManualClock, SystemClock};
pub use cost::CostModel;
pub use engine::{spawn_engine, EngineHandle, SubmitError};
pub use plan::{KvOp, PlanItem, Sampled, ScoreRows, Scored, StepPlan, StepResult};
pub use policy::{InterceptPolicy, ResumeOrder};
pub use prefix::Loc;
pub use scheduler::{InterceptConfig, InterceptCounters, PrefixReuse, Scheduler, SchedulerConfig};
pub use swap::SwapHandle;
pub use types::{
    mask_allows, Constraint, Event, FinishReason, InterceptSpec, NewRequest, Penalties, RequestId,
    SamplingParams, SeqId, Token, TokenConstraint, TokenLogprobs, TokenMask, Usage,
};

/// Executes step plans on a model. Implementations carry out exactly what the plan says.
pub trait Runner {
    /// Applies the plan's KV operations, runs its tokens in one batch and samples where asked.
    fn execute(&mut self, plan: &StepPlan) -> Result<StepResult, RunnerError>;

    /// Measures the costs the interception policy weighs (called once, before serving).
    fn profile(&mut self) -> Result<CostModel, RunnerError>;
}

/// A failure of the runner; the requests in the failed plan are failed and their KV cleared.
#[derive(Debug, thiserror::Error)]
pub enum RunnerError {
    #[error("decode failed: {0}")]
    Decode(String),
    #[error("kv operation failed: {0}")]
    Kv(String),
}
