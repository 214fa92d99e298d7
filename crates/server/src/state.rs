//! Shared server state handed to every handler.

use std::sync::Arc;

use metrics_exporter_prometheus::PrometheusHandle;
use tandem_engine::EngineHandle;
use tandem_llama::Model;

use tandem_tools::constraint::{Guidance, Guided, Tokenize};
use tandem_tools::grammar::{GrammarPlan, JsonLayout};
use tandem_tools::render::{template_supports_tools, ResultTurns};
use tandem_tools::runtime::Registry;
use tandem_tools::ParserKind;

use crate::api::responses::store::ResponseStore;
use crate::error::ApiError;
use crate::template::ChatTemplate;

/// How this server handles tool calls for its model.
pub struct ToolSetup {
    pub parser: ParserKind,
    /// The chat template renders `tools` itself (else tandem writes them into the prompt).
    pub in_template: bool,
    /// How tandem writes tool results when the template does not render tools.
    pub results: ResultTurns,
    /// Grammar compiler over the model's vocabulary.
    pub guidance: Guidance,
    /// How JSON output is laid out (`--json-layout`) unless a request asks for compact.
    pub json_layout: JsonLayout,
}

impl ToolSetup {
    /// `jump_forward`: text a grammar forces is appended without sampling (the model's
    /// tokenizer splits it).
    pub fn new(
        model: &Model,
        template: Option<&str>,
        results: ResultTurns,
        parser: Option<ParserKind>,
        jump_forward: bool,
        json_layout: JsonLayout,
    ) -> anyhow::Result<Self> {
        let t0 = std::time::Instant::now();
        let eog: Vec<u32> = model.eog_tokens().iter().map(|&t| t as u32).collect();
        let tokenize = jump_forward.then(|| model_tokenizer(*model));
        let guidance = Guidance::new(&model.token_words(), &eog, tokenize)?;
        let parser = parser
            .unwrap_or_else(|| template.map_or(ParserKind::Hermes, ParserKind::from_template));
        let in_template = template.is_some_and(template_supports_tools);
        let by = match (in_template, results) {
            (true, _) => "the chat template",
            (false, ResultTurns::Tool) => "tandem (results as the template's tool turns)",
            (false, ResultTurns::Wrapped) => "tandem (results as <tool_response> user turns)",
        };
        tracing::info!(
            "tool calls: {parser} format, tools rendered by {by}; grammar vocabulary ready in {:.0} ms",
            t0.elapsed().as_secs_f64() * 1e3
        );
        Ok(Self {
            parser,
            in_template,
            results,
            guidance,
            json_layout,
        })
    }

    /// `plan` compiled over the model's vocabulary; a grammar llguidance rejects is a 400
    /// naming `param`, the request field it came from.
    pub fn guided(&self, plan: &GrammarPlan, param: &str) -> Result<Guided, ApiError> {
        self.guidance
            .constraint(plan)
            .map_err(|e| ApiError::invalid_at(e.to_string(), param))
    }
}

/// The model's tokenizer as the grammar compiler takes it (raw bytes, ids as u32).
fn model_tokenizer(model: Model) -> Tokenize {
    Arc::new(move |bytes: &[u8]| {
        let tokens = model.tokenize_bytes(bytes);
        tokens.into_iter().map(|t| t as u32).collect()
    })
}

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
    /// Whether chat requests may carry `replay` text (`--allow-replay`).
    pub allow_replay: bool,
    pub tools: ToolSetup,
    /// Server-side tools (`--tools`).
    pub registry: Arc<Registry>,
    pub metrics: PrometheusHandle,
    /// Responses kept for `previous_response_id` and `GET /v1/responses/{id}`.
    pub responses: Arc<ResponseStore>,
    pub created: u64,
    /// Keys a request must present (empty: none needed).
    pub api_keys: crate::auth::ApiKeys,
    /// `/v1/embeddings` (`--embeddings`), if served.
    pub embedder: Option<tandem_llama::Embedder>,
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
