//! An incremental JSON structure scanner: text is pushed in pieces of any size and the
//! scanner reports where values, keys and containers begin and end (byte offsets into the
//! whole text seen so far), or that the text can no longer be JSON.
//!
//! Written by hand because tandem's tool-call parsers (and the partial tool execution that
//! builds on them) need *positions while the text is still incomplete*: the byte where the
//! `arguments` value starts, the moment a field's value is complete. Full JSON parsers
//! (serde_json, jiter) parse complete or truncated documents into values; they do not say
//! where in the stream a value ended. Values found complete are still decoded with serde_json.

/// What the scanner found; offsets are byte offsets into all text pushed so far.
#[derive(Clone, Debug, PartialEq)]
pub enum JsonEvent {
    /// A value starts at `at`, nested `depth` containers deep (0: the top-level value).
    ValueStart { depth: usize, at: usize },
    /// The value that started last at this depth ends just before `end`.
    ValueEnd { depth: usize, end: usize },
    /// An object key, decoded, inside an object `depth` deep (the object's own depth + 1).
    Key { depth: usize, key: String },
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Frame {
    /// In an object: expecting a key (or `}` when `first`).
    ObjKey { first: bool },
    /// After a key, expecting `:`.
    ObjColon,
    /// After `:`, expecting a value.
    ObjValue,
    /// After a value, expecting `,` or `}`.
    ObjNext,
    /// In an array: expecting a value (or `]` when `first`).
    ArrValue { first: bool },
    /// After a value, expecting `,` or `]`.
    ArrNext,
}

#[derive(Clone, Debug, PartialEq)]
enum Token {
    None,
    /// Inside a string; `key` when it is an object key.
    Str {
        key: bool,
        escape: u8,
        start: usize,
    },
    /// Inside a number or literal (`true`, `false`, `null`).
    Bare {
        start: usize,
    },
}

/// The scanner; feed it with [`JsonScanner::push`].
#[derive(Clone, Debug)]
pub struct JsonScanner {
    stack: Vec<Frame>,
    token: Token,
    /// Bytes seen so far (offset of the next byte).
    pos: usize,
    /// The current string's raw bytes (for keys).
    raw: Vec<u8>,
    started: bool,
    done: bool,
    error: Option<String>,
}

impl Default for JsonScanner {
    fn default() -> Self {
        Self::new()
    }
}

impl JsonScanner {
    pub fn new() -> Self {
        Self {
            stack: Vec::new(),
            token: Token::None,
            pos: 0,
            raw: Vec::new(),
            started: false,
            done: false,
            error: None,
        }
    }

    /// The top-level value is complete (trailing whitespace may follow).
    pub fn is_done(&self) -> bool {
        self.done
    }

    /// Why the text cannot be JSON, once it cannot.
    pub fn error(&self) -> Option<&str> {
        self.error.as_deref()
    }

    /// Current container depth (0 outside any container).
    pub fn depth(&self) -> usize {
        self.stack.len()
    }

    /// Where the string value being scanned began (its opening quote), while inside one
    /// (object keys excluded).
    pub fn open_string(&self) -> Option<usize> {
        match self.token {
            Token::Str {
                key: false, start, ..
            } => Some(start),
            _ => None,
        }
    }

    /// Scans `text`, appending what it finds to `out`. After an error, or after the
    /// top-level value when anything but whitespace follows, nothing more is scanned.
    pub fn push(&mut self, text: &str, out: &mut Vec<JsonEvent>) {
        self.scan(text, false, out);
    }

    /// Like `push`, but stops right after the byte that completes the top-level value or
    /// that makes the text invalid; returns how many bytes of `text` it consumed.
    pub fn push_value(&mut self, text: &str, out: &mut Vec<JsonEvent>) -> usize {
        self.scan(text, true, out)
    }

    fn scan(&mut self, text: &str, stop_at_end: bool, out: &mut Vec<JsonEvent>) -> usize {
        for (i, &b) in text.as_bytes().iter().enumerate() {
            if self.error.is_some() {
                return i;
            }
            self.byte(b, out);
            self.pos += 1;
            if stop_at_end && (self.done || self.error.is_some()) {
                return i + 1;
            }
        }
        text.len()
    }

    /// Ends the text: a number at the very end of a top-level value is complete now.
    pub fn finish(&mut self, out: &mut Vec<JsonEvent>) {
        if let Token::Bare { .. } = self.token {
            if self.stack.is_empty() {
                self.token = Token::None;
                self.value_end(out);
            }
        }
    }

    fn fail(&mut self, msg: String) {
        self.error = Some(msg);
    }

    fn byte(&mut self, b: u8, out: &mut Vec<JsonEvent>) {
        match self.token.clone() {
            Token::Str { key, escape, start } => self.string_byte(b, key, escape, start, out),
            Token::Bare { .. } if is_bare(b) => {}
            Token::Bare { .. } => {
                self.token = Token::None;
                self.value_end(out);
                self.structural(b, out);
            }
            Token::None => self.structural(b, out),
        }
    }

    fn string_byte(
        &mut self,
        b: u8,
        key: bool,
        escape: u8,
        start: usize,
        out: &mut Vec<JsonEvent>,
    ) {
        let escape = match (escape, b) {
            (0, b'\\') => 1,
            (0, b'"') => {
                self.token = Token::None;
                return self.string_end(key, out);
            }
            (0, c) if c < 0x20 => return self.fail("control character in a string".into()),
            (0, _) => 0,
            // `\u`: 14..=11 while four hex digits remain.
            (1, b'u') => 14,
            (1, b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't') => 0,
            (1, _) => return self.fail("invalid escape in a string".into()),
            (11, c) if c.is_ascii_hexdigit() => 0,
            (n, c) if c.is_ascii_hexdigit() => n - 1,
            _ => return self.fail("invalid \\u escape".into()),
        };
        if key {
            self.raw.push(b);
        }
        self.token = Token::Str { key, escape, start };
    }

    fn string_end(&mut self, key: bool, out: &mut Vec<JsonEvent>) {
        if !key {
            self.pos += 1; // the closing quote belongs to the value
            self.value_end(out);
            self.pos -= 1;
            return;
        }
        let mut quoted = Vec::with_capacity(self.raw.len() + 2);
        quoted.push(b'"');
        quoted.append(&mut self.raw);
        quoted.push(b'"');
        match serde_json::from_slice::<String>(&quoted) {
            Ok(key) => {
                out.push(JsonEvent::Key {
                    depth: self.stack.len(),
                    key,
                });
                self.set_top(Frame::ObjColon);
            }
            Err(e) => self.fail(format!("bad key: {e}")),
        }
    }

    fn structural(&mut self, b: u8, out: &mut Vec<JsonEvent>) {
        if b.is_ascii_whitespace() {
            return;
        }
        if self.done {
            return self.fail("text after the JSON value".into());
        }
        match (self.stack.last().copied(), b) {
            (Some(Frame::ObjKey { .. }), b'"') => {
                self.token = Token::Str {
                    key: true,
                    escape: 0,
                    start: self.pos,
                };
            }
            (Some(Frame::ObjKey { first: true }), b'}') => self.close(out),
            (Some(Frame::ObjColon), b':') => self.set_top(Frame::ObjValue),
            (Some(Frame::ObjNext), b',') => self.set_top(Frame::ObjKey { first: false }),
            (Some(Frame::ObjNext), b'}') => self.close(out),
            (Some(Frame::ArrValue { first: true }), b']') => self.close(out),
            (Some(Frame::ArrNext), b',') => self.set_top(Frame::ArrValue { first: false }),
            (Some(Frame::ArrNext), b']') => self.close(out),
            (None | Some(Frame::ObjValue | Frame::ArrValue { .. }), _) => self.value_start(b, out),
            (_, c) => self.fail(format!("unexpected '{}'", c as char)),
        }
    }

    fn value_start(&mut self, b: u8, out: &mut Vec<JsonEvent>) {
        if !matches!(
            b,
            b'{' | b'[' | b'"' | b'-' | b'0'..=b'9' | b't' | b'f' | b'n'
        ) {
            return self.fail(format!("unexpected '{}' where a value belongs", b as char));
        }
        self.started = true;
        out.push(JsonEvent::ValueStart {
            depth: self.stack.len(),
            at: self.pos,
        });
        match b {
            b'{' => self.stack.push(Frame::ObjKey { first: true }),
            b'[' => self.stack.push(Frame::ArrValue { first: true }),
            b'"' => {
                self.token = Token::Str {
                    key: false,
                    escape: 0,
                    start: self.pos,
                }
            }
            _ => self.token = Token::Bare { start: self.pos },
        }
    }

    fn close(&mut self, out: &mut Vec<JsonEvent>) {
        self.stack.pop();
        self.pos += 1; // the closing bracket belongs to the value
        self.value_end(out);
        self.pos -= 1;
    }

    /// A value just ended (before `self.pos`): advance the enclosing container.
    fn value_end(&mut self, out: &mut Vec<JsonEvent>) {
        out.push(JsonEvent::ValueEnd {
            depth: self.stack.len(),
            end: self.pos,
        });
        match self.stack.last().copied() {
            None => self.done = true,
            Some(Frame::ObjValue) => self.set_top(Frame::ObjNext),
            Some(Frame::ArrValue { .. }) => self.set_top(Frame::ArrNext),
            Some(_) => self.fail("value in the wrong place".into()),
        }
    }

    fn set_top(&mut self, f: Frame) {
        if let Some(top) = self.stack.last_mut() {
            *top = f;
        }
    }
}

fn is_bare(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'+' | b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(pieces: &[&str]) -> (Vec<JsonEvent>, JsonScanner) {
        let mut s = JsonScanner::new();
        let mut out = Vec::new();
        for p in pieces {
            s.push(p, &mut out);
        }
        (out, s)
    }

    #[test]
    fn spans_of_values_and_keys() {
        let text = r#"{"a": [1, "x\"]"], "b": {}}"#;
        let (ev, s) = scan(&[text]);
        assert!(s.is_done() && s.error().is_none());
        assert!(ev.contains(&JsonEvent::Key {
            depth: 1,
            key: "a".into()
        }));
        assert!(ev.contains(&JsonEvent::Key {
            depth: 1,
            key: "b".into()
        }));
        let starts: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                JsonEvent::ValueStart { depth: 1, at } => Some(*at),
                _ => None,
            })
            .collect();
        let ends: Vec<_> = ev
            .iter()
            .filter_map(|e| match e {
                JsonEvent::ValueEnd { depth: 1, end } => Some(*end),
                _ => None,
            })
            .collect();
        assert_eq!(&text[starts[0]..ends[0]], r#"[1, "x\"]"]"#);
        assert_eq!(&text[starts[1]..ends[1]], "{}");
        assert_eq!(
            ev.last(),
            Some(&JsonEvent::ValueEnd {
                depth: 0,
                end: text.len()
            })
        );
    }

    #[test]
    fn same_events_for_every_split() {
        let text = "{\"k\\u00e9y\": [true, null, -1.5e3, \"é€\"], \"z\": {\"y\": []}}";
        let (whole, _) = scan(&[text]);
        for i in 0..=text.len() {
            if !text.is_char_boundary(i) {
                continue;
            }
            let (ev, s) = scan(&[&text[..i], &text[i..]]);
            assert_eq!(ev, whole, "split at {i}");
            assert!(s.is_done(), "{:?}", s.error());
        }
        assert!(whole.contains(&JsonEvent::Key {
            depth: 1,
            key: "kéy".into()
        }));
    }

    #[test]
    fn errors() {
        for bad in [
            "{\"a\" 1}",
            "[1 2]",
            "{,}",
            "}",
            "{\"a\":1}x",
            "\"\\q\"",
            "{\"a\":1,]",
        ] {
            let (_, s) = scan(&[bad]);
            assert!(s.error().is_some(), "{bad}");
        }
        let (_, s) = scan(&["{\"a\": [1, {\"b\""]);
        assert!(s.error().is_none() && !s.is_done() && s.depth() == 3);
    }

    #[test]
    fn top_level_number_ends_at_finish() {
        let (mut ev, mut s) = scan(&["42"]);
        assert!(!s.is_done());
        s.finish(&mut ev);
        assert!(s.is_done());
    }
}
