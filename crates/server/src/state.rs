//! Shared server state handed to every handler.

use metrics_exporter_prometheus::PrometheusHandle;
use tandem_engine::EngineHandle;
use tandem_llama::Model;

use crate::error::ApiError;
use crate::template::ChatTemplate;

pub struct AppState {
    pub engine: EngineHandle,
    pub model: Model,
    pub template: ChatTemplate,
    pub served_name: String,
    /// KV capacity of one sequence: prompt plus generated tokens.
    pub cells_per_seq: usize,
    pub body_limit: usize,
    /// Whether requests may carry scripted tool segments (`--allow-scripted`).
    pub allow_scripted: bool,
    pub metrics: PrometheusHandle,
    pub created: u64,
}

impl AppState {
    /// A request may name the served model or leave `model` out; anything else is a 404.
    pub fn check_model(&self, model: Option<&str>) -> Result<(), ApiError> {
        match model {
            None | Some("") => Ok(()),
            Some(m) if m == self.served_name => Ok(()),
            Some(m) => Err(ApiError::ModelNotFound(m.to_string())),
        }
    }
}
