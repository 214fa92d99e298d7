//! The HTTP API (OpenAI-compatible, plus Anthropic's Messages API): request/response types,
//! body parsing and the route handlers.

pub mod body;
pub mod chat;
pub mod completions;
pub mod embeddings;
pub mod generate;
pub mod legacy_functions;
pub mod logprobs;
pub mod messages;
pub mod misc;
pub mod replay;
pub mod reshape;
pub mod responses;
pub mod sampling;
pub mod scripted;
pub mod server_calls;
pub mod staging;
pub mod stream;
pub mod tokenize;
pub mod tool_calls;
pub mod types;
