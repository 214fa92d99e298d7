//! Whether a model's logits depend on how its prompt is cut into batches, on this build of
//! llama.cpp and this CPU. Bit-exact prefix reuse (`--prefix-reuse exact`) relies on them not
//! depending on it: a reused prefix is a cut. Two llama.cpp kernels choose their code path
//! by the batch's rows: the repacked Q4_K matmul runs its last `rows % 4` rows one by one
//! (avoided by loading with [`crate::Weights::AsStored`]), and ggml's tiled K-quant matmul
//! runs only from 8 rows (turned off by [`prefer_batch_invariant_kernels`]). With both
//! avoided, every model tried here is exact (docs/architecture.md, "Prefix reuse and
//! exactness").

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::token::LlamaToken;
use tandem_engine::Token;

use crate::model::{backend, Model, ModelError};

/// Makes ggml pick its matmul kernels regardless of a batch's rows where a run-time switch
/// allows it: ggml's tiled K-quant matmul, which it takes only for batches of 8 rows or more,
/// is turned off through `GGML_CPU_TILED_MM`, the only way ggml reads that setting. ggml reads
/// it once, at its first K-quant matmul, so this must run before any model computes: `main`
/// calls it, before it starts threads, for `--prefix-reuse exact`. (Repacked weights are the
/// other half: load the model with [`crate::Weights::AsStored`].)
pub fn prefer_batch_invariant_kernels() {
    std::env::set_var("GGML_CPU_TILED_MM", "0");
}

/// For each cut `a` in `2..tokens.len() - 1` (the first `a` tokens in one decode, the rest
/// in a second; never a one-row decode, which runs llama.cpp's decode kernels and which the
/// scheduler never uses for a prompt), `(a, p)`: `p` is the first position whose logits
/// differ in any bit from those of the whole prompt in one decode, `None` where all match.
/// Flash attention is off, as in bit-exact mode; each run has a fresh context.
pub fn first_differences(
    model: Model,
    tokens: &[Token],
    threads: usize,
) -> Result<Vec<(usize, Option<usize>)>, ModelError> {
    first_differences_with_singles(model, tokens, threads, 0)
}

/// As [`first_differences`], with `singles` one-row decodes (decode steps) after the first
/// `a` tokens and the rest in one more decode: `a` runs over `2..=n - singles`, the rest may
/// be empty. With `singles` 0, the cuts of [`first_differences`].
pub fn first_differences_with_singles(
    model: Model,
    tokens: &[Token],
    threads: usize,
    singles: usize,
) -> Result<Vec<(usize, Option<usize>)>, ModelError> {
    let n = tokens.len();
    let whole = prompt_logits(model, tokens, threads)?;
    let last = if singles == 0 {
        n.saturating_sub(2)
    } else {
        n.saturating_sub(singles)
    };
    (2..=last)
        .map(|a| {
            let cut = logits_by_position(model, tokens, &chunks(n, a, singles), threads)?;
            Ok((a, first_difference(&whole, &cut)))
        })
        .collect()
}

/// The decode sizes of a cut: `a` rows, `singles` one-row decodes, then the rest if any.
fn chunks(n: usize, a: usize, singles: usize) -> Vec<usize> {
    let mut sizes = vec![a];
    sizes.extend(std::iter::repeat_n(1, singles));
    let rest = n - a - singles;
    if rest > 0 {
        sizes.push(rest);
    }
    sizes
}

/// Every position's logits with the whole prompt in one decode (fresh context, flash
/// attention off): the reference [`first_differences`] compares cuts with.
pub fn prompt_logits(
    model: Model,
    tokens: &[Token],
    threads: usize,
) -> Result<Vec<Vec<f32>>, ModelError> {
    logits_by_position(model, tokens, &[tokens.len()], threads)
}

/// Every position's logits with `tokens` run in chunks of the given sizes.
fn logits_by_position(
    model: Model,
    tokens: &[Token],
    chunks: &[usize],
    threads: usize,
) -> Result<Vec<Vec<f32>>, ModelError> {
    let n_ctx = tokens.len().next_multiple_of(256) as u32;
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(n_ctx))
        .with_n_batch(n_ctx)
        .with_n_ubatch(n_ctx)
        .with_n_seq_max(1)
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED)
        .with_n_threads(threads as i32)
        .with_n_threads_batch(threads as i32);
    let err = |e: &dyn std::fmt::Display| ModelError::Context(e.to_string());
    let mut ctx = (model.inner.new_context(backend()?, params)).map_err(|e| err(&e))?;
    let mut batch = LlamaBatch::new(tokens.len(), 1);
    let (mut pos, mut out) = (0, Vec::with_capacity(tokens.len()));
    for &size in chunks {
        batch.clear();
        for (i, &t) in tokens.iter().enumerate().skip(pos).take(size) {
            batch
                .add(LlamaToken(t), i as i32, &[0], true)
                .map_err(|e| err(&e))?;
        }
        ctx.decode(&mut batch).map_err(|e| err(&e))?;
        out.extend((0..size).map(|i| ctx.get_logits_ith(i as i32).to_vec()));
        pos += size;
    }
    Ok(out)
}

fn first_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> Option<usize> {
    let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
    (0..a.len()).find(|&p| !same(&a[p], &b[p]))
}

#[cfg(test)]
mod tests {
    use super::{chunks, first_difference};

    #[test]
    fn a_cut_is_a_prefix_then_one_row_decodes_then_the_rest() {
        assert_eq!(chunks(10, 4, 0), vec![4, 6]);
        assert_eq!(chunks(10, 4, 3), vec![4, 1, 1, 1, 3]);
        assert_eq!(
            chunks(10, 9, 1),
            vec![9, 1],
            "the last row alone, nothing after"
        );
    }

    #[test]
    fn the_first_position_with_any_bit_changed() {
        let a = vec![vec![1.0, 2.0], vec![3.0, 4.0], vec![5.0, 6.0]];
        let mut b = a.clone();
        assert_eq!(first_difference(&a, &b), None);
        b[1][1] = f32::from_bits(4.0f32.to_bits() + 1);
        b[2][0] = 0.0;
        assert_eq!(first_difference(&a, &b), Some(1));
        b[1][1] = 4.0;
        assert_eq!(first_difference(&a, &b), Some(2));
    }
}
