//! InferCept's augmentation workload (mission.md §1): six kinds of tool-augmented requests
//! with the paper's mean interception time, interceptions per request and context length.
//! Per request: interceptions `1 + Poisson(mean - 1)`, context uniform in ±50% of the mean,
//! each interception exponential around the mean time. `scale` shrinks context lengths and
//! times alike (this 2-core machine cannot serve 2,000-token contexts at the paper's rates).
//! The context is 40% prompt; the rest is split over the decode segments (40%) and the tool
//! results (60%).

use anyhow::bail;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::bench::workload::WorkItem;
use crate::script::{Segment, ToolSpec};

/// (name, mean interception seconds, mean interceptions per request, mean context tokens)
pub const KINDS: [(&str, f64, f64, f64); 6] = [
    ("math", 0.00009, 3.75, 1422.0),
    ("qa", 0.69, 2.52, 1846.0),
    ("ve", 0.09, 28.2, 2185.0),
    ("chatbot", 28.6, 4.45, 753.0),
    ("image", 20.0, 6.91, 1247.0),
    ("tts", 17.2, 6.91, 1251.0),
];

/// Parses `augment` (the mix of all six) or `augment:KIND`; `None` if `spec` names no
/// augmentation workload.
pub fn parse(spec: &str) -> Option<anyhow::Result<Vec<usize>>> {
    let rest = spec.strip_prefix("augment")?;
    if rest.is_empty() {
        return Some(Ok((0..KINDS.len()).collect()));
    }
    let kind = rest.strip_prefix(':')?;
    Some(match KINDS.iter().position(|k| k.0 == kind) {
        Some(i) => Ok(vec![i]),
        None => {
            let names: Vec<_> = KINDS.iter().map(|k| k.0).collect();
            Err(anyhow::anyhow!(
                "unknown augmentation `{kind}`; one of {names:?}"
            ))
        }
    })
}

/// `n` requests drawn from the given kinds (uniformly), deterministic for a seed.
pub fn generate(kinds: &[usize], n: usize, scale: f64, seed: u64) -> anyhow::Result<Vec<WorkItem>> {
    if !(scale > 0.0 && scale <= 1.0) {
        bail!("--scale must be in (0, 1]");
    }
    let mut rng = StdRng::seed_from_u64(seed);
    Ok((0..n)
        .map(|i| {
            let kind = kinds[rng.random_range(0..kinds.len())];
            request(&mut rng, kind, scale, i)
        })
        .collect())
}

fn request(rng: &mut StdRng, kind: usize, scale: f64, i: usize) -> WorkItem {
    let (name, time, calls, context) = KINDS[kind];
    let k = 1 + poisson(rng, calls - 1.0);
    let ctx = (context * scale * rng.random_range(0.5..1.5)).max(16.0);
    let prompt = (0.4 * ctx) as usize;
    let decode = ((0.6 * ctx * 0.4) / (k + 1) as f64).round().max(2.0) as usize;
    let result = ((0.6 * ctx * 0.6) / k as f64).round().max(1.0) as usize;
    let mut segments: Vec<Segment> = (0..k)
        .map(|_| Segment {
            decode_tokens: decode,
            tool: Some(ToolSpec {
                name: name.to_string(),
                duration_s: exponential(rng, time * scale),
                result_tokens: result,
            }),
        })
        .collect();
    segments.push(Segment {
        decode_tokens: decode,
        tool: None,
    });
    WorkItem {
        id: Some(format!("{name}-{i}")),
        arrival_s: None,
        messages: None,
        prompt_tokens: Some(prompt),
        system_tokens: None,
        system_seed: 0,
        segments,
    }
}

/// Knuth's method (fine for the small means here).
fn poisson(rng: &mut StdRng, mean: f64) -> usize {
    let limit = (-mean.max(0.0)).exp();
    let (mut k, mut p) = (0, 1.0);
    loop {
        p *= rng.random::<f64>();
        if p <= limit {
            return k;
        }
        k += 1;
    }
}

fn exponential(rng: &mut StdRng, mean: f64) -> f64 {
    -(1.0 - rng.random::<f64>()).ln() * mean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kinds() {
        assert_eq!(parse("augment").unwrap().unwrap().len(), 6);
        assert_eq!(parse("augment:qa").unwrap().unwrap(), vec![1]);
        assert!(parse("augment:nope").unwrap().is_err());
        assert!(parse("file.jsonl").is_none());
    }

    #[test]
    fn means_follow_the_paper_at_scale() {
        for (i, (name, time, calls, context)) in KINDS.iter().enumerate() {
            let items = generate(&[i], 2000, 0.5, 7).unwrap();
            let n = items.len() as f64;
            let k: f64 = items
                .iter()
                .map(|w| (w.segments.len() - 1) as f64)
                .sum::<f64>()
                / n;
            assert!((k - calls).abs() < 0.1 * calls + 0.1, "{name}: {k}");
            let t: f64 = items.iter().map(WorkItem::tool_time).sum::<f64>() / n / k;
            assert!((t - time * 0.5).abs() < 0.15 * time * 0.5, "{name}: {t}");
            let ctx: f64 = items
                .iter()
                .map(|w| {
                    let seg: usize = w.segments.iter().map(|s| s.decode_tokens).sum();
                    let res = crate::script::total_results(&w.segments);
                    (w.prompt_tokens.unwrap() + seg + res) as f64
                })
                .sum::<f64>()
                / n;
            assert!(
                (ctx - context * 0.5).abs() < 0.15 * context * 0.5,
                "{name}: {ctx}"
            );
        }
    }
}
