//! Scripted tool segments (the bench workload format): a request's output split into segments
//! of `decode_tokens` tokens, each but the last followed by a tool call that takes
//! `duration_s` seconds and returns `result_tokens` tokens. The bench plays them on the client
//! side, or sends them to a server started with `--allow-scripted`, which pauses the request
//! after each segment through the engine's interception path and resumes it with filler
//! tokens of the given length.

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::{Deserialize, Serialize};
use tandem_engine::InterceptSpec;

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub duration_s: f64,
    pub result_tokens: usize,
}

#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
pub struct Segment {
    pub decode_tokens: usize,
    pub tool: Option<ToolSpec>,
}

/// Longest tool time a scripted segment may ask the server to wait.
pub const MAX_TOOL_SECONDS: f64 = 3600.0;

/// Why a list of segments is not playable.
pub fn check(segments: &[Segment]) -> Result<(), String> {
    let Some(last) = segments.last() else {
        return Err("`segments` is empty".into());
    };
    if last.tool.is_some() {
        return Err("the last segment must not call a tool".into());
    }
    if segments.iter().any(|s| s.decode_tokens == 0) {
        return Err("decode_tokens must be at least 1".into());
    }
    let bad_time = |t: &ToolSpec| !(0.0..=MAX_TOOL_SECONDS).contains(&t.duration_s);
    if segments
        .iter()
        .filter_map(|s| s.tool.as_ref())
        .any(bad_time)
    {
        return Err(format!(
            "tool duration_s must be between 0 and {MAX_TOOL_SECONDS}"
        ));
    }
    Ok(())
}

/// Output tokens of all segments.
pub fn total_decode(segments: &[Segment]) -> usize {
    segments.iter().map(|s| s.decode_tokens).sum()
}

/// Tool tokens appended over the whole script.
pub fn total_results(segments: &[Segment]) -> usize {
    let tools = segments.iter().filter_map(|s| s.tool.as_ref());
    tools.map(|t| t.result_tokens).sum()
}

/// The engine's pause points: after each tool-calling segment's cumulative output.
pub fn intercept_spec(segments: &[Segment]) -> InterceptSpec {
    let mut at = 0;
    let mut after_tokens = Vec::new();
    for s in segments {
        at += s.decode_tokens;
        if let Some(t) = &s.tool {
            after_tokens.push((at, t.name.clone()));
        }
    }
    InterceptSpec {
        triggers: Vec::new(),
        after_tokens,
    }
}

/// The tool calls in order.
pub fn tools(segments: &[Segment]) -> Vec<ToolSpec> {
    segments.iter().filter_map(|s| s.tool.clone()).collect()
}

/// Words that are one token each in common BPE vocabularies (with their leading space).
const WORDS: &[&str] = &[
    "the", "of", "and", "to", "in", "is", "it", "that", "for", "on", "with", "as", "was", "at",
    "by", "this", "from", "are", "or", "be", "an", "not", "but", "all", "can", "one", "time",
    "data", "city", "water", "house", "light", "music", "river", "table", "paper", "green",
];

/// About `n` tokens of filler text, deterministic for a seed.
pub fn filler(n: usize, seed: u64) -> String {
    let mut rng = StdRng::seed_from_u64(seed);
    let words: Vec<&str> = (0..n)
        .map(|_| WORDS[rng.random_range(0..WORDS.len())])
        .collect();
    words.join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(d: usize, tool: Option<(&str, f64, usize)>) -> Segment {
        Segment {
            decode_tokens: d,
            tool: tool.map(|(n, s, r)| ToolSpec {
                name: n.into(),
                duration_s: s,
                result_tokens: r,
            }),
        }
    }

    #[test]
    fn pause_points_are_cumulative() {
        let s = [
            seg(5, Some(("a", 1.0, 3))),
            seg(7, Some(("b", 0.5, 2))),
            seg(4, None),
        ];
        assert!(check(&s).is_ok());
        let spec = intercept_spec(&s);
        assert_eq!(spec.after_tokens, vec![(5, "a".into()), (12, "b".into())]);
        assert_eq!((total_decode(&s), total_results(&s)), (16, 5));
    }

    #[test]
    fn bad_scripts_are_rejected() {
        assert!(check(&[]).is_err());
        assert!(check(&[seg(5, Some(("a", 1.0, 3)))]).is_err());
        assert!(check(&[seg(0, None)]).is_err());
        assert!(check(&[seg(1, Some(("a", -1.0, 3))), seg(1, None)]).is_err());
    }
}
