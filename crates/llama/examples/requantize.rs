//! Writes a GGUF with its weights in another type, with llama.cpp's quantizer
//! (`tandem_llama::quantize`): test models with other kernels out of the default model.
//!
//! cargo run --release -p tandem-llama --example requantize -- SRC.gguf DST.gguf TYPE
//! (TYPE: q4_0, q4_k_m, q5_k_m, q6_k, q8_0)

use std::path::Path;

use tandem_llama::quantize::{requantize, WeightType};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [src, dst, to] = args.as_slice() else {
        eprintln!("usage: requantize SRC.gguf DST.gguf TYPE (q4_0, q4_k_m, q5_k_m, q6_k, q8_0)");
        std::process::exit(2);
    };
    let Some(to) = WeightType::parse(to) else {
        eprintln!("unknown TYPE {to}: q4_0, q4_k_m, q5_k_m, q6_k or q8_0");
        std::process::exit(2);
    };
    if let Err(e) = requantize(Path::new(src), Path::new(dst), to, 2) {
        eprintln!("{e}");
        std::process::exit(1);
    }
}
