//! Tool calling in chat completions: the request's tool fields checked, the prompt's
//! messages prepared for the template, the constraint built, and the model's output turned
//! into `tool_calls` — whole for a plain response, as OpenAI deltas for a stream (the first
//! delta of a call has its index, id, type and name; later ones carry argument fragments that
//! concatenate to exactly the final arguments).

use serde_json::{json, Value};
use tandem_engine::Constraint;
use tandem_tools::defs::{DefError, ResponseFormat, ToolRequest};
use tandem_tools::grammar::{check_schema, for_response_format, for_tools};
use tandem_tools::render::{inline_tools, template_messages};
use tandem_tools::{ParseEvent, ToolCallParser};

use crate::api::chat::random_id;
use crate::api::types::ChatRequest;
use crate::error::ApiError;
use crate::state::AppState;

fn def_error(e: DefError) -> ApiError {
    ApiError::Invalid {
        message: e.message,
        param: Some(e.param),
    }
}

/// The checked tool fields of a chat request.
pub struct ToolPlan {
    pub tools: ToolRequest,
    pub format: ResponseFormat,
}

impl ToolPlan {
    pub fn parse(req: &ChatRequest) -> Result<Self, ApiError> {
        let tools = ToolRequest::parse(
            req.tools.as_ref(),
            req.tool_choice.as_ref(),
            req.parallel_tool_calls.as_ref(),
            &check_schema,
        )
        .map_err(def_error)?;
        let format = ResponseFormat::parse(req.response_format.as_ref(), &check_schema)
            .map_err(def_error)?;
        Ok(Self { tools, format })
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
        (inline_tools(st.tools.parser, messages, shown), None)
    }

    /// The request's constraint: tool calls when tools are active, else the response format.
    pub fn constraint(&self, st: &AppState) -> Result<Option<Constraint>, ApiError> {
        let plan =
            for_tools(st.tools.parser, &self.tools).or_else(|| for_response_format(&self.format));
        let Some(plan) = plan else {
            return Ok(None);
        };
        let guided = st
            .tools
            .guidance
            .constraint(&plan)
            .map_err(|e| ApiError::invalid(e.to_string(), "tools"))?;
        Ok(Some(Constraint(Box::new(guided))))
    }

    /// A parser for the output when calls are parsed.
    pub fn parser(&self, st: &AppState) -> Option<ToolCallParser> {
        self.tools.active().then(|| st.tools.parser.parser())
    }
}

struct Call {
    id: String,
    name: String,
    args: String,
    valid: bool,
}

/// A whole response's message from its text: content (null when only calls and blank text)
/// and the valid calls; malformed calls are returned as content.
pub fn message(mut parser: ToolCallParser, text: &str) -> Value {
    let mut events = parser.push(text);
    events.extend(parser.finish());
    let mut content = String::new();
    let mut calls: Vec<Call> = Vec::new();
    for e in events {
        match e {
            ParseEvent::Content(t) => content.push_str(&t),
            ParseEvent::Markup(_) => {}
            ParseEvent::CallStart { name, .. } => calls.push(Call {
                id: call_id(),
                name,
                args: String::new(),
                valid: false,
            }),
            ParseEvent::CallArgs { index, fragment } => calls[index].args.push_str(&fragment),
            ParseEvent::CallEnd { index, .. } => calls[index].valid = true,
            ParseEvent::CallInvalid { raw, .. } => content.push_str(&raw),
        }
    }
    let calls: Vec<Value> = calls
        .into_iter()
        .filter(|c| c.valid)
        .map(|c| json!({"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.args}}))
        .collect();
    let content = if calls.is_empty() || !content.trim().is_empty() {
        json!(content)
    } else {
        Value::Null
    };
    let mut m = json!({"role": "assistant", "content": content});
    if !calls.is_empty() {
        m["tool_calls"] = json!(calls);
    }
    m
}

fn call_id() -> String {
    format!("call_{}", random_id())
}

/// Turns streamed text into chat deltas through a tool-call parser.
pub struct DeltaStream {
    parser: ToolCallParser,
    calls: usize,
}

impl DeltaStream {
    pub fn new(parser: ToolCallParser) -> Self {
        Self { parser, calls: 0 }
    }

    pub fn text(&mut self, text: &str) -> Vec<Value> {
        let events = self.parser.push(text);
        self.deltas(events)
    }

    /// Deltas for held text at the end, and whether the message made calls.
    pub fn finish(&mut self) -> (Vec<Value>, bool) {
        let events = self.parser.finish();
        (self.deltas(events), self.calls > 0)
    }

    fn deltas(&mut self, events: Vec<ParseEvent>) -> Vec<Value> {
        events.into_iter().filter_map(|e| self.delta(e)).collect()
    }

    fn delta(&mut self, e: ParseEvent) -> Option<Value> {
        Some(match e {
            ParseEvent::Content(t) | ParseEvent::CallInvalid { raw: t, .. } => {
                json!({"content": t})
            }
            ParseEvent::CallStart { index, name } => json!({"tool_calls": [{
                "index": index, "id": call_id(), "type": "function",
                "function": {"name": name, "arguments": ""}}]}),
            ParseEvent::CallArgs { index, fragment } => {
                json!({"tool_calls": [{"index": index, "function": {"arguments": fragment}}]})
            }
            ParseEvent::CallEnd { .. } => {
                self.calls += 1;
                return None;
            }
            ParseEvent::Markup(_) => return None,
        })
    }
}
