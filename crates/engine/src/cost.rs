//! Measured costs the interception policy weighs: forward time against batch tokens, against
//! the context attention visits and against the rows sampled, swap copy time per token in
//! each direction, and KV bytes per token. A runner measures them at startup
//! (`Runner::profile`); the fake runner reports its configured numbers.

/// Tokens of one sequence in a batch from which llama.cpp's CPU flash attention takes its
/// tiled kernel (ggml-cpu `ops.cpp`); shorter rows (decode rows, short appends) go through
/// its row-wise or split-KV kernels, which cost several times more per pair.
pub const TILED_ATTENTION_ROWS: usize = 64;

/// Cost model fitted to measurements: linear in batch tokens, plus attention's work, which
/// grows with how deep in its sequence each batch token sits.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Forward time of a step: `fwd_base_s + fwd_per_token_s * batch_tokens`.
    pub fwd_base_s: f64,
    pub fwd_per_token_s: f64,
    /// Attention: seconds per (batch token, earlier token of its sequence) pair, the work a
    /// CPU does for each query over the cached keys and values. A prefill over a deep context
    /// or a recompute of a long one pays it quadratically; the batch-token line, measured on
    /// an empty sequence, leaves it out.
    pub attn_per_pair_s: f64,
    /// The same for a row of fewer than [`TILED_ATTENTION_ROWS`] tokens of a sequence: every
    /// decode row. `attn_per_pair_s` is what a prefill chunk pays.
    pub attn_row_per_pair_s: f64,
    /// Seconds per row that samples (a batch item's last token): its logits (the output
    /// projection over the vocabulary) and the sampler. A decode step samples every row; the
    /// batch-token line, fitted to batches that sample once, leaves it out.
    pub sample_per_row_s: f64,
    /// Copy time device → host: `swap_base_s + swap_out_per_token_s * tokens`.
    pub swap_out_per_token_s: f64,
    /// Copy time host → device.
    pub swap_in_per_token_s: f64,
    /// Fixed cost of one copy in either direction.
    pub swap_base_s: f64,
    /// KV bytes one token occupies (all layers).
    pub kv_bytes_per_token: usize,
}

impl Default for CostModel {
    /// Figures of the same order as SmolLM2-135M on 2 CPU cores (docs/architecture.md); used
    /// only where nothing was measured (tests, the fake runner).
    fn default() -> Self {
        Self {
            fwd_base_s: 0.01,
            fwd_per_token_s: 0.004,
            attn_per_pair_s: 0.0,
            attn_row_per_pair_s: 0.0,
            sample_per_row_s: 0.0,
            swap_out_per_token_s: 13e-6,
            swap_in_per_token_s: 4e-6,
            swap_base_s: 1e-4,
            kv_bytes_per_token: 23_055,
        }
    }
}

impl CostModel {
    /// Time of one forward pass over `tokens` batch tokens.
    pub fn t_fwd(&self, tokens: usize) -> f64 {
        self.fwd_base_s + self.fwd_per_token_s * tokens as f64
    }

    /// Attention time of `len` tokens appended at position `start` of a sequence in one
    /// batch, at the price of the kernel a row of that length takes.
    pub fn t_attend(&self, start: usize, len: usize) -> f64 {
        let price = if len >= TILED_ATTENTION_ROWS {
            self.attn_per_pair_s
        } else {
            self.attn_row_per_pair_s
        };
        price * attention_pairs(start, len)
    }

    /// Attention time of `len` tokens appended at `start` in batches of at most `chunk`.
    pub fn t_attend_chunked(&self, start: usize, len: usize, chunk: usize) -> f64 {
        let chunk = chunk.max(1);
        (0..len)
            .step_by(chunk)
            .map(|at| self.t_attend(start + at, chunk.min(len - at)))
            .sum()
    }

    pub fn t_swap_out(&self, tokens: usize) -> f64 {
        self.swap_base_s + self.swap_out_per_token_s * tokens as f64
    }

    pub fn t_swap_in(&self, tokens: usize) -> f64 {
        self.swap_base_s + self.swap_in_per_token_s * tokens as f64
    }

    /// Line through `(tokens, seconds)` samples, `(base, per_token)`, fitted by least squares
    /// on relative errors (each sample weighted by `1 / seconds²`). Plain least squares lets
    /// the largest batch set the intercept: a 1% wobble in a 256-token batch's ~0.8 s moves
    /// the base by more than the ~5 ms a one-token step has in all, which is what decode
    /// steps and slot moves are priced by. Negative intercepts (noise) are clamped to zero.
    pub fn fit_line(samples: &[(usize, f64)]) -> (f64, f64) {
        let weighted: Vec<(f64, f64, f64)> = samples
            .iter()
            .filter(|s| s.1 > 0.0 && s.1.is_finite())
            .map(|&(n, t)| (n as f64, t, 1.0 / (t * t)))
            .collect();
        let w: f64 = weighted.iter().map(|s| s.2).sum();
        if w == 0.0 {
            return (0.0, 0.0);
        }
        let mx = weighted.iter().map(|s| s.2 * s.0).sum::<f64>() / w;
        let my = weighted.iter().map(|s| s.2 * s.1).sum::<f64>() / w;
        let sxx: f64 = weighted.iter().map(|s| s.2 * (s.0 - mx).powi(2)).sum();
        let sxy: f64 = weighted.iter().map(|s| s.2 * (s.0 - mx) * (s.1 - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        ((my - slope * mx).max(0.0), slope.max(0.0))
    }
}

/// (query, key) pairs attention visits when `len` tokens are appended at `start`: each
/// attends to the `start` tokens before the batch and to the batch up to itself.
pub fn attention_pairs(start: usize, len: usize) -> f64 {
    let (s, n) = (start as f64, len as f64);
    n * s + n * (n + 1.0) / 2.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attention_counts_every_earlier_token() {
        assert_eq!(attention_pairs(0, 1), 1.0);
        assert_eq!(attention_pairs(10, 1), 11.0);
        // Appending in two chunks visits the same pairs as one batch.
        assert_eq!(
            attention_pairs(0, 3) + attention_pairs(3, 4),
            attention_pairs(0, 7)
        );
        let c = CostModel {
            attn_per_pair_s: 1e-6,
            attn_row_per_pair_s: 1e-5,
            ..CostModel::default()
        };
        // Ten tokens are a short row; a hundred are tiled.
        assert!((c.t_attend(100, 10) - 1055e-5).abs() < 1e-12);
        assert!((c.t_attend(0, 100) - 5050e-6).abs() < 1e-12);
        // 130 tokens in chunks of 64: two tiled chunks and a 2-token row at 128.
        let chunked = c.t_attend(0, 64) + c.t_attend(64, 64) + c.t_attend(128, 2);
        assert!((c.t_attend_chunked(0, 130, 64) - chunked).abs() < 1e-12);
        assert!(c.t_attend_chunked(0, 130, 64) > c.t_attend(0, 130));
    }

    #[test]
    fn fit_recovers_a_line() {
        let s: Vec<_> = [1usize, 8, 64, 256]
            .iter()
            .map(|&n| (n, 0.02 + 0.003 * n as f64))
            .collect();
        let (a, b) = CostModel::fit_line(&s);
        assert!((a - 0.02).abs() < 1e-9 && (b - 0.003).abs() < 1e-9);
        assert_eq!(CostModel::fit_line(&[]), (0.0, 0.0));
    }

    #[test]
    fn a_wobble_in_the_largest_batch_leaves_the_base_near_the_small_batches() {
        // 5 ms + 3 ms a token, with the 256-token batch 2% slow (a busy moment).
        let mut s: Vec<_> = [1usize, 16, 64, 256]
            .iter()
            .map(|&n| (n, 0.005 + 0.003 * n as f64))
            .collect();
        s[3].1 *= 1.02;
        let (a, b) = CostModel::fit_line(&s);
        assert!((a - 0.005).abs() < 0.5e-3, "base {a}");
        assert!((b - 0.003).abs() < 0.1e-3, "per token {b}");
    }
}
