//! llama.cpp for tandem: loading a GGUF model (tokenizer, chat template, metadata), the
//! runner that executes the engine's step plans on one llama.cpp context, and the embedder
//! (`/v1/embeddings`) on a second context of its own; `exactness` checks whether a model's
//! logits depend on how a prompt is cut into batches, and `quantize` writes a model's weights in
//! another type (test models).
//!
//! ```text
//!  Model::load ──► &'static LlamaModel ─┬─► tokenize / token pieces / template (any thread)
//!                                       └─► LlamaRunner (engine thread): KvOps → batch decode → sample
//! ```
//! The KV cache uses one stream per sequence slot (`kv_unified = false`); see docs/kv-layout.md.

mod embed;
pub mod exactness;
mod model;
mod profile;
pub mod quantize;
mod runner;

pub use embed::{EmbedConfig, EmbedError, Embedder, Pooling};
pub use model::{gpu_offload_supported, Model, ModelError, Weights};
pub use runner::{CostsError, LlamaRunner, RunnerConfig};
