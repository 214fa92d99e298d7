//! Bit-exact mode on K-quant weights: SmolLM2 requantized to Q4_K_M, the quantization of
//! Gemma 3's GGUF and many others. Two llama.cpp kernels round differently for different
//! batch sizes there: ggml's tiled K-quant matmul (only from 8 rows) and the matmul on
//! repacked Q4_K weights (a batch's last `rows % 4` rows one by one); with both, 10 of 29
//! cuts matched here. `tandem serve --prefix-reuse exact` turns the first off
//! (`prefer_batch_invariant_kernels`) and loads the weights unrepacked (`Weights::AsStored`),
//! and every cut matches. A test binary of its own: ggml reads the switch once per process.

mod common;

use std::path::PathBuf;
use std::sync::OnceLock;

use common::model_path;
use tandem_llama::quantize::{requantize, WeightType};
use tandem_llama::{exactness, Model, Weights};

const PROMPT: &str = "<|im_start|>user\nName three rivers and say which one is the longest.<|im_end|>\n<|im_start|>assistant\n";

/// The default model requantized to Q4_K_M once (in the temp folder, removed once loaded),
/// loaded as stored and repacked.
fn q4_k_m() -> (Model, Model) {
    static MODELS: OnceLock<(Model, Model)> = OnceLock::new();
    *MODELS.get_or_init(|| {
        let name = format!("tandem-test-q4km-{}.gguf", std::process::id());
        let out: PathBuf = std::env::temp_dir().join(name);
        requantize(&model_path(), &out, WeightType::Q4KM, 2).expect("requantize");
        let load = |w| Model::load_with(&out, 0, w).expect("the Q4_K_M model");
        let models = (load(Weights::AsStored), load(Weights::Repacked));
        std::fs::remove_file(&out).expect("remove the temp model");
        models
    })
}

/// Asserts every cut of `tokens` gives the whole prompt's logits.
fn assert_cut_invariant(model: Model, tokens: &[tandem_engine::Token]) {
    let inexact = common::inexact_cuts(model, tokens);
    assert!(
        inexact.is_empty(),
        "(first chunk's rows, first differing position) of {}: {inexact:?}",
        tokens.len()
    );
}

#[test]
fn a_q4_k_m_model_is_cut_invariant_in_bit_exact_mode() {
    exactness::prefer_batch_invariant_kernels();
    let (model, _) = q4_k_m();
    assert_cut_invariant(model, &model.tokenize(PROMPT, false, true));
}

/// The unrepacked load is the same model: at every position it predicts the repacked one's
/// top token, and its logits differ by rounding only (here up to about 1 in a spread of 30
/// to 60: the two layouts quantize activations and sum in different orders).
#[test]
fn weights_as_stored_give_the_repacked_models_predictions() {
    exactness::prefer_batch_invariant_kernels();
    let (stored, repacked) = q4_k_m();
    let tokens = stored.tokenize(PROMPT, false, true);
    let a = exactness::prompt_logits(stored, &tokens, 2).expect("decode");
    let b = exactness::prompt_logits(repacked, &tokens, 2).expect("decode");
    assert_eq!(a.len(), tokens.len());
    for (pos, (x, y)) in a.iter().zip(&b).enumerate() {
        assert_eq!(
            top(x),
            top(y),
            "position {pos}: the predicted tokens differ"
        );
        let worst = x
            .iter()
            .zip(y)
            .map(|(p, q)| (p - q).abs())
            .fold(0f32, f32::max);
        let spread =
            x.iter().fold(f32::MIN, |m, &v| m.max(v)) - x.iter().fold(f32::MAX, |m, &v| m.min(v));
        assert!(
            worst < 0.05 * spread,
            "position {pos}: logits differ by {worst} (spread {spread})"
        );
    }
}

fn top(logits: &[f32]) -> usize {
    let best = logits.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1));
    best.expect("logits").0
}
