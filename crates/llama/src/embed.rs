//! Embeddings (`/v1/embeddings`): a second llama.cpp context over the same model, with
//! pooling on, owned by its own thread (llama.cpp contexts stay on one thread). Each input is
//! one decode of its whole sequence (pooling needs a sequence in one micro-batch; with more
//! than one sequence per context, this llama.cpp's mean pooling aborts on a matrix-shape
//! assertion, so inputs are not packed together), its pooled vector is L2-normalized, as
//! OpenAI's and llama-server's are, and the KV is cleared after it: nothing is kept between
//! requests. It does not share the generation engine's batches; on a 2-core machine the two
//! compete for the cores.

use std::num::NonZeroU32;
use std::sync::mpsc;
use std::thread;

use llama_cpp_2::context::params::{LlamaContextParams, LlamaPoolingType};
use llama_cpp_2::context::LlamaContext;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use tandem_engine::Token;

use crate::model::{backend, Model, ModelError};

/// How a sequence's token vectors become one embedding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pooling {
    Mean,
    /// The first token's vector.
    Cls,
    /// The last token's vector.
    Last,
}

#[derive(Clone, Debug)]
pub struct EmbedConfig {
    pub pooling: Pooling,
    /// The longest input in tokens (the context's size and its micro-batch).
    pub max_tokens: usize,
    pub threads: usize,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum EmbedError {
    /// Input `index` is longer than the context.
    #[error("input {index} has {tokens} tokens; this server embeds at most {max} per input")]
    TooLong {
        index: usize,
        tokens: usize,
        max: usize,
    },
    #[error("input {0} is empty")]
    Empty(usize),
    #[error("embedding failed: {0}")]
    Llama(String),
    #[error("the embedding thread is gone")]
    Gone,
}

type Reply = mpsc::Sender<Result<Vec<Vec<f32>>, EmbedError>>;

/// A handle to the embedding thread; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    jobs: mpsc::Sender<(Vec<Vec<Token>>, Reply)>,
    max_tokens: usize,
    dims: usize,
}

impl Embedder {
    /// Starts the thread and its context; fails when llama.cpp cannot make the context.
    pub fn start(model: Model, cfg: EmbedConfig) -> Result<Self, ModelError> {
        let (jobs, rx) = mpsc::channel::<(Vec<Vec<Token>>, Reply)>();
        let (ready_tx, ready_rx) = mpsc::channel();
        let thread_cfg = cfg.clone();
        thread::Builder::new()
            .name("tandem-embed".into())
            .spawn(move || {
                let mut ctx = match context(model, &thread_cfg) {
                    Ok(c) => {
                        let _ = ready_tx.send(Ok(()));
                        c
                    }
                    Err(e) => return drop(ready_tx.send(Err(e))),
                };
                for (inputs, reply) in rx {
                    let _ = reply.send(embed_all(&mut ctx, &inputs));
                }
            })
            .map_err(|e| ModelError::Context(e.to_string()))?;
        ready_rx
            .recv()
            .map_err(|_| ModelError::Context("embedding thread died".into()))??;
        Ok(Self {
            jobs,
            max_tokens: cfg.max_tokens,
            dims: model.n_embd(),
        })
    }

    /// One unit-length vector per input, in order. Blocks until done (call it off the async
    /// runtime's threads).
    pub fn embed(&self, inputs: Vec<Vec<Token>>) -> Result<Vec<Vec<f32>>, EmbedError> {
        check(&inputs, self.max_tokens)?;
        let (tx, rx) = mpsc::channel();
        self.jobs.send((inputs, tx)).map_err(|_| EmbedError::Gone)?;
        rx.recv().map_err(|_| EmbedError::Gone)?
    }

    /// The length of every embedding (the model's hidden size).
    pub fn dims(&self) -> usize {
        self.dims
    }

    pub fn max_tokens(&self) -> usize {
        self.max_tokens
    }
}

fn check(inputs: &[Vec<Token>], max: usize) -> Result<(), EmbedError> {
    for (index, t) in inputs.iter().enumerate() {
        if t.is_empty() {
            return Err(EmbedError::Empty(index));
        }
        if t.len() > max {
            return Err(EmbedError::TooLong {
                index,
                tokens: t.len(),
                max,
            });
        }
    }
    Ok(())
}

fn context(model: Model, cfg: &EmbedConfig) -> Result<LlamaContext<'static>, ModelError> {
    let pooling = match cfg.pooling {
        Pooling::Mean => LlamaPoolingType::Mean,
        Pooling::Cls => LlamaPoolingType::Cls,
        Pooling::Last => LlamaPoolingType::Last,
    };
    let n = cfg.max_tokens as u32;
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(pooling)
        .with_n_ctx(NonZeroU32::new(n))
        .with_n_batch(n)
        .with_n_ubatch(n)
        .with_n_seq_max(1)
        .with_n_threads(cfg.threads as i32)
        .with_n_threads_batch(cfg.threads as i32);
    model
        .inner
        .new_context(backend()?, params)
        .map_err(|e| ModelError::Context(e.to_string()))
}

/// Embeds `inputs` (checked), one sequence per decode.
fn embed_all(
    ctx: &mut LlamaContext<'static>,
    inputs: &[Vec<Token>],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    inputs.iter().map(|s| embed_one(ctx, s)).collect()
}

fn embed_one(ctx: &mut LlamaContext<'static>, seq: &[Token]) -> Result<Vec<f32>, EmbedError> {
    let llama = |e: &dyn std::fmt::Display| EmbedError::Llama(e.to_string());
    let mut batch = LlamaBatch::new(seq.len(), 1);
    let tokens: Vec<LlamaToken> = seq.iter().map(|&t| LlamaToken(t)).collect();
    // Pooling reads every token's output.
    batch
        .add_sequence(&tokens, 0, true)
        .map_err(|e| llama(&e))?;
    ctx.clear_kv_cache();
    let vector = ctx
        .decode(&mut batch)
        .map_err(|e| llama(&e))
        .and_then(|()| ctx.embeddings_seq_ith(0).map_err(|e| llama(&e)))
        .map(normalized);
    ctx.clear_kv_cache();
    vector
}

/// `v` scaled to unit length (a zero vector stays zero).
fn normalized(v: &[f32]) -> Vec<f32> {
    let norm = v
        .iter()
        .map(|x| (*x as f64) * (*x as f64))
        .sum::<f64>()
        .sqrt();
    if norm == 0.0 {
        return v.to_vec();
    }
    v.iter().map(|x| (*x as f64 / norm) as f32).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_are_unit_length() {
        let v = normalized(&[3.0, 4.0]);
        assert!((v[0] - 0.6).abs() < 1e-6 && (v[1] - 0.8).abs() < 1e-6);
        assert_eq!(normalized(&[0.0, 0.0]), vec![0.0, 0.0]);
    }

    #[test]
    fn inputs_are_checked() {
        assert_eq!(check(&[vec![1], vec![]], 4), Err(EmbedError::Empty(1)));
        assert_eq!(
            check(&[vec![1; 5]], 4),
            Err(EmbedError::TooLong {
                index: 0,
                tokens: 5,
                max: 4
            })
        );
        assert!(check(&[vec![1; 4]], 4).is_ok());
    }
}
