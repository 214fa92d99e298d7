//! Server-side tool calls of one chat completion. The generated text is parsed as it is
//! decoded; a call to a server-side tool starts as soon as its name is known and is fed its
//! arguments while the model is still writing them (partial execution, Conveyor). When the
//! request pauses at the end of the turn, the turn's calls are awaited together (they ran in
//! parallel), their results become the template's tool messages, and the rendered text is
//! what the request resumes with. Meanwhile, with partial execution, the part of that text
//! already known is staged for the engine to prefill (`staging.rs`).

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tandem_engine::Token;
use tandem_tools::runtime::{Finished, Running, ToolOutput};
use tandem_tools::{ParseEvent, ToolCallParser};

use crate::api::staging::{Source, StagedCall, Staging};
use crate::api::tool_calls::{CallIds, MessageBuilder, ToolPlan};
use crate::error::ApiError;
use crate::state::AppState;
use crate::tool_turn::appended_text;

/// A finished server-side call, as the client sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolResult {
    pub index: usize,
    pub id: String,
    pub name: String,
    pub output: ToolOutput,
    /// Seconds the result came after the call's arguments were complete: what the request
    /// waited on this tool (0 when partial execution had it done by then).
    pub wait_s: f64,
}

impl ToolResult {
    /// What the model reads (errors are marked as such).
    pub fn content(&self) -> String {
        content_of(&self.output)
    }

    /// The `tool` message for the conversation history.
    pub fn message(&self) -> Value {
        json!({"role": "tool", "tool_call_id": self.id, "name": self.name, "content": self.content()})
    }

    /// The stream's (and response's) view of the result.
    pub fn to_json(&self) -> Value {
        json!({"index": self.index, "tool_call_id": self.id, "name": self.name,
               "content": self.output.content, "is_error": self.output.is_error,
               "wait_s": self.wait_s})
    }
}

/// What the model reads of a tool's output (errors are marked as such).
fn content_of(output: &ToolOutput) -> String {
    if output.is_error {
        format!("Error: {}", output.content)
    } else {
        output.content.clone()
    }
}

/// A call of the turn: still running, or already returned (it aborted early).
enum CallState {
    Running(Box<Running>),
    Done(ToolOutput),
}

/// The server-side calls of a turn that just ended, to await.
pub struct TurnCalls(Vec<(usize, String, CallState)>);

impl TurnCalls {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// What staging follows: each call's final content or its published result start.
    fn staged_calls(&self, ids: &CallIds) -> Vec<StagedCall> {
        let call = |(index, name, state): &(usize, String, CallState)| StagedCall {
            id: ids.id(*index),
            name: name.clone(),
            source: match state {
                CallState::Running(run) => Source::Running {
                    rx: run.result_prefix(),
                    open: true,
                },
                CallState::Done(output) => Source::Known(content_of(output)),
            },
        };
        self.0.iter().map(call).collect()
    }

    /// Waits for every call (they run concurrently).
    pub async fn results(self, ids: CallIds) -> Vec<ToolResult> {
        let futures = self.0.into_iter().map(|(index, name, state)| {
            let id = ids.id(index);
            async move {
                let done = match state {
                    CallState::Running(run) => run.finish_timed().await,
                    CallState::Done(output) => Finished {
                        output,
                        wait: Duration::ZERO,
                    },
                };
                ToolResult {
                    index,
                    id,
                    name,
                    output: done.output,
                    wait_s: done.wait.as_secs_f64(),
                }
            }
        });
        futures::future::join_all(futures).await
    }
}

pub struct ServerCalls {
    st: Arc<AppState>,
    plan: ToolPlan,
    ids: CallIds,
    parser: ToolCallParser,
    turn: MessageBuilder,
    /// Server-side calls of this turn: by index over the completion.
    running: HashMap<usize, (String, Running)>,
    complete: HashSet<usize>,
    /// The request's messages followed by this completion's turns and tool results.
    conversation: Vec<Value>,
    /// Calls of this turn whose tool failed before their arguments were complete.
    aborted: Vec<(usize, String, ToolOutput)>,
    /// Tells the request's constraint to end the turn now (see `tandem_tools::turn_end`).
    abort: Arc<AtomicBool>,
    /// The current pause's staged results, while its calls run.
    staging: Option<Staging>,
}

impl ServerCalls {
    pub fn new(
        st: Arc<AppState>,
        plan: ToolPlan,
        ids: CallIds,
        messages: Vec<Value>,
        abort: Arc<AtomicBool>,
    ) -> Self {
        Self {
            aborted: Vec::new(),
            abort,
            parser: st.tools.parser.parser(),
            st,
            plan,
            turn: MessageBuilder::new(ids.clone(), 0),
            ids,
            running: HashMap::new(),
            complete: HashSet::new(),
            conversation: messages,
            staging: None,
        }
    }

    pub fn ids(&self) -> CallIds {
        self.ids.clone()
    }

    /// Decoded text of the current turn.
    pub fn push(&mut self, text: &str) {
        let events = self.parser.push(text);
        events.into_iter().for_each(|e| self.on_event(e));
        self.check_early_errors();
    }

    /// A call still being written whose tool already failed ends the turn early: the rest
    /// of its arguments would be decoded for nothing.
    fn check_early_errors(&mut self) {
        let open = self.running.keys().filter(|i| !self.complete.contains(i));
        let open: Vec<usize> = open.copied().collect();
        for i in open {
            let Some((_, run)) = self.running.get_mut(&i) else {
                continue;
            };
            let Some(out) = run.try_output() else {
                continue;
            };
            let (name, _) = self.running.remove(&i).expect("present");
            if out.is_error {
                self.abort.store(true, Ordering::Release);
            }
            self.aborted.push((i, name, out));
        }
    }

    fn on_event(&mut self, e: ParseEvent) {
        self.turn.event(&e);
        match e {
            ParseEvent::CallStart { index, name } if self.plan.server.contains(&name) => {
                if let Some(run) = self.st.registry.start_with(&name, self.plan.partial) {
                    self.running.insert(self.turn.base() + index, (name, run));
                }
            }
            ParseEvent::CallArgs { index, fragment } => {
                if let Some((_, run)) = self.running.get_mut(&(self.turn.base() + index)) {
                    run.feed(&fragment);
                }
            }
            ParseEvent::CallEnd { index, .. } => {
                self.complete.insert(self.turn.base() + index);
            }
            ParseEvent::CallInvalid { index, .. } | ParseEvent::CallCut { index, .. } => {
                self.running.remove(&(self.turn.base() + index)); // dropping aborts it
            }
            _ => {}
        }
    }

    /// The turn ended: its message joins the conversation; its complete server-side calls
    /// are returned to await (calls cut off are dropped, which stops them).
    pub fn end_turn(&mut self) -> TurnCalls {
        let events = self.parser.finish();
        events.into_iter().for_each(|e| self.on_event(e));
        self.conversation.push(self.turn.message());
        self.turn = MessageBuilder::new(self.ids.clone(), self.turn.next_base());
        self.parser = self.st.tools.parser.parser();
        let mut calls: Vec<_> = std::mem::take(&mut self.running)
            .into_iter()
            .filter(|(i, _)| self.complete.contains(i))
            .map(|(i, (name, run))| (i, name, CallState::Running(Box::new(run))))
            .collect();
        let early = std::mem::take(&mut self.aborted).into_iter();
        calls.extend(early.map(|(i, name, out)| (i, name, CallState::Done(out))));
        calls.sort_by_key(|c| c.0);
        self.complete.clear();
        TurnCalls(calls)
    }

    /// The request paused for `calls`: with partial execution (and the server's
    /// `--partial-results`), their known results are staged while they run.
    pub fn begin_staging(&mut self, calls: &TurnCalls) {
        let on = self.plan.partial && self.st.registry.partial_results;
        self.staging = on.then(|| Staging::new(calls.staged_calls(&self.ids)));
    }

    /// The current pause's staging, if any.
    pub fn staging_mut(&mut self) -> Option<&mut Staging> {
        self.staging.as_mut()
    }

    /// Ends the pause's staging, returning it (what it staged).
    pub fn take_staging(&mut self) -> Option<Staging> {
        self.staging.take()
    }

    /// The tokens to stage now, if the known results grew by enough (see `staging.rs`).
    pub fn stage_more(&mut self, eot: Token) -> Option<Vec<Token>> {
        let messages = self.staging.as_ref()?.messages()?;
        let text = match self.appended(&messages, eot) {
            Ok(t) => t,
            Err(e) => {
                tracing::debug!("staging: rendering failed: {e}");
                return None;
            }
        };
        let model = &self.st.model;
        let staging = self.staging.as_mut()?;
        staging.next_stage(&text, |t| model.tokenize(t, false, true))
    }

    /// The text appended after the turn for these tool `messages`.
    fn appended(&self, messages: &[Value], eot: Token) -> Result<String, ApiError> {
        let (st, plan) = (&self.st, &self.plan);
        let render = |messages: &[Value], gen: bool| {
            let (messages, tools) = plan.prompt_inputs(st, messages);
            st.template.render_with(&messages, tools.as_deref(), gen)
        };
        let eot_text = st.model.special_text(eot);
        appended_text(&render, &self.conversation, messages, &eot_text)
    }

    /// The tokens to resume with: the results rendered as the template's tool turn, then the
    /// next assistant prompt. `eot`: the token that ended the turn.
    pub fn resume_tokens(
        &mut self,
        results: &[ToolResult],
        eot: Token,
    ) -> Result<Vec<Token>, ApiError> {
        let messages: Vec<Value> = results.iter().map(ToolResult::message).collect();
        let text = self.appended(&messages, eot)?;
        self.conversation.extend(messages);
        Ok(self.st.model.tokenize(&text, false, true))
    }
}
