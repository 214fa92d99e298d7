//! Request bodies: the size limit, UTF-8 and JSON checks, each mapped to its own error;
//! reading a request type with a 422 that names a wrongly typed field (`RequestBody`, also
//! inside flattened parts); and building the chat request body that the Responses and
//! Messages APIs translate to.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::error::ApiError;

/// A request body type. Serde reads a `#[serde(flatten)]` part from a buffered map, out of
/// serde_path_to_error's sight, so a wrongly typed field there comes back without its name;
/// a type with such parts names the field by reading each part alone (`part_error`).
pub trait RequestBody: DeserializeOwned {
    /// The path and message of a wrongly typed field inside a flattened part, if any.
    fn flattened_error(_body: &Value) -> Option<(String, String)> {
        None
    }
}

/// The field `P`, read alone from `body` (it skips the fields that are not its own), fails
/// on, and why; none when it reads or fails on no field in particular.
pub fn part_error<P: DeserializeOwned>(body: &Value) -> Option<(String, String)> {
    let e = serde_path_to_error::deserialize::<_, P>(body).err()?;
    let path = e.path().to_string();
    (path != ".").then(|| (path, e.into_inner().to_string()))
}

/// Parses a JSON body: over the limit → 413, not UTF-8 or not JSON → 400, JSON of the wrong
/// shape → 422 naming the field (`messages[0].role`) in its message and `param`.
pub fn parse_json<T: RequestBody>(
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
    from_value(&value)
}

/// Reads a request type from JSON; a 422 names the wrongly typed field. For bodies the
/// server builds from another API's (Responses, Messages) as well as for those it receives.
pub fn from_value<T: RequestBody>(value: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let named = match path.as_str() {
            "." => T::flattened_error(value),
            _ => Some((path, e.inner().to_string())),
        };
        match named {
            Some((path, inner)) => ApiError::Unprocessable {
                message: format!("invalid request: {path}: {inner}"),
                param: Some(path),
            },
            None => ApiError::unprocessable(e.into_inner()),
        }
    })
}

/// Sets `key` in a JSON object when there is a value for it.
pub fn insert_some(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.into(), v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::types::ChatRequest;
    use serde_json::json;

    fn param(body: Value) -> Option<String> {
        match from_value::<ChatRequest>(&body) {
            Err(ApiError::Unprocessable { param, .. }) => param,
            other => panic!("{:?}", other.err()),
        }
    }

    #[test]
    fn a_wrongly_typed_field_is_named_inside_flattened_parts_too() {
        let msgs = json!([{"role": "user", "content": "hi"}]);
        let named = |k: &str, v: Value| param(json!({"messages": msgs, k: v}));
        assert_eq!(named("logprobs", json!(1)).as_deref(), Some("logprobs"));
        assert_eq!(
            named("max_tokens", json!("x")).as_deref(),
            Some("max_tokens")
        );
        assert_eq!(named("top_p", json!([])).as_deref(), Some("top_p"));
        assert_eq!(named("stop", json!(5)).as_deref(), Some("stop"));
        assert_eq!(param(json!({})), None, "a missing field is no field's type");
    }
}
