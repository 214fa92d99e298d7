//! Request bodies: the size limit, UTF-8 and JSON checks, each mapped to its own error; and
//! building the chat request body that the Responses and Messages APIs translate to.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// Parses a JSON body: over the limit → 413, not UTF-8 or not JSON → 400, JSON of the wrong
/// shape → 422 naming the field (`messages[0].role`) in its message and `param`.
pub fn parse_json<T: DeserializeOwned>(
    body: Result<Bytes, BytesRejection>,
    limit: usize,
) -> Result<T, ApiError> {
    let bytes = body.map_err(|r| match r.status() {
        StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(limit),
        _ => ApiError::invalid(format!("could not read the request body: {r}"), None),
    })?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| ApiError::invalid(format!("request body is not valid UTF-8: {e}"), None))?;
    let value: serde_json::Value = serde_json::from_str(text)
        .map_err(|e| ApiError::invalid(format!("request body is not valid JSON: {e}"), None))?;
    if !value.is_object() {
        return Err(ApiError::invalid(
            "request body must be a JSON object",
            None,
        ));
    }
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        match path.as_str() {
            "." => ApiError::unprocessable(inner),
            _ => ApiError::Unprocessable {
                message: format!("invalid request: {path}: {inner}"),
                param: Some(path),
            },
        }
    })
}

/// Sets `key` in a JSON object when there is a value for it.
pub fn insert_some(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.into(), v);
    }
}
