//! Tool-call parsers over recorded outputs, split at every character boundary and at random
//! piece boundaries: the events always reassemble the input, and the calls found (names and
//! argument text of the valid calls and of a call cut off at the end) do not depend on the
//! split. Arbitrary text never panics.

use proptest::prelude::*;
use serde_json::Value;
use tandem_calls::{ParseEvent, ParserKind};

/// Model outputs as decoded text: well-formed, mixed with prose, malformed, cut off.
const RECORDED: &[(ParserKind, &str)] = &[
    (ParserKind::Hermes, "<tool_call>\n{\"name\": \"get_weather\", \"arguments\": {\"city\": \"Paris\", \"unit\": \"celsius\"}}\n</tool_call>"),
    (ParserKind::Hermes, "Let me check.\n<tool_call>\n{\"name\": \"search\", \"arguments\": {\"q\": \"a \\\"quoted\\\" </tool_call> string\", \"n\": 3}}\n</tool_call>\n<tool_call>\n{\"name\": \"add\", \"arguments\": {\"a\": -1.5e2, \"b\": [true, null, {\"x\": \"é€😀\"}]}}\n</tool_call>"),
    (ParserKind::Hermes, "<tool_call>{\"arguments\": {}, \"name\": \"late_name\"}</tool_call> after"),
    (ParserKind::Hermes, "no call here, just <tool text and </tool_call> tags"),
    (ParserKind::Hermes, "<tool_call>\n{\"name\": \"broken\", \"arguments\": {\"a\": 1,}}\n</tool_call> tail"),
    (ParserKind::Hermes, "<tool_call>\n{\"name\": \"cut\", \"arguments\": {\"text\": \"unfinis"),
    (ParserKind::Hermes, "<tool_call>[1, 2]</tool_call><tool_call>{\"name\": \"ok\", \"arguments\": {\"u\": \"\\u00e9\\n\"}}"),
    (ParserKind::Llama3, "{\"name\": \"get_time\", \"parameters\": {\"tz\": \"UTC\"}}"),
    (ParserKind::Llama3, "<|python_tag|>{\"name\": \"a\", \"parameters\": {}}; {\"name\": \"b\", \"parameters\": {\"n\": [1, 2]}}"),
    (ParserKind::Llama3, "The JSON is {\"name\": \"not a call\"}"),
    (ParserKind::Llama3, "  {\"not\": \"a call\"} trailing"),
    (ParserKind::Mistral, "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {\"x\": \"y\"}}, {\"name\": \"b\", \"arguments\": {}}]"),
    (ParserKind::Mistral, "Thinking... [TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {\"deep\": {\"er\": [[[]]]}}}] done"),
    (ParserKind::Mistral, "[TOOL_CALLS]{\"name\": \"no_bracket\"}"),
];

#[derive(Debug, PartialEq)]
struct Call {
    name: String,
    args: String,
    end: End,
}

/// How a call's events ended.
#[derive(Debug, PartialEq)]
enum End {
    Open,
    Valid,
    Cut,
}

fn run(kind: ParserKind, pieces: &[&str]) -> Vec<ParseEvent> {
    let mut p = kind.parser();
    let mut ev: Vec<_> = pieces.iter().flat_map(|t| p.push(t)).collect();
    ev.extend(p.finish());
    ev
}

/// Checks the events' invariants and returns the calls they describe.
fn check(text: &str, ev: &[ParseEvent]) -> Vec<Call> {
    assert_eq!(ev.iter().map(ParseEvent::text).collect::<String>(), text);
    let mut calls: Vec<Call> = Vec::new();
    for e in ev {
        match e {
            ParseEvent::CallStart { index, name } => {
                assert_eq!(*index, calls.len(), "indexes count up");
                calls.push(Call {
                    name: name.clone(),
                    args: String::new(),
                    end: End::Open,
                });
            }
            ParseEvent::CallArgs { index, fragment } => {
                assert_eq!(*index + 1, calls.len());
                calls[*index].args.push_str(fragment);
            }
            ParseEvent::CallEnd { index, raw } => {
                let call = &mut calls[*index];
                call.end = End::Valid;
                let args: Value = serde_json::from_str(&call.args).expect("arguments are JSON");
                assert!(args.is_object());
                assert!(raw.contains(&call.args) && raw.contains(&call.name));
            }
            ParseEvent::CallInvalid { index, .. } => assert!(*index < calls.len()),
            ParseEvent::CallCut { index, raw } => {
                assert_eq!(*index + 1, calls.len(), "the last call started is cut");
                assert!(
                    text.ends_with(raw.as_str()),
                    "only the text's end cuts a call"
                );
                calls[*index].end = End::Cut;
            }
            ParseEvent::Content(t) | ParseEvent::Markup(t) => assert!(!t.is_empty()),
        }
    }
    // A call found malformed only later may or may not have been started, depending on where
    // the text was split; the valid and cut calls never depend on it.
    calls.retain(|c| c.end != End::Open);
    calls
}

fn boundaries(text: &str) -> Vec<usize> {
    (0..=text.len())
        .filter(|&i| text.is_char_boundary(i))
        .collect()
}

#[test]
fn every_split_point_gives_the_same_calls() {
    for &(kind, text) in RECORDED {
        let whole = check(text, &run(kind, &[text]));
        for i in boundaries(text) {
            let split = check(text, &run(kind, &[&text[..i], &text[i..]]));
            assert_eq!(split, whole, "{kind} split at {i}: {text}");
        }
    }
}

#[test]
fn recorded_outputs_parse_as_expected() {
    // A cut call's name is marked with a trailing `…`.
    let found = |k: ParserKind, t: &str| -> Vec<String> {
        let calls = check(t, &run(k, &[t])).into_iter();
        let mark = |c: Call| c.name + if c.end == End::Cut { "…" } else { "" };
        calls.map(mark).collect()
    };
    let expected: &[&[&str]] = &[
        &["get_weather"],
        &["search", "add"],
        &["late_name"],
        &[],
        &[],
        &["cut…"],
        &["ok"],
        &["get_time"],
        &["a", "b"],
        &[],
        &[],
        &["a", "b"],
        &["a"],
        &[],
    ];
    for (&(k, t), want) in RECORDED.iter().zip(expected) {
        assert_eq!(found(k, t), *want, "{t}");
    }
}

fn pieces(text: &str, cuts: &[usize]) -> Vec<String> {
    let b = boundaries(text);
    let mut at: Vec<usize> = cuts.iter().map(|c| b[c % b.len()]).collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    at.dedup();
    at.windows(2)
        .map(|w| text[w[0]..w[1]].to_string())
        .collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn random_token_boundaries(which in 0..RECORDED.len(), cuts in prop::collection::vec(any::<usize>(), 0..40)) {
        let (kind, text) = RECORDED[which];
        let whole = check(text, &run(kind, &[text]));
        let p = pieces(text, &cuts);
        let refs: Vec<&str> = p.iter().map(String::as_str).collect();
        prop_assert_eq!(check(text, &run(kind, &refs)), whole);
    }

    #[test]
    fn arbitrary_text_never_panics_and_reassembles(
        parts in prop::collection::vec(prop_oneof![
            Just("<tool_call>".to_string()), Just("</tool_call>".to_string()),
            Just("[TOOL_CALLS]".to_string()), Just("<|python_tag|>".to_string()),
            Just("{\"name\": \"f\", \"arguments\": ".to_string()), Just("{".to_string()),
            Just("}".to_string()), Just("[".to_string()), Just("]".to_string()),
            Just(",".to_string()), Just(";".to_string()), Just("\"".to_string()),
            Just("\\".to_string()), ".{0,6}",
        ], 0..30),
        cuts in prop::collection::vec(any::<usize>(), 0..20),
        kind in prop_oneof![Just(ParserKind::Hermes), Just(ParserKind::Llama3), Just(ParserKind::Mistral)],
    ) {
        let text: String = parts.concat();
        let p = pieces(&text, &cuts);
        let refs: Vec<&str> = p.iter().map(String::as_str).collect();
        check(&text, &run(kind, &refs));
    }
}
