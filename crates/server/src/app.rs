//! The HTTP router: routes, body limit, per-request status counting.

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use crate::api::{chat, completions, embeddings, messages, misc, responses, tokenize};
use crate::auth;
use crate::state::AppState;

pub fn router(st: Arc<AppState>) -> Router {
    let limit = st.body_limit;
    Router::new()
        .route("/v1/chat/completions", post(chat::handler))
        .route("/v1/completions", post(completions::handler))
        .route("/v1/responses", post(responses::create))
        .route(
            "/v1/responses/{id}",
            get(responses::retrieve).delete(responses::delete),
        )
        .route("/v1/messages", post(messages::create))
        .route("/v1/messages/count_tokens", post(messages::count_tokens))
        .route("/v1/embeddings", post(embeddings::handler))
        .route("/v1/models", get(misc::models))
        .route("/v1/models/{id}", get(misc::model))
        .route("/tokenize", post(tokenize::tokenize))
        .route("/detokenize", post(tokenize::detokenize))
        .route("/apply-template", post(tokenize::apply_template))
        .route("/health", get(misc::health))
        .route("/metrics", get(misc::metrics))
        .fallback(misc::not_found)
        .layer(middleware::from_fn_with_state(
            st.clone(),
            auth::require_key,
        ))
        .layer(middleware::from_fn(count_requests))
        .layer(DefaultBodyLimit::max(limit))
        .with_state(st)
}

/// Counts API requests by path and HTTP status (`tandem_requests_total`).
async fn count_requests(req: Request, next: Next) -> Response {
    let path = req.uri().path().to_string();
    let resp = next.run(req).await;
    if path.starts_with("/v1/") {
        let status = resp.status().as_u16().to_string();
        let path = match path.as_str() {
            "/v1/chat/completions"
            | "/v1/completions"
            | "/v1/responses"
            | "/v1/messages"
            | "/v1/embeddings" => path,
            p if p.starts_with("/v1/models") => "/v1/models".to_string(),
            _ => "other".to_string(), // keeps label cardinality bounded
        };
        metrics::counter!("tandem_requests_total", "path" => path, "status" => status).increment(1);
    }
    resp
}
