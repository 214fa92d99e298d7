//! The default model for the real-model tests: `scripts/fetch-model.sh` puts it in the model
//! cache (`TANDEM_TEST_MODEL` names another), loaded once per test binary, as bit-exact mode
//! loads it.

use std::path::PathBuf;
use std::sync::OnceLock;

use tandem_engine::Token;
use tandem_llama::{exactness, Model, Weights};

pub fn model_path() -> PathBuf {
    std::env::var_os("TANDEM_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            PathBuf::from(home).join(".cache/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

/// The test model, loaded as `tandem serve --prefix-reuse exact` loads it (ggml's tiled
/// K-quant matmul off, weights unrepacked): the tests assert the equalities that mode
/// promises (batched = sequential, reused = cold, every cut = the whole prompt), which on a
/// Q4_K_M model such as Gemma 3's hold only with its kernels. (On the default Q4_1 model the
/// kernels are the same either way.)
#[allow(dead_code)] // each test binary compiles this module; not every one loads the model
pub fn model() -> Model {
    static M: OnceLock<Model> = OnceLock::new();
    *M.get_or_init(|| {
        exactness::prefer_batch_invariant_kernels(); // before any model computes
        Model::load_with(&model_path(), 0, Weights::AsStored)
            .expect("run scripts/fetch-model.sh first")
    })
}

/// The cuts of `tokens` into two multi-row decodes whose logits differ from the whole
/// prompt's, as (first chunk's rows, first differing position); every cut is checked.
#[allow(dead_code)] // not every test binary checks cuts
pub fn inexact_cuts(model: Model, tokens: &[Token]) -> Vec<(usize, usize)> {
    let diffs = exactness::first_differences(model, tokens, 2).expect("decode");
    assert_eq!(
        diffs.len(),
        tokens.len() - 3,
        "a result for each cut 2..n-1"
    );
    (diffs.iter())
        .filter_map(|&(a, d)| d.map(|p| (a, p)))
        .collect()
}
