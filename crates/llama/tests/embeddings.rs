//! The embedder on the default model (SmolLM2-135M): unit-length vectors of the model's
//! hidden size, the same input gives the same vector alone or in a request with others,
//! different inputs differ, and bad inputs are errors that leave it working.
//! The model comes from `scripts/fetch-model.sh` (or `TANDEM_TEST_MODEL`).

mod common;

use common::model;
use tandem_llama::{EmbedConfig, EmbedError, Embedder, Pooling};

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

#[test]
fn embeddings_are_unit_vectors_the_same_alone_or_with_others() {
    let m = model();
    let cfg = EmbedConfig {
        pooling: Pooling::Mean,
        max_tokens: 64,
        threads: 2,
    };
    let e = Embedder::start(m, cfg).unwrap();
    assert_eq!(e.dims(), m.n_embd());
    let texts = [
        "The cat sat on the mat.",
        "Stock markets fell sharply today.",
        "A kitten sleeps.",
        "Rust is a programming language.",
        "Paris is the capital of France.",
    ];
    let tokens: Vec<Vec<i32>> = texts
        .iter()
        .map(|t| m.tokenize(t, m.add_bos(), false))
        .collect();
    let all = e.embed(tokens.clone()).unwrap();
    assert_eq!(all.len(), 5);
    for (i, v) in all.iter().enumerate() {
        assert_eq!(v.len(), m.n_embd());
        assert!((cosine(v, v) - 1.0).abs() < 1e-4, "unit length");
        let alone = &e.embed(vec![tokens[i].clone()]).unwrap()[0];
        assert!(
            cosine(v, alone) > 0.9999,
            "input {i}: batched {}",
            cosine(v, alone)
        );
    }
    assert!(cosine(&all[0], &all[1]) < 0.999, "different inputs differ");
    let err = e.embed(vec![tokens[0].clone(), vec![1; 65]]).unwrap_err();
    assert_eq!(
        err,
        EmbedError::TooLong {
            index: 1,
            tokens: 65,
            max: 64
        }
    );
    assert_eq!(e.embed(vec![vec![]]).unwrap_err(), EmbedError::Empty(0));
    assert_eq!(
        e.embed(vec![tokens[2].clone()]).unwrap().len(),
        1,
        "still works"
    );
}
