//! The conveyor bench's workloads (mission.md §2): each is the assistant text a replayed request
//! produces — one server-side tool call, then a short answer after its result — so lazy and
//! partial runs decode the same tokens while the tool work is real.
//!
//! The tool work is paced like an agent's: each piece a tool can act on (a statement, a
//! query, a plan step) costs about as much as, or less than, decoding the next piece, and the
//! last piece is cheap. That is the regime partial execution is for; a tool whose every piece
//! outlasts the whole remaining decode is bounded by the decode, not by the tool (see
//! docs/server-tools.md). The pacing was set for this 2-core CPU's decode speed; `pace` scales
//! the python work (the sleeps) for a faster decoder, such as a GPU, and the server's
//! `--search-latency-ms` does the same for search.

use serde_json::{json, Value};
use tandem_tools::grammar::grammar_json;

/// One workload: the server-side tool it uses and the replayed assistant turns.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub tool: &'static str,
    pub replay: Vec<String>,
}

pub const NAMES: [&str; 6] = ["code", "report", "search", "plan", "validate", "calc"];

const ANSWER: &str = "Done: the tool returned its result.";

/// All workloads, in report order, their python work scaled by `pace` (1: as designed).
pub fn all(pace: f64) -> Vec<Workload> {
    NAMES
        .iter()
        .map(|n| by_name(n, pace).expect("listed"))
        .collect()
}

/// One workload by name, its python work scaled by `pace`.
pub fn by_name(name: &str, pace: f64) -> Option<Workload> {
    let (tool, args) = match name {
        "code" => ("python", json!({"code": code(pace)})),
        "report" => ("python", json!({"code": report(pace)})),
        "search" => ("search", json!({"queries": queries()})),
        "plan" => ("plan", plan(pace)),
        "validate" => ("validate", json!({"records": records()})),
        "calc" => ("calc", json!({"expression": CALC})),
        _ => return None,
    };
    let name = NAMES.iter().find(|n| **n == name)?;
    Some(Workload {
        name,
        tool,
        replay: vec![call(tool, args), ANSWER.to_string()],
    })
}

/// The call as SmolLM2's (Hermes-style) chat template writes it, its JSON as the call
/// grammar does (so the grammar's forced text, jumped forward, is the replayed text).
fn call(name: &str, arguments: Value) -> String {
    let body = grammar_json(&json!({"name": name, "arguments": arguments}));
    format!("<tool_call>\n{body}\n</tool_call>")
}

/// `seconds` × `pace` as Python writes it, to the millisecond (1.0 keeps 0.1 as "0.1").
fn paced(seconds: f64, pace: f64) -> String {
    format!("{}", (seconds * pace * 1000.0).round() / 1000.0)
}

/// The eight tables the python workloads load, with their row counts.
const TABLES: [(&str, usize); 8] = [
    ("orders", 400),
    ("refunds", 60),
    ("customers", 120),
    ("products", 80),
    ("shipments", 300),
    ("reviews", 200),
    ("returns", 50),
    ("invoices", 250),
];

/// The python workloads' loader: a wait of 0.1 s × `pace` on I/O (a file or service
/// stand-in), then the rows.
fn loader(pace: f64) -> Vec<String> {
    vec![
        "import time".to_string(),
        String::new(),
        "def load(table, rows):".to_string(),
        format!(
            "    time.sleep({})  # reading the table from storage",
            paced(0.1, pace)
        ),
        "    return [(table, i, (i * 37) % 101) for i in range(rows)]".to_string(),
        String::new(),
    ]
}

/// A report: the same loads, each line printing its table's summary as soon as it is loaded,
/// so the result is known line by line (python publishes its output so far: partial results).
fn report(pace: f64) -> String {
    let mut lines = loader(pace);
    for (t, rows) in TABLES {
        lines.push(format!(
            "{t} = load(\"{t}\", {rows}); print(\"{t}:\", len({t}), \"rows, value total\", sum(v for _, _, v in {t}))"
        ));
    }
    lines.join("\n")
}

/// Code generation: a script loading eight tables, each load waiting 0.1 s × `pace` on I/O (a
/// file or service stand-in), then a cheap summary line.
fn code(pace: f64) -> String {
    let mut lines = loader(pace);
    for (t, rows) in TABLES {
        lines.push(format!(
            "{t} = load(\"{t}\", {rows})  # all {t} of last quarter"
        ));
    }
    lines.push("print(sum(v for _, _, v in orders) - sum(v for _, _, v in refunds))".into());
    lines.join("\n")
}

/// Search: eight questions in one call; the search tool runs them one after another (a
/// rate-limited service), each as soon as it is closed.
fn queries() -> Vec<&'static str> {
    vec![
        "how does a lighthouse lens focus its beam",
        "which signs come before a volcano erupts",
        "why do suspension bridges need such long cables",
        "what does the honeybee waggle dance tell other bees",
        "how do glaciers carve a moraine valley",
        "at what temperature does a sourdough starter ferment best",
        "how are coral reefs formed over centuries",
        "what makes a violin sound different from a viola",
    ]
}

/// Planning: a slow computation first (0.5 s × `pace`), searches, a step using `$k` references
/// to earlier results, and a cheap search last.
fn plan(pace: f64) -> Value {
    let slow = format!(
        "import time\ntime.sleep({})  # fitting the model\nprint('fitted, r2 =', 0.93)",
        paced(0.5, pace)
    );
    let report = "print('''$0'''.strip(), len('''$1'''))";
    json!({"steps": [
        {"tool": "python", "arguments": {"code": slow}},
        {"tool": "search", "arguments": {"queries": ["how do glaciers carve a moraine valley"]}},
        {"tool": "python", "arguments": {"code": report}},
        {"tool": "search", "arguments": {"queries": ["sourdough starter fermentation temperature"]}},
        {"tool": "search", "arguments": {"queries": ["how are coral reefs formed"]}},
    ]})
}

/// Validation: eight records, the second with an invalid e-mail; the tool rejects it as soon
/// as that field is complete.
fn records() -> Vec<Value> {
    let names = ["Ann", "Bob", "Cyd", "Dee", "Eve", "Fay", "Gus", "Hal"];
    let mut out: Vec<Value> = names
        .iter()
        .enumerate()
        .map(|(i, n)| {
            let email = format!("{}@example.org", n.to_lowercase());
            json!({"name": n, "email": email, "age": 20 + i})
        })
        .collect();
    out[1]["email"] = json!("bob-at-example");
    out
}

/// Arithmetic: negligible tool time, the control where partial execution cannot gain.
const CALC: &str = "(1234 + 5678) * 3 - 42 / 7 + 11 * 13 - 8 * 9 + 100 / 4";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_workload_is_one_parsable_call_then_an_answer() {
        for w in all(1.0) {
            let inner = w.replay[0]
                .strip_prefix("<tool_call>\n")
                .and_then(|s| s.strip_suffix("\n</tool_call>"))
                .expect("call markup");
            let v: Value = serde_json::from_str(inner).expect("call JSON");
            assert_eq!(v["name"], w.tool, "{}", w.name);
            assert!(v["arguments"].is_object());
            assert_eq!(w.replay.len(), 2);
        }
        assert!(by_name("nope", 1.0).is_none());
    }

    #[test]
    fn pace_scales_the_python_sleeps_and_one_keeps_the_text() {
        let code_text = |pace| by_name("code", pace).unwrap().replay[0].clone();
        assert!(code_text(1.0).contains("time.sleep(0.1)"));
        assert!(
            code_text(0.2).contains("time.sleep(0.02)"),
            "{}",
            code_text(0.2)
        );
        let plan_text = by_name("plan", 0.25).unwrap().replay[0].clone();
        assert!(plan_text.contains("time.sleep(0.125)"), "{plan_text}");
        assert_eq!(
            by_name("search", 0.25).unwrap().replay,
            by_name("search", 1.0).unwrap().replay
        );
    }

    #[test]
    fn validate_has_exactly_one_bad_record_early() {
        let r = records();
        let bad: Vec<_> = r
            .iter()
            .filter(|x| !x["email"].as_str().unwrap().contains('@'))
            .collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(r[1]["email"], "bob-at-example");
    }
}
