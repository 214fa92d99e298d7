//! Whether a model's outputs depend on how its prompt is cut into batches, on this machine's
//! llama.cpp kernels: the prompt is run whole, then cut in two at every point (`a` rows, then
//! the rest), each run in a fresh context, and every position's logits are compared bit for
//! bit with the whole run's. Bit-exact prefix reuse (`--prefix-reuse exact`) relies on this:
//! a reused prefix is a cut. See docs/architecture.md, "Prefix reuse and exactness".
//!
//! cargo run --release -p tandem-llama --example split_exactness -- MODEL.gguf [PROMPT] [THREADS]
//!
//! Prints one line per cut: `=` when every position matched, else the first position whose
//! logits differ.

use std::num::NonZeroU32;

use llama_cpp_2::context::params::LlamaContextParams;
use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::llama_batch::LlamaBatch;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;

const DEFAULT_PROMPT: &str = "Once upon a time, in a small village at the edge of a great \
forest, there lived an old woman who knew every story the river had ever told.";

/// Runs `tokens` in chunks of the given sizes (flash attention off, as bit-exact mode runs)
/// and returns every position's logits.
fn logits_by_position(
    backend: &LlamaBackend,
    model: &LlamaModel,
    tokens: &[LlamaToken],
    chunks: &[usize],
    threads: i32,
) -> Vec<Vec<f32>> {
    let params = LlamaContextParams::default()
        .with_n_ctx(NonZeroU32::new(512))
        .with_n_batch(512)
        .with_n_ubatch(512)
        .with_n_seq_max(1)
        .with_flash_attention_policy(llama_cpp_sys_2::LLAMA_FLASH_ATTN_TYPE_DISABLED)
        .with_n_threads(threads)
        .with_n_threads_batch(threads);
    let mut ctx = model.new_context(backend, params).expect("context");
    let mut batch = LlamaBatch::new(512, 1);
    let (mut pos, mut out) = (0, Vec::with_capacity(tokens.len()));
    for &n in chunks {
        batch.clear();
        for (i, &t) in tokens.iter().enumerate().skip(pos).take(n) {
            batch.add(t, i as i32, &[0], true).expect("batch");
        }
        ctx.decode(&mut batch).expect("decode");
        out.extend((0..n).map(|i| ctx.get_logits_ith(i as i32).to_vec()));
        pos += n;
    }
    out
}

fn first_difference(a: &[Vec<f32>], b: &[Vec<f32>]) -> Option<usize> {
    let same = |x: &[f32], y: &[f32]| x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits());
    (0..a.len()).find(|&p| !same(&a[p], &b[p]))
}

fn main() {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .expect("usage: split_exactness MODEL.gguf [PROMPT] [THREADS]");
    let prompt = args.next().unwrap_or_else(|| DEFAULT_PROMPT.to_string());
    let threads = args.next().map_or(2, |t| t.parse().expect("threads"));
    let backend = LlamaBackend::init().expect("backend");
    let model =
        LlamaModel::load_from_file(&backend, &path, &LlamaModelParams::default()).expect("model");
    let tokens = model.vocab().tokenize(prompt.as_bytes(), true, false);
    let n = tokens.len();
    let whole = logits_by_position(&backend, &model, &tokens, &[n], threads);
    let mut exact = 0;
    println!("{n} prompt tokens; cut after a rows, then the other n - a:");
    for a in 1..n {
        let cut = logits_by_position(&backend, &model, &tokens, &[a, n - a], threads);
        match first_difference(&whole, &cut) {
            None => {
                exact += 1;
                println!("{a:>4} + {:<4} =", n - a);
            }
            Some(p) => println!("{a:>4} + {:<4} first differs at position {p}", n - a),
        }
    }
    println!(
        "{exact} of {} cuts match the whole prompt bit for bit",
        n - 1
    );
}
