//! Embeddings (`/v1/embeddings`): a second llama.cpp context over the same model, with
//! pooling on, owned by its own thread (llama.cpp contexts stay on one thread). Inputs are
//! packed: as many whole sequences as fit in one micro-batch (at most `max_seqs`, their tokens
//! together at most the context) go through one decode, each under its own sequence id, and
//! the inputs of every request waiting when the thread takes work are packed together, so
//! short inputs make one large matrix product instead of many small ones (llama-server packs
//! its slots the same way). Pooling needs each sequence whole in one micro-batch, so the
//! context's micro-batch is the whole context, and the KV is unified: every packed sequence
//! can use any cell, and one input can still be as long as the context. Each pooled vector is
//! L2-normalized, as OpenAI's and llama-server's are, and the KV is cleared after each decode:
//! nothing is kept between requests. It does not share the generation engine's batches; on a
//! 2-core machine the two compete for the cores.

use std::num::NonZeroU32;
use std::ops::Range;
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
    /// The longest input in tokens, and the most tokens packed into one decode.
    pub max_tokens: usize,
    /// The most inputs packed into one decode (at least 1).
    pub max_seqs: usize,
    pub threads: usize,
}

impl EmbedConfig {
    /// The context's size, which is also its batch and micro-batch: `max_tokens` rounded up to
    /// a multiple of `max_seqs`. This llama.cpp sizes mean pooling's matrix for such a
    /// multiple when it reserves its graph, and aborts on a shape assertion when the micro-batch
    /// is not one (llama.cpp issue 27175).
    fn ctx_tokens(&self) -> usize {
        self.max_tokens.div_ceil(self.max_seqs) * self.max_seqs
    }
}

#[derive(Clone, Debug, thiserror::Error, PartialEq)]
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
type Job = (Vec<Vec<Token>>, Reply);

/// A handle to the embedding thread; cheap to clone.
#[derive(Clone)]
pub struct Embedder {
    jobs: mpsc::Sender<Job>,
    max_tokens: usize,
    dims: usize,
}

impl Embedder {
    /// Starts the thread and its context; fails when llama.cpp cannot make the context.
    pub fn start(model: Model, cfg: EmbedConfig) -> Result<Self, ModelError> {
        assert!(cfg.max_seqs >= 1, "max_seqs must be at least 1");
        let (jobs, rx) = mpsc::channel::<Job>();
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
                serve_until_closed(&mut ctx, &rx, &thread_cfg);
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
    let n = cfg.ctx_tokens() as u32;
    let params = LlamaContextParams::default()
        .with_embeddings(true)
        .with_pooling_type(pooling)
        .with_n_ctx(NonZeroU32::new(n))
        .with_n_batch(n)
        .with_n_ubatch(n)
        .with_n_seq_max(cfg.max_seqs as u32)
        .with_kv_unified(true)
        .with_n_threads(cfg.threads as i32)
        .with_n_threads_batch(cfg.threads as i32);
    model
        .inner
        .new_context(backend()?, params)
        .map_err(|e| ModelError::Context(e.to_string()))
}

/// The thread's loop: takes the next request with every other one waiting by then, and
/// answers them together, until every `Embedder` handle is gone.
fn serve_until_closed(
    ctx: &mut LlamaContext<'static>,
    rx: &mpsc::Receiver<Job>,
    cfg: &EmbedConfig,
) {
    let limits = (cfg.ctx_tokens(), cfg.max_seqs);
    while let Ok(first) = rx.recv() {
        let mut waiting = vec![first];
        waiting.extend(rx.try_iter());
        serve(ctx, limits, waiting);
    }
}

/// Answers every waiting request, their inputs packed together.
fn serve(ctx: &mut LlamaContext<'static>, limits: (usize, usize), jobs: Vec<Job>) {
    let inputs: Vec<&[Token]> = jobs
        .iter()
        .flat_map(|(seqs, _)| seqs.iter().map(Vec::as_slice))
        .collect();
    let mut vectors = embed_packed(ctx, &inputs, limits).into_iter();
    for (seqs, reply) in &jobs {
        let mine: Result<Vec<_>, _> = vectors.by_ref().take(seqs.len()).collect();
        let _ = reply.send(mine);
    }
}

/// One vector (or the error of its decode) per input, in order.
fn embed_packed(
    ctx: &mut LlamaContext<'static>,
    inputs: &[&[Token]],
    (max_tokens, max_seqs): (usize, usize),
) -> Vec<Result<Vec<f32>, EmbedError>> {
    let lens: Vec<usize> = inputs.iter().map(|s| s.len()).collect();
    let mut out = Vec::with_capacity(inputs.len());
    for range in packs(&lens, max_tokens, max_seqs) {
        match decode_pack(ctx, &inputs[range.clone()]) {
            Ok(vs) => out.extend(vs.into_iter().map(Ok)),
            Err(e) => out.extend(range.map(|_| Err(e.clone()))),
        }
    }
    out
}

/// Splits inputs of these lengths, in order, into runs of at most `max_seqs` inputs and
/// `max_tokens` tokens (an input is never longer than `max_tokens`: `check` saw to it).
fn packs(lens: &[usize], max_tokens: usize, max_seqs: usize) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let (mut start, mut tokens) = (0, 0);
    for (i, &len) in lens.iter().enumerate() {
        if i > start && (tokens + len > max_tokens || i - start == max_seqs) {
            out.push(start..i);
            (start, tokens) = (i, 0);
        }
        tokens += len;
    }
    if start < lens.len() {
        out.push(start..lens.len());
    }
    out
}

/// One decode of `seqs`, input `i` as sequence `i`; their pooled, normalized vectors.
fn decode_pack(
    ctx: &mut LlamaContext<'static>,
    seqs: &[&[Token]],
) -> Result<Vec<Vec<f32>>, EmbedError> {
    let llama = |e: &dyn std::fmt::Display| EmbedError::Llama(e.to_string());
    let total = seqs.iter().map(|s| s.len()).sum();
    let mut batch = LlamaBatch::new(total, 1);
    for (id, seq) in seqs.iter().enumerate() {
        let tokens: Vec<LlamaToken> = seq.iter().map(|&t| LlamaToken(t)).collect();
        // Pooling reads every token's output.
        batch
            .add_sequence(&tokens, id as i32, true)
            .map_err(|e| llama(&e))?;
    }
    ctx.clear_kv_cache();
    let vectors = ctx
        .decode(&mut batch)
        .map_err(|e| llama(&e))
        .and_then(|()| {
            (0..seqs.len())
                .map(|id| ctx.embeddings_seq_ith(id as i32).map(normalized))
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| llama(&e))
        });
    ctx.clear_kv_cache();
    vectors
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
    fn packs_keep_order_and_both_limits() {
        assert_eq!(packs(&[3, 3, 3], 10, 16), vec![0..3]);
        assert_eq!(packs(&[6, 5, 4, 6], 10, 16), vec![0..1, 1..3, 3..4]);
        assert_eq!(packs(&[10, 1], 10, 16), vec![0..1, 1..2]);
        assert_eq!(packs(&[1; 5], 100, 2), vec![0..2, 2..4, 4..5]);
        assert_eq!(packs(&[], 10, 2), Vec::<Range<usize>>::new());
    }

    #[test]
    fn the_context_is_a_multiple_of_the_sequences() {
        let cfg = |max_tokens, max_seqs| EmbedConfig {
            pooling: Pooling::Mean,
            max_tokens,
            max_seqs,
            threads: 1,
        };
        assert_eq!(cfg(2048, 16).ctx_tokens(), 2048);
        assert_eq!(cfg(100, 16).ctx_tokens(), 112);
        assert_eq!(cfg(7, 1).ctx_tokens(), 7);
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
