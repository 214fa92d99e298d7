//! Argument events over every split point and random splits: the same events whatever the
//! chunking (escapes and multi-byte characters split across pieces, deep nesting), values
//! equal to serde_json's, and arbitrary text never panics.

use proptest::prelude::*;
use serde_json::Value;
use tandem_calls::arg_events::{ArgEvent, ArgStream};

const ARGS: &[&str] = &[
    r#"{"code": "import math\nx = [i * i for i in range(5)]\nprint(\"é€😀\", x)\n", "timeout": 2.5}"#,
    r#"{"queries": ["rust \"borrow\" checker", "tantivy\\index", "\u00e9t\u00e9"], "k": 3}"#,
    r#"{"steps": [{"tool": "search", "args": {"q": "a"}}, {"tool": "python", "args": {"code": "$0\n"}}]}"#,
    r#"{"deep": [[[[[[[[[[{"x": [true, false, null, -0.5e-3]}]]]]]]]]]]}"#,
    r#"  {"empty": {}, "list": [], "s": "", "nl": "\n\n"}  "#,
];

fn run(pieces: &[&str]) -> (Vec<ArgEvent>, bool) {
    let mut s = ArgStream::new();
    let ev = pieces.iter().flat_map(|p| s.push(p)).collect();
    (ev, s.error().is_some())
}

fn bounds(t: &str) -> Vec<usize> {
    (0..=t.len()).filter(|&i| t.is_char_boundary(i)).collect()
}

#[test]
fn every_split_gives_the_same_events() {
    for text in ARGS {
        let (whole, err) = run(&[text]);
        assert!(!err, "{text}");
        let expected: Value = serde_json::from_str(text).unwrap();
        assert_eq!(whole.last(), Some(&ArgEvent::Complete(expected)));
        for i in bounds(text) {
            assert_eq!(
                run(&[&text[..i], &text[i..]]).0,
                whole,
                "split at {i}: {text}"
            );
        }
    }
}

#[test]
fn lines_of_code_arrive_in_order() {
    let (ev, _) = run(&[ARGS[0]]);
    let lines: Vec<String> = ev
        .iter()
        .filter_map(|e| match e {
            ArgEvent::Line { text, .. } => Some(text.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(
        lines,
        [
            "import math",
            "x = [i * i for i in range(5)]",
            "print(\"é€😀\", x)"
        ]
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn random_splits(which in 0..ARGS.len(), cuts in prop::collection::vec(any::<usize>(), 0..30)) {
        let text = ARGS[which];
        let b = bounds(text);
        let mut at: Vec<usize> = cuts.iter().map(|c| b[c % b.len()]).collect();
        at.extend([0, text.len()]);
        at.sort_unstable();
        at.dedup();
        let pieces: Vec<&str> = at.windows(2).map(|w| &text[w[0]..w[1]]).collect();
        prop_assert_eq!(run(&pieces).0, run(&[text]).0);
    }

    #[test]
    fn arbitrary_text_never_panics(text in "[{}\\[\\]\",:\\\\a-z0-9 .\\-né€]{0,60}", cut in any::<usize>()) {
        let b = bounds(&text);
        let i = b[cut % b.len()];
        run(&[&text[..i], &text[i..]]);
    }
}
