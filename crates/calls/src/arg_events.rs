//! Argument events for partial tool execution (Conveyor): the raw text of a call's arguments
//! object, pushed as it is decoded, becomes events a tool can start work on before the call
//! is complete — a field's value complete, an array element complete, a complete line of a
//! string, the whole arguments object complete. Any split of the text gives the same events;
//! invalid JSON stops the stream with an error (the tool can abort the call).

use serde_json::Value;

use crate::json_scan::{JsonEvent, JsonScanner};

/// One step down into the arguments: an object key or an array index.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PathSeg {
    Key(String),
    Index(usize),
}

/// What became known about the arguments.
#[derive(Clone, Debug, PartialEq)]
pub enum ArgEvent {
    /// A value inside the arguments is complete; `path` leads to it (its last segment is the
    /// field's key or the element's index).
    Value { path: Vec<PathSeg>, value: Value },
    /// A complete line (without its newline) of the string value at `path` that is still
    /// being decoded; `line` counts from 0. The string's last line arrives with its `Value`.
    Line {
        path: Vec<PathSeg>,
        line: usize,
        text: String,
    },
    /// The arguments object is complete.
    Complete(Value),
}

impl ArgEvent {
    /// An element of the top-level array field `key`, just completed: its index and value.
    pub fn element_of(&self, key: &str) -> Option<(usize, &Value)> {
        match self {
            Self::Value { path, value } => match path.as_slice() {
                [PathSeg::Key(k), PathSeg::Index(i)] if k == key => Some((*i, value)),
                _ => None,
            },
            _ => None,
        }
    }

    /// The top-level field `key`, just completed: its value.
    pub fn field(&self, key: &str) -> Option<&Value> {
        match self {
            Self::Value { path, value } => match path.as_slice() {
                [PathSeg::Key(k)] if k == key => Some(value),
                _ => None,
            },
            _ => None,
        }
    }
}

/// Parses a streamed arguments object into [`ArgEvent`]s.
#[derive(Clone, Debug, Default)]
pub struct ArgStream {
    scanner: JsonScanner,
    text: String,
    /// Path to the value being scanned: one segment per open container below the top.
    path: Vec<PathSeg>,
    /// Per open container: the next array index (arrays) or the last key (objects).
    next_index: Vec<Option<usize>>,
    /// Value start offsets per depth.
    starts: Vec<usize>,
    /// Lines already emitted for the open string.
    lines_sent: usize,
    error: Option<String>,
}

impl ArgStream {
    pub fn new() -> Self {
        Self::default()
    }

    /// Why the text is not a JSON object, once it is not.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Consumes more of the arguments' text.
    pub fn push(&mut self, text: &str) -> Vec<ArgEvent> {
        let mut out = Vec::new();
        if self.error.is_some() {
            return out;
        }
        let mut raw = Vec::new();
        self.text.push_str(text);
        self.scanner.push(text, &mut raw);
        for ev in raw {
            self.on_event(ev, &mut out);
        }
        if let Some(e) = self.scanner.error() {
            self.error = Some(e.to_string());
        }
        self.string_lines(&mut out);
        out
    }

    fn on_event(&mut self, ev: JsonEvent, out: &mut Vec<ArgEvent>) {
        match ev {
            JsonEvent::ValueStart { depth, at } => {
                if depth == 0 && self.text.as_bytes()[at] != b'{' {
                    self.error = Some("the arguments must be a JSON object".into());
                }
                if depth > 0 {
                    self.enter_element(depth);
                }
                self.starts.truncate(depth);
                self.starts.push(at);
                self.lines_sent = 0;
                if matches!(self.text.as_bytes()[at], b'{' | b'[') {
                    let is_array = self.text.as_bytes()[at] == b'[';
                    self.next_index.truncate(depth);
                    self.next_index.push(is_array.then_some(0));
                }
            }
            JsonEvent::Key { depth, key } => {
                self.path.truncate(depth - 1);
                self.path.push(PathSeg::Key(key));
            }
            JsonEvent::ValueEnd { depth, end } => self.value_end(depth, end, out),
        }
    }

    /// An array element starts at `depth`: its path segment is the next index.
    fn enter_element(&mut self, depth: usize) {
        if let Some(Some(i)) = self.next_index.get(depth - 1).copied() {
            self.path.truncate(depth - 1);
            self.path.push(PathSeg::Index(i));
            self.next_index[depth - 1] = Some(i + 1);
        }
    }

    fn value_end(&mut self, depth: usize, end: usize, out: &mut Vec<ArgEvent>) {
        let start = self.starts.get(depth).copied().unwrap_or(0);
        if self.text.as_bytes()[start] == b'"' && depth > 0 {
            // Lines not sent yet (the string may have ended within this push).
            self.lines(start, end - 1, depth, out);
        }
        let Ok(value) = serde_json::from_str::<Value>(&self.text[start..end]) else {
            self.error = Some("invalid JSON value".into());
            return;
        };
        if depth == 0 {
            out.push(ArgEvent::Complete(value));
        } else {
            out.push(ArgEvent::Value {
                path: self.path[..depth].to_vec(),
                value,
            });
        }
        self.lines_sent = 0;
    }

    /// Complete lines of the string being scanned (a `\n` escape ends a line).
    fn string_lines(&mut self, out: &mut Vec<ArgEvent>) {
        if let Some(start) = self.scanner.open_string() {
            let depth = self.scanner.depth();
            self.lines(start, self.text.len(), depth, out);
        }
    }

    /// Emits the complete lines, not sent yet, of the string whose opening quote is at
    /// `start` and whose raw content seen so far ends at `end`.
    fn lines(&mut self, start: usize, end: usize, depth: usize, out: &mut Vec<ArgEvent>) {
        let body = &self.text[start + 1..end];
        let Some(cut) = last_newline_escape(body) else {
            return;
        };
        let Ok(decoded) = serde_json::from_str::<String>(&format!("\"{}\"", &body[..cut])) else {
            return;
        };
        let lines: Vec<&str> = decoded.split('\n').collect();
        // The text after the last newline is not a complete line yet.
        let complete = lines.len() - 1;
        let path = self.path[..depth].to_vec();
        for (i, l) in lines
            .iter()
            .enumerate()
            .take(complete)
            .skip(self.lines_sent)
        {
            out.push(ArgEvent::Line {
                path: path.clone(),
                line: i,
                text: l.to_string(),
            });
        }
        self.lines_sent = complete;
    }
}

/// Byte offset just past the last `\n` escape in raw string content (escapes respected).
fn last_newline_escape(raw: &str) -> Option<usize> {
    let b = raw.as_bytes();
    let (mut i, mut last) = (0, None);
    while i < b.len() {
        if b[i] == b'\\' {
            if b.get(i + 1) == Some(&b'n') {
                last = Some(i + 2);
            }
            i += 2;
        } else {
            i += 1;
        }
    }
    last
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn key(k: &str) -> PathSeg {
        PathSeg::Key(k.into())
    }

    fn events(pieces: &[&str]) -> Vec<ArgEvent> {
        let mut s = ArgStream::new();
        pieces.iter().flat_map(|p| s.push(p)).collect()
    }

    #[test]
    fn fields_elements_lines_and_completion() {
        let text = r#"{"code": "a = 1\nprint(a)\nb", "queries": ["x", {"q": "y"}], "n": 3}"#;
        let ev = events(&[text]);
        let line = |i: usize, t: &str| ArgEvent::Line {
            path: vec![key("code")],
            line: i,
            text: t.into(),
        };
        let want = vec![
            line(0, "a = 1"),
            line(1, "print(a)"),
            ArgEvent::Value {
                path: vec![key("code")],
                value: json!("a = 1\nprint(a)\nb"),
            },
            ArgEvent::Value {
                path: vec![key("queries"), PathSeg::Index(0)],
                value: json!("x"),
            },
            ArgEvent::Value {
                path: vec![key("queries"), PathSeg::Index(1), key("q")],
                value: json!("y"),
            },
            ArgEvent::Value {
                path: vec![key("queries"), PathSeg::Index(1)],
                value: json!({"q": "y"}),
            },
            ArgEvent::Value {
                path: vec![key("queries")],
                value: json!(["x", {"q": "y"}]),
            },
            ArgEvent::Value {
                path: vec![key("n")],
                value: json!(3),
            },
            ArgEvent::Complete(
                json!({"code": "a = 1\nprint(a)\nb", "queries": ["x", {"q": "y"}], "n": 3}),
            ),
        ];
        assert_eq!(ev, want);
        // Any split gives the same events; lines arrive as soon as they are complete.
        for i in (0..=text.len()).filter(|&i| text.is_char_boundary(i)) {
            assert_eq!(events(&[&text[..i], &text[i..]]), want, "split at {i}");
        }
        let mut s = ArgStream::new();
        assert_eq!(s.push(r#"{"code": "a = 1\nprint"#), vec![line(0, "a = 1")]);
    }

    #[test]
    fn not_an_object_is_an_error() {
        let mut s = ArgStream::new();
        s.push("[1, 2]");
        assert!(s.error().is_some());
        let mut s = ArgStream::new();
        s.push("{\"a\": tru x");
        assert!(s.error().is_some());
    }
}
