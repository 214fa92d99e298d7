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

/// An embedder with mean pooling on the default model, 2 threads.
fn mean_embedder(max_tokens: usize, max_seqs: usize) -> Embedder {
    let cfg = EmbedConfig {
        pooling: Pooling::Mean,
        max_tokens,
        max_seqs,
        threads: 2,
    };
    Embedder::start(model(), cfg).unwrap()
}

#[test]
fn embeddings_are_unit_vectors_the_same_alone_or_with_others() {
    let m = model();
    let e = mean_embedder(64, 4);
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
            cosine(v, alone) > 0.9995,
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

/// Requests sent together are packed into shared decodes (the thread takes every waiting
/// request at once); each still gets its own inputs' vectors, in its order.
#[test]
fn concurrent_requests_each_get_their_own_vectors() {
    let m = model();
    let e = mean_embedder(128, 16);
    let words = [
        "river", "stock", "kitten", "compiler", "volcano", "opera", "tax", "moon",
    ];
    let request = |i: usize| -> Vec<Vec<i32>> {
        (0..3)
            .map(|j| {
                let text = format!("{} number {j} {}", words[i], "and more ".repeat(i + j));
                m.tokenize(&text, m.add_bos(), false)
            })
            .collect()
    };
    let alone: Vec<Vec<Vec<f32>>> = (0..words.len())
        .map(|i| {
            request(i)
                .into_iter()
                .map(|t| e.embed(vec![t]).unwrap().remove(0))
                .collect()
        })
        .collect();
    let together: Vec<Vec<Vec<f32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..words.len())
            .map(|i| {
                let e = e.clone();
                s.spawn(move || e.embed(request(i)).unwrap())
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let all_alone: Vec<&Vec<f32>> = alone.iter().flatten().collect();
    for (i, (got, want)) in together.iter().zip(&alone).enumerate() {
        assert_eq!(got.len(), 3);
        for (j, (g, w)) in got.iter().zip(want).enumerate() {
            // Packed decodes take other kernels' rounding: close, not bit-equal.
            assert!(
                cosine(g, w) > 0.9995,
                "request {i} input {j}: {}",
                cosine(g, w)
            );
            let nearest = all_alone
                .iter()
                .map(|a| cosine(g, a))
                .fold(f32::MIN, f32::max);
            assert_eq!(
                nearest,
                cosine(g, w),
                "request {i} input {j} is nearest its own"
            );
        }
    }
}
