//! Tool calling in chat completions: the request's tool fields checked, the prompt's
//! messages prepared for the template, the constraint built, and the model's output turned
//! into `tool_calls` — whole for a plain response, as OpenAI deltas for a stream (the first
//! delta of a call has its index, id, type and name; later ones carry argument fragments that
//! concatenate to exactly the final arguments). A call that `max_tokens` (or a stop string)
//! cut off is listed with its arguments as far as they got, in both forms, and the turn's
//! finish reason stays the engine's (`length`), as OpenAI reports it.

use std::collections::HashSet;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use serde_json::{json, Value};
use tandem_engine::{Constraint, TokenConstraint};
use tandem_tools::defs::ToolRequest;
use tandem_tools::grammar::{check_schema, for_output_rule, for_tools};
use tandem_tools::render::{inline_tools, template_messages};
use tandem_tools::runtime::Registry;
use tandem_tools::structured::{Structured, RESPONSE_FORMAT};
use tandem_tools::{ParseEvent, ParserKind, ToolCallParser};

use crate::api::chat::random_id;
use crate::api::replay::Replay;
use crate::api::types::ChatRequest;
use crate::error::ApiError;
use crate::state::AppState;

/// The checked tool fields of a chat request.
#[derive(Clone)]
pub struct ToolPlan {
    /// Client-side tools and the server-side ones the request enabled, together.
    pub tools: ToolRequest,
    /// What a plain reply must match: `response_format` or a structured-output field's rule
    /// (`structured_outputs`, `guided_*`, ...). Active tools take precedence over
    /// `response_format`; beside another rule they are an error.
    pub output: Option<Structured>,
    /// Names of the tools the server runs for this request (`server_tools`).
    pub server: HashSet<String>,
    /// Partial execution for this request's server-side calls.
    pub partial: bool,
}

/// Definitions of the server-side tools a request names, checked against the registry and
/// the request's own tools.
fn server_defs(
    names: &[String],
    client: Option<&Value>,
    registry: &Registry,
) -> Result<Vec<Value>, ApiError> {
    let param = "server_tools";
    let client_names: HashSet<&str> = client
        .and_then(Value::as_array)
        .map(|l| {
            l.iter()
                .filter_map(|t| t["function"]["name"].as_str())
                .collect()
        })
        .unwrap_or_default();
    let mut defs = Vec::new();
    for (i, n) in names.iter().enumerate() {
        let Some(def) = registry.def(n) else {
            let have = registry.names().join(", ");
            let have = if have.is_empty() {
                "none (start the server with --tools)".to_string()
            } else {
                have
            };
            return Err(ApiError::invalid(
                format!(
                    "server_tools[{i}]: no server-side tool named '{n}'; this server has: {have}"
                ),
                param,
            ));
        };
        if client_names.contains(n.as_str()) {
            return Err(ApiError::invalid(format!("server_tools[{i}]: '{n}' is also defined in `tools`; a tool is either client-side or server-side"), param));
        }
        if names[..i].contains(n) {
            return Err(ApiError::invalid(
                format!("server_tools[{i}]: '{n}' is named twice"),
                param,
            ));
        }
        defs.push(json!({"type": "function", "function": def.to_json()["function"].clone()}));
    }
    Ok(defs)
}

/// The request's `tools` with the server-side tools' definitions appended.
fn all_tools(req: &ChatRequest, registry: &Registry) -> Result<Option<Value>, ApiError> {
    let names = req.server_tools.as_deref().unwrap_or_default();
    if names.is_empty() {
        return Ok(req.tools.clone());
    }
    let defs = server_defs(names, req.tools.as_ref(), registry)?;
    match &req.tools {
        None | Some(Value::Null) => Ok(Some(Value::Array(defs))),
        Some(Value::Array(l)) => Ok(Some(Value::Array(l.iter().cloned().chain(defs).collect()))),
        Some(other) => Ok(Some(other.clone())), // ToolRequest::parse names the problem
    }
}

impl ToolPlan {
    /// `output`: the request's structured-output rule (from `GenParams`), which constrains a
    /// plain reply and so goes with neither `response_format` nor active tools.
    pub fn parse(
        req: &ChatRequest,
        registry: &Registry,
        output: Option<Structured>,
    ) -> Result<Self, ApiError> {
        let merged = all_tools(req, registry)?;
        let tools = ToolRequest::parse(
            merged.as_ref(),
            req.tool_choice.as_ref(),
            req.parallel_tool_calls.as_ref(),
            &check_schema,
        )?;
        let output = req
            .common
            .structured
            .with_response_format(output, req.response_format.as_ref())?;
        // `response_format` yields to active tools; another rule is an error beside them.
        if let Some(o) = output
            .as_ref()
            .filter(|o| tools.active() && o.field != RESPONSE_FORMAT)
        {
            let msg = format!("`{}` and `tools` both constrain the output; give only one (with tools, set tool_choice to \"none\" for a constrained plain reply)", o.field);
            return Err(ApiError::invalid_at(msg, o.field.clone()));
        }
        let server = req.server_tools.iter().flatten().cloned().collect();
        Ok(Self {
            tools,
            output,
            server,
            partial: req.partial_exec.unwrap_or(registry.partial),
        })
    }

    /// Whether calls to server-side tools may come up.
    pub fn serves_tools(&self) -> bool {
        self.tools.active() && !self.server.is_empty()
    }

    /// Messages and tool definitions to render: the template's own tool support when it has
    /// it, else tandem's rendering in the parser's format. With `tool_choice: none` the model
    /// is not shown the tools.
    pub fn prompt_inputs(
        &self,
        st: &AppState,
        messages: &[Value],
    ) -> (Vec<Value>, Option<Vec<Value>>) {
        let shown = if self.tools.active() {
            self.tools.tools.as_slice()
        } else {
            &[]
        };
        if st.tools.in_template {
            let defs = (!shown.is_empty()).then(|| shown.iter().map(|t| t.to_json()).collect());
            return (template_messages(messages), defs);
        }
        let results = st.tools.results;
        (
            inline_tools(st.tools.parser, messages, shown, results),
            None,
        )
    }

    /// The request's constraint: tool calls when tools are active, else the output rule;
    /// a replayed request (`replay`) follows its text instead (the grammar only forcing
    /// tokens where it agrees). With server-side tools, it
    /// pauses at the end of each turn of server-side calls.
    pub fn constraint(
        &self,
        st: &AppState,
        replay: Option<Replay>,
        abort: Arc<AtomicBool>,
    ) -> Result<Option<Constraint>, ApiError> {
        let inner = match replay {
            Some(r) => {
                Some(Box::new(r.with_grammar(self.grammar(st)?)) as Box<dyn TokenConstraint>)
            }
            None => self.grammar(st)?,
        };
        if self.serves_tools() {
            let names = self.server.clone();
            let turns = st
                .tools
                .guidance
                .server_turns(inner, st.tools.parser, names, abort);
            return Ok(Some(Constraint(Box::new(turns))));
        }
        Ok(inner.map(Constraint))
    }

    fn grammar(&self, st: &AppState) -> Result<Option<Box<dyn TokenConstraint>>, ApiError> {
        let tools = for_tools(st.tools.parser, &self.tools).map(|p| (p, "tools"));
        let plan = tools.or_else(|| {
            let o = self.output.as_ref()?;
            let plan = for_output_rule(&o.rule, o.layout(st.tools.json_layout));
            Some((plan, o.field.as_str()))
        });
        let Some((plan, param)) = plan else {
            return Ok(None);
        };
        let guided = st.tools.guided(&plan, param)?;
        Ok(Some(Box::new(guided)))
    }

    /// The call format to parse the output in, when calls are parsed.
    pub fn parser_kind(&self, st: &AppState) -> Option<ParserKind> {
        self.tools.active().then_some(st.tools.parser)
    }
}

/// Call ids of one completion: a random prefix and the call's index over the whole
/// completion, so the stream, the final message and server-side results name a call alike.
#[derive(Clone, Debug)]
pub struct CallIds(String);

impl CallIds {
    pub fn new() -> Self {
        Self(random_id())
    }

    pub fn id(&self, index: usize) -> String {
        format!("call_{}_{index}", self.0)
    }
}

/// Where a call's events stand.
#[derive(Clone, Copy, PartialEq)]
enum CallEnd {
    Open,
    Done,
    Cut,
}

struct Call {
    index: usize,
    name: String,
    args: String,
    end: CallEnd,
}

/// One assistant turn's message, built from its parse events: content (null when only calls
/// and blank text) and the calls, complete or cut off at the end; malformed calls are
/// returned as content. `base` is the index of the turn's first call over the completion.
pub struct MessageBuilder {
    ids: CallIds,
    base: usize,
    content: String,
    calls: Vec<Call>,
}

impl MessageBuilder {
    pub fn new(ids: CallIds, base: usize) -> Self {
        Self {
            ids,
            base,
            content: String::new(),
            calls: Vec::new(),
        }
    }

    pub fn event(&mut self, e: &ParseEvent) {
        match e {
            ParseEvent::Content(t) => self.content.push_str(t),
            ParseEvent::Markup(_) => {}
            ParseEvent::CallStart { index, name } => self.calls.push(Call {
                index: self.base + index,
                name: name.clone(),
                args: String::new(),
                end: CallEnd::Open,
            }),
            ParseEvent::CallArgs { index, fragment } => {
                if let Some(c) = self.call(*index) {
                    c.args.push_str(fragment);
                }
            }
            ParseEvent::CallEnd { index, .. } => self.end_call(*index, CallEnd::Done),
            ParseEvent::CallCut { index, .. } => self.end_call(*index, CallEnd::Cut),
            ParseEvent::CallInvalid { raw, .. } => self.content.push_str(raw),
        }
    }

    fn call(&mut self, index: usize) -> Option<&mut Call> {
        let i = self.base + index;
        self.calls.iter_mut().find(|c| c.index == i)
    }

    fn end_call(&mut self, index: usize, end: CallEnd) {
        if let Some(c) = self.call(index) {
            c.end = end;
        }
    }

    /// Whether the turn ended in calls, all complete (its finish reason is `tool_calls`).
    pub fn ends_in_calls(&self) -> bool {
        let any = |end| self.calls.iter().any(|c| c.end == end);
        any(CallEnd::Done) && !any(CallEnd::Cut)
    }

    /// Index of this turn's first call over the completion.
    pub fn base(&self) -> usize {
        self.base
    }

    /// Index for the next turn's first call.
    pub fn next_base(&self) -> usize {
        self.calls.last().map_or(self.base, |c| c.index + 1)
    }

    pub fn message(&self) -> Value {
        let calls: Vec<Value> = self
            .calls
            .iter()
            .filter(|c| c.end != CallEnd::Open)
            .map(|c| json!({"id": self.ids.id(c.index), "type": "function", "function": {"name": c.name, "arguments": c.args}}))
            .collect();
        let content = if calls.is_empty() || !self.content.trim().is_empty() {
            json!(self.content)
        } else {
            Value::Null
        };
        let mut m = json!({"role": "assistant", "content": content});
        if !calls.is_empty() {
            m["tool_calls"] = json!(calls);
        }
        m
    }
}

/// A whole turn's message built from its text (see [`MessageBuilder`]).
pub fn message(
    mut parser: ToolCallParser,
    text: &str,
    ids: CallIds,
    base: usize,
) -> MessageBuilder {
    let mut events = parser.push(text);
    events.extend(parser.finish());
    let mut b = MessageBuilder::new(ids, base);
    events.iter().for_each(|e| b.event(e));
    b
}

/// Turns streamed text into chat deltas through a tool-call parser. Server-side tool turns
/// end with [`DeltaStream::end_turn`]: the next turn's calls go on numbering from there.
pub struct DeltaStream {
    kind: ParserKind,
    parser: ToolCallParser,
    ids: CallIds,
    /// Index of this turn's first call; `seen`: calls started in this turn.
    base: usize,
    seen: usize,
    /// Calls of this turn complete, and whether one was cut off.
    calls: usize,
    cut: bool,
}

impl DeltaStream {
    pub fn new(kind: ParserKind, ids: CallIds) -> Self {
        Self {
            kind,
            parser: kind.parser(),
            ids,
            base: 0,
            seen: 0,
            calls: 0,
            cut: false,
        }
    }

    pub fn text(&mut self, text: &str) -> Vec<Value> {
        let events = self.parser.push(text);
        self.deltas(events)
    }

    /// Deltas for held text at the end, and whether the last turn ended in calls, all
    /// complete (a cut one's deltas have gone out as they came; nothing more is sent).
    pub fn finish(&mut self) -> (Vec<Value>, bool) {
        let events = self.parser.finish();
        let deltas = self.deltas(events);
        (deltas, self.calls > 0 && !self.cut)
    }

    /// A turn of server-side calls ended (their results follow): deltas for held text.
    pub fn end_turn(&mut self) -> Vec<Value> {
        let out = self.finish().0;
        self.parser = self.kind.parser();
        self.base += self.seen;
        (self.seen, self.calls, self.cut) = (0, 0, false);
        out
    }

    fn deltas(&mut self, events: Vec<ParseEvent>) -> Vec<Value> {
        events.into_iter().filter_map(|e| self.delta(e)).collect()
    }

    fn delta(&mut self, e: ParseEvent) -> Option<Value> {
        Some(match e {
            ParseEvent::Content(t) | ParseEvent::CallInvalid { raw: t, .. } => {
                json!({"content": t})
            }
            ParseEvent::CallStart { index, name } => {
                self.seen = self.seen.max(index + 1);
                let i = self.base + index;
                json!({"tool_calls": [{
                "index": i, "id": self.ids.id(i), "type": "function",
                "function": {"name": name, "arguments": ""}}]})
            }
            ParseEvent::CallArgs { index, fragment } => {
                json!({"tool_calls": [{"index": self.base + index, "function": {"arguments": fragment}}]})
            }
            ParseEvent::CallEnd { .. } => {
                self.calls += 1;
                return None;
            }
            ParseEvent::CallCut { .. } => {
                self.cut = true;
                return None;
            }
            ParseEvent::Markup(_) => return None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CUT: &str =
        "Sure.<tool_call>\n{\"name\": \"save\", \"arguments\": {\"text\": \"a long no";
    const WHOLE: &str =
        "<tool_call>\n{\"name\": \"save\", \"arguments\": {\"text\": \"hi\"}}\n</tool_call>";

    fn ids() -> CallIds {
        CallIds("t".into())
    }

    #[test]
    fn a_cut_call_is_listed_with_its_arguments_so_far() {
        let turn = message(ParserKind::Hermes.parser(), CUT, ids(), 0);
        let m = turn.message();
        assert_eq!(m["content"], "Sure.", "no call markup in the content");
        let call = &m["tool_calls"][0];
        assert_eq!(call["function"]["name"], "save");
        assert_eq!(call["function"]["arguments"], "{\"text\": \"a long no");
        assert!(
            !turn.ends_in_calls(),
            "a cut call does not make the turn a tool-call turn"
        );
        let done = message(ParserKind::Hermes.parser(), WHOLE, ids(), 0);
        assert!(done.ends_in_calls());
        assert_eq!(done.message()["content"], Value::Null);
    }

    #[test]
    fn a_stream_sends_a_cut_call_once() {
        let mut d = DeltaStream::new(ParserKind::Hermes, ids());
        let mut deltas: Vec<Value> = CUT
            .as_bytes()
            .chunks(7)
            .flat_map(|c| d.text(std::str::from_utf8(c).unwrap()))
            .collect();
        let (tail, called) = d.finish();
        deltas.extend(tail);
        assert!(!called);
        let content: String = deltas
            .iter()
            .filter_map(|v| v["content"].as_str())
            .collect();
        assert_eq!(
            content, "Sure.",
            "the call's text is not sent again as content"
        );
        let args: String = deltas
            .iter()
            .filter_map(|v| v["tool_calls"][0]["function"]["arguments"].as_str())
            .collect();
        assert_eq!(args, "{\"text\": \"a long no");
    }

    #[test]
    fn the_finish_reason_of_a_turn_with_calls() {
        use crate::api::chat::turn_finish;
        assert_eq!(turn_finish("stop", true), "tool_calls");
        assert_eq!(turn_finish("length", true), "length");
        assert_eq!(turn_finish("length", false), "length");
        assert_eq!(turn_finish("stop", false), "stop");
    }
}
