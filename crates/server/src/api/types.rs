//! OpenAI request types and their validation into engine-ready parameters.

use serde::Deserialize;
use serde_json::Value;

use std::sync::Arc;

use tandem_engine::{SamplingParams, Token};
use tandem_llama::Model;
use tandem_tools::defs::ResponseFormat;
use tandem_tools::grammar::{check_lark, check_schema};
use tandem_tools::structured::{self, Checks, Structured};

use crate::api::body::{part_error, RequestBody};
use crate::api::sampling::SamplingFields;
use crate::error::ApiError;
use crate::script::Segment;

/// `stop`: one string or a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum StopSpec {
    One(String),
    Many(Vec<String>),
}

#[derive(Debug, Default, Deserialize)]
pub struct StreamOptions {
    #[serde(default)]
    pub include_usage: bool,
}

/// Structured-output fields of other servers (vLLM, llama-server, SGLang), read by
/// `tandem_tools::structured` into one rule.
#[derive(Debug, Default, Deserialize)]
pub struct StructuredFields {
    pub structured_outputs: Option<Value>,
    pub guided_json: Option<Value>,
    pub guided_regex: Option<Value>,
    pub guided_choice: Option<Value>,
    pub guided_grammar: Option<Value>,
    pub json_schema: Option<Value>,
    pub grammar: Option<Value>,
    pub regex: Option<Value>,
    pub ebnf: Option<Value>,
}

impl StructuredFields {
    fn get(&self, name: &str) -> Option<Value> {
        let v = match name {
            "structured_outputs" => &self.structured_outputs,
            "guided_json" => &self.guided_json,
            "guided_regex" => &self.guided_regex,
            "guided_choice" => &self.guided_choice,
            "guided_grammar" => &self.guided_grammar,
            "json_schema" => &self.json_schema,
            "grammar" => &self.grammar,
            "regex" => &self.regex,
            "ebnf" => &self.ebnf,
            _ => &None,
        };
        v.clone()
    }

    /// The request's output rule, checked (a grammar or schema that does not compile is a 400
    /// naming its field).
    pub fn rule(&self) -> Result<Option<Structured>, ApiError> {
        let checks = Checks {
            schema: &check_schema,
            lark: &check_lark,
        };
        Ok(structured::parse(&|name| self.get(name), &checks)?)
    }

    /// The output rule given `response_format` (a chat or completion request's own field)
    /// beside this request's structured-output rule `given` (at most one of the two), compact
    /// when `structured_outputs.disable_any_whitespace` asks, whichever carries the schema.
    pub fn with_response_format(
        &self,
        given: Option<Structured>,
        response_format: Option<&Value>,
    ) -> Result<Option<Structured>, ApiError> {
        let format = ResponseFormat::parse(response_format, &check_schema)?;
        let compact = structured::compact_requested(&|name| self.get(name));
        Ok(structured::with_response_format(given, &format, compact)?)
    }
}

/// Fields shared by chat and text completions.
#[derive(Debug, Deserialize)]
pub struct CommonParams {
    pub model: Option<String>,
    pub max_tokens: Option<i64>,
    pub max_completion_tokens: Option<i64>,
    #[serde(flatten)]
    pub sampling: SamplingFields,
    pub stop: Option<StopSpec>,
    /// Choices to generate (1 to `MAX_CHOICES`); with a `seed`, choice `i` samples with
    /// `seed + i`.
    pub n: Option<i64>,
    pub stream: Option<bool>,
    pub stream_options: Option<StreamOptions>,
    /// Extension (vLLM, llama-server): keep generating past end-of-generation tokens.
    #[serde(default)]
    pub ignore_eos: bool,
    /// Extension for benchmarks (needs `--allow-scripted`): scripted tool segments.
    pub segments: Option<Vec<Segment>>,
    /// Extensions: the output follows a regex, a choice, a grammar or a JSON schema.
    #[serde(flatten)]
    pub structured: StructuredFields,
    /// OpenAI's predicted output: `{"type": "content", "content": text or text parts}`.
    pub prediction: Option<Value>,
}

#[derive(Debug, Deserialize)]
pub struct ChatRequest {
    pub messages: Vec<Value>,
    /// Checked by `tool_calls::ToolPlan` (as raw JSON, so problems get a precise message).
    pub tools: Option<Value>,
    pub tool_choice: Option<Value>,
    pub parallel_tool_calls: Option<Value>,
    pub response_format: Option<Value>,
    /// tandem extension: names of server-side tools (registered with `--tools`) this request
    /// may call; the server runs them and continues the generation with their results.
    pub server_tools: Option<Vec<String>>,
    /// tandem extension for benchmarks (needs `--allow-replay`): the assistant text to
    /// produce, one string per turn, instead of sampling.
    pub replay: Option<Vec<String>>,
    /// tandem extension: partial execution on or off for this request's server-side calls
    /// (default: the server's `--partial-exec`).
    pub partial_exec: Option<bool>,
    /// The log-probability of each generated token, with `top_logprobs` alternatives.
    pub logprobs: Option<bool>,
    pub top_logprobs: Option<i64>,
    /// Extension (vLLM's name): the last message is the assistant's start and the reply
    /// continues it (Anthropic's prefill) instead of opening a new assistant turn.
    #[serde(default)]
    pub continue_final_message: bool,
    /// OpenAI's deprecated function calling, translated to `tools` and `tool_choice` before
    /// anything else reads the request (`legacy_functions`).
    pub functions: Option<Value>,
    pub function_call: Option<Value>,
    /// OpenAI fields asking for what this server cannot give (audio output, web search):
    /// refused by name (`unserved`) rather than ignored.
    pub audio: Option<Value>,
    pub modalities: Option<Vec<String>>,
    pub web_search_options: Option<Value>,
    #[serde(flatten)]
    pub common: CommonParams,
}

impl CommonParams {
    /// A wrongly typed field of these parts, named (`RequestBody`): the flattened sampling
    /// and structured-output fields, then this struct's own (flattened in every request).
    fn flattened_error(body: &Value) -> Option<(String, String)> {
        part_error::<SamplingFields>(body)
            .or_else(|| part_error::<StructuredFields>(body))
            .or_else(|| part_error::<CommonParams>(body))
    }
}

impl RequestBody for ChatRequest {
    fn flattened_error(body: &Value) -> Option<(String, String)> {
        CommonParams::flattened_error(body)
    }
}

impl RequestBody for CompletionRequest {
    fn flattened_error(body: &Value) -> Option<(String, String)> {
        CommonParams::flattened_error(body)
    }
}

impl ChatRequest {
    /// A 400 naming the first field that asks for output this server cannot produce; fields
    /// that only describe the caller (`user`, `metadata`, `store`, ...) are ignored instead.
    pub fn unserved(&self) -> Result<(), ApiError> {
        if self.audio.is_some() {
            return Err(ApiError::invalid("audio output is not supported", "audio"));
        }
        if let Some(m) = self.modalities.iter().flatten().find(|m| *m != "text") {
            let msg = format!("modality '{m}' is not supported; only 'text'");
            return Err(ApiError::invalid(msg, "modalities"));
        }
        if self.web_search_options.is_some() {
            let msg = "web search is not supported (tandem's own search tool is a server-side tool: `server_tools`)";
            return Err(ApiError::invalid(msg, "web_search_options"));
        }
        Ok(())
    }
}

/// `prompt` of a text completion: a string, token ids, or a list of either (OpenAI's batch
/// form; lm-evaluation-harness sends one with `batch_size` > 1).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum PromptSpec {
    Text(String),
    Texts(Vec<String>),
    Tokens(Vec<i64>),
    TokenLists(Vec<Vec<i64>>),
}

#[derive(Debug, Deserialize)]
pub struct CompletionRequest {
    pub prompt: PromptSpec,
    #[serde(default)]
    pub echo: bool,
    /// The log-probability of each generated token, with this many alternatives.
    pub logprobs: Option<i64>,
    /// vLLM takes `response_format` on text completions too.
    pub response_format: Option<Value>,
    /// OpenAI's insertion text (after the completion): refused, the model has no
    /// fill-in-the-middle format here.
    pub suffix: Option<String>,
    /// OpenAI's server-side candidates to pick the best `n` from: only `best_of` = `n` is
    /// served (vLLM's current engine refuses any best_of too).
    pub best_of: Option<i64>,
    #[serde(flatten)]
    pub common: CommonParams,
}

impl CompletionRequest {
    /// A 400 for `suffix` and for `best_of` other than `n`, which would change the output's
    /// meaning if ignored.
    pub fn unserved(&self) -> Result<(), ApiError> {
        if self.suffix.as_deref().is_some_and(|s| !s.is_empty()) {
            let msg = "suffix (text inserted after the completion) is not supported";
            return Err(ApiError::invalid(msg, "suffix"));
        }
        let n = self.common.n.unwrap_or(1);
        match self.best_of {
            Some(b) if b != n => Err(ApiError::invalid(
                format!("best_of {b} is not supported: only best_of equal to n ({n}); ask for n choices and pick among them"),
                "best_of",
            )),
            _ => Ok(()),
        }
    }

    /// The output rule: a structured-output field or `response_format` (not both).
    pub fn output(&self, given: Option<Structured>) -> Result<Option<Structured>, ApiError> {
        let format = self.response_format.as_ref();
        self.common.structured.with_response_format(given, format)
    }
}

/// Validated generation parameters.
#[derive(Debug, Clone)]
pub struct GenParams {
    /// Choices to generate for the prompt (`n`), each its own engine request.
    pub n: usize,
    /// `None`: until end-of-generation or the context is full.
    pub max_tokens: Option<usize>,
    pub sampling: SamplingParams,
    pub stop: Vec<String>,
    pub ignore_eos: bool,
    pub stream: bool,
    pub include_usage: bool,
    pub segments: Option<Vec<Segment>>,
    /// What the output must match (the structured-output extensions), if anything.
    pub output: Option<Structured>,
    /// The tokens of the text the output is expected to repeat (`prediction`), verified as a
    /// speculative draft; tokenized once per request, shared by its choices.
    pub prediction: Option<Arc<[Token]>>,
}

impl GenParams {
    /// The parameters of choice `i`: a seeded request's choices sample with `seed + i`, so
    /// they differ from each other and each is reproducible.
    pub fn choice(&self, i: usize) -> GenParams {
        let mut p = self.clone();
        p.sampling.seed = p.sampling.seed.map(|s| s.wrapping_add(i as u64));
        p
    }
}

const MAX_STOPS: usize = 16;
/// Most choices one request may ask for (OpenAI's limit).
const MAX_CHOICES: usize = 128;

impl CommonParams {
    /// `model` bounds `logit_bias` (its vocabulary) and tokenizes `prediction`.
    pub fn validate(&self, model: &Model) -> Result<GenParams, ApiError> {
        let n = match self.n {
            None => 1,
            Some(n) if (1..=MAX_CHOICES as i64).contains(&n) => n as usize,
            Some(n) => {
                let msg = format!("n must be between 1 and {MAX_CHOICES}, got {n}");
                return Err(ApiError::invalid(msg, "n"));
            }
        };
        let max_tokens = match (self.max_completion_tokens, self.max_tokens) {
            (Some(v), _) => Some(positive(v, "max_completion_tokens")?),
            (None, Some(v)) => Some(positive(v, "max_tokens")?),
            (None, None) => None,
        };
        Ok(GenParams {
            n,
            max_tokens,
            sampling: self.sampling.validate(model.n_vocab())?,
            stop: self.stops()?,
            ignore_eos: self.ignore_eos,
            stream: self.stream.unwrap_or(false),
            include_usage: self
                .stream_options
                .as_ref()
                .is_some_and(|o| o.include_usage),
            segments: self.segments.clone(),
            output: self.structured.rule()?,
            prediction: match &self.prediction {
                Some(p) => Some(model.tokenize(&prediction_text(p)?, false, false).into()),
                None => None,
            },
        })
    }

    fn stops(&self) -> Result<Vec<String>, ApiError> {
        let stops = match &self.stop {
            None => vec![],
            Some(StopSpec::One(s)) => vec![s.clone()],
            Some(StopSpec::Many(v)) => v.clone(),
        };
        if stops.len() > MAX_STOPS || stops.iter().any(String::is_empty) {
            let msg = format!("stop must be up to {MAX_STOPS} non-empty strings");
            return Err(ApiError::invalid(msg, "stop"));
        }
        Ok(stops)
    }
}

/// The text of OpenAI's `prediction` object: `content` is a string or an array of text
/// parts, joined.
fn prediction_text(p: &Value) -> Result<String, ApiError> {
    let bad = || {
        let msg = "prediction must be {\"type\": \"content\", \"content\": a string or an array of {\"type\": \"text\", \"text\": ...} parts}";
        ApiError::invalid(msg, "prediction")
    };
    if p.get("type").and_then(Value::as_str) != Some("content") {
        return Err(bad());
    }
    match p.get("content") {
        Some(Value::String(s)) => Ok(s.clone()),
        Some(Value::Array(parts)) => parts
            .iter()
            .map(
                |part| match (part.get("type").and_then(Value::as_str), part.get("text")) {
                    (Some("text"), Some(Value::String(t))) => Ok(t.as_str()),
                    _ => Err(bad()),
                },
            )
            .collect::<Result<String, _>>(),
        _ => Err(bad()),
    }
}

fn positive(v: i64, name: &'static str) -> Result<usize, ApiError> {
    if v < 1 {
        return Err(ApiError::invalid(
            format!("{name} must be at least 1, got {v}"),
            name,
        ));
    }
    Ok(v as usize)
}

const ROLES: [&str; 5] = ["system", "developer", "user", "assistant", "tool"];

/// Checks roles and content of chat messages and returns them with every `content` made a
/// plain string (text parts joined), as chat templates expect.
pub fn normalize_messages(messages: &[Value]) -> Result<Vec<Value>, ApiError> {
    if messages.is_empty() {
        return Err(ApiError::invalid(
            "messages must contain at least one message",
            "messages",
        ));
    }
    messages
        .iter()
        .enumerate()
        .map(|(i, m)| normalize_message(i, m))
        .collect()
}

fn normalize_message(i: usize, m: &Value) -> Result<Value, ApiError> {
    let bad = |what: String| ApiError::invalid_at(what, format!("messages[{i}]"));
    let obj = m
        .as_object()
        .ok_or_else(|| bad(format!("messages[{i}] must be an object")))?;
    let role = obj
        .get("role")
        .and_then(Value::as_str)
        .ok_or_else(|| bad(format!("messages[{i}].role is missing")))?;
    if !ROLES.contains(&role) {
        return Err(bad(format!(
            "messages[{i}].role '{role}' is not one of {ROLES:?}"
        )));
    }
    let content = match obj.get("content") {
        None | Some(Value::Null) if role == "assistant" => Value::String(String::new()),
        Some(Value::String(s)) => Value::String(s.clone()),
        Some(Value::Array(parts)) => Value::String(
            join_text_parts(parts).map_err(|e| bad(format!("messages[{i}].content: {e}")))?,
        ),
        _ => {
            return Err(bad(format!(
                "messages[{i}].content must be a string or a list of text parts"
            )))
        }
    };
    let mut out = obj.clone();
    out.insert(
        "role".into(),
        Value::String(role.replace("developer", "system")),
    );
    out.insert("content".into(), content);
    Ok(Value::Object(out))
}

fn join_text_parts(parts: &[Value]) -> Result<String, String> {
    let mut text = String::new();
    for p in parts {
        match (
            p.get("type").and_then(Value::as_str),
            p.get("text").and_then(Value::as_str),
        ) {
            (Some("text"), Some(t)) => text.push_str(t),
            (Some("text"), None) => return Err("a text part needs a string `text`".into()),
            (Some(kind), _) => {
                return Err(format!(
                    "content parts of type '{kind}' are not supported; this server takes text parts only"
                ))
            }
            (None, _) => return Err("a content part needs a string `type`".into()),
        }
    }
    Ok(text)
}
