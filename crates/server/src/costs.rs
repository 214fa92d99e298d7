//! Cost profiles, shared by `tandem serve` (`--costs` starts from one, `--save-costs` writes
//! the one it uses) and `tandem simulate`: built-in presets (one measured on this project's
//! reference machine, one derived for a GPU from datasheet figures), a JSON file, or the
//! costs a running tandem server measured at startup (its `tandem_cost_*` gauges).

use std::collections::HashMap;
use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use tandem_engine::sim::StepCost;
use tandem_engine::CostModel;

/// A cost profile as written in a JSON file (seconds, bytes).
#[derive(Clone, Copy, Debug, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CostFile {
    pub fwd_base_s: f64,
    pub fwd_per_token_s: f64,
    /// Attention per (batch token, earlier token) pair; 0 when not given (older files).
    #[serde(default)]
    pub attn_per_pair_s: f64,
    /// Attention per pair for rows of fewer than 64 tokens (decode rows); when not given,
    /// `attn_per_pair_s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attn_row_per_pair_s: Option<f64>,
    /// Output projection and sampler per sampled row; 0 when not given (older files).
    #[serde(default)]
    pub sample_per_row_s: f64,
    pub swap_out_per_token_s: f64,
    pub swap_in_per_token_s: f64,
    #[serde(default)]
    pub swap_base_s: f64,
    pub kv_bytes_per_token: usize,
    #[serde(default)]
    pub kv_read_per_token_s: f64,
    #[serde(default)]
    pub overlap_copies: bool,
}

impl From<CostFile> for StepCost {
    fn from(c: CostFile) -> Self {
        StepCost {
            model: CostModel {
                fwd_base_s: c.fwd_base_s,
                fwd_per_token_s: c.fwd_per_token_s,
                attn_per_pair_s: c.attn_per_pair_s,
                attn_row_per_pair_s: c.attn_row_per_pair_s.unwrap_or(c.attn_per_pair_s),
                sample_per_row_s: c.sample_per_row_s,
                swap_out_per_token_s: c.swap_out_per_token_s,
                swap_in_per_token_s: c.swap_in_per_token_s,
                swap_base_s: c.swap_base_s,
                kv_bytes_per_token: c.kv_bytes_per_token,
            },
            kv_read_per_token_s: c.kv_read_per_token_s,
            overlap_copies: c.overlap_copies,
        }
    }
}

/// A server's costs as a file: a CPU server's copies do not overlap compute, and the
/// simulator's KV-read term is not measured (0).
impl From<CostModel> for CostFile {
    fn from(m: CostModel) -> Self {
        CostFile {
            fwd_base_s: m.fwd_base_s,
            fwd_per_token_s: m.fwd_per_token_s,
            attn_per_pair_s: m.attn_per_pair_s,
            attn_row_per_pair_s: Some(m.attn_row_per_pair_s),
            sample_per_row_s: m.sample_per_row_s,
            swap_out_per_token_s: m.swap_out_per_token_s,
            swap_in_per_token_s: m.swap_in_per_token_s,
            swap_base_s: m.swap_base_s,
            kv_bytes_per_token: m.kv_bytes_per_token,
            kv_read_per_token_s: 0.0,
            overlap_copies: false,
        }
    }
}

/// Names of the built-in profiles, for `--help` and errors.
pub const PRESETS: [&str; 2] = ["smollm2-cpu", "gptj6b-a100"];

/// SmolLM2-135M-Instruct Q4_1 on the reference machine (2-core Intel Xeon, Sapphire Rapids
/// class, llama.cpp built without AMX, no GPU; `tandem serve --threads 2 --max-seqs 16
/// --kv-cells 32768`, flash attention on, the default then): the median of each figure over
/// seven startup profiles logged on 2026-12-02
/// (bench/costs/smollm2-xeon-profiles-2026-12-02.log, through `bench/cost_profile_median.py`;
/// forward base 2.9-6.3 ms, per token 2.61-2.93 ms, attention 1.06-1.68 us a pair in a
/// 64-token batch and 11.2-12.5 us in one-token rows, a sampled row 0.93-1.11 ms). These
/// profiles came from commit b03226d, whose sampled-row timing also built a sampler per row
/// each repeat (about 0.1-0.2 ms of it; later profiles gave 0.76-0.98 ms on the same
/// machine at other times, when its per-token time had moved by up to 12%, so they were not
/// swapped in for the calibration's). llama.cpp copies
/// before it decodes, so copies do not overlap compute. The earlier AMD EPYC preset, which
/// priced neither attention nor sampled rows, is bench/costs/smollm2-epyc-2026-12-02.json.
const SMOLLM2_CPU: CostFile = CostFile {
    fwd_base_s: 3.59e-3,
    fwd_per_token_s: 2.782e-3,
    attn_per_pair_s: 1.578e-6,
    attn_row_per_pair_s: Some(11.34e-6),
    sample_per_row_s: 0.97e-3,
    swap_out_per_token_s: 2.58e-6,
    swap_in_per_token_s: 1.79e-6,
    swap_base_s: 0.0,
    kv_bytes_per_token: 23_054,
    kv_read_per_token_s: 0.0,
    overlap_copies: false,
};

/// GPT-J-6B in fp16 on one A100-80GB (InferCept's first setting), derived from datasheet
/// figures, not measured: a step reads the 12.1 GB of weights at ~1.6 TB/s (7.6 ms, 10 ms
/// with launch overheads), each token costs 2 x 6.05 GFLOP at ~50% of 312 TFLOPS (0.078
/// ms), each (token, earlier token) pair 4 x 4096 x 28 = 458,752 FLOP of attention at the
/// same rate (2.94 ns; the per-token figure counts the output projection for every token, so
/// a sampled row costs nothing more), each row reads its KV (2 x 28 layers x 4096 x 2 bytes = 458,752 bytes a token) at
/// 1.6 TB/s (0.29 us a token), and a copy over PCIe 4.0 x16 moves ~25 GB/s (18.4 us a
/// token) on the copy engine, beside compute.
const GPTJ6B_A100: CostFile = CostFile {
    fwd_base_s: 0.010,
    fwd_per_token_s: 0.078e-3,
    attn_per_pair_s: 2.94e-9,
    attn_row_per_pair_s: None,
    sample_per_row_s: 0.0,
    swap_out_per_token_s: 18.4e-6,
    swap_in_per_token_s: 18.4e-6,
    swap_base_s: 50e-6,
    kv_bytes_per_token: 458_752,
    kv_read_per_token_s: 0.29e-6,
    overlap_copies: true,
};

/// A preset by name, or a JSON file of [`CostFile`]'s fields.
pub fn load(spec: &str) -> anyhow::Result<CostFile> {
    match spec {
        "smollm2-cpu" => return Ok(SMOLLM2_CPU),
        "gptj6b-a100" => return Ok(GPTJ6B_A100),
        _ => {}
    }
    let path = Path::new(spec);
    if !path.exists() {
        bail!("--costs {spec}: neither a preset ({PRESETS:?}) nor a file");
    }
    let text = std::fs::read_to_string(path).with_context(|| format!("read {spec}"))?;
    let c: CostFile = serde_json::from_str(&text).with_context(|| format!("--costs {spec}"))?;
    check(&c).with_context(|| format!("--costs {spec}"))?;
    Ok(c)
}

fn check(c: &CostFile) -> anyhow::Result<()> {
    let times = [
        c.fwd_base_s,
        c.fwd_per_token_s,
        c.attn_per_pair_s,
        c.attn_row_per_pair_s.unwrap_or(0.0),
        c.sample_per_row_s,
        c.swap_out_per_token_s,
        c.swap_in_per_token_s,
        c.swap_base_s,
        c.kv_read_per_token_s,
    ];
    if times.iter().any(|t| !t.is_finite() || *t < 0.0) {
        bail!("every time must be a finite number of seconds >= 0");
    }
    if c.fwd_base_s + c.fwd_per_token_s <= 0.0 {
        bail!("a forward step must take time (fwd_base_s + fwd_per_token_s > 0)");
    }
    if c.kv_bytes_per_token == 0 {
        bail!("kv_bytes_per_token must be at least 1");
    }
    Ok(())
}

/// The costs a tandem server measured, from its `/metrics` page (`parsed`: unlabelled
/// `tandem_*` samples). Such a server runs llama.cpp on its CPU or with copies before
/// decoding, so copies are taken as not overlapping compute.
pub fn from_metrics(parsed: &HashMap<String, f64>) -> anyhow::Result<CostFile> {
    let get = |k: &str| {
        parsed
            .get(&format!("tandem_cost_{k}"))
            .copied()
            .with_context(|| format!("the server's /metrics has no tandem_cost_{k}"))
    };
    let c = CostFile {
        fwd_base_s: get("forward_base_seconds")?,
        fwd_per_token_s: get("forward_per_token_seconds")?,
        // Servers before the attention price had none; their line stands alone.
        attn_per_pair_s: get("attention_per_pair_seconds").unwrap_or(0.0),
        attn_row_per_pair_s: get("attention_row_per_pair_seconds").ok(),
        sample_per_row_s: get("sample_per_row_seconds").unwrap_or(0.0),
        swap_out_per_token_s: get("swap_out_per_token_seconds")?,
        swap_in_per_token_s: get("swap_in_per_token_seconds")?,
        swap_base_s: get("swap_base_seconds").unwrap_or(0.0),
        kv_bytes_per_token: get("kv_bytes_per_token")? as usize,
        kv_read_per_token_s: 0.0,
        overlap_copies: false,
    };
    check(&c)?;
    Ok(c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_server_profile_round_trips_through_a_file() {
        let m = StepCost::from(load("smollm2-cpu").unwrap()).model;
        let text = serde_json::to_string(&CostFile::from(m)).unwrap();
        let back: CostFile = serde_json::from_str(&text).unwrap();
        assert_eq!(StepCost::from(back).model, m);
        assert!(!back.overlap_copies && back.kv_read_per_token_s == 0.0);
    }

    /// serde_json's default float parser rounds about one in ten such figures 1 ULP off;
    /// the workspace turns on `float_roundtrip` so a saved profile reads back bit for bit.
    #[test]
    fn figures_read_back_to_the_bit() {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..1000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let secs = (x >> 11) as f64 / (1u64 << 53) as f64 * 1e-3;
            let text = serde_json::to_string(&secs).unwrap();
            assert_eq!(serde_json::from_str::<f64>(&text).unwrap(), secs, "{text}");
        }
    }

    #[test]
    fn presets_load_and_are_valid() {
        for p in PRESETS {
            let c = load(p).unwrap();
            check(&c).unwrap();
        }
        assert!(load("gptj6b-a100").unwrap().overlap_copies);
    }

    #[test]
    fn a_file_loads_and_bad_ones_say_why() {
        let dir = std::env::temp_dir().join(format!("tandem-costs-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"fwd_base_s": 0.01, "fwd_per_token_s": 0.001, "swap_out_per_token_s": 1e-6, "swap_in_per_token_s": 1e-6, "kv_bytes_per_token": 1000}"#).unwrap();
        let c = load(good.to_str().unwrap()).unwrap();
        assert_eq!((c.kv_bytes_per_token, c.overlap_copies), (1000, false));
        assert_eq!(c.attn_per_pair_s, 0.0, "optional");
        let neg = dir.join("neg.json");
        std::fs::write(&neg, r#"{"fwd_base_s": 0.01, "fwd_per_token_s": 0.001, "attn_per_pair_s": -1e-6, "swap_out_per_token_s": 1e-6, "swap_in_per_token_s": 1e-6, "kv_bytes_per_token": 1000}"#).unwrap();
        assert!(
            load(neg.to_str().unwrap()).is_err(),
            "negative attention price"
        );
        let bad = dir.join("bad.json");
        std::fs::write(&bad, r#"{"fwd_base_s": -1, "fwd_per_token_s": 0.001, "swap_out_per_token_s": 1e-6, "swap_in_per_token_s": 1e-6, "kv_bytes_per_token": 1000}"#).unwrap();
        let e = format!("{:#}", load(bad.to_str().unwrap()).unwrap_err());
        assert!(e.contains(">= 0"), "{e}");
        let typo = dir.join("typo.json");
        std::fs::write(&typo, r#"{"fwd_base": 0.01}"#).unwrap();
        let e = format!("{:#}", load(typo.to_str().unwrap()).unwrap_err());
        assert!(e.contains("unknown field"), "{e}");
        let e = format!("{:#}", load("no-such-preset").unwrap_err());
        assert!(e.contains("smollm2-cpu"), "{e}");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_servers_metrics_give_its_costs() {
        let page = "tandem_cost_forward_base_seconds 0.02\ntandem_cost_forward_per_token_seconds 0.003\ntandem_cost_swap_out_per_token_seconds 0.00001\ntandem_cost_swap_in_per_token_seconds 0.000004\ntandem_cost_swap_base_seconds 0.0001\ntandem_cost_kv_bytes_per_token 23055\n";
        let c = from_metrics(&crate::bench::server_metrics::parse(page)).unwrap();
        assert_eq!(c.fwd_base_s, 0.02);
        assert_eq!(c.kv_bytes_per_token, 23055);
        assert_eq!(
            c.attn_per_pair_s, 0.0,
            "a server from before the attention price"
        );
        let page = format!("{page}tandem_cost_attention_per_pair_seconds 0.0000012\n");
        let page = format!("{page}tandem_cost_sample_per_row_seconds 0.0003\n");
        let c = from_metrics(&crate::bench::server_metrics::parse(&page)).unwrap();
        assert_eq!((c.attn_per_pair_s, c.sample_per_row_s), (1.2e-6, 3e-4));
        assert_eq!(
            StepCost::from(c).model.attn_row_per_pair_s,
            1.2e-6,
            "row price defaults"
        );
        let page = format!("{page}tandem_cost_attention_row_per_pair_seconds 0.00001\n");
        let c = from_metrics(&crate::bench::server_metrics::parse(&page)).unwrap();
        assert_eq!(StepCost::from(c).model.attn_row_per_pair_s, 1e-5);
        let e = from_metrics(&HashMap::new()).unwrap_err().to_string();
        assert!(e.contains("tandem_cost_forward_base_seconds"), "{e}");
    }
}
