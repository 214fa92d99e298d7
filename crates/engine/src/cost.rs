//! Measured costs the interception policy weighs: forward time against batch tokens, swap
//! copy time per token in each direction, and KV bytes per token. A runner measures them at
//! startup (`Runner::profile`); the fake runner reports its configured numbers.

/// Linear cost model fitted to measurements.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct CostModel {
    /// Forward time of a step: `fwd_base_s + fwd_per_token_s * batch_tokens`.
    pub fwd_base_s: f64,
    pub fwd_per_token_s: f64,
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

    pub fn t_swap_out(&self, tokens: usize) -> f64 {
        self.swap_base_s + self.swap_out_per_token_s * tokens as f64
    }

    pub fn t_swap_in(&self, tokens: usize) -> f64 {
        self.swap_base_s + self.swap_in_per_token_s * tokens as f64
    }

    /// Least-squares line through `(tokens, seconds)` samples: `(base, per_token)`.
    /// Negative intercepts (noise) are clamped to zero.
    pub fn fit_line(samples: &[(usize, f64)]) -> (f64, f64) {
        let n = samples.len() as f64;
        let mx = samples.iter().map(|s| s.0 as f64).sum::<f64>() / n;
        let my = samples.iter().map(|s| s.1).sum::<f64>() / n;
        let sxx: f64 = samples.iter().map(|s| (s.0 as f64 - mx).powi(2)).sum();
        let sxy: f64 = samples.iter().map(|s| (s.0 as f64 - mx) * (s.1 - my)).sum();
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        ((my - slope * mx).max(0.0), slope.max(0.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fit_recovers_a_line() {
        let s: Vec<_> = [1usize, 8, 64, 256]
            .iter()
            .map(|&n| (n, 0.02 + 0.003 * n as f64))
            .collect();
        let (a, b) = CostModel::fit_line(&s);
        assert!((a - 0.02).abs() < 1e-9 && (b - 0.003).abs() < 1e-9);
    }
}
