//! The conveyor bench's workloads (mission.md §2): each is the assistant text a replayed request
//! produces — one server-side tool call, then a short answer after its result — so lazy and
//! partial runs decode the same tokens while the tool work is real.
//!
//! The tool work is paced like an agent's: each piece a tool can act on (a statement, a
//! query, a plan step) costs about as much as, or less than, decoding the next piece, and the
//! last piece is cheap. That is the regime partial execution is for; a tool whose every piece
//! outlasts the whole remaining decode is bounded by the decode, not by the tool (see
//! docs/server-tools.md).

use serde_json::{json, Value};
use tandem_tools::grammar::grammar_json;

/// One workload: the server-side tool it uses and the replayed assistant turns.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: &'static str,
    pub tool: &'static str,
    pub replay: Vec<String>,
}

pub const NAMES: [&str; 5] = ["code", "search", "plan", "validate", "calc"];

const ANSWER: &str = "Done: the tool returned its result.";

/// All workloads, in report order.
pub fn all() -> Vec<Workload> {
    NAMES.iter().map(|n| by_name(n).expect("listed")).collect()
}

pub fn by_name(name: &str) -> Option<Workload> {
    let (tool, args) = match name {
        "code" => ("python", json!({"code": code()})),
        "search" => ("search", json!({"queries": queries()})),
        "plan" => ("plan", plan()),
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

/// Code generation: a script loading eight tables, each load waiting 0.1 s on I/O (a file or
/// service stand-in), then a cheap summary line.
fn code() -> String {
    let tables = [
        ("orders", 400),
        ("refunds", 60),
        ("customers", 120),
        ("products", 80),
        ("shipments", 300),
        ("reviews", 200),
        ("returns", 50),
        ("invoices", 250),
    ];
    let mut lines = vec![
        "import time".to_string(),
        String::new(),
        "def load(table, rows):".to_string(),
        "    time.sleep(0.1)  # reading the table from storage".to_string(),
        "    return [(table, i, (i * 37) % 101) for i in range(rows)]".to_string(),
        String::new(),
    ];
    for (t, rows) in tables {
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

/// Planning: a slow computation first, searches, a step using `$k` references to earlier
/// results, and a cheap search last.
fn plan() -> Value {
    let slow = "import time\ntime.sleep(0.5)  # fitting the model\nprint('fitted, r2 =', 0.93)";
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
        for w in all() {
            let inner = w.replay[0]
                .strip_prefix("<tool_call>\n")
                .and_then(|s| s.strip_suffix("\n</tool_call>"))
                .expect("call markup");
            let v: Value = serde_json::from_str(inner).expect("call JSON");
            assert_eq!(v["name"], w.tool, "{}", w.name);
            assert!(v["arguments"].is_object());
            assert_eq!(w.replay.len(), 2);
        }
        assert!(by_name("nope").is_none());
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
