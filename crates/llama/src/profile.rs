//! Startup cost profile for the interception policy: forward time against batch tokens
//! (a line fitted on relative errors to a few prefill sizes on an empty sequence, less the
//! attention within each batch), the price of a sampled row (a batch whose every token is
//! sampled, as in a decode step, against one sampled once), attention's price per (query,
//! key) pair (a batch run deep in a filled sequence against the same batch in an empty one),
//! swap-out/in time and KV bytes per token (that filled sequence copied to a host buffer and
//! back), and attention's price in one-token rows (that copy restored into more slots, each
//! decoding a row deep, against the same rows at position 0). Timings that are compared are
//! taken in turns, so a slow spell of a shared machine weighs on both sides. Runs on slots
//! that are empty at startup and leaves them empty.

use std::time::Instant;

use tandem_engine::{
    CostModel, PlanItem, RequestId, Runner, RunnerError, SamplingParams, StepPlan,
};

use crate::runner::LlamaRunner;

/// Batch sizes timed for the forward-time line.
const SIZES: [usize; 4] = [1, 16, 64, 256];
/// Timings per size; the fastest is kept (the machine may be busy).
const REPEATS: usize = 3;
/// Tokens in the deep batch that prices attention (one of `SIZES`, so the line has its
/// shallow time).
const DEEP_BATCH: usize = 64;
/// Tokens of the batch that prices a sampled row: sampled once, then each.
const SAMPLED_ROWS: usize = 16;
/// Sequences whose one-token rows price attention in short rows (a decode step's).
const DECODE_ROWS: usize = 8;
/// How deep the sequence is filled for the attention and swap timings: deep enough that
/// attention is a tenth or more of the deep batch's time on a small model, short enough to
/// fill in about as long as the swap timings took before they used it.
const DEPTH: usize = 512;
/// Tokens filled to check a cost file's KV bytes per token against this model (`tandem
/// serve --costs`): one 64-token batch, against the about 1,900 tokens the whole profile
/// runs through the model.
const KV_PROBE: usize = 64;

pub(crate) fn measure(r: &mut LlamaRunner) -> Result<CostModel, RunnerError> {
    let limit = r.max_batch_tokens.min(r.cells_per_seq - 1);
    let sizes: Vec<usize> = SIZES.iter().map(|&n| n.min(limit)).collect();
    let samples = forward_times(r, &sizes)?;
    let sample_per_row_s = sampled_row_price(r, SAMPLED_ROWS.min(limit))?;
    let k = DEEP_BATCH.min(limit / 2).max(1);
    let depth = DEPTH.min(r.cells_per_seq.saturating_sub(k + 1)).max(1);
    fill(r, depth)?;
    let attn_per_pair_s = batch_attention_price(r, &samples, depth, k)?;
    let (out, inn, bytes) = swap_round_trips(r)?;
    let attn_row_per_pair_s = row_attention_price(r, depth, DECODE_ROWS.min(r.n_slots))?;
    let attention = CostModel {
        attn_per_pair_s,
        attn_row_per_pair_s,
        ..CostModel::default()
    };
    let (fwd_base_s, fwd_per_token_s) = forward_line(&samples, &attention);
    Ok(CostModel {
        fwd_base_s,
        fwd_per_token_s,
        attn_per_pair_s,
        attn_row_per_pair_s,
        sample_per_row_s,
        swap_out_per_token_s: out / depth as f64,
        swap_in_per_token_s: inn / depth as f64,
        swap_base_s: 0.0,
        kv_bytes_per_token: bytes.div_ceil(depth),
    })
}

/// Fastest time of a batch of each of `sizes` tokens at position 0 of slot 0, timed in
/// turns (each size once a round) so a slow spell of a shared machine does not fall on one
/// size's every repeat and tilt the line.
fn forward_times(r: &mut LlamaRunner, sizes: &[usize]) -> Result<Vec<(usize, f64)>, RunnerError> {
    let best = fastest_in_turns(sizes.len(), |i| forward(r, 0, 0, sizes[i]))?;
    Ok(sizes.iter().copied().zip(best).collect())
}

/// Attention's price per pair in a `k`-token batch: the batch `depth` deep in slot 0 (filled
/// that far) against the same batch at position 0 of slot 1, timed in turns for the same
/// reason as `forward_times`. With one slot, the shallow time is `samples`' for `k` tokens.
fn batch_attention_price(
    r: &mut LlamaRunner,
    samples: &[(usize, f64)],
    depth: usize,
    k: usize,
) -> Result<f64, RunnerError> {
    let sampled = samples.iter().find(|s| s.0 == k).map_or(f64::NAN, |s| s.1);
    let sides = if r.n_slots > 1 { 2 } else { 1 };
    let t = fastest_in_turns(sides, |side| match side {
        0 => forward(r, 0, depth, k),
        _ => forward(r, 1, 0, k),
    })?;
    let shallow = t.get(1).map_or(sampled, |&s| s.min(sampled));
    Ok(attention_price(t[0], shallow, k, depth))
}

/// The forward-time line: the samples less the attention within each batch (priced apart
/// by `t_attend`, which a served step adds to the line, so left in it would count twice and
/// bend the largest batch up, pulling the base down), fitted on relative errors.
fn forward_line(samples: &[(usize, f64)], attention: &CostModel) -> (f64, f64) {
    let flat: Vec<(usize, f64)> = samples
        .iter()
        .map(|&(n, t)| (n, t - attention.t_attend(0, n)))
        .collect();
    let (base, per_token) = CostModel::fit_line(&flat);
    if per_token > 0.0 {
        return (base, per_token);
    }
    // Noise (a busy machine) flattened the line; the largest batch's mean is an upper bound
    // that keeps recompute priced.
    let &(n, t) = samples.last().expect("samples");
    (0.0, t / n as f64)
}

/// KV bytes per token of a short filled sequence saved to a host buffer. The state's fixed
/// header, spread over fewer tokens, puts this about 0.5% above `measure`'s figure.
pub(crate) fn kv_bytes_per_token(r: &mut LlamaRunner) -> Result<usize, RunnerError> {
    let n = KV_PROBE.min(r.cells_per_seq - 1).min(r.max_batch_tokens);
    decode(r, 0, 0, n)?;
    let bytes = r.save(0)?.byte_len();
    r.remove(0, 0)?;
    Ok(bytes.div_ceil(n))
}

/// Attention's price per (query, key) pair from the same `k`-token batch timed at `depth`
/// and at position 0: the deep one visits `k * depth` more pairs. Noise that makes the deep
/// batch no slower (or a sequence too short to go deep) prices it at zero, as the line alone
/// did before.
fn attention_price(deep_s: f64, shallow_s: f64, k: usize, depth: usize) -> f64 {
    let extra = deep_s - shallow_s;
    if depth == 0 || k == 0 || !extra.is_finite() || extra <= 0.0 {
        return 0.0;
    }
    extra / (k * depth) as f64
}

/// Seconds per sampled row: `n` one-token items of slot 0, each sampled (its logits
/// computed, then the sampler run over them), against one `n`-token item sampled once; both
/// run as served steps do (`execute`), at the same positions, in turns. The line's batches
/// compute logits for their last token only, where a decode step does for every row.
fn sampled_row_price(r: &mut LlamaRunner, n: usize) -> Result<f64, RunnerError> {
    if n < 2 {
        return Ok(0.0);
    }
    let bos = r.model.bos();
    let rows = || (0..n).map(|i| filler(bos, i as u64, i, 1)).collect();
    let t = fastest_in_turns(2, |side| match side {
        0 => served_step(r, vec![filler(bos, 0, 0, n)]),
        _ => served_step(r, rows()),
    })?;
    let (once, each) = (t[0], t[1]);
    release_samplers(r, 0..n as RequestId)?;
    Ok(((each - once) / (n - 1) as f64).max(0.0))
}

/// Attention's price per pair in one-token rows: slot 0 (filled to `depth`) copied into
/// slots `1..k`, then one row in each decoded at `depth`, against the same rows at position 0
/// of `k` empty slots (`k * depth` more pairs): slots `k..2k`, timed in turns with the deep
/// rows (as `batch_attention_price`), or with fewer slots the emptied `0..k` afterwards.
/// Leaves every slot empty.
fn row_attention_price(r: &mut LlamaRunner, depth: usize, k: usize) -> Result<f64, RunnerError> {
    let state = r.save(0)?;
    for q in 1..k {
        r.restore(&state, q as i32)?;
    }
    let bos = r.model.bos();
    // One-token rows at `at` in slots `from..from + k` (each its own request, for samplers).
    let rows = |from: usize, at: usize| -> Vec<PlanItem> {
        (from..from + k)
            .map(|q| PlanItem {
                seq: q as i32,
                ..filler(bos, q as RequestId, at, 1)
            })
            .collect()
    };
    let beside = r.n_slots >= 2 * k;
    let t = fastest_in_turns(if beside { 2 } else { 1 }, |side| match side {
        0 => served_step(r, rows(0, depth)),
        _ => served_step(r, rows(k, 0)),
    })?;
    for q in 0..k {
        r.remove(q as i32, 0)?;
    }
    let shallow = match t.get(1) {
        Some(&s) => s,
        None => fastest_in_turns(1, |_| served_step(r, rows(0, 0)))?[0],
    };
    let used = if beside { 2 * k } else { k };
    release_samplers(r, 0..used as RequestId)?;
    Ok(attention_price(t[0], shallow, k, depth))
}

/// Seconds `execute` takes over `items` (the slots they write are cut back to where the
/// items start afterwards). The items' samplers stay, as a request's do between its steps,
/// so repeats after the first do not time their construction: `release_samplers` after.
fn served_step(r: &mut LlamaRunner, items: Vec<PlanItem>) -> Result<f64, RunnerError> {
    let mut starts = std::collections::BTreeMap::new();
    for i in &items {
        let at = starts.entry(i.seq).or_insert(i.start_pos);
        *at = (*at).min(i.start_pos);
    }
    let plan = StepPlan {
        kv_ops: Vec::new(),
        items,
        released: Vec::new(),
    };
    let t0 = Instant::now();
    r.execute(&plan)?;
    let dt = t0.elapsed().as_secs_f64();
    for (seq, at) in starts {
        r.remove(seq, at)?;
    }
    Ok(dt)
}

/// Drops the samplers `served_step` left for `requests`.
fn release_samplers(
    r: &mut LlamaRunner,
    requests: impl IntoIterator<Item = RequestId>,
) -> Result<(), RunnerError> {
    r.execute(&StepPlan {
        kv_ops: Vec::new(),
        items: Vec::new(),
        released: requests.into_iter().collect(),
    })?;
    Ok(())
}

/// The fastest of `REPEATS` timings of each of `sides` things (`time(side)`), taken in turns
/// (each side once a round) so a slow spell of a shared machine weighs on every side alike.
fn fastest_in_turns(
    sides: usize,
    mut time: impl FnMut(usize) -> Result<f64, RunnerError>,
) -> Result<Vec<f64>, RunnerError> {
    let mut best = vec![f64::INFINITY; sides];
    for _ in 0..REPEATS {
        for (side, b) in best.iter_mut().enumerate() {
            *b = b.min(time(side)?);
        }
    }
    Ok(best)
}

/// Fastest seconds to copy slot 0's KV out to a host buffer and back in, each
/// way, and the buffer's size; the KV is in place again afterwards. The first copy also pays
/// for touching fresh host pages; the fastest is kept, as for the forward times, since later
/// swaps mostly reuse freed buffers.
fn swap_round_trips(r: &mut LlamaRunner) -> Result<(f64, f64, usize), RunnerError> {
    let (mut out, mut inn, mut bytes) = (f64::INFINITY, f64::INFINITY, 0);
    for _ in 0..REPEATS {
        let t0 = Instant::now();
        let state = r.save(0)?;
        out = out.min(t0.elapsed().as_secs_f64());
        r.remove(0, 0)?;
        let t1 = Instant::now();
        r.restore(&state, 0)?;
        inn = inn.min(t1.elapsed().as_secs_f64());
        bytes = state.byte_len();
    }
    Ok((out, inn, bytes))
}

/// Seconds to run `n` tokens as one batch at positions `start..` of slot `seq`, whose first
/// `start` positions are filled (they are kept; the batch is removed afterwards).
fn forward(r: &mut LlamaRunner, seq: i32, start: usize, n: usize) -> Result<f64, RunnerError> {
    let t0 = Instant::now();
    decode(r, seq, start, n)?;
    let dt = t0.elapsed().as_secs_f64();
    r.remove(seq, start)?;
    Ok(dt)
}

/// Fills slot 0's positions `0..n` with filler tokens, in batches the context takes.
fn fill(r: &mut LlamaRunner, n: usize) -> Result<(), RunnerError> {
    let step = r.max_batch_tokens.max(1);
    let mut at = 0;
    while at < n {
        let len = step.min(n - at);
        decode(r, 0, at, len)?;
        at += len;
    }
    Ok(())
}

/// `n` copies of `token` for slot 0 at positions `start..start + n`, sampled after the last.
fn filler(token: i32, request: RequestId, start: usize, n: usize) -> PlanItem {
    PlanItem {
        request,
        seq: 0,
        start_pos: start,
        tokens: vec![token; n],
        sample: Some(SamplingParams::default()),
        mask: None,
        score: None,
        draft: 0,
        draft_masks: Vec::new(),
    }
}

/// Decodes `n` filler tokens into slot `seq` at positions `start..start + n` as one batch.
fn decode(r: &mut LlamaRunner, seq: i32, start: usize, n: usize) -> Result<(), RunnerError> {
    let item = PlanItem {
        seq,
        ..filler(r.model.bos(), 0, start, n)
    };
    r.fill_batch(std::slice::from_ref(&item))?;
    r.ctx
        .decode(&mut r.batch)
        .map_err(|e| RunnerError::Decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::{attention_price, forward_line};
    use tandem_engine::CostModel;

    #[test]
    fn the_line_leaves_out_attention_within_the_batch() {
        // 4 ms + 2.8 ms a token, plus 1.5 us a pair (11 us in rows under 64 tokens): the
        // 256-token batch's 32,896 pairs add 49 ms, which a line through the raw times
        // would take as per-token time.
        let attention = CostModel {
            attn_per_pair_s: 1.5e-6,
            attn_row_per_pair_s: 11e-6,
            ..CostModel::default()
        };
        let samples: Vec<_> = [1usize, 16, 64, 256]
            .iter()
            .map(|&n| (n, 0.004 + 0.0028 * n as f64 + attention.t_attend(0, n)))
            .collect();
        let (base, per_token) = forward_line(&samples, &attention);
        assert!((base - 0.004).abs() < 1e-9, "base {base}");
        assert!((per_token - 0.0028).abs() < 1e-9, "per token {per_token}");
        let raw = CostModel::fit_line(&samples);
        assert!(
            raw.1 > 0.00285,
            "the raw line takes attention as per-token time: {raw:?}"
        );
    }

    #[test]
    fn a_flat_line_falls_back_to_the_largest_batchs_mean() {
        let samples = [(1, 0.5), (16, 0.4), (64, 0.3), (256, 0.256)];
        let (base, per_token) = forward_line(&samples, &CostModel::default());
        assert_eq!((base, per_token), (0.0, 0.001));
    }

    #[test]
    fn attention_is_priced_by_the_extra_pairs_and_never_below_zero() {
        // 64 tokens 512 deep visit 64 * 512 more pairs than at position 0.
        let p = attention_price(0.25, 0.2, 64, 512);
        assert!((p - 0.05 / 32768.0).abs() < 1e-15);
        assert_eq!(attention_price(0.19, 0.2, 64, 512), 0.0, "noise");
        assert_eq!(attention_price(0.25, 0.2, 64, 0), 0.0, "no depth");
        assert_eq!(
            attention_price(0.25, f64::NAN, 64, 512),
            0.0,
            "no shallow time"
        );
    }
}
