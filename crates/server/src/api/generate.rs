//! One generation as the handlers see it: submit a tokenized prompt to the engine, then pull
//! text pieces (UTF-8-complete, stop strings cut), each token's log-probabilities when the
//! request asked for them, and a final finish reason with usage.
//! Dropping a `Generation` before it ends cancels the request, which frees its slot within
//! one engine step: this is how a client disconnect reaches the engine. A request with
//! scripted tool segments (`--allow-scripted`) is paused by the engine after each segment;
//! the generation then waits the tool's time and resumes it with the tool's tokens. A chat
//! completion with server-side tools pauses at the end of each turn of server-side calls;
//! the generation awaits the calls (started while they were decoded), hands their results
//! on as a piece, and resumes the request with them rendered by the chat template.

use std::collections::VecDeque;
use std::sync::Arc;

use std::time::Duration;

use tandem_engine::{
    Constraint, Event, FinishReason, InterceptSpec, NewRequest, RequestId, Token, TokenLogprobs,
    Usage,
};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};
use tokio::task::{JoinError, JoinHandle};

use crate::api::logprobs::TokenLp;
use crate::api::scripted::scripted;
use crate::api::server_calls::{ServerCalls, ToolResult};
use crate::api::types::GenParams;
use crate::error::ApiError;
use crate::state::AppState;
use crate::text::{StopMatcher, StopOutcome, Utf8Stream};

#[derive(Debug, Clone, PartialEq)]
pub enum Piece {
    Text(String),
    /// The log-probabilities of the next generated token (when the request asked for them),
    /// queued before its text.
    Logprobs(TokenLp),
    /// Prompt tokens with their log-probabilities (a prompt the request asked to score),
    /// from the second token on, as prefill chunks score them.
    PromptLogprobs(Vec<TokenLp>),
    /// Results of server-side calls; when `continues`, the next text is a new assistant
    /// turn (else the generation ends after them: the turn also called client-side tools).
    ToolResults {
        results: Vec<ToolResult>,
        continues: bool,
    },
    Done {
        finish_reason: &'static str,
        usage: Usage,
        /// The stop string that ended the generation, if one did.
        stop: Option<String>,
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
    /// Prompt tokens the engine reused (`Event::Admitted`), for a usage the generation makes
    /// itself when a stop string ends it.
    cached_tokens: usize,
    /// Tokens this generation has had the engine append on resume, for the same usage.
    appended_tokens: usize,
    /// Predicted tokens accepted and rejected so far (`Event::Predicted`), for the same.
    predicted: (usize, usize),
    ended: bool,
    /// Scripted tool calls still to come: how long each takes and the tokens it returns.
    tools: VecDeque<(f64, Vec<Token>)>,
    server: Option<ServerCalls>,
    /// Server-side calls being awaited, and the end-of-turn token they resume after.
    waiting: Option<(JoinHandle<Vec<ToolResult>>, Option<Token>)>,
    /// The end, held back until the last turn's server-side calls have returned.
    deferred: Option<(&'static str, Usage)>,
    /// The engine's figures for the next token (`Event::Logprobs`), until it arrives.
    next_logprobs: Option<TokenLogprobs>,
}

/// A whole generation, read to its end.
pub struct Collected {
    /// Each turn's text and the results of its server-side calls (none for the last turn
    /// unless it ended with calls).
    pub turns: Vec<(String, Vec<ToolResult>)>,
    pub finish: &'static str,
    pub usage: Usage,
    /// The stop string that ended it, if one did.
    pub stop: Option<String>,
    /// Every generated token's log-probabilities, when the request asked for them.
    pub logprobs: Vec<TokenLp>,
    /// The prompt's, from its second token, when the request asked for them.
    pub prompt_logprobs: Vec<TokenLp>,
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
            return Err(ApiError::context_length(format!(
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
            sampling: p.sampling.clone(),
            events: tx,
            intercept: script
                .as_ref()
                .map_or_else(InterceptSpec::default, |s| s.intercept.clone()),
            constraint,
            // No output is longer than the context.
            prediction: (p.prediction.as_deref())
                .map_or_else(Vec::new, |t| t[..t.len().min(cap)].to_vec()),
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
            cached_tokens: 0,
            appended_tokens: 0,
            predicted: (0, 0),
            ended: false,
            tools: script.map_or_else(VecDeque::new, |s| s.tools),
            server: None,
            waiting: None,
            deferred: None,
            next_logprobs: None,
        })
    }

    /// The prompt's length in tokens.
    pub fn prompt_tokens(&self) -> usize {
        self.prompt_tokens
    }

    /// Runs the request's server-side tool calls (chat completions with `server_tools`).
    pub fn with_server_calls(mut self, calls: ServerCalls) -> Self {
        self.server = Some(calls);
        self
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
            let outcome = match self.waiting.as_mut() {
                // Nothing else can arrive meanwhile: the request is paused or finished. The
                // handle stays in `self` while awaited, so a drop (client gone) aborts it.
                Some((calls, eot)) => {
                    let server = self.server.as_mut();
                    let done = await_staging(calls, server, &self.st, self.id, *eot).await;
                    let eot = self.waiting.take().and_then(|w| w.1);
                    match done {
                        Ok(results) => self.on_results(results, eot),
                        Err(e) => Err(ApiError::Internal(format!("server-side tools: {e}"))),
                    }
                }
                None => {
                    let event = self.rx.recv().await;
                    self.handle(event)
                }
            };
            if let Err(e) = outcome {
                self.ended = true;
                return Some(Err(e));
            }
        }
    }

    /// Reads the whole generation by turns.
    pub async fn collect_turns(mut self) -> Result<Collected, ApiError> {
        let mut turns = vec![(String::new(), Vec::new())];
        let mut logprobs = Vec::new();
        let mut prompt_logprobs = Vec::new();
        while let Some(p) = self.next().await {
            let turn = turns.last_mut().expect("a turn");
            match p? {
                Piece::Text(t) => turn.0.push_str(&t),
                Piece::Logprobs(lp) => logprobs.push(lp),
                Piece::PromptLogprobs(lps) => prompt_logprobs.extend(lps),
                Piece::ToolResults { results, continues } => {
                    turn.1 = results;
                    if continues {
                        turns.push((String::new(), Vec::new()));
                    }
                }
                Piece::Done {
                    finish_reason,
                    usage,
                    stop,
                } => {
                    return Ok(Collected {
                        turns,
                        finish: finish_reason,
                        usage,
                        stop,
                        logprobs,
                        prompt_logprobs,
                    })
                }
            }
        }
        Err(ApiError::Internal(
            "generation ended without a result".into(),
        ))
    }

    fn handle(&mut self, event: Option<Event>) -> Result<(), ApiError> {
        match event {
            Some(Event::Token(t)) => self.on_token(t),
            Some(Event::Admitted { cached_tokens }) => self.cached_tokens = cached_tokens,
            Some(Event::Predicted { accepted, rejected }) => {
                self.predicted.0 += accepted;
                self.predicted.1 += rejected;
            }
            Some(Event::Logprobs(lp)) => self.next_logprobs = Some(lp),
            Some(Event::PromptLogprobs(entries)) => {
                let model = &self.st.model;
                let lps = entries.iter().map(|(t, lp)| TokenLp::new(model, *t, lp));
                self.queue.push_back(Piece::PromptLogprobs(lps.collect()));
            }
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
                if !self.await_server_calls(None) {
                    self.end(finish, usage);
                } else {
                    self.deferred = Some((finish, usage));
                }
            }
            Some(Event::Intercepted { last, .. }) => {
                tracing::debug!(request = self.id, "paused at a tool call");
                if !self.await_server_calls(last) {
                    self.run_tool();
                }
            }
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
        self.appended_tokens += tokens.len();
        let (engine, id) = (self.st.engine.clone(), self.id);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
            engine.resume(id, tokens);
        });
    }

    /// Ends the turn for the server-side calls; false when the request has none.
    fn await_server_calls(&mut self, eot: Option<Token>) -> bool {
        let Some(server) = self.server.as_mut() else {
            return false;
        };
        let calls = server.end_turn();
        if calls.is_empty() && eot.is_none() {
            return false; // finished without server-side calls to report
        }
        if eot.is_some() {
            server.begin_staging(&calls);
        }
        let task = tokio::spawn(calls.results(server.ids()));
        self.waiting = Some((task, eot));
        true
    }

    /// The turn's calls returned: the client sees their results; the request resumes with
    /// them, or ends if it had finished.
    fn on_results(&mut self, results: Vec<ToolResult>, eot: Option<Token>) -> Result<(), ApiError> {
        metrics::counter!("tandem_server_tool_calls_total").increment(results.len() as u64);
        let continues = self.deferred.is_none();
        self.queue.push_back(Piece::ToolResults {
            results: results.clone(),
            continues,
        });
        if let Some((finish, usage)) = self.deferred.take() {
            self.end(finish, usage);
            return Ok(());
        }
        let (Some(server), Some(eot)) = (self.server.as_mut(), eot) else {
            return Ok(());
        };
        let tokens = server.resume_tokens(&results, eot)?;
        tracing::debug!(
            request = self.id,
            calls = results.len(),
            tokens = tokens.len(),
            "resumed with tool results"
        );
        self.appended_tokens += tokens.len();
        match server.take_staging() {
            Some(s) if !s.staged().is_empty() => {
                let (staged, keep) = (s.staged().len(), s.keep(&tokens));
                tracing::debug!(request = self.id, staged, keep, "staged results");
                self.st.engine.resume_staged(self.id, keep, tokens);
            }
            _ => self.st.engine.resume(self.id, tokens),
        }
        Ok(())
    }

    fn on_token(&mut self, t: Token) {
        self.completion_tokens += 1;
        if let Some(lp) = self.next_logprobs.take() {
            if !self.ended {
                let entry = TokenLp::new(&self.st.model, t, &lp);
                self.queue.push_back(Piece::Logprobs(entry));
            }
        }
        let piece = self.st.model.piece(t);
        let text = self.utf8.push(&piece);
        self.emit_text(&text);
    }

    fn emit_text(&mut self, text: &str) {
        if self.ended || text.is_empty() {
            return;
        }
        if let Some(server) = self.server.as_mut() {
            server.push(text);
        }
        match self.stop.push(text) {
            StopOutcome::Emit(s) => self.push_text(s),
            StopOutcome::Stopped(s, stop) => {
                self.push_text(s);
                self.st.engine.cancel(self.id);
                let usage = Usage {
                    prompt_tokens: self.prompt_tokens,
                    completion_tokens: self.completion_tokens,
                    cached_tokens: self.cached_tokens,
                    appended_tokens: self.appended_tokens,
                    accepted_prediction_tokens: self.predicted.0,
                    rejected_prediction_tokens: self.predicted.1,
                };
                self.end_with("stop", usage, Some(stop));
            }
        }
    }

    fn push_text(&mut self, s: String) {
        if !s.is_empty() {
            self.queue.push_back(Piece::Text(s));
        }
    }

    fn end(&mut self, finish_reason: &'static str, usage: Usage) {
        self.end_with(finish_reason, usage, None);
    }

    fn end_with(&mut self, finish_reason: &'static str, usage: Usage, stop: Option<String>) {
        self.ended = true;
        metrics::counter!("tandem_finished_requests_total", "finish_reason" => finish_reason)
            .increment(1);
        self.queue.push_back(Piece::Done {
            finish_reason,
            usage,
            stop,
        });
    }
}

impl Drop for Generation {
    fn drop(&mut self) {
        if let Some((calls, _)) = self.waiting.take() {
            calls.abort(); // the calls' tools are stopped with it
        }
        if !self.ended {
            self.st.engine.cancel(self.id);
        }
    }
}

/// OpenAI's usage object. `prompt_tokens` counts every input token: the prompt and what
/// resumes appended (server-side tools' results, scripted tools' tokens), as OpenAI counts a
/// hosted tool's output as input; `appended_tokens` (an extension) says how many of them
/// resumes appended. `total_tokens` is then the length of the whole conversation.
pub fn usage_json(u: &Usage) -> serde_json::Value {
    serde_json::json!({
        "prompt_tokens": u.input_tokens(),
        "completion_tokens": u.completion_tokens,
        "total_tokens": u.input_tokens() + u.completion_tokens,
        "prompt_tokens_details": {
            "cached_tokens": u.cached_tokens,
            "appended_tokens": u.appended_tokens,
        },
        "completion_tokens_details": {
            "accepted_prediction_tokens": u.accepted_prediction_tokens,
            "rejected_prediction_tokens": u.rejected_prediction_tokens,
        },
    })
}

/// The usage of a request with several choices, in choice order, `per_prompt` (`n`) to each
/// of its prompts (a text completion may have several): each prompt counted once, as its
/// first choice saw it (its cached tokens are the ones reused from earlier requests; the
/// prompt's other choices copy the prompt from it), and every choice's completion and
/// appended tokens.
pub fn combined_usage(choices: &[Usage], per_prompt: usize) -> Usage {
    let mut total = Usage::default();
    for group in choices.chunks(per_prompt.max(1)) {
        let first = group[0];
        total.prompt_tokens += first.prompt_tokens;
        total.cached_tokens += first.cached_tokens;
        total.completion_tokens += group.iter().map(|u| u.completion_tokens).sum::<usize>();
        total.appended_tokens += group.iter().map(|u| u.appended_tokens).sum::<usize>();
        for u in group {
            total.accepted_prediction_tokens += u.accepted_prediction_tokens;
            total.rejected_prediction_tokens += u.rejected_prediction_tokens;
        }
    }
    total
}

/// Waits for a pause's server-side calls; meanwhile, when the pause is staging (it has an
/// end-of-turn token to resume after), gives the engine the tool turn's known start each
/// time it grows (`staging.rs`).
async fn await_staging(
    calls: &mut JoinHandle<Vec<ToolResult>>,
    server: Option<&mut ServerCalls>,
    st: &AppState,
    id: RequestId,
    eot: Option<Token>,
) -> Result<Vec<ToolResult>, JoinError> {
    let (Some(server), Some(eot)) = (server, eot) else {
        return calls.await;
    };
    loop {
        let Some(staging) = server.staging_mut() else {
            return calls.await;
        };
        tokio::select! {
            biased;
            done = &mut *calls => return done,
            () = staging.changed() => {}
        }
        if let Some(tokens) = server.stage_more(eot) {
            st.engine.stage(id, tokens);
        }
    }
}

#[cfg(test)]
mod usage_tests {
    use super::*;

    #[test]
    fn choices_share_the_prompt_and_add_their_completions() {
        let u = |completion, cached, appended| Usage {
            prompt_tokens: 30,
            completion_tokens: completion,
            cached_tokens: cached,
            appended_tokens: appended,
            ..Usage::default()
        };
        let total = combined_usage(&[u(5, 10, 0), u(7, 28, 4), u(1, 28, 2)], 3);
        assert_eq!(
            (
                total.prompt_tokens,
                total.completion_tokens,
                total.cached_tokens,
                total.appended_tokens
            ),
            (30, 13, 10, 6)
        );
    }

    #[test]
    fn each_prompt_counts_once_with_its_own_choices() {
        let u = |prompt, completion, cached| Usage {
            prompt_tokens: prompt,
            completion_tokens: completion,
            cached_tokens: cached,
            appended_tokens: 0,
            ..Usage::default()
        };
        // Two prompts (30 and 12 tokens), two choices each.
        let choices = [u(30, 5, 8), u(30, 6, 30), u(12, 7, 0), u(12, 9, 12)];
        let total = combined_usage(&choices, 2);
        assert_eq!(
            (
                total.prompt_tokens,
                total.completion_tokens,
                total.cached_tokens
            ),
            (42, 27, 8)
        );
    }

    #[test]
    fn appended_tokens_are_prompt_tokens_and_part_of_the_total() {
        let u = Usage {
            prompt_tokens: 30,
            completion_tokens: 12,
            cached_tokens: 20,
            appended_tokens: 8,
            ..Usage::default()
        };
        let j = usage_json(&u);
        assert_eq!(j["prompt_tokens"], 38);
        assert_eq!(j["total_tokens"], 50);
        assert_eq!(j["prompt_tokens_details"]["appended_tokens"], 8);
        assert_eq!(j["prompt_tokens_details"]["cached_tokens"], 20);
    }
}
