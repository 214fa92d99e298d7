//! Bit-exact mode on a model whose K-quant weights llama.cpp does not repack: SmolLM2
//! requantized to Q6_K. ggml's tiled K-quant matmul runs only for batches of 8 rows or more,
//! so with it on, some cuts of a prompt change the logits (19 of 29 cuts matched here);
//! `prefer_batch_invariant_kernels`, which `tandem serve --prefix-reuse exact` calls, turns
//! it off and every cut matches. A test binary of its own: ggml reads that switch once per
//! process.

mod common;

use std::path::PathBuf;

use common::model_path;
use tandem_llama::quantize::{requantize, WeightType};
use tandem_llama::{exactness, Model};

/// The default model requantized to Q6_K, in the temp folder.
fn requantized_q6_k() -> PathBuf {
    let out = std::env::temp_dir().join(format!("tandem-test-q6k-{}.gguf", std::process::id()));
    requantize(&model_path(), &out, WeightType::Q6K, 2).expect("requantize");
    out
}

#[test]
fn a_q6_k_model_is_cut_invariant_with_batch_invariant_kernels() {
    exactness::prefer_batch_invariant_kernels();
    let path = requantized_q6_k();
    let model = Model::load(&path, 0).expect("the Q6_K model");
    std::fs::remove_file(&path).expect("remove the temp model");
    let prompt = "<|im_start|>user\nName three rivers and say which one is the longest.<|im_end|>\n<|im_start|>assistant\n";
    let tokens = model.tokenize(prompt, false, true);
    let inexact = common::inexact_cuts(model, &tokens);
    assert!(
        inexact.is_empty(),
        "(first chunk's rows, first differing position) of {}: {inexact:?}",
        tokens.len()
    );
}
