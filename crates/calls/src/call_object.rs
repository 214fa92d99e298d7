//! One tool call written as a JSON object, `{"name": "...", "arguments": {...}}` (the key of
//! the arguments varies by format), streamed as it is decoded: the name as soon as its string
//! is complete, then the arguments' raw text in fragments as they arrive. The fragments are
//! exact slices of the text, so they concatenate to the final arguments JSON whatever the
//! chunking. Both keys must be present, once each, and the arguments must be an object.

use crate::json_scan::{JsonEvent, JsonScanner};

/// What pushing text into a call object produced.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct CallProgress {
    /// The call's name, when it became known in this push.
    pub name: Option<String>,
    /// New raw text of the arguments (empty when none).
    pub args: String,
    /// Bytes of the pushed text that belong to the object (the rest follows it).
    pub consumed: usize,
}

/// Where the object stands.
#[derive(Clone, Debug, PartialEq)]
pub enum CallState {
    Open,
    /// The object is complete and a valid call.
    Done,
    /// Not a valid call; the reason.
    Invalid(String),
}

#[derive(Clone, Debug)]
pub struct CallObject {
    scanner: JsonScanner,
    args_keys: &'static [&'static str],
    text: String,
    key: Option<String>,
    name_start: Option<usize>,
    name: Option<String>,
    name_sent: bool,
    /// The name waits for the arguments' value to open (see `holding_name_for_arguments`).
    name_waits: bool,
    args_start: Option<usize>,
    args_end: Option<usize>,
    args_sent: usize,
    state: CallState,
}

impl CallObject {
    /// `args_keys`: the accepted keys of the arguments object (e.g. `arguments`, `parameters`).
    pub fn new(args_keys: &'static [&'static str]) -> Self {
        Self {
            scanner: JsonScanner::new(),
            args_keys,
            text: String::new(),
            key: None,
            name_start: None,
            name: None,
            name_sent: false,
            name_waits: false,
            args_start: None,
            args_end: None,
            args_sent: 0,
            state: CallState::Open,
        }
    }

    /// Holds the name back until the arguments' value opens. For an object that may be prose
    /// (Llama 3's bare `{`, which JSON content starts with too): an object with a `name` may
    /// be a person or a product, but with the arguments key as well it is a call. A stream
    /// cannot take back a call it has announced, so the name waits for that key.
    pub fn holding_name_for_arguments(mut self) -> Self {
        self.name_waits = true;
        self
    }

    pub fn state(&self) -> &CallState {
        &self.state
    }

    /// The complete arguments text (once the object is done).
    pub fn arguments(&self) -> Option<&str> {
        Some(&self.text[self.args_start?..self.args_end?])
    }

    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    /// Feeds text (which must start with the object, after any whitespace the caller
    /// skipped); stops at the object's end.
    pub fn push(&mut self, text: &str) -> CallProgress {
        let mut events = Vec::new();
        let mut n = self.scanner.push_value(text, &mut events);
        while !text.is_char_boundary(n) {
            n += 1;
        }
        self.text.push_str(&text[..n]);
        for ev in events {
            self.on_event(ev);
        }
        if let Some(e) = self.scanner.error() {
            self.state = CallState::Invalid(format!("not JSON: {e}"));
        }
        if self.scanner.is_done() && self.state == CallState::Open {
            self.state = self.validate();
        }
        self.progress(n)
    }

    fn on_event(&mut self, ev: JsonEvent) {
        match ev {
            JsonEvent::ValueStart { depth: 0, at } if self.text.as_bytes()[at] != b'{' => {
                self.state = CallState::Invalid("a call must be a JSON object".into());
            }
            JsonEvent::Key { depth: 1, key } => self.key = Some(key),
            JsonEvent::ValueStart { depth: 1, at } => self.value_start(at),
            JsonEvent::ValueEnd { depth: 1, end } => self.value_end(end),
            _ => {}
        }
    }

    fn is_args_key(&self) -> bool {
        self.key
            .as_deref()
            .is_some_and(|k| self.args_keys.contains(&k))
    }

    fn value_start(&mut self, at: usize) {
        let dup = |seen: bool| if seen { Some("duplicate key") } else { None };
        let problem = match self.key.as_deref() {
            Some("name") => dup(self.name_start.is_some()).or_else(|| {
                self.name_start = Some(at);
                (self.text.as_bytes()[at] != b'"').then_some("the name must be a string")
            }),
            _ if self.is_args_key() => dup(self.args_start.is_some()).or_else(|| {
                self.args_start = Some(at);
                (self.text.as_bytes()[at] != b'{').then_some("the arguments must be an object")
            }),
            _ => None,
        };
        if let Some(p) = problem {
            self.state = CallState::Invalid(p.into());
        }
    }

    fn value_end(&mut self, end: usize) {
        match self.key.as_deref() {
            Some("name") => {
                let start = self.name_start.unwrap_or(0);
                match serde_json::from_str::<String>(&self.text[start..end]) {
                    Ok(name) if !name.is_empty() => self.name = Some(name),
                    _ => self.state = CallState::Invalid("bad name".into()),
                }
            }
            _ if self.is_args_key() => self.args_end = Some(end),
            _ => {}
        }
    }

    fn validate(&self) -> CallState {
        if self.name.is_none() {
            return CallState::Invalid("no name".into());
        }
        if self.args_end.is_none() {
            return CallState::Invalid("no arguments".into());
        }
        CallState::Done
    }

    fn progress(&mut self, consumed: usize) -> CallProgress {
        let mut p = CallProgress {
            consumed,
            ..Default::default()
        };
        if matches!(self.state, CallState::Invalid(_)) {
            return p;
        }
        let waits = self.name_waits && self.args_start.is_none();
        if !self.name_sent && !waits {
            if let Some(name) = &self.name {
                p.name = Some(name.clone());
                self.name_sent = true;
            }
        }
        if let (true, Some(start)) = (self.name_sent, self.args_start) {
            let upto = self.args_end.unwrap_or(self.text.len());
            let from = self.args_sent.max(start);
            if upto > from {
                p.args = self.text[from..upto].to_string();
                self.args_sent = upto;
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: &[&str] = &["arguments"];

    #[test]
    fn streams_name_then_arguments() {
        let mut c = CallObject::new(KEYS);
        let p = c.push(r#"{"name": "get", "argu"#);
        assert_eq!(p.name.as_deref(), Some("get"));
        let p = c.push(r#"ments": {"a": [1,"#);
        assert_eq!(p.args, r#"{"a": [1,"#);
        let p = c.push(r#" 2]}} tail"#);
        assert_eq!(p.args, " 2]}");
        assert_eq!(p.consumed, 5);
        assert_eq!(c.state(), &CallState::Done);
        assert_eq!(c.arguments(), Some(r#"{"a": [1, 2]}"#));
    }

    #[test]
    fn arguments_before_name_are_held() {
        let mut c = CallObject::new(KEYS);
        assert_eq!(
            c.push(r#"{"arguments": {"x": 1}, "#),
            CallProgress {
                consumed: 24,
                ..Default::default()
            }
        );
        let p = c.push(r#""name": "f"}"#);
        assert_eq!(
            (p.name.as_deref(), p.args.as_str()),
            (Some("f"), r#"{"x": 1}"#)
        );
    }

    #[test]
    fn a_held_name_waits_for_the_arguments() {
        let mut c = CallObject::new(KEYS).holding_name_for_arguments();
        assert_eq!(c.push(r#"{"name": "Ada", "#).name, None);
        assert_eq!(c.push(r#""born": 1815, "#).name, None);
        let p = c.push(r#""arguments": {"x""#);
        assert_eq!(
            (p.name.as_deref(), p.args.as_str()),
            (Some("Ada"), r#"{"x""#)
        );
        let p = c.push(r#": 1}}"#);
        assert_eq!(p.args, ": 1}");
        assert_eq!(c.state(), &CallState::Done);
    }

    #[test]
    fn invalid_calls() {
        for bad in [
            r#"[1]"#,
            r#"{"name": 3, "arguments": {}}"#,
            r#"{"name": "f", "arguments": [1]}"#,
            r#"{"name": "f"}"#,
            r#"{"arguments": {}}"#,
            r#"{"name": "f", "name": "g", "arguments": {}}"#,
            r#"{"name": "f" "arguments": {}}"#,
        ] {
            let mut c = CallObject::new(KEYS);
            c.push(bad);
            assert!(
                matches!(c.state(), CallState::Invalid(_)),
                "{bad}: {:?}",
                c.state()
            );
        }
    }
}
