//! Bench workloads: JSON lines, one request each, with optional arrival times and segments
//! separated by tool calls. `prompt_tokens: N` makes a synthetic prompt of about N tokens.

use std::path::Path;

use anyhow::{bail, Context};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

pub use crate::script::{filler, Segment};

#[derive(Debug, Clone, Deserialize, Serialize)]
pub struct WorkItem {
    #[serde(default)]
    pub id: Option<String>,
    pub arrival_s: Option<f64>,
    pub messages: Option<Vec<Value>>,
    pub prompt_tokens: Option<usize>,
    /// A system message of about N tokens put first, the same text for every request that
    /// asks for the same N (an agent's instructions and tool definitions, which its
    /// conversations share).
    #[serde(default)]
    pub system_tokens: Option<usize>,
    /// Varies the system text between runs (the run's `--seed`), so one run's system prompt
    /// is not in a server's cache from an earlier run.
    #[serde(skip)]
    pub system_seed: u64,
    pub segments: Vec<Segment>,
}

impl WorkItem {
    /// Total time this request spends in tools (excluded from normalized latency).
    pub fn tool_time(&self) -> f64 {
        self.segments
            .iter()
            .filter_map(|s| s.tool.as_ref())
            .map(|t| t.duration_s)
            .sum()
    }
}

pub fn load(path: &Path) -> anyhow::Result<Vec<WorkItem>> {
    let text = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
    let mut items = Vec::new();
    for (i, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let item: WorkItem =
            serde_json::from_str(line).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        validate(&item).with_context(|| format!("{}:{}", path.display(), i + 1))?;
        items.push(item);
    }
    if items.is_empty() {
        bail!("{} has no requests", path.display());
    }
    Ok(items)
}

fn validate(item: &WorkItem) -> anyhow::Result<()> {
    if item.messages.is_none() && item.prompt_tokens.is_none() {
        bail!("a request needs `messages` or `prompt_tokens`");
    }
    crate::script::check(&item.segments).map_err(anyhow::Error::msg)
}

/// Seed of the shared system message's text: fixed, so every request of every run (and
/// every server) gets the same text for the same length.
const SYSTEM_SEED: u64 = 0x5157_3734;

/// The request's first messages: its own, or a synthetic user prompt; after the shared
/// system message when it asks for one.
pub fn initial_messages(item: &WorkItem, seed: u64) -> Vec<Value> {
    let own = match &item.messages {
        Some(m) => m.clone(),
        None => {
            let n = item.prompt_tokens.unwrap_or(16);
            vec![json!({"role": "user", "content": filler(n, seed)})]
        }
    };
    let Some(n) = item.system_tokens else {
        return own;
    };
    let system = json!({"role": "system", "content": filler(n, SYSTEM_SEED ^ item.system_seed)});
    std::iter::once(system).chain(own).collect()
}

/// A single-segment synthetic workload: `n` requests of `prompt` → `output` tokens.
pub fn synthetic(n: usize, prompt: usize, output: usize) -> Vec<WorkItem> {
    (0..n)
        .map(|i| WorkItem {
            id: Some(format!("synthetic-{i}")),
            arrival_s: None,
            messages: None,
            prompt_tokens: Some(prompt),
            system_tokens: None,
            system_seed: 0,
            segments: vec![Segment {
                decode_tokens: output,
                tool: None,
            }],
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_message_comes_first_and_is_the_same_for_every_request() {
        let mut item = synthetic(1, 20, 4).remove(0);
        assert_eq!(initial_messages(&item, 1).len(), 1);
        item.system_tokens = Some(50);
        let (a, b) = (initial_messages(&item, 1), initial_messages(&item, 2));
        assert_eq!(a.len(), 2);
        assert_eq!(a[0]["role"], "system");
        assert_eq!(
            a[0], b[0],
            "the system text must not depend on the request's seed"
        );
        assert_ne!(a[1], b[1]);
        item.system_seed = 7;
        assert_ne!(
            initial_messages(&item, 1)[0],
            a[0],
            "another run, another system text"
        );
    }
}
