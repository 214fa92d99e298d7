//! Constrained decoding over a small byte-level vocabulary (with a few multi-byte tokens, one
//! of which runs past the end of the call tag): a random "model" that picks among the allowed
//! tokens always writes calls that parse and name a callable tool with arguments matching
//! the schema's required keys; lazy grammars leave text before the trigger alone.

use serde_json::{json, Value};
use tandem_engine::{mask_allows, TokenConstraint};
use tandem_tools::constraint::Guidance;
use tandem_tools::defs::{ResponseFormat, ToolRequest};
use tandem_tools::grammar::{
    check_lark, check_schema, for_output_rule, for_response_format, for_tools, GrammarPlan,
    JsonLayout,
};
use tandem_tools::structured;
use tandem_tools::{ParseEvent, ParserKind};

const EXTRA: &[&str] = &[
    "<tool_call>",
    ">\n{\"",
    "\"name\": \"",
    "weather",
    "</tool_call>",
    "city",
    "[TOOL_CALLS]",
];

fn vocab() -> (Vec<Vec<u8>>, u32) {
    let mut words: Vec<Vec<u8>> = (0..=255u8).map(|b| vec![b]).collect();
    words.extend(EXTRA.iter().map(|w| w.as_bytes().to_vec()));
    words.push(b"\xFF<|end|>".to_vec());
    let eos = words.len() as u32 - 1;
    (words, eos)
}

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Picks among allowed tokens, preferring ones that close things so outputs stay short.
fn pick(mask: &[u32], n: usize, rng: &mut Rng, words: &[Vec<u8>], eos: u32) -> u32 {
    let allowed: Vec<u32> = (0..n as u32)
        .filter(|&t| mask_allows(mask, t as i32))
        .collect();
    assert!(!allowed.is_empty(), "empty mask");
    if allowed.contains(&eos) {
        return eos;
    }
    let closing = allowed
        .iter()
        .copied()
        .filter(|&t| matches!(words[t as usize].as_slice(), b"\"" | b"}" | b"]" | b"1"));
    let closing: Vec<u32> = closing.collect();
    if !closing.is_empty() && rng.next() % 10 < 7 {
        return closing[(rng.next() as usize) % closing.len()];
    }
    allowed[(rng.next() as usize) % allowed.len()]
}

/// Runs a constraint: `prefix` tokens are forced (free text), then the random model decodes
/// until EOS. Returns the text.
fn decode(plan: &GrammarPlan, prefix: &[u32], seed: u64) -> String {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], None).unwrap();
    let mut c = g.constraint(plan).unwrap();
    let mut rng = Rng(seed);
    let mut out = Vec::new();
    for &t in prefix {
        assert!(c.allowed().unwrap().is_none(), "free text is unconstrained");
        c.commit(t as i32).unwrap();
        out.extend_from_slice(&words[t as usize]);
    }
    for _ in 0..3000 {
        let t = match c.allowed().unwrap() {
            Some(mask) => pick(&mask, words.len(), &mut rng, &words, eos),
            None => eos, // free text: the "model" ends the turn
        };
        c.commit(t as i32).unwrap();
        if t == eos {
            return String::from_utf8(out).unwrap();
        }
        out.extend_from_slice(&words[t as usize]);
    }
    panic!("no end: {}", String::from_utf8_lossy(&out));
}

fn tools(choice: Value, parallel: bool) -> ToolRequest {
    let tools = json!([
        {"type": "function", "function": {"name": "weather", "parameters": {"type": "object",
            "properties": {"city": {"type": "string"}, "days": {"type": "integer"}}, "required": ["city"]}}},
        {"type": "function", "function": {"name": "alarm", "parameters": {"type": "object",
            "properties": {"at": {"enum": ["7:00", "8:00"]}, "tags": {"type": "array", "items": {"type": "boolean"}}}, "required": ["at", "tags"]}}},
    ]);
    ToolRequest::parse(
        Some(&tools),
        Some(&choice),
        Some(&json!(parallel)),
        &check_schema,
    )
    .unwrap()
}

fn parsed_calls(kind: ParserKind, text: &str) -> Vec<(String, Value)> {
    let mut p = kind.parser();
    let mut ev = p.push(text);
    ev.extend(p.finish());
    let mut names = Vec::new();
    let mut args: Vec<String> = Vec::new();
    for e in ev {
        match e {
            ParseEvent::CallStart { name, .. } => {
                names.push(name);
                args.push(String::new());
            }
            ParseEvent::CallArgs { fragment, .. } => args.last_mut().unwrap().push_str(&fragment),
            ParseEvent::CallInvalid { raw, .. } => panic!("invalid call {raw} in {text}"),
            ParseEvent::CallCut { raw, .. } => panic!("call cut off: {raw} in {text}"),
            _ => {}
        }
    }
    names
        .into_iter()
        .zip(args.iter().map(|a| serde_json::from_str(a).unwrap()))
        .collect()
}

fn check_call(name: &str, args: &Value) {
    match name {
        "weather" => assert!(args["city"].is_string(), "{args}"),
        "alarm" => assert!(
            ["7:00", "8:00"].contains(&args["at"].as_str().unwrap()) && args["tags"].is_array(),
            "{args}"
        ),
        other => panic!("unknown tool {other}"),
    }
}

#[test]
fn forced_calls_always_parse_and_follow_the_schema() {
    for kind in [ParserKind::Hermes, ParserKind::Llama3, ParserKind::Mistral] {
        for parallel in [true, false] {
            for seed in 1..=8 {
                let plan = for_tools(kind, &tools(json!("required"), parallel)).unwrap();
                let text = decode(&plan, &[], seed);
                let calls = parsed_calls(kind, &text);
                assert!(!calls.is_empty(), "{kind}: {text}");
                assert!(parallel || calls.len() == 1, "{kind}: {text}");
                calls.iter().for_each(|(n, a)| check_call(n, a));
            }
        }
        let named = json!({"type": "function", "function": {"name": "alarm"}});
        let text = decode(&for_tools(kind, &tools(named, true)).unwrap(), &[], 3);
        assert!(
            parsed_calls(kind, &text).iter().all(|(n, _)| n == "alarm"),
            "{text}"
        );
    }
}

#[test]
fn lazy_grammar_starts_at_the_trigger_even_mid_token() {
    let (words, _) = vocab();
    let id = |w: &str| words.iter().position(|x| x == w.as_bytes()).unwrap() as u32;
    // "Hi <tool_call" then the token ">\n{\"" that runs past the end of the tag.
    let mut prefix: Vec<u32> = "Hi <tool_call".bytes().map(u32::from).collect();
    prefix.push(id(">\n{\""));
    for parallel in [true, false] {
        let plan = for_tools(ParserKind::Hermes, &tools(json!("auto"), parallel)).unwrap();
        assert!(matches!(plan, GrammarPlan::Lazy { .. }));
        for seed in 1..=6 {
            let text = decode(&plan, &prefix, seed);
            assert!(text.starts_with("Hi <tool_call>\n{\""), "{text}");
            let calls = parsed_calls(ParserKind::Hermes, &text);
            assert_eq!(calls.len(), 1, "{text}");
            check_call(&calls[0].0, &calls[0].1);
        }
    }
}

#[test]
fn response_format_schema() {
    let schema = json!({"type": "object", "properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}}, "required": ["n", "ok"]});
    let plan =
        for_response_format(&ResponseFormat::JsonSchema(schema), JsonLayout::Compact).unwrap();
    for seed in 1..=5 {
        let text = decode(&plan, &[], seed);
        let v: Value = serde_json::from_str(&text).unwrap();
        let n = text
            .split("\"n\": ")
            .nth(1)
            .unwrap()
            .split(',')
            .next()
            .unwrap();
        assert!(
            n.bytes().all(|b| b.is_ascii_digit() || b == b'-') && v["ok"].is_boolean(),
            "{text}"
        );
    }
    let any = for_response_format(&ResponseFormat::JsonObject, JsonLayout::Compact).unwrap();
    assert!(serde_json::from_str::<Value>(&decode(&any, &[], 9))
        .unwrap()
        .is_object());
}

/// `--json-layout`: compact JSON is one line with `", "` and `": "`; indented JSON may put one
/// space, or a line break and an indent of up to 32, between any two tokens (so a pretty-printed
/// file is accepted as it is), but never two line breaks or a longer indent.
#[test]
fn json_layouts_accept_what_they_say() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"},
        "b": {"type": "array", "items": {"type": "string"}}}, "required": ["a", "b"]});
    let value = json!({"a": 1, "b": ["x", "y z"]});
    let compact = tandem_tools::grammar::grammar_json(&value);
    let pretty = serde_json::to_string_pretty(&value).unwrap();
    let tabbed = "{\n\t\"a\": 1,\n\t\"b\": [\"x\", \"y z\"]\n}";
    let plan = |layout| for_response_format(&ResponseFormat::JsonSchema(schema.clone()), layout);
    let (c, i) = (
        plan(JsonLayout::Compact).unwrap(),
        plan(JsonLayout::Indented).unwrap(),
    );
    assert!(accepts(&c, &compact));
    for text in [&pretty, tabbed, "{\"a\":1,\"b\":[\"x\",\"y z\"]}"] {
        assert!(!accepts(&c, text), "compact took {text:?}");
    }
    for text in [&compact, &pretty, tabbed, "{\"a\":1,\"b\":[\"x\",\"y z\"]}"] {
        assert!(accepts(&i, text), "indented refused {text:?}");
    }
    let deep = format!("{{\n{}\"a\": 1, \"b\": []}}", " ".repeat(33));
    for text in ["{\n\n\"a\": 1, \"b\": []}", "{\"a\":  1, \"b\": []}", &deep] {
        assert!(!accepts(&i, text), "indented took {text:?}");
    }
    assert!(accepts(
        &i,
        &format!("{{\n{}\"a\": 1, \"b\": []}}", " ".repeat(32))
    ));
    for seed in 1..=8 {
        let text = decode(&i, &[], seed);
        let v: Value = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text:?}"));
        assert!(v["a"].is_number() && v["b"].is_array(), "{text}");
    }
}

/// A JSON rule follows the server's layout unless the request asks vLLM's way for compact.
#[test]
fn disable_any_whitespace_keeps_a_rule_compact() {
    let schema = json!({"type": "object", "properties": {"a": {"type": "integer"}}});
    let checks = structured::Checks {
        schema: &check_schema,
        lark: &check_lark,
    };
    let rule = |so: Value| {
        let body = json!({"structured_outputs": so});
        structured::parse(&|k| body.get(k).cloned(), &checks)
            .unwrap()
            .unwrap()
    };
    let free = rule(json!({"json": schema}));
    let compact = rule(json!({"json": schema, "disable_any_whitespace": true}));
    assert_eq!(free.layout(JsonLayout::Indented), JsonLayout::Indented);
    assert_eq!(compact.layout(JsonLayout::Indented), JsonLayout::Compact);
    let plan = for_output_rule(&compact.rule, compact.layout(JsonLayout::Indented));
    assert!(!accepts(&plan, "{\n  \"a\": 1\n}"));
    assert!(accepts(&plan, "{\"a\": 1}"));
}

/// Feeds `text` byte by byte (free text) then lets the random model finish the turn.
/// Returns the turn's text and the pause requested at its end, if any.
fn server_turn(c: &mut dyn TokenConstraint, prefix: &str, seed: u64) -> (String, Option<String>) {
    let (words, eos) = vocab();
    let mut rng = Rng(seed);
    let mut text: Vec<u8> = Vec::new();
    for b in prefix.bytes() {
        c.commit(b as i32).unwrap();
        assert_eq!(c.pause_requested(), None);
        text.push(b);
    }
    for _ in 0..3000 {
        let t = match c.allowed().unwrap() {
            Some(mask) => pick(&mask, words.len(), &mut rng, &words, eos),
            None => eos,
        };
        c.commit(t as i32).unwrap();
        let pause = c.pause_requested();
        if t == eos {
            return (String::from_utf8(text).unwrap(), pause);
        }
        assert_eq!(pause, None, "no pause before the turn ends");
        text.extend_from_slice(&words[t as usize]);
    }
    panic!("no end of turn")
}

#[test]
fn a_turn_of_server_side_calls_pauses_at_its_end_and_the_next_turn_is_free() {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], None).unwrap();
    let names: std::collections::HashSet<String> = ["weather".to_string()].into();
    let named = json!({"type": "function", "function": {"name": "weather"}});
    let mut pauses = 0;
    for (choice, prefix) in [(named, ""), (json!("auto"), "<tool_call>")] {
        for seed in 1..=4 {
            let plan = for_tools(ParserKind::Hermes, &tools(choice.clone(), true)).unwrap();
            let guided = g.constraint(&plan).unwrap();
            let mut c = g.server_turns(
                Some(Box::new(guided)),
                ParserKind::Hermes,
                names.clone(),
                Default::default(),
            );
            let (text, paused) = server_turn(&mut c, prefix, seed);
            let calls = parsed_calls(ParserKind::Hermes, &text);
            let all_server = !calls.is_empty() && calls.iter().all(|(n, _)| n == "weather");
            if !all_server {
                assert_eq!(
                    paused, None,
                    "{choice}: a client-side call ends the turn: {text}"
                );
                continue;
            }
            assert_eq!(
                paused.as_deref(),
                Some(&*vec!["weather"; calls.len()].join(","))
            );
            pauses += 1;
            c.resumed();
            assert!(c.allowed().unwrap().is_none(), "free after the resume");
            let (text, paused) = server_turn(&mut c, "The weather is fine.", seed);
            assert_eq!((text.as_str(), paused), ("The weather is fine.", None));
        }
    }
    assert!(pauses >= 2, "{pauses}");
}

#[test]
fn text_without_calls_or_with_client_calls_does_not_pause() {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], None).unwrap();
    let names: std::collections::HashSet<String> = ["weather".to_string()].into();
    let abort: std::sync::Arc<std::sync::atomic::AtomicBool> = Default::default();
    let mut c = g.server_turns(None, ParserKind::Hermes, names, abort.clone());
    let client = "<tool_call>\n{\"name\": \"other\", \"arguments\": {}}\n</tool_call>";
    let server = "<tool_call>\n{\"name\": \"weather\", \"arguments\": {}}\n</tool_call>";
    assert_eq!(server_turn(&mut c, "no calls", 1).1, None);
    assert_eq!(server_turn(&mut c, client, 1).1, None);
    assert_eq!(server_turn(&mut c, &format!("{server}{client}"), 1).1, None);
    assert_eq!(
        server_turn(&mut c, &format!("x{server}\n{server}"), 1)
            .1
            .as_deref(),
        Some("weather,weather")
    );
    // A call cut off by the end of the turn is not a call.
    assert_eq!(server_turn(&mut c, &server[..30], 1).1, None);
    // Unless the owner aborts it: only the end of the turn is allowed, then a pause.
    for b in server[..30].bytes() {
        c.commit(b as i32).unwrap();
    }
    abort.store(true, std::sync::atomic::Ordering::Release);
    let mask = c.allowed().unwrap().unwrap();
    let allowed: Vec<u32> = (0..words.len() as u32)
        .filter(|&t| mask_allows(&mask, t as i32))
        .collect();
    assert_eq!(allowed, vec![eos]);
    c.commit(eos as i32).unwrap();
    assert_eq!(c.pause_requested().as_deref(), Some("aborted"));
    assert_eq!(server_turn(&mut c, "fresh turn", 1).1, None);
}

#[test]
fn lazy_grammar_starts_fresh_for_every_call() {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], None).unwrap();
    let plan = for_tools(ParserKind::Hermes, &tools(json!("auto"), true)).unwrap();
    let mut c = g.constraint(&plan).unwrap();
    let (mut rng, mut text) = (Rng(11), Vec::new());
    for _ in 0..3 {
        for b in "\nok <tool_call>".bytes() {
            assert!(c.allowed().unwrap().is_none(), "free between calls");
            c.commit(b as i32).unwrap();
            text.push(b);
        }
        while let Some(mask) = c.allowed().unwrap() {
            let t = pick(&mask, words.len(), &mut rng, &words, eos);
            assert_ne!(t, eos, "no end inside a call");
            c.commit(t as i32).unwrap();
            text.extend_from_slice(&words[t as usize]);
        }
    }
    let text = String::from_utf8(text).unwrap();
    let calls = parsed_calls(ParserKind::Hermes, &text);
    assert_eq!(calls.len(), 3, "{text}");
    calls.iter().for_each(|(n, a)| check_call(n, a));
}

/// The test vocabulary's own "tokenizer": longest match first (control tokens never).
fn longest_match() -> tandem_tools::constraint::Tokenize {
    let (words, _) = vocab();
    std::sync::Arc::new(move |bytes: &[u8]| {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let (id, len) = words
                .iter()
                .enumerate()
                .filter(|(_, w)| w.first() != Some(&0xFF) && bytes[at..].starts_with(w))
                .map(|(i, w)| (i as u32, w.len()))
                .max_by_key(|&(_, len)| len)
                .expect("every byte is a token");
            out.push(id);
            at += len;
        }
        out
    })
}

fn one_tool(choice: Value) -> ToolRequest {
    let tools = json!([{"type": "function", "function": {"name": "weather", "parameters": {
        "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]);
    ToolRequest::parse(
        Some(&tools),
        Some(&choice),
        Some(&json!(false)),
        &check_schema,
    )
    .unwrap()
}

fn spell(tokens: &[i32]) -> String {
    let (words, _) = vocab();
    let bytes: Vec<u8> = tokens
        .iter()
        .flat_map(|&t| words[t as usize].clone())
        .collect();
    String::from_utf8(bytes).unwrap()
}

/// Commits `text` byte by byte; returns what the constraint forces after it.
fn commit_text(c: &mut dyn TokenConstraint, text: &str) -> Vec<i32> {
    for b in text.bytes() {
        c.commit(b as i32).unwrap();
    }
    c.forced()
}

#[test]
fn jump_forward_forces_a_calls_fixed_text_with_the_models_tokenizer() {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], Some(longest_match())).unwrap();
    let plan = for_tools(ParserKind::Hermes, &one_tool(json!("auto"))).unwrap();
    let mut c = g.constraint(&plan).unwrap();
    assert!(
        commit_text(&mut c, "Let me check. ").is_empty(),
        "free text"
    );
    let skeleton = commit_text(&mut c, "<tool_call>");
    // Everything up to the city's value is fixed; the last quote may be held back, since a
    // longer token could start with it.
    let text = spell(&skeleton);
    assert!(
        "\n{\"name\": \"weather\", \"arguments\": {\"city\": \"".starts_with(&text)
            && text.len() >= "\n{\"name\": \"weather\", \"arguments\": {\"city\": ".len(),
        "{text:?}"
    );
    // Tokenized as the model would: the vocabulary's `"name": "` is one token.
    assert!(skeleton.contains(&(words.iter().position(|w| w == b"\"name\": \"").unwrap() as i32)));
    for &t in &skeleton {
        c.commit(t).unwrap();
    }
    let rest = "\n{\"name\": \"weather\", \"arguments\": {\"city\": \"";
    let after = commit_text(&mut c, &format!("{}Paris\"", &rest[text.len()..]));
    assert_eq!(spell(&after), "}}\n</tool_call>");
    for &t in &after {
        c.commit(t).unwrap();
    }
    assert!(
        c.allowed().unwrap().is_some(),
        "the call ended: only the end is left"
    );
    assert!(c.forced().is_empty(), "no end-of-turn is ever forced");
}

#[test]
fn without_the_models_tokenizer_nothing_is_forced() {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], None).unwrap();
    let plan = for_tools(ParserKind::Hermes, &one_tool(json!("auto"))).unwrap();
    let mut c = g.constraint(&plan).unwrap();
    assert!(commit_text(&mut c, "<tool_call>").is_empty());
}

#[test]
fn forced_calls_with_jump_forward_still_parse_and_take_fewer_samples() {
    let (words, eos) = vocab();
    let mut samples = [0usize; 2];
    for (i, tokenize) in [None, Some(longest_match())].into_iter().enumerate() {
        let g = Guidance::new(&words, &[eos], tokenize).unwrap();
        for seed in 1..=6 {
            let plan = for_tools(ParserKind::Hermes, &tools(json!("required"), true)).unwrap();
            let mut c = g.constraint(&plan).unwrap();
            let (mut rng, mut out) = (Rng(seed), Vec::new());
            loop {
                for t in c.forced() {
                    c.commit(t).unwrap();
                    out.push(t);
                }
                let mask = c.allowed().unwrap().expect("a forced plan always masks");
                let t = pick(&mask, words.len(), &mut rng, &words, eos);
                c.commit(t as i32).unwrap();
                samples[i] += 1;
                if t == eos {
                    break;
                }
                out.push(t as i32);
            }
            let text = spell(&out);
            let calls = parsed_calls(ParserKind::Hermes, &text);
            assert!(!calls.is_empty(), "{text}");
            calls.iter().for_each(|(n, a)| check_call(n, a));
        }
    }
    assert!(
        samples[1] * 2 < samples[0],
        "samples without / with: {samples:?}"
    );
}

#[test]
fn grammar_json_is_what_the_call_grammar_accepts() {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], None).unwrap();
    let plan = for_tools(ParserKind::Hermes, &tools(json!("auto"), true)).unwrap();
    let mut c = g.constraint(&plan).unwrap();
    let call = json!({"name": "alarm", "arguments": {"at": "7:00", "tags": [true, false]}});
    let text = format!(
        "<tool_call>\n{}\n</tool_call>",
        tandem_tools::grammar::grammar_json(&call)
    );
    assert!(
        text.contains("{\"at\": \"7:00\", \"tags\": [true, false]}"),
        "{text}"
    );
    for b in text.bytes() {
        c.commit(b as i32).unwrap();
    }
    assert!(c.allowed().unwrap().is_none(), "free again after the call");
}

/// The tokens of `text` byte by byte as long as the constraint allows them; `true` when all
/// were allowed and the output may end there.
fn accepts(plan: &GrammarPlan, text: &str) -> bool {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], None).unwrap();
    let mut c = g.constraint(plan).unwrap();
    for b in text.bytes() {
        let mask = c
            .allowed()
            .unwrap()
            .expect("a forced grammar masks every token");
        if !mask_allows(&mask, b as i32) {
            return false;
        }
        c.commit(b as i32).unwrap();
    }
    mask_allows(&c.allowed().unwrap().unwrap(), eos as i32)
}

fn rule_plan(body: Value) -> GrammarPlan {
    let rule = structured::parse(
        &|k| body.get(k).cloned(),
        &structured::Checks {
            schema: &check_schema,
            lark: &check_lark,
        },
    )
    .unwrap()
    .unwrap();
    for_output_rule(&rule.rule, JsonLayout::Compact)
}

/// A JSON grammar in GBNF, with free whitespace, escapes and bounded repetitions.
const JSON_GBNF: &str = r#"
root   ::= value
value  ::= object | array | string | number | ("true" | "false" | "null") ws
object ::= "{" ws ( string ":" ws value ("," ws string ":" ws value)* )? "}" ws
array  ::=
  "[" ws ( value
           ("," ws value)* )? "]" ws
string ::= "\"" ( [^"\\\x7F\x00-\x1F] | "\\" (["\\/bfnrt] | "u" [0-9a-fA-F]{4}) )* "\"" ws
number ::= "-"? ([0-9] | [1-9] [0-9]{1,8}) ("." [0-9]+)? ws
# optional blank
ws ::= | " " | "\n" [ \t]{0,4}
"#;

#[test]
fn structured_output_rules_hold_for_every_sample() {
    let date = regex::Regex::new(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}( [a-z]+)?$").unwrap();
    let list =
        regex::Regex::new(r"^\[(-?[1-9][0-9]*|[a-c]+)(,(-?[1-9][0-9]*|[a-c]+)){0,3}\]$").unwrap();
    let plans = [
        rule_plan(json!({"guided_regex": r"\d{4}-\d{2}-\d{2}( [a-z]+)?"})),
        rule_plan(json!({"guided_choice": ["yes", "no", "maybe so"]})),
        rule_plan(
            json!({"grammar": "root ::= \"[\" item (\",\" item){0,3} \"]\"\nitem ::= Num | [a-c]+\nNum ::= \"-\"? [1-9] [0-9]*"}),
        ),
        rule_plan(json!({"structured_outputs": {"grammar": JSON_GBNF}})),
    ];
    for seed in 1..=12 {
        let out: Vec<String> = plans.iter().map(|p| decode(p, &[], seed)).collect();
        assert!(date.is_match(&out[0]), "regex: {:?}", out[0]);
        assert!(
            ["yes", "no", "maybe so"].contains(&out[1].as_str()),
            "choice: {:?}",
            out[1]
        );
        assert!(list.is_match(&out[2]), "grammar: {:?}", out[2]);
        serde_json::from_str::<Value>(&out[3]).unwrap_or_else(|e| panic!("{e}: {:?}", out[3]));
    }
}

#[test]
fn a_gbnf_grammar_accepts_exactly_its_language() {
    let json = rule_plan(json!({"grammar": JSON_GBNF}));
    for good in [
        "{}",
        "{\"a\": [1, -2.5, \"x\\u00e9\\n\"], \"b\":\n  null} ",
        "[true,false]",
        "\"caf\u{e9}\"",
    ] {
        assert!(accepts(&json, good), "{good:?} rejected");
    }
    for bad in ["{", "{\"a\" 1}", "[1,]", "01", "\"\u{1}\"", "nul"] {
        assert!(!accepts(&json, bad), "{bad:?} accepted");
    }
    let any = rule_plan(json!({"grammar": "root ::= \"a\" . \"b\""}));
    assert!(accepts(&any, "a\nb") && accepts(&any, "a\u{e9}b") && !accepts(&any, "ab"));
    // A run that is not prefix-free stays a rule: as a lexeme, the greedy lexer would eat the
    // "x" that `tail` needs.
    let word = rule_plan(json!({"grammar":
        "root ::= item tail\nitem ::= [a-z]+\ntail ::= \"x\" tail | \"x.\""}));
    assert!(accepts(&word, "abx.") && accepts(&word, "abxx.") && !accepts(&word, "ab."));
    let anchored = rule_plan(json!({"regex": "^[a-z]+\\d$"}));
    assert!(accepts(&anchored, "ab1") && !accepts(&anchored, "ab") && !accepts(&anchored, "1"));
    let choice = rule_plan(json!({"guided_choice": ["a/b", "say \"hi\""]}));
    assert!(accepts(&choice, "a/b") && accepts(&choice, "say \"hi\"") && !accepts(&choice, "a"));
}

#[test]
fn a_forced_grammar_is_complete_once_it_takes_its_end() {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], None).unwrap();
    let mut c = g
        .constraint(&rule_plan(json!({"regex": "[a-z]+"})))
        .unwrap();
    for b in b"ab" {
        c.commit(*b as i32).unwrap();
        assert!(!c.complete(), "more letters may follow");
    }
    c.commit(eos as i32).unwrap();
    assert!(c.complete(), "the grammar took its end");
    // Free text under a lazy grammar is never complete: ignore_eos keeps it going.
    let plan = for_tools(ParserKind::Hermes, &tools(json!("auto"), true)).unwrap();
    let mut lazy = g.constraint(&plan).unwrap();
    lazy.commit(b'x' as i32).unwrap();
    lazy.commit(eos as i32).unwrap();
    assert!(!lazy.complete());
}

/// Drafts under a grammar (a prediction, or prompt lookup): the scheduler commits a draft to
/// learn each row's mask, then rolls it back, and does so again every step. After a rollback
/// the constraint must give the masks, forced tokens and pause a constraint that never went
/// further gives: for a forced grammar, for a lazy one across its modes (free text, the call
/// after the trigger, free text or only the end after the call), and for the tracker of
/// server-side tool turns around it (which pauses at the turn's end).
#[test]
fn a_grammar_rolls_back_to_the_same_masks_and_forced_tokens() {
    let (words, eos) = vocab();
    let g = Guidance::new(&words, &[eos], Some(longest_match())).unwrap();
    let schema =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    let forced =
        for_response_format(&ResponseFormat::JsonSchema(schema), JsonLayout::Compact).unwrap();
    let guided =
        |plan: &GrammarPlan| Box::new(g.constraint(plan).unwrap()) as Box<dyn TokenConstraint>;
    check_rollback(&|| guided(&forced), "{\"city\": \"Paris\"}", &[]);
    let call =
        "<tool_call>\n{\"name\": \"weather\", \"arguments\": {\"city\": \"Paris\"}}\n</tool_call>";
    for parallel in [true, false] {
        let lazy = for_tools(ParserKind::Hermes, &tools(json!("auto"), parallel)).unwrap();
        let text = format!(
            "Let me check. {call}{}",
            if parallel { " and <tool_call>" } else { "" }
        );
        check_rollback(&|| guided(&lazy), &text, &[]);
        let names: std::collections::HashSet<String> = ["weather".to_string()].into();
        let turns = || {
            let c = g.server_turns(
                Some(guided(&lazy)),
                ParserKind::Hermes,
                names.clone(),
                Default::default(),
            );
            Box::new(c) as Box<dyn TokenConstraint>
        };
        check_rollback(&turns, &format!("Let me check. {call}"), &[eos as i32]);
    }
}

/// Commits the tokens of `text` (then `end`) one by one; after each, rolls back every draft
/// length up to 16 (committing those tokens again each time), comparing with a fresh
/// constraint that committed only that far.
fn check_rollback(make: &dyn Fn() -> Box<dyn TokenConstraint>, text: &str, end: &[i32]) {
    let mut tokens = tokens_of(make().as_mut(), text.as_bytes());
    tokens.extend_from_slice(end);
    let state = |c: &mut dyn TokenConstraint| {
        (
            c.allowed().unwrap(),
            c.forced(),
            c.complete(),
            c.pause_requested(),
        )
    };
    let states: Vec<_> = (0..=tokens.len())
        .map(|k| {
            let mut c = make();
            tokens[..k].iter().for_each(|&t| c.commit(t).unwrap());
            state(c.as_mut())
        })
        .collect();
    let mut c = make();
    assert!(c.can_rollback());
    for n in 1..=tokens.len() {
        c.commit(tokens[n - 1]).unwrap();
        for back in 1..=n.min(16) {
            c.rollback(back).unwrap();
            assert!(
                state(c.as_mut()) == states[n - back],
                "{text:?}: {n} tokens, {back} back"
            );
            tokens[n - back..n]
                .iter()
                .for_each(|&t| c.commit(t).unwrap());
        }
        // Committed again up to here: the state is the one without any rollback.
        assert!(
            state(c.as_mut()) == states[n],
            "{text:?}: {n} tokens, recommitted"
        );
    }
    let paused = states.iter().any(|s| s.3.is_some());
    assert_eq!(
        paused,
        !end.is_empty(),
        "a pause exactly where the turn ended"
    );
}

/// The tokens of `text` as decoding would take them: the forced ones where the grammar forces
/// text, one byte at a time elsewhere.
fn tokens_of(c: &mut dyn TokenConstraint, text: &[u8]) -> Vec<i32> {
    let (words, _) = vocab();
    let (mut out, mut spelled) = (Vec::new(), 0);
    while spelled < text.len() {
        let mut next = c.forced();
        if next.is_empty() {
            next.push(text[spelled] as i32);
        }
        for t in next {
            c.commit(t).unwrap();
            spelled += words[t as usize].len();
            out.push(t);
        }
    }
    out
}
