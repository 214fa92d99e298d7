//! API keys (`--api-key`, `--api-key-file`): which requests must carry one, and the check.
//!
//! Hand-written rather than tower-http's bearer validator because a refusal must be OpenAI's
//! error JSON (401, `invalid_api_key`), several keys may be valid, and Anthropic-style clients
//! send the key in `x-api-key` instead of `Authorization: Bearer`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use subtle::ConstantTimeEq;

use crate::error::ApiError;
use crate::state::AppState;

/// The keys a request may present; empty means the server is open.
#[derive(Debug, Default, Clone)]
pub struct ApiKeys(Vec<String>);

impl ApiKeys {
    /// Keys from the command line and a key file's lines (blank lines and `#` comments
    /// skipped). Keys are trimmed; an empty key is not a key.
    pub fn new(keys: &[String], file_text: Option<&str>) -> Self {
        let from_file = file_text.into_iter().flat_map(str::lines);
        let keys = keys.iter().map(String::as_str).chain(from_file);
        let keys = keys
            .map(str::trim)
            .filter(|k| !k.is_empty() && !k.starts_with('#'));
        Self(keys.map(str::to_string).collect())
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether `given` is one of the keys; compares in constant time per key so the answer's
    /// timing does not tell how much of a guess was right.
    fn accepts(&self, given: &str) -> bool {
        let given = given.as_bytes();
        self.0
            .iter()
            .fold(false, |ok, k| ok | bool::from(k.as_bytes().ct_eq(given)))
    }
}

/// Paths served without a key: liveness probes and Prometheus scrapes, which carry no model
/// output and whose callers (load balancers, scrapers) are usually not API clients.
fn is_public(path: &str) -> bool {
    matches!(path, "/health" | "/metrics")
}

/// The key a request presents: `Authorization: Bearer KEY` (OpenAI clients) or `x-api-key`.
fn presented(headers: &HeaderMap) -> Option<&str> {
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        });
    let header = || headers.get("x-api-key").and_then(|v| v.to_str().ok());
    bearer.or_else(header).map(str::trim)
}

/// Middleware: refuses a request to a protected path without a valid key (401).
pub async fn require_key(State(st): State<Arc<AppState>>, req: Request, next: Next) -> Response {
    if st.api_keys.is_empty() || is_public(req.uri().path()) {
        return next.run(req).await;
    }
    match presented(req.headers()) {
        Some(key) if st.api_keys.accepts(key) => next.run(req).await,
        Some(_) => ApiError::Unauthorized("Incorrect API key provided.".into()).into_response(),
        None => ApiError::Unauthorized(
            "Missing API key: send it as `Authorization: Bearer KEY` (or `x-api-key: KEY`).".into(),
        )
        .into_response(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn keys_from_flags_and_file() {
        let keys = ApiKeys::new(&["a".into(), " ".into()], Some("# team keys\nb\n\n  c  \n"));
        assert_eq!(keys.len(), 3);
        assert!(keys.accepts("a") && keys.accepts("b") && keys.accepts("c"));
        assert!(!keys.accepts("") && !keys.accepts("ab") && !keys.accepts("# team keys"));
        assert!(ApiKeys::new(&[], None).is_empty());
    }

    #[test]
    fn key_from_bearer_or_x_api_key() {
        let mut h = HeaderMap::new();
        assert_eq!(presented(&h), None);
        h.insert("x-api-key", HeaderValue::from_static("k2"));
        assert_eq!(presented(&h), Some("k2"));
        h.insert("authorization", HeaderValue::from_static("Bearer k1"));
        assert_eq!(presented(&h), Some("k1"));
        h.insert("authorization", HeaderValue::from_static("Basic xyz"));
        assert_eq!(presented(&h), Some("k2"));
    }

    #[test]
    fn probes_are_public() {
        assert!(is_public("/health") && is_public("/metrics"));
        assert!(!is_public("/v1/models") && !is_public("/tokenize") && !is_public("/health/x"));
    }
}
