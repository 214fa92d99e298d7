//! Incremental parsing of tool calls as the model decodes them, independent of models,
//! grammars and tools:
//! - [`json_scan`]: a JSON scanner that reports where values begin and end while the text
//!   is still incomplete;
//! - [`call_object`]: one `{"name": ..., "arguments": {...}}` object streamed as it arrives;
//! - [`parser`]: the Hermes, Llama 3 and Mistral call formats over those;
//! - [`arg_events`]: a call's arguments as events a tool can act on early (a field, an array
//!   element, a line of a string, the whole object complete).
//!
//! ```text
//! decoded text ─► parser (call_object ─► json_scan) ─► ParseEvent (content, call start,
//!                                                       argument fragments, call end)
//! argument fragments ─► arg_events (json_scan) ─► ArgEvent ─► a running tool
//! ```
//!
//! A crate of its own so that the fuzz target (`fuzz/`) builds it alone: built with
//! tandem-tools' dependencies under sanitizers, `scripts/fuzz.sh 30` took 8m47s on a clean
//! fuzz target directory, 1m18s without them (2-core Intel Xeon, 2026-12-03).

pub mod arg_events;
pub mod call_object;
pub mod json_scan;
pub mod parser;

pub use parser::{ParseEvent, ParserKind, ToolCallParser};
