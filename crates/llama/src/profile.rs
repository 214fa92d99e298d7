//! Startup cost profile for the interception policy: forward time against batch tokens
//! (a line fitted to a few prefill sizes), and swap-out/in time and KV bytes per token (a
//! sequence copied to a host buffer and back). Runs on slot 0, which is empty at startup and
//! left empty afterwards.

use std::time::Instant;

use tandem_engine::{CostModel, PlanItem, RunnerError, SamplingParams};

use crate::runner::LlamaRunner;

/// Batch sizes timed for the forward-time line.
const SIZES: [usize; 4] = [1, 16, 64, 256];
/// Timings per size; the fastest is kept (the machine may be busy).
const REPEATS: usize = 3;

pub(crate) fn measure(r: &mut LlamaRunner) -> Result<CostModel, RunnerError> {
    let limit = r.max_batch_tokens.min(r.cells_per_seq - 1);
    let sizes: Vec<usize> = SIZES.iter().map(|&n| n.min(limit)).collect();
    let mut samples = Vec::new();
    for &n in &sizes {
        let best = (0..REPEATS)
            .map(|_| forward(r, n))
            .collect::<Result<Vec<_>, _>>()?
            .into_iter()
            .fold(f64::INFINITY, f64::min);
        samples.push((n, best));
    }
    let (mut fwd_base_s, mut fwd_per_token_s) = CostModel::fit_line(&samples);
    if fwd_per_token_s <= 0.0 {
        // Noise (a busy machine) flattened the line; the largest batch's mean is an upper
        // bound that keeps recompute priced.
        let &(n, t) = samples.last().expect("samples");
        (fwd_base_s, fwd_per_token_s) = (0.0, t / n as f64);
    }
    let n = *sizes.last().expect("sizes");
    let (mut out, mut inn, mut bytes) = (f64::INFINITY, f64::INFINITY, 0);
    for _ in 0..REPEATS {
        // The first copy also pays for touching fresh host pages; the fastest is kept, as
        // for the forward times, since later swaps mostly reuse freed buffers.
        let (o, i, b) = swap_round_trip(r, n)?;
        (out, inn, bytes) = (out.min(o), inn.min(i), b);
    }
    Ok(CostModel {
        fwd_base_s,
        fwd_per_token_s,
        swap_out_per_token_s: out / n as f64,
        swap_in_per_token_s: inn / n as f64,
        swap_base_s: 0.0,
        kv_bytes_per_token: bytes.div_ceil(n),
    })
}

/// Seconds to copy `n` tokens of slot 0's KV out to a host buffer and back in, and the
/// buffer's size; slot 0 is empty before and after.
fn swap_round_trip(r: &mut LlamaRunner, n: usize) -> Result<(f64, f64, usize), RunnerError> {
    fill(r, n)?;
    let t0 = Instant::now();
    let state = r.save(0)?;
    let out = t0.elapsed().as_secs_f64();
    r.remove(0, 0)?;
    let t1 = Instant::now();
    r.restore(&state, 0)?;
    let inn = t1.elapsed().as_secs_f64();
    r.remove(0, 0)?;
    Ok((out, inn, state.byte_len()))
}

/// Seconds to run `n` tokens as one batch on an empty slot 0 (emptied again afterwards).
fn forward(r: &mut LlamaRunner, n: usize) -> Result<f64, RunnerError> {
    let t0 = Instant::now();
    fill(r, n)?;
    let dt = t0.elapsed().as_secs_f64();
    r.remove(0, 0)?;
    Ok(dt)
}

/// Decodes `n` filler tokens into slot 0 at positions `0..n`.
fn fill(r: &mut LlamaRunner, n: usize) -> Result<(), RunnerError> {
    let bos = r.model.bos();
    let item = PlanItem {
        request: 0,
        seq: 0,
        start_pos: 0,
        tokens: vec![bos; n],
        sample: Some(SamplingParams::default()),
        mask: None,
        score: None,
    };
    r.fill_batch(std::slice::from_ref(&item))?;
    r.ctx
        .decode(&mut r.batch)
        .map_err(|e| RunnerError::Decode(e.to_string()))
}
