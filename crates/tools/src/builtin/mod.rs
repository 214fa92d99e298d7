//! Built-in server-side tools.

pub mod calc;
pub mod http_get;
pub mod plan;
pub mod python;
mod python_fork;
pub mod search;
pub mod validate;

use serde_json::Value;

use crate::runtime::ResultPrefix;

/// The start of a JSON array's compact text holding `items` and possibly more: what a tool
/// whose result is that array publishes as its result prefix (`runtime::ResultPrefix`).
pub(crate) fn array_start(items: &[Value]) -> String {
    let inner: Vec<String> = items.iter().map(Value::to_string).collect();
    format!("[{}", inner.join(","))
}

/// Publishes a tool's output as it is read (python's printed text, http_get's body): the
/// whole UTF-8 characters read so far, each time they grow.
pub(crate) struct OutputSoFar {
    prefix: ResultPrefix,
    published: usize,
}

impl OutputSoFar {
    pub(crate) fn new(prefix: ResultPrefix) -> Self {
        Self {
            prefix,
            published: 0,
        }
    }

    /// `bytes` is all the output read so far.
    pub(crate) fn update(&mut self, bytes: &[u8]) {
        let whole = utf8_prefix(bytes);
        if whole.len() > self.published {
            self.published = whole.len();
            self.prefix.publish(whole.to_string());
        }
    }
}

/// The longest prefix of `bytes` that is whole UTF-8 characters: a character split between
/// two reads is published with the read that completes it. `String::from_utf8_lossy` of the
/// whole output keeps that prefix as it is, so it begins the result.
fn utf8_prefix(bytes: &[u8]) -> &str {
    match std::str::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => std::str::from_utf8(&bytes[..e.valid_up_to()]).unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::{array_start, utf8_prefix};
    use serde_json::{json, Value};

    #[test]
    fn an_array_start_begins_the_whole_array_text() {
        let items = vec![json!({"b": "x\"y", "a": [1, 2]}), json!("é\n"), json!(null)];
        let whole = Value::Array(items.clone()).to_string();
        for n in 0..=items.len() {
            let start = array_start(&items[..n]);
            assert!(whole.starts_with(&start), "{start} / {whole}");
        }
        assert_eq!(array_start(&[]), "[");
    }

    #[test]
    fn a_character_split_between_reads_waits_for_its_last_byte() {
        let text = "ab é".as_bytes();
        assert_eq!(utf8_prefix(&text[..4]), "ab ");
        assert_eq!(utf8_prefix(text), "ab é");
        assert_eq!(utf8_prefix(b"ok\xff more"), "ok");
    }
}
