//! Plain data shared by the engine, runners and the server: ids, sampling parameters,
//! new-request descriptions and the events a request's owner receives.

use std::sync::Arc;

use tokio::sync::mpsc::UnboundedSender;

pub type Token = i32;
pub type RequestId = u64;
pub type SeqId = i32;

/// How the runner picks the next token. `temperature == 0` means greedy. The penalties and
/// the logit bias apply in greedy mode too; `top_k`, `top_p` and `min_p` only when sampling.
#[derive(Clone, Debug, PartialEq)]
pub struct SamplingParams {
    pub temperature: f32,
    pub top_p: f32,
    /// Keep only the `top_k` most likely tokens; 0 keeps all.
    pub top_k: u32,
    /// Drop tokens whose probability is below `min_p` times the most likely one's; 0 keeps all.
    pub min_p: f32,
    pub penalties: Penalties,
    /// Added to the logits of these tokens before anything else (OpenAI's `logit_bias`).
    pub logit_bias: Vec<(Token, f32)>,
    pub seed: Option<u64>,
    /// Report each sampled token's log-probability with this many most likely alternatives
    /// (`Event::Logprobs`). A request that asks samples every token: no jump-forward.
    pub logprobs: Option<u32>,
    /// Score the prompt: each prompt token after the first gets its log-probability with this
    /// many alternatives (`Event::PromptLogprobs`). Such a request is prefilled whole: no KV
    /// of another request is reused for it, since reused positions have no logits.
    pub prompt_logprobs: Option<u32>,
}

impl Default for SamplingParams {
    fn default() -> Self {
        Self {
            temperature: 1.0,
            top_p: 1.0,
            top_k: 0,
            min_p: 0.0,
            penalties: Penalties::default(),
            logit_bias: Vec::new(),
            seed: None,
            logprobs: None,
            prompt_logprobs: None,
        }
    }
}

/// A sampled token's log-probability under the model (its raw logits, before penalties,
/// bias, temperature or a grammar's mask) and the most likely tokens with theirs, best first.
#[derive(Clone, Debug, PartialEq)]
pub struct TokenLogprobs {
    pub logprob: f32,
    pub top: Vec<(Token, f32)>,
}

/// Penalties on tokens the request has already sampled: OpenAI's additive `frequency`
/// (times the count) and `presence` (once), and the multiplicative `repeat` of vLLM and
/// llama.cpp (`repetition_penalty`: 1 is off).
#[derive(Clone, Debug, PartialEq)]
pub struct Penalties {
    pub repeat: f32,
    pub frequency: f32,
    pub presence: f32,
}

impl Default for Penalties {
    fn default() -> Self {
        Self {
            repeat: 1.0,
            frequency: 0.0,
            presence: 0.0,
        }
    }
}

impl Penalties {
    pub fn is_off(&self) -> bool {
        self.repeat == 1.0 && self.frequency == 0.0 && self.presence == 0.0
    }
}

/// A request as the server hands it to the engine: already tokenized and validated.
#[derive(Debug)]
pub struct NewRequest {
    pub prompt: Vec<Token>,
    pub max_tokens: usize,
    pub ignore_eos: bool,
    pub sampling: SamplingParams,
    pub events: UnboundedSender<Event>,
    /// Where the request pauses for a tool (none by default).
    pub intercept: InterceptSpec,
    /// Constrained decoding (a grammar over the generated tokens); none costs nothing.
    pub constraint: Option<Constraint>,
    /// Predicted output (OpenAI's `prediction`): tokens the output is expected to repeat,
    /// verified as a speculative draft (`predict`). Empty: none. Used with a constraint only
    /// when it can roll back (`TokenConstraint::can_rollback`).
    pub prediction: Vec<Token>,
}

/// The tokens a constrained request may sample next: token `t` is allowed when bit `t % 32`
/// of word `t / 32` is set.
pub type TokenMask = Arc<[u32]>;

/// A grammar (or any rule) over a request's generated tokens. The scheduler asks it for the
/// allowed tokens before each sample of the request and tells it every sampled token; the
/// runner applies the mask to the request's logits row.
pub trait TokenConstraint: Send {
    /// The tokens allowed next, or `None` when any token is (a lazy grammar not yet
    /// triggered). An error fails the request.
    fn allowed(&mut self) -> Result<Option<TokenMask>, String>;
    /// Records the token sampled under the last mask (end-of-generation tokens included).
    fn commit(&mut self, token: Token) -> Result<(), String>;
    /// Asked after each commit: the output just completed something its owner must act on
    /// before decoding goes on (a turn of server-side tool calls); the request then pauses
    /// for the named tool in this very step, as at an interception trigger. When the token
    /// was an end-of-generation token, the request pauses instead of finishing: the token
    /// stays in the request's context (it ends the turn) but is not output.
    fn pause_requested(&mut self) -> Option<String> {
        None
    }
    /// The request resumed with appended tokens (a tool's result, not generated): the
    /// constraint may change mode (e.g. free text after a forced call).
    fn resumed(&mut self) {}
    /// Asked after each commit: tokens that must come next whatever the model would say (a
    /// grammar's fixed text, such as a call's closing tag), in the model's own tokenization
    /// and never an end-of-generation token. The engine appends them without sampling
    /// (jump-forward: they run through the model as one chunk in the next step) and commits
    /// each one, as if sampled.
    fn forced(&mut self) -> Vec<Token> {
        Vec::new()
    }
    /// Asked after an end-of-generation token was committed: whether it ended what the
    /// constraint enforces (a grammar that allowed the end because its output is complete).
    /// The request then finishes even with `ignore_eos`, which keeps only free text going:
    /// past a complete grammar there is nothing left but more end tokens.
    fn complete(&self) -> bool {
        false
    }
    /// Whether `rollback` can undo commits. Only such a constraint gets speculative drafts
    /// (a request's `prediction`): the scheduler commits a draft's tokens to learn the mask
    /// of each row after them, asks `forced` after each, rolls them all back, and commits
    /// again those the step accepts. So `forced` must then only query, never change state.
    fn can_rollback(&self) -> bool {
        false
    }
    /// Undoes the last `n` commits.
    fn rollback(&mut self, n: usize) -> Result<(), String> {
        match n {
            0 => Ok(()),
            _ => Err("this constraint cannot roll back".into()),
        }
    }
}

/// A request's constraint (a box, so requests stay `Debug`).
pub struct Constraint(pub Box<dyn TokenConstraint>);

impl std::fmt::Debug for Constraint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Constraint")
    }
}

/// Whether `mask` allows `token`.
pub fn mask_allows(mask: &[u32], token: Token) -> bool {
    let t = token as usize;
    mask.get(t / 32).is_some_and(|w| w >> (t % 32) & 1 == 1)
}

/// When a request pauses for an external tool, and which tool that is (the interception
/// time estimator keeps a history per tool name).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct InterceptSpec {
    /// Pause when the generated tokens end with one of these sequences (e.g. the tokens that
    /// close a tool call). Matched against generated tokens only.
    pub triggers: Vec<Vec<Token>>,
    /// Scripted pauses: after this many generated tokens in total, pause for the named tool.
    /// Ascending.
    pub after_tokens: Vec<(usize, String)>,
}

/// Why generation ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FinishReason {
    /// End-of-generation token.
    Stop,
    /// `max_tokens` or the sequence's KV capacity reached.
    Length,
}

/// Token counts of a finished request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// The prompt the request was submitted with.
    pub prompt_tokens: usize,
    pub completion_tokens: usize,
    /// Prompt tokens whose KV was reused from a retained sequence instead of prefilled.
    pub cached_tokens: usize,
    /// Tokens appended by resumes (tool results and the text around them), over all pauses.
    pub appended_tokens: usize,
    /// Predicted tokens drafted and taken as output (`NewRequest::prediction`).
    pub accepted_prediction_tokens: usize,
    /// Predicted tokens drafted and rejected (their rows were computed for nothing).
    pub rejected_prediction_tokens: usize,
}

impl Usage {
    /// Every token the request took as input: its prompt and what its resumes appended.
    pub fn input_tokens(&self) -> usize {
        self.prompt_tokens + self.appended_tokens
    }
}

/// What the engine tells a request's owner.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A generated token (an EOG token is not sent).
    Token(Token),
    /// The log-probabilities of the next sampled token, sent just before its `Token` event
    /// (and for a sampled end-of-generation token, which has none), only when asked for.
    Logprobs(TokenLogprobs),
    /// Prompt tokens (in order, from the second) with their log-probabilities given the
    /// tokens before them, as prefill chunks score them; only when asked for.
    PromptLogprobs(Vec<(Token, TokenLogprobs)>),
    /// The request got its KV slot: `cached_tokens` of its prompt were reused (the figure the
    /// end's `Usage` reports), for an owner that ends the request itself (a stop string).
    Admitted {
        cached_tokens: usize,
    },
    Finished {
        reason: FinishReason,
        usage: Usage,
    },
    /// The request paused: its output reached an interception trigger (`tool` names it;
    /// "trigger" for token triggers). It waits for `EngineHandle::resume` or a cancel.
    Intercepted {
        tool: String,
        generated: usize,
        /// The last token in the request's context (for a pause at the end of a turn, the
        /// end-of-turn token, which is not output).
        last: Option<Token>,
    },
    /// The request failed inside the engine (e.g. a decode error); its KV was freed.
    Failed(String),
    /// A step verified predicted tokens (`NewRequest::prediction`): how many were taken as
    /// output and how many rejected, for an owner that ends the request itself.
    Predicted {
        accepted: usize,
        rejected: usize,
    },
}
