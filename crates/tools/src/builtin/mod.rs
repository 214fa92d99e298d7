//! Built-in server-side tools.

pub mod calc;
pub mod http_get;
pub mod plan;
pub mod python;
mod python_fork;
pub mod search;
pub mod validate;

use serde_json::Value;

/// The start of a JSON array's compact text holding `items` and possibly more: what a tool
/// whose result is that array publishes as its result prefix (`runtime::ResultPrefix`).
pub(crate) fn array_start(items: &[Value]) -> String {
    let inner: Vec<String> = items.iter().map(Value::to_string).collect();
    format!("[{}", inner.join(","))
}

#[cfg(test)]
mod tests {
    use super::array_start;
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
}
