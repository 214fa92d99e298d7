//! tandem's tool calling, independent of the model runtime:
//! - [`defs`]: the request's `tools`, `tool_choice`, `parallel_tool_calls` and
//!   `response_format`, checked (a bad definition is an error naming the problem);
//! - [`arg_events`]: argument events for partial tool execution (a field, an array element,
//!   a line of a string, the whole arguments object complete);
//! - [`parser`]: incremental parsers for the Hermes, Llama 3 and Mistral call formats, built
//!   on [`call_object`] and the position-reporting JSON scanner [`json_scan`];
//! - [`render`]: tool definitions and tool-call history written into the prompt for chat
//!   templates that have no tool support;
//! - [`grammar`] and [`constraint`]: constrained decoding with llguidance, as an engine
//!   [`tandem_engine::TokenConstraint`]; [`structured`]: the structured-output fields of
//!   vLLM, llama-server and SGLang (regex, choice, grammar, JSON schema), with GBNF
//!   grammars rewritten as Lark by [`gbnf`];
//! - [`runtime`] and [`builtin`]: server-side tools fed argument events while the call is
//!   still being decoded (partial execution); [`turn_end`]: a request pauses at the end
//!   of a turn of server-side calls, for their results.

pub mod arg_events;
pub mod builtin;
pub mod call_object;
pub mod constraint;
pub mod defs;
pub mod gbnf;
pub mod grammar;
pub mod json_scan;
pub mod parser;
pub mod render;
pub mod runtime;
pub mod structured;
pub mod turn_end;

pub use parser::{ParseEvent, ParserKind, ToolCallParser};
