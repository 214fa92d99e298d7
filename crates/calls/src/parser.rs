//! Incremental tool-call parsers. Decoded text goes in, in pieces of any size; events come
//! out: content text, a call's start (its name), fragments of its raw arguments JSON, its end,
//! and markup (tags and separators that are neither content nor a call). Text that is not a
//! call stays content, and a malformed call comes back whole as `CallInvalid` (the server
//! returns it as content). A call the text ends inside once its name is known (`max_tokens`
//! or a stop string cut it) ends with `CallCut`: its start and arguments stand, incomplete.
//! One cut before its name is markup when a start tag or separator opened it, content when
//! it was a bare `{` (which might have been prose; its name waits for the arguments key, so
//! JSON content with a `name` key is never announced as a call). Concatenating the text of
//! every event gives back the input.
//!
//! The three formats share one state machine and differ in a [`Format`]:
//! - `hermes` (Hermes, Qwen): `<tool_call>{"name": ..., "arguments": {...}}</tool_call>`,
//!   any number per turn;
//! - `llama3` (Llama 3.x JSON tool calls): `{"name": ..., "parameters": {...}}` as the message
//!   (or after `<|python_tag|>`), several separated by `;`;
//! - `mistral`: `[TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]`.

use std::fmt;
use std::str::FromStr;

use crate::call_object::{CallObject, CallState};

/// What a parser found in the text.
#[derive(Clone, Debug, PartialEq)]
pub enum ParseEvent {
    Content(String),
    /// Format text outside any call (closing tags, separators): not shown as content.
    Markup(String),
    CallStart {
        index: usize,
        name: String,
    },
    /// Raw text of the arguments; a call's fragments concatenate to its arguments JSON.
    CallArgs {
        index: usize,
        fragment: String,
    },
    /// The call is complete and valid; `raw` is its text (opening markup and the object).
    CallEnd {
        index: usize,
        raw: String,
    },
    /// The call turned out malformed: `raw` is its text, to be returned as content. Earlier
    /// events with this index are void.
    CallInvalid {
        index: usize,
        raw: String,
    },
    /// The text ended inside the call after its name: the call stands as started, with the
    /// arguments sent so far (incomplete JSON, or none), and `raw` is its text. OpenAI lists
    /// such a call with `finish_reason: "length"`; a stream has already sent its deltas.
    CallCut {
        index: usize,
        raw: String,
    },
}

impl ParseEvent {
    /// The input text this event accounts for.
    pub fn text(&self) -> &str {
        match self {
            Self::Content(t) | Self::Markup(t) => t,
            Self::CallEnd { raw, .. }
            | Self::CallInvalid { raw, .. }
            | Self::CallCut { raw, .. } => raw,
            Self::CallStart { .. } | Self::CallArgs { .. } => "",
        }
    }
}

/// The tool-call formats tandem parses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParserKind {
    Hermes,
    Llama3,
    Mistral,
}

impl ParserKind {
    pub const NAMES: &'static str = "hermes, llama3, mistral";

    /// The format a chat template writes tool calls in; Hermes when it shows none (tandem
    /// then renders the tools itself, in Hermes format).
    pub fn from_template(template: &str) -> Self {
        if template.contains("[TOOL_CALLS]") {
            Self::Mistral
        } else if template.contains("<|python_tag|>") || template.contains("<|eom_id|>") {
            Self::Llama3
        } else {
            Self::Hermes
        }
    }

    pub fn format(self) -> &'static Format {
        match self {
            Self::Hermes => &HERMES,
            Self::Llama3 => &LLAMA3,
            Self::Mistral => &MISTRAL,
        }
    }

    pub fn parser(self) -> ToolCallParser {
        ToolCallParser::new(self.format())
    }
}

impl FromStr for ParserKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "hermes" | "qwen" => Ok(Self::Hermes),
            "llama3" | "llama3_json" => Ok(Self::Llama3),
            "mistral" => Ok(Self::Mistral),
            _ => Err(format!(
                "unknown tool-call parser '{s}' (known: {})",
                Self::NAMES
            )),
        }
    }
}

impl fmt::Display for ParserKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Hermes => "hermes",
            Self::Llama3 => "llama3",
            Self::Mistral => "mistral",
        })
    }
}

/// How a format writes calls.
#[derive(Debug)]
pub struct Format {
    /// The tag that opens a group of calls.
    pub start: &'static str,
    /// A group may also open with a bare `{` as the message's first non-space text.
    pub bare_at_start: bool,
    /// Opens the list of calls after the start tag (`[`).
    pub open: Option<char>,
    /// Separates calls in a group.
    pub sep: Option<char>,
    /// Closes a group (`</tool_call>`, `]`); none: the group ends with the message.
    pub close: Option<&'static str>,
    /// Keys accepted for the arguments object.
    pub args_keys: &'static [&'static str],
}

pub static HERMES: Format = Format {
    start: "<tool_call>",
    bare_at_start: false,
    open: None,
    sep: None,
    close: Some("</tool_call>"),
    args_keys: &["arguments"],
};

pub static LLAMA3: Format = Format {
    start: "<|python_tag|>",
    bare_at_start: true,
    open: None,
    sep: Some(';'),
    close: None,
    args_keys: &["parameters", "arguments"],
};

pub static MISTRAL: Format = Format {
    start: "[TOOL_CALLS]",
    bare_at_start: false,
    open: Some('['),
    sep: Some(','),
    close: Some("]"),
    args_keys: &["arguments"],
};

#[derive(Clone)]
enum State {
    /// Content; `fresh` while only whitespace has been seen (for `bare_at_start`).
    Text {
        fresh: bool,
    },
    /// After the start tag, before the open bracket.
    Open,
    /// Expecting a call object (after the start tag, the open bracket or a separator).
    Object,
    In(Box<CallObject>),
    /// After a call: a separator, the close tag or anything else (which ends the group).
    Next,
}

/// A streaming tool-call parser for one message. Cloned to snapshot it (a tool turn's
/// tracker undoes speculative commits).
#[derive(Clone)]
pub struct ToolCallParser {
    fmt: &'static Format,
    state: State,
    /// Text received but not yet accounted for by an event.
    held: String,
    /// The current call's text so far (its opening markup included).
    raw: String,
    index: usize,
    started: bool,
    /// The current call opened as a bare `{` at the message's start (no tag or separator).
    bare: bool,
}

impl ToolCallParser {
    pub fn new(fmt: &'static Format) -> Self {
        Self {
            fmt,
            state: State::Text { fresh: true },
            held: String::new(),
            raw: String::new(),
            index: 0,
            started: false,
            bare: false,
        }
    }

    /// Consumes a piece of text.
    pub fn push(&mut self, text: &str) -> Vec<ParseEvent> {
        self.held.push_str(text);
        let mut out = Vec::new();
        while self.step(&mut out) {}
        out
    }

    /// Ends the message: held text is released; a call cut off once its name was sent ends
    /// as [`ParseEvent::CallCut`], one cut before that is markup (content if bare).
    pub fn finish(&mut self) -> Vec<ParseEvent> {
        let mut out = Vec::new();
        match std::mem::replace(&mut self.state, State::Text { fresh: false }) {
            State::Open | State::Object | State::In(_) => {
                let mut raw = std::mem::take(&mut self.raw);
                raw.push_str(&std::mem::take(&mut self.held));
                if self.started {
                    self.close(raw, &mut out, |index, raw| ParseEvent::CallCut {
                        index,
                        raw,
                    });
                } else if self.bare {
                    content(raw, &mut out);
                } else {
                    out.push(ParseEvent::Markup(raw));
                }
            }
            // The text ended inside the group's close tag (`</tool_`): markup, not content.
            State::Next => {
                let partial = self
                    .fmt
                    .close
                    .is_some_and(|c| c.starts_with(self.held.trim_start()));
                if partial && !self.held.is_empty() {
                    out.push(ParseEvent::Markup(std::mem::take(&mut self.held)));
                }
            }
            State::Text { .. } => {}
        }
        content(std::mem::take(&mut self.held), &mut out);
        out
    }

    /// One transition; false when it needs more text.
    fn step(&mut self, out: &mut Vec<ParseEvent>) -> bool {
        match std::mem::replace(&mut self.state, State::Text { fresh: false }) {
            State::Text { fresh } => self.text(fresh, out),
            State::Open => self.open(out),
            State::Object => self.object(out),
            State::In(call) => self.in_call(call, out),
            State::Next => self.next(out),
        }
    }

    fn text(&mut self, fresh: bool, out: &mut Vec<ParseEvent>) -> bool {
        let trimmed = self.held.trim_start();
        if fresh && self.fmt.bare_at_start {
            if trimmed.is_empty() {
                self.state = State::Text { fresh: true };
                return false;
            }
            if trimmed.starts_with('{') {
                let ws = self.held.len() - trimmed.len();
                self.raw = self.held.drain(..ws).collect();
                self.state = State::Object;
                self.bare = true;
                return true;
            }
        }
        let tag = self.fmt.start;
        if let Some(p) = self.held.find(tag) {
            content(self.held.drain(..p).collect(), out);
            self.raw = self.held.drain(..tag.len()).collect();
            self.bare = false;
            self.state = if self.fmt.open.is_some() {
                State::Open
            } else {
                State::Object
            };
            return true;
        }
        let keep = partial_suffix(&self.held, tag);
        content(self.held.drain(..self.held.len() - keep).collect(), out);
        false
    }

    /// Skips whitespace into the call's raw text; the first other char, if any.
    fn skip_ws(&mut self) -> Option<char> {
        let ws = self.held.len() - self.held.trim_start().len();
        self.raw.extend(self.held.drain(..ws));
        self.held.chars().next()
    }

    fn open(&mut self, out: &mut Vec<ParseEvent>) -> bool {
        match self.skip_ws() {
            None => {
                self.state = State::Open;
                false
            }
            Some(c) if Some(c) == self.fmt.open => {
                self.raw.push(self.held.remove(0));
                self.state = State::Object;
                true
            }
            Some(_) => self.abandon(out),
        }
    }

    fn object(&mut self, out: &mut Vec<ParseEvent>) -> bool {
        match self.skip_ws() {
            None => {
                self.state = State::Object;
                false
            }
            Some('{') => {
                let call = CallObject::new(self.fmt.args_keys);
                let call = if self.bare {
                    call.holding_name_for_arguments()
                } else {
                    call
                };
                self.state = State::In(Box::new(call));
                true
            }
            Some(_) => self.abandon(out),
        }
    }

    fn in_call(&mut self, mut call: Box<CallObject>, out: &mut Vec<ParseEvent>) -> bool {
        let p = call.push(&self.held);
        self.raw.extend(self.held.drain(..p.consumed));
        if let Some(name) = p.name {
            self.started = true;
            out.push(ParseEvent::CallStart {
                index: self.index,
                name,
            });
        }
        if !p.args.is_empty() {
            out.push(ParseEvent::CallArgs {
                index: self.index,
                fragment: p.args,
            });
        }
        match call.state() {
            CallState::Open => {
                self.state = State::In(call);
                false
            }
            CallState::Done => {
                let raw = std::mem::take(&mut self.raw);
                out.push(ParseEvent::CallEnd {
                    index: self.index,
                    raw,
                });
                self.index += 1;
                self.started = false;
                self.state = State::Next;
                true
            }
            CallState::Invalid(_) => self.abandon(out),
        }
    }

    fn next(&mut self, out: &mut Vec<ParseEvent>) -> bool {
        let trimmed = self.held.trim_start();
        let ws = self.held.len() - trimmed.len();
        let sep = self.fmt.sep.filter(|&s| trimmed.starts_with(s));
        let close = self.fmt.close.filter(|c| trimmed.starts_with(c));
        if let Some(s) = sep {
            self.raw = self.held.drain(..ws + s.len_utf8()).collect();
            self.state = State::Object;
            self.bare = false;
            return true;
        }
        if let Some(c) = close {
            out.push(ParseEvent::Markup(
                self.held.drain(..ws + c.len()).collect(),
            ));
            self.state = State::Text { fresh: false };
            return true;
        }
        let partial = self.fmt.close.is_some_and(|c| c.starts_with(trimmed));
        if trimmed.is_empty() || partial {
            self.state = State::Next;
            return false;
        }
        // Anything else ends the group: it is content again.
        self.state = State::Text { fresh: false };
        true
    }

    /// The current call is not a call: its text becomes an invalid call (when events for it
    /// were sent) or plain content; parsing goes on as content with what follows.
    fn abandon(&mut self, out: &mut Vec<ParseEvent>) -> bool {
        let raw = std::mem::take(&mut self.raw);
        self.close(raw, out, |index, raw| ParseEvent::CallInvalid {
            index,
            raw,
        });
        self.state = State::Text { fresh: false };
        true
    }

    /// Ends the current call without a `CallEnd`: as `event` when its start was sent, else
    /// its text is plain content.
    fn close(
        &mut self,
        raw: String,
        out: &mut Vec<ParseEvent>,
        event: fn(usize, String) -> ParseEvent,
    ) {
        if std::mem::take(&mut self.started) {
            out.push(event(self.index, raw));
            self.index += 1;
        } else {
            content(raw, out);
        }
    }
}

fn content(text: String, out: &mut Vec<ParseEvent>) {
    if !text.is_empty() {
        out.push(ParseEvent::Content(text));
    }
}

/// Length of the longest suffix of `s` that is a proper prefix of `tag`.
pub(crate) fn partial_suffix(s: &str, tag: &str) -> usize {
    (1..tag.len().min(s.len() + 1))
        .rev()
        .find(|&n| s.is_char_boundary(s.len() - n) && tag.starts_with(&s[s.len() - n..]))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(kind: ParserKind, pieces: &[&str]) -> Vec<ParseEvent> {
        let mut p = kind.parser();
        let mut ev: Vec<_> = pieces.iter().flat_map(|t| p.push(t)).collect();
        ev.extend(p.finish());
        ev
    }

    fn calls(ev: &[ParseEvent]) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = Vec::new();
        for e in ev {
            match e {
                ParseEvent::CallStart { name, .. } => out.push((name.clone(), String::new())),
                ParseEvent::CallArgs { fragment, .. } => {
                    out.last_mut().unwrap().1.push_str(fragment)
                }
                _ => {}
            }
        }
        out
    }

    #[test]
    fn hermes_two_calls_and_content() {
        let text = "Sure.<tool_call>\n{\"name\": \"a\", \"arguments\": {\"x\": 1}}\n</tool_call>\n<tool_call>{\"name\": \"b\", \"arguments\": {}}</tool_call>";
        let ev = run(ParserKind::Hermes, &[text]);
        assert_eq!(ev[0], ParseEvent::Content("Sure.".into()));
        assert_eq!(
            calls(&ev),
            vec![("a".into(), "{\"x\": 1}".into()), ("b".into(), "{}".into())]
        );
        assert_eq!(ev.iter().map(ParseEvent::text).collect::<String>(), text);
    }

    #[test]
    fn malformed_hermes_call_is_content() {
        let text = "<tool_call>not json</tool_call> ok";
        let ev = run(ParserKind::Hermes, &[text]);
        assert!(calls(&ev).is_empty());
        assert_eq!(ev.iter().map(ParseEvent::text).collect::<String>(), text);
    }

    #[test]
    fn a_call_cut_after_its_name_stands_with_its_arguments_so_far() {
        let cut = "<tool_call>{\"name\": \"a\", \"arguments\": {\"x\"";
        let ev = run(ParserKind::Hermes, &["Hi.", cut]);
        assert_eq!(calls(&ev), vec![("a".into(), "{\"x\"".into())]);
        assert!(matches!(ev.last(), Some(ParseEvent::CallCut { index: 0, raw }) if raw == cut));
        // Before the name is known there is no call: a tag's text is markup, a bare `{`'s
        // (Llama 3) content.
        let early = "<tool_call>{\"name\": \"a";
        let ev = run(ParserKind::Hermes, &["Hi.", early]);
        let want = [
            ParseEvent::Content("Hi.".into()),
            ParseEvent::Markup(early.into()),
        ];
        assert_eq!(ev, want);
        let bare = " {\"name\": \"a";
        let ev = run(ParserKind::Llama3, &[bare]);
        assert_eq!(ev, vec![ParseEvent::Content(bare.into())]);
        // Cut inside the close tag after a complete call: the tag's text is not content.
        let ev = run(
            ParserKind::Hermes,
            &["<tool_call>{\"name\": \"a\", \"arguments\": {}}\n</tool_"],
        );
        assert!(matches!(ev.last(), Some(ParseEvent::Markup(m)) if m == "\n</tool_"));
        assert!(ev.iter().all(|e| !matches!(e, ParseEvent::Content(_))));
        // The second call of a group is cut; the first stands complete.
        let two = "[TOOL_CALLS][{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\"";
        let ev = run(ParserKind::Mistral, &[two]);
        assert_eq!(
            calls(&ev),
            vec![("a".into(), "{}".into()), ("b".into(), "".into())]
        );
        assert!(matches!(
            ev.last(),
            Some(ParseEvent::CallCut { index: 1, .. })
        ));
        assert_eq!(ev.iter().map(ParseEvent::text).collect::<String>(), two);
    }

    #[test]
    fn llama3_bare_and_separated() {
        let text = " {\"name\": \"a\", \"parameters\": {\"q\": \"x\"}}; {\"name\": \"b\", \"parameters\": {}}";
        let ev = run(ParserKind::Llama3, &[text]);
        assert_eq!(calls(&ev).len(), 2);
        assert_eq!(ev.iter().map(ParseEvent::text).collect::<String>(), text);
        let ev = run(ParserKind::Llama3, &["The answer is {\"name\": 1}"]);
        assert!(calls(&ev).is_empty());
    }

    #[test]
    fn a_bare_object_with_a_name_but_no_parameters_is_never_announced_as_a_call() {
        // JSON content whose first key is `name`: no start event goes out (a stream could not
        // take it back), and the text comes back as content, whatever the pieces.
        let text = "{\"name\": \"Ada\", \"born\": 1815}";
        for cut in 1..text.len() {
            let ev = run(ParserKind::Llama3, &[&text[..cut], &text[cut..]]);
            assert!(
                ev.iter().all(|e| matches!(e, ParseEvent::Content(_))),
                "{cut}: {ev:?}"
            );
            assert_eq!(ev.iter().map(ParseEvent::text).collect::<String>(), text);
        }
        // After `<|python_tag|>` an object is a call: its name goes out at once.
        let ev = run(ParserKind::Llama3, &["<|python_tag|>{\"name\": \"a\", "]);
        assert!(
            matches!(&ev[0], ParseEvent::CallStart { name, .. } if name == "a"),
            "{ev:?}"
        );
    }

    #[test]
    fn mistral_array() {
        let text = "[TOOL_CALLS] [{\"name\": \"a\", \"arguments\": {}}, {\"name\": \"b\", \"arguments\": {\"k\": [1]}}]";
        let ev = run(ParserKind::Mistral, &[text]);
        assert_eq!(
            calls(&ev),
            vec![
                ("a".into(), "{}".into()),
                ("b".into(), "{\"k\": [1]}".into())
            ]
        );
        assert_eq!(ev.iter().map(ParseEvent::text).collect::<String>(), text);
    }

    #[test]
    fn parser_from_template_and_name() {
        assert_eq!(
            ParserKind::from_template("{{ '[TOOL_CALLS]' }}"),
            ParserKind::Mistral
        );
        assert_eq!(
            ParserKind::from_template("<|python_tag|>"),
            ParserKind::Llama3
        );
        assert_eq!(
            ParserKind::from_template("<|im_start|>"),
            ParserKind::Hermes
        );
        assert!("nope".parse::<ParserKind>().unwrap_err().contains("hermes"));
    }
}
