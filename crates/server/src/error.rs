//! The one place where failures become HTTP responses: OpenAI error JSON
//! (`{"error": {"message", "type", "param", "code"}}`) with the matching status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;
use tandem_engine::SubmitError;
use tandem_tools::defs::DefError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed or semantically invalid request (400).
    #[error("{message}")]
    Invalid {
        message: String,
        param: Option<String>,
    },
    /// Well-formed JSON whose fields do not match the schema (422); `param` names the field
    /// where that is known.
    #[error("{message}")]
    Unprocessable {
        message: String,
        param: Option<String>,
    },
    /// The prompt does not fit a sequence's context (400, `context_length_exceeded`). `param`
    /// names the field holding the prompt; `None`: `messages`.
    #[error("{message}")]
    ContextLength {
        message: String,
        param: Option<String>,
    },
    #[error("The model `{0}` does not exist")]
    ModelNotFound(String),
    #[error("{0}")]
    NotFound(String),
    /// `previous_response_id` names no stored response (400, as OpenAI answers).
    #[error("Previous response with id '{0}' not found.")]
    PreviousResponseNotFound(String),
    /// Missing or wrong API key (401, `invalid_api_key`).
    #[error("{0}")]
    Unauthorized(String),
    #[error("request body is larger than the limit of {0} bytes")]
    TooLarge(usize),
    #[error("{0}")]
    Overloaded(String),
    /// An endpoint this server was not started for (501), e.g. embeddings without
    /// `--embeddings`.
    #[error("{0}")]
    NotEnabled(String),
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    pub fn invalid(message: impl Into<String>, param: impl Into<Option<&'static str>>) -> Self {
        let param = param.into().map(str::to_string);
        Self::Invalid {
            message: message.into(),
            param,
        }
    }

    /// A prompt that does not fit a sequence's context.
    pub fn context_length(message: String) -> Self {
        Self::ContextLength {
            message,
            param: None,
        }
    }

    /// The same error, naming `param` as the prompt's field if it is a context-length error.
    pub fn about_prompt(self, param: &str) -> Self {
        match self {
            Self::ContextLength { message, .. } => Self::ContextLength {
                message,
                param: Some(param.to_string()),
            },
            other => other,
        }
    }

    /// A 400 whose field is named at run time (`messages[3]`, `structured_outputs.regex`).
    pub fn invalid_at(message: impl Into<String>, param: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
            param: Some(param.into()),
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Invalid { .. }
            | Self::ContextLength { .. }
            | Self::PreviousResponseNotFound(_) => StatusCode::BAD_REQUEST,
            Self::Unprocessable { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::ModelNotFound(_) | Self::NotFound(_) => StatusCode::NOT_FOUND,
            Self::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::Overloaded(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::NotEnabled(_) => StatusCode::NOT_IMPLEMENTED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn kind_and_code(&self) -> (&'static str, Option<&'static str>) {
        match self {
            Self::Invalid { .. } | Self::Unprocessable { .. } => ("invalid_request_error", None),
            Self::ContextLength { .. } => {
                ("invalid_request_error", Some("context_length_exceeded"))
            }
            Self::ModelNotFound(_) => ("invalid_request_error", Some("model_not_found")),
            Self::NotFound(_) => ("invalid_request_error", Some("not_found")),
            Self::PreviousResponseNotFound(_) => {
                ("invalid_request_error", Some("previous_response_not_found"))
            }
            Self::Unauthorized(_) => ("invalid_request_error", Some("invalid_api_key")),
            Self::TooLarge(_) => ("invalid_request_error", Some("request_too_large")),
            Self::Overloaded(_) => ("server_error", Some("overloaded")),
            Self::NotEnabled(_) => ("not_supported_error", Some("not_enabled")),
            Self::Internal(_) => ("server_error", None),
        }
    }

    /// A request body that does not match the schema, with no field named: its path is
    /// unknown, or (a translated Responses or Messages body) it would be the chat form's.
    pub fn unprocessable(e: impl std::fmt::Display) -> Self {
        Self::Unprocessable {
            message: format!("invalid request: {e}"),
            param: None,
        }
    }

    pub fn param(&self) -> Option<&str> {
        match self {
            Self::Invalid { param, .. } | Self::Unprocessable { param, .. } => param.as_deref(),
            Self::ModelNotFound(_) => Some("model"),
            Self::ContextLength { param, .. } => Some(param.as_deref().unwrap_or("messages")),
            Self::PreviousResponseNotFound(_) => Some("previous_response_id"),
            _ => None,
        }
    }

    /// The OpenAI error object, also sent as the last SSE event of a failed stream.
    pub fn body(&self) -> serde_json::Value {
        let (kind, code) = self.kind_and_code();
        json!({"error": {"message": self.to_string(), "type": kind, "param": self.param(), "code": code}})
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if self.status().is_server_error() {
            tracing::warn!("{}: {}", self.status(), self);
        }
        (self.status(), Json(self.body())).into_response()
    }
}

/// A checked request field's problem (`tandem_tools`) as a 400 naming that field.
impl From<DefError> for ApiError {
    fn from(e: DefError) -> Self {
        Self::invalid_at(e.message, e.param)
    }
}

impl From<SubmitError> for ApiError {
    fn from(e: SubmitError) -> Self {
        match e {
            SubmitError::QueueFull(_) => Self::Overloaded(e.to_string()),
            SubmitError::Stopped => Self::Internal(e.to_string()),
        }
    }
}
