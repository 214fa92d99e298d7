//! Whether a model's outputs depend on how its prompt is cut into batches, on this machine's
//! llama.cpp kernels (`tandem_llama::exactness`): the prompt is run whole, then cut in two at
//! every point that leaves at least two rows on each side, and every position's logits are
//! compared bit for bit with the whole run's.
//! Bit-exact prefix reuse (`--prefix-reuse exact`) relies on them matching. See
//! docs/architecture.md, "Prefix reuse and exactness".
//!
//! cargo run --release -p tandem-llama --example split_exactness -- [--default-mode] [--singles K] MODEL.gguf [PROMPT] [THREADS]
//!
//! Prints one line per cut: `=` when every position matched, else the first position whose
//! logits differ. It runs what `--prefix-reuse exact` runs: ggml's tiled K-quant matmul off
//! (`exactness::prefer_batch_invariant_kernels`) and the weights as stored
//! (`Weights::AsStored`). `--default-mode` runs the default mode's instead: tiled matmul as
//! ggml chooses (or as `GGML_CPU_TILED_MM` says) and repacked weights. `--singles K` puts K
//! one-row decodes (decode steps) after each cut's first part, as a reply's tokens are
//! written (`exactness::first_differences_with_singles`).

use std::path::Path;

use tandem_llama::{exactness, Model, Weights};

const DEFAULT_PROMPT: &str = "Once upon a time, in a small village at the edge of a great \
forest, there lived an old woman who knew every story the river had ever told.";

fn main() {
    let mut args = std::env::args().skip(1).peekable();
    let default_mode = args.next_if(|a| a == "--default-mode").is_some();
    let singles = match args.next_if(|a| a == "--singles") {
        Some(_) => args
            .next()
            .and_then(|k| k.parse().ok())
            .expect("--singles K"),
        None => 0,
    };
    let weights = if default_mode {
        Weights::Repacked
    } else {
        exactness::prefer_batch_invariant_kernels();
        Weights::AsStored
    };
    let usage =
        "usage: split_exactness [--default-mode] [--singles K] MODEL.gguf [PROMPT] [THREADS]";
    let path = args.next().expect(usage);
    let prompt = args.next().unwrap_or_else(|| DEFAULT_PROMPT.to_string());
    let threads = args.next().map_or(2, |t| t.parse().expect("threads"));
    let model = Model::load_with(Path::new(&path), 0, weights).expect("model");
    let tokens = model.tokenize(&prompt, true, false);
    let n = tokens.len();
    let cuts = exactness::first_differences_with_singles(model, &tokens, threads, singles)
        .expect("decode");
    println!("{n} prompt tokens; cut after a rows, then {singles} one-row decodes, then the rest:");
    for &(a, diff) in &cuts {
        let rest = n - a - singles;
        match diff {
            None => println!("{a:>4} + {singles}x1 + {rest:<4} ="),
            Some(p) => println!("{a:>4} + {singles}x1 + {rest:<4} first differs at position {p}"),
        }
    }
    let exact = cuts.iter().filter(|(_, d)| d.is_none()).count();
    let total = cuts.len();
    println!("{exact} of {total} cuts match the whole prompt bit for bit");
}
