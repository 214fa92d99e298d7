//! Arbitrary text, split at fuzzer-chosen points, through every tool-call parser, the JSON
//! scanner and the argument-event stream: no panics, the events reassemble the input, and every call reported complete has
//! arguments that are a JSON object.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tandem_calls::arg_events::ArgStream;
use tandem_calls::json_scan::JsonScanner;
use tandem_calls::{ParseEvent, ParserKind};

fuzz_target!(|data: &[u8]| {
    let Some((&cuts, rest)) = data.split_first() else {
        return;
    };
    let text = String::from_utf8_lossy(rest);
    let bounds: Vec<usize> = (0..=text.len()).filter(|&i| text.is_char_boundary(i)).collect();
    let step = (cuts as usize % 7) + 1;
    let mut pieces = Vec::new();
    let mut last = 0;
    for &b in bounds.iter().step_by(step) {
        pieces.push(&text[last..b]);
        last = b;
    }
    pieces.push(&text[last..]);
    for kind in [ParserKind::Hermes, ParserKind::Llama3, ParserKind::Mistral] {
        let mut p = kind.parser();
        let mut events: Vec<ParseEvent> = pieces.iter().flat_map(|t| p.push(t)).collect();
        events.extend(p.finish());
        let joined: String = events.iter().map(ParseEvent::text).collect();
        assert_eq!(joined, text);
        let mut args: Vec<String> = Vec::new();
        for e in &events {
            match e {
                ParseEvent::CallStart { .. } => args.push(String::new()),
                ParseEvent::CallArgs { index, fragment } => args[*index].push_str(fragment),
                ParseEvent::CallEnd { index, .. } => {
                    let v: serde_json::Value = serde_json::from_str(&args[*index]).unwrap();
                    assert!(v.is_object());
                }
                ParseEvent::CallCut { index, raw } => {
                    assert_eq!(*index + 1, args.len());
                    assert!(text.ends_with(raw.as_str()));
                }
                _ => {}
            }
        }
    }
    let mut s = JsonScanner::new();
    let mut out = Vec::new();
    for t in &pieces {
        s.push(t, &mut out);
    }
    s.finish(&mut out);
    let mut a = ArgStream::new();
    for t in &pieces {
        a.push(t);
    }
});
