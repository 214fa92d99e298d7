//! One generation as the handlers see it: submit a tokenized prompt to the engine, then pull
//! text pieces (UTF-8-complete, stop strings cut) and a final finish reason with usage.
//! Dropping a `Generation` before it ends cancels the request, which frees its slot within
//! one engine step: this is how a client disconnect reaches the engine. A request with
//! scripted tool segments (`--allow-scripted`) is paused by the engine after each segment;
//! the generation then waits the tool's time and resumes it with the tool's tokens.

use std::collections::VecDeque;
use std::sync::Arc;

use std::time::Duration;

use tandem_engine::{
    Constraint, Event, FinishReason, InterceptSpec, NewRequest, RequestId, SamplingParams, Token,
    Usage,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::types::GenParams;
use crate::error::ApiError;
use crate::script::{self, Segment};
use crate::state::AppState;
use crate::text::{StopMatcher, StopOutcome, Utf8Stream};

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    Done {
        finish_reason: &'static str,
        usage: Usage,
    },
}

pub struct Generation {
    st: Arc<AppState>,
    id: RequestId,
    rx: UnboundedReceiver<Event>,
    utf8: Utf8Stream,
    stop: StopMatcher,
    queue: VecDeque<Piece>,
    prompt_tokens: usize,
    completion_tokens: usize,
    ended: bool,
    /// Scripted tool calls still to come: how long each takes and the tokens it returns.
    tools: VecDeque<(f64, Vec<Token>)>,
}

/// The engine-facing parts of a scripted request.
struct Scripted {
    intercept: InterceptSpec,
    max_tokens: usize,
    tools: VecDeque<(f64, Vec<Token>)>,
}

/// Checks a request's scripted segments and tokenizes its tool results.
fn scripted(st: &AppState, segments: &[Segment], prompt_len: usize) -> Result<Scripted, ApiError> {
    if !st.allow_scripted {
        return Err(ApiError::invalid(
            "`segments` (scripted tool calls, for benchmarks) needs a server started with --allow-scripted",
            "segments",
        ));
    }
    script::check(segments).map_err(|m| ApiError::invalid(m, "segments"))?;
    let need = prompt_len + script::total_decode(segments) + script::total_results(segments);
    if need >= st.cells_per_seq {
        return Err(ApiError::ContextLength(format!(
            "the prompt, scripted output and tool results take {need} tokens; a sequence holds {}",
            st.cells_per_seq
        )));
    }
    let tools = script::tools(segments)
        .iter()
        .enumerate()
        .map(|(i, t)| (t.duration_s, result_tokens(st, t.result_tokens, i as u64)))
        .collect();
    Ok(Scripted {
        intercept: script::intercept_spec(segments),
        max_tokens: script::total_decode(segments),
        tools,
    })
}

/// Exactly `n` tokens of filler text.
fn result_tokens(st: &AppState, n: usize, seed: u64) -> Vec<Token> {
    let text = script::filler(n + 8, seed);
    let mut t = st.model.tokenize(&format!(" {text}"), false, false);
    while t.len() < n {
        t.extend_from_within(..);
    }
    t.truncate(n);
    t
}

impl Generation {
    /// Checks the prompt against the context and queues the request.
    pub fn start(
        st: Arc<AppState>,
        prompt: Vec<Token>,
        p: &GenParams,
        constraint: Option<Constraint>,
    ) -> Result<Self, ApiError> {
        let cap = st.cells_per_seq;
        if prompt.len() >= cap {
            return Err(ApiError::ContextLength(format!(
                "This model's maximum context length is {cap} tokens per sequence; your prompt has {} tokens (at least one must remain to generate).",
                prompt.len()
            )));
        }
        let prompt_tokens = prompt.len();
        let room = cap - prompt_tokens;
        let script = match &p.segments {
            Some(s) => Some(scripted(&st, s, prompt_tokens)?),
            None => None,
        };
        let (tx, rx) = unbounded_channel();
        let req = NewRequest {
            prompt,
            max_tokens: script
                .as_ref()
                .map(|s| s.max_tokens)
                .or(p.max_tokens)
                .map_or(room, |m| m.min(room)),
            ignore_eos: p.ignore_eos || script.is_some(),
            sampling: SamplingParams {
                temperature: p.temperature,
                top_p: p.top_p,
                seed: p.seed,
            },
            events: tx,
            intercept: script
                .as_ref()
                .map_or_else(InterceptSpec::default, |s| s.intercept.clone()),
            constraint,
        };
        let id = st.engine.submit(req)?;
        Ok(Self {
            st,
            id,
            rx,
            utf8: Utf8Stream::default(),
            stop: StopMatcher::new(p.stop.clone()),
            queue: VecDeque::new(),
            prompt_tokens,
            completion_tokens: 0,
            ended: false,
            tools: script.map_or_else(VecDeque::new, |s| s.tools),
        })
    }

    /// The next piece; `None` after `Done` (or after an error).
    pub async fn next(&mut self) -> Option<Result<Piece, ApiError>> {
        loop {
            if let Some(p) = self.queue.pop_front() {
                return Some(Ok(p));
            }
            if self.ended {
                return None;
            }
            let event = self.rx.recv().await;
            if let Err(e) = self.handle(event) {
                self.ended = true;
                return Some(Err(e));
            }
        }
    }

    /// Reads the whole generation: its text and the final piece.
    pub async fn collect(mut self) -> Result<(String, &'static str, Usage), ApiError> {
        let mut text = String::new();
        while let Some(p) = self.next().await {
            match p? {
                Piece::Text(t) => text.push_str(&t),
                Piece::Done {
                    finish_reason,
                    usage,
                } => return Ok((text, finish_reason, usage)),
            }
        }
        Err(ApiError::Internal(
            "generation ended without a result".into(),
        ))
    }

    fn handle(&mut self, event: Option<Event>) -> Result<(), ApiError> {
        match event {
            Some(Event::Token(t)) => self.on_token(t),
            Some(Event::Finished { reason, usage }) => {
                let tail = self.utf8.finish();
                self.emit_text(&tail);
                if self.ended {
                    return Ok(());
                }
                let rest = self.stop.finish();
                self.push_text(rest);
                let finish = match reason {
                    FinishReason::Stop => "stop",
                    FinishReason::Length => "length",
                };
                self.end(finish, usage);
            }
            Some(Event::Intercepted { .. }) => self.run_tool(),
            Some(Event::Failed(m)) => return Err(ApiError::Internal(m)),
            None => return Err(ApiError::Internal("the engine stopped".into())),
        }
        Ok(())
    }

    /// Plays the next scripted tool: waits its time, then resumes the request with its
    /// tokens. If the client goes away meanwhile, the request is cancelled and the late
    /// resume is ignored by the engine.
    fn run_tool(&mut self) {
        let (seconds, tokens) = self.tools.pop_front().unwrap_or_default();
        let (engine, id) = (self.st.engine.clone(), self.id);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            engine.resume(id, tokens);
        });
    }

    fn on_token(&mut self, t: Token) {
        self.completion_tokens += 1;
        let piece = self.st.model.piece(t);
        let text = self.utf8.push(&piece);
        self.emit_text(&text);
    }

    fn emit_text(&mut self, text: &str) {
        if self.ended || text.is_empty() {
            return;
        }
        match self.stop.push(text) {
            StopOutcome::Emit(s) => self.push_text(s),
            StopOutcome::Stopped(s) => {
                self.push_text(s);
                self.st.engine.cancel(self.id);
                let usage = Usage {
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: self.completion_tokens,
                    cached_tokens: 0,
                };
                self.end("stop", usage);
            }
        }
    }

    fn push_text(&mut self, s: String) {
        if !s.is_empty() {
            self.queue.push_back(Piece::Text(s));
        }
    }

    fn end(&mut self, finish_reason: &'static str, usage: Usage) {
        self.ended = true;
        metrics::counter!("tandem_finished_requests_total", "finish_reason" => finish_reason)
            .increment(1);
        self.queue.push_back(Piece::Done {
            finish_reason,
            usage,
        });
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if !self.ended {
            self.st.engine.cancel(self.id);
        }
    }
}

pub fn usage_json(u: &Usage) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": u.prompt_tokens,
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.prompt_tokens + u.completion_tokens,
        "prompt_tokens_details": {"cached_tokens": u.cached_tokens},
    })
}
