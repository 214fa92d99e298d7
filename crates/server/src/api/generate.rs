//! One generation as the handlers see it: submit a tokenized prompt to the engine, then pull
//! text pieces (UTF-8-complete, stop strings cut) and a final finish reason with usage.
//! Dropping a `Generation` before it ends cancels the request, which frees its slot within
//! one engine step: this is how a client disconnect reaches the engine.

use std::collections::VecDeque;
use std::sync::Arc;

use tandem_engine::{Event, FinishReason, NewRequest, RequestId, SamplingParams, Token, Usage};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use crate::api::types::GenParams;
use crate::error::ApiError;
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
}

impl Generation {
    /// Checks the prompt against the context and queues the request.
    pub fn start(st: Arc<AppState>, prompt: Vec<Token>, p: &GenParams) -> Result<Self, ApiError> {
        let cap = st.cells_per_seq;
        if prompt.len() >= cap {
            return Err(ApiError::ContextLength(format!(
                "This model's maximum context length is {cap} tokens per sequence; your prompt has {} tokens (at least one must remain to generate).",
                prompt.len()
            )));
        }
        let prompt_tokens = prompt.len();
        let room = cap - prompt_tokens;
        let (tx, rx) = unbounded_channel();
        let req = NewRequest {
            prompt,
            max_tokens: p.max_tokens.map_or(room, |m| m.min(room)),
            ignore_eos: p.ignore_eos,
            sampling: SamplingParams {
                temperature: p.temperature,
                top_p: p.top_p,
                seed: p.seed,
            },
            events: tx,
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
            Some(Event::Failed(m)) => return Err(ApiError::Internal(m)),
            None => return Err(ApiError::Internal("the engine stopped".into())),
        }
        Ok(())
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
