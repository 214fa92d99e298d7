//! tandem's tool calling, independent of the model runtime:
//! - [`defs`]: the request's `tools`, `tool_choice`, `parallel_tool_calls` and
//!   `response_format`, checked (a bad definition is an error naming the problem);
//! - [`arg_events`]: argument events for partial tool execution (a field, an array element,
//!   a line of a string, the whole arguments object complete), and [`parser`]: incremental
//!   parsers for the Hermes, Llama 3 and Mistral call formats, both from tandem-calls;
//! - [`render`]: tool definitions and tool-call history written into the prompt for chat
//!   templates that have no tool support;
//! - [`grammar`] and [`constraint`]: constrained decoding with llguidance, as an engine
//!   [`tandem_engine::TokenConstraint`]; [`structured`]: the structured-output fields of
//!   vLLM, llama-server and SGLang (regex, choice, grammar, JSON schema), with GBNF
//!   grammars rewritten as Lark by [`gbnf`];
//! - [`runtime`] and [`builtin`]: server-side tools fed argument events while the call is
//!   still being decoded (partial execution); [`turn_end`]: a request pauses at the end
//!   of a turn of server-side calls, for their results.

pub mod builtin;
pub mod constraint;
pub mod defs;
pub mod gbnf;
pub mod grammar;
mod journal;
pub mod render;
pub mod runtime;
pub mod structured;
pub mod turn_end;

// The parsers live in tandem-calls (a crate the fuzz target can build alone); they are
// re-exported here under their old paths.
pub use parser::{ParseEvent, ParserKind, ToolCallParser};
pub use tandem_calls::{arg_events, call_object, json_scan, parser};
