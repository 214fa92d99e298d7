//! The sampling fields of a request (OpenAI's and the common extensions of vLLM and
//! llama-server), checked into the engine's `SamplingParams`. Every field the server accepts
//! here has an effect; a value out of range is a 400 naming the field.

use std::collections::HashMap;

use serde::Deserialize;
use tandem_engine::{Penalties, SamplingParams};

use crate::error::ApiError;

#[derive(Debug, Default, Deserialize)]
pub struct SamplingFields {
    pub temperature: Option<f32>,
    pub top_p: Option<f32>,
    pub seed: Option<i64>,
    pub frequency_penalty: Option<f32>,
    pub presence_penalty: Option<f32>,
    /// OpenAI: token id (as a string) to a bias in [-100, 100] added to its logit.
    pub logit_bias: Option<HashMap<String, f32>>,
    /// Extension (vLLM, llama-server): 0 or -1 keeps every token.
    pub top_k: Option<i64>,
    /// Extension (vLLM, llama-server).
    pub min_p: Option<f32>,
    /// Extension (vLLM; llama-server's `repeat_penalty`): 1 is off.
    pub repetition_penalty: Option<f32>,
}

/// At most this many `logit_bias` entries (OpenAI's limit).
const MAX_BIASES: usize = 300;

impl SamplingFields {
    /// `n_vocab`: the model's vocabulary size, which bounds `logit_bias` token ids.
    pub fn validate(&self, n_vocab: usize) -> Result<SamplingParams, ApiError> {
        let temperature = in_range(self.temperature, 1.0, 0.0, 2.0, "temperature")?;
        let top_p = self.top_p.unwrap_or(1.0);
        if !(top_p > 0.0 && top_p <= 1.0) {
            return Err(ApiError::invalid("top_p must be in (0, 1]", "top_p"));
        }
        Ok(SamplingParams {
            prompt_logprobs: None,
            temperature,
            top_p,
            top_k: self.top_k()?,
            min_p: in_range(self.min_p, 0.0, 0.0, 1.0, "min_p")?,
            penalties: self.penalties()?,
            logit_bias: self.logit_bias(n_vocab)?,
            seed: self.seed.map(|s| s as u64),
            logprobs: None, // asked for by each endpoint's own fields
        })
    }

    fn top_k(&self) -> Result<u32, ApiError> {
        match self.top_k {
            None | Some(-1) => Ok(0),
            Some(k) if (0..=i64::from(u32::MAX)).contains(&k) => Ok(k as u32),
            Some(k) => Err(ApiError::invalid(
                format!("top_k must be -1, 0 (all tokens) or a positive count, got {k}"),
                "top_k",
            )),
        }
    }

    fn penalties(&self) -> Result<Penalties, ApiError> {
        let repeat = self.repetition_penalty.unwrap_or(1.0);
        if !(repeat > 0.0 && repeat <= 2.0) {
            return Err(ApiError::invalid(
                "repetition_penalty must be in (0, 2]",
                "repetition_penalty",
            ));
        }
        Ok(Penalties {
            repeat,
            frequency: in_range(self.frequency_penalty, 0.0, -2.0, 2.0, "frequency_penalty")?,
            presence: in_range(self.presence_penalty, 0.0, -2.0, 2.0, "presence_penalty")?,
        })
    }

    fn logit_bias(&self, n_vocab: usize) -> Result<Vec<(i32, f32)>, ApiError> {
        let Some(map) = &self.logit_bias else {
            return Ok(Vec::new());
        };
        if map.len() > MAX_BIASES {
            let msg = format!("logit_bias may have at most {MAX_BIASES} entries");
            return Err(ApiError::invalid(msg, "logit_bias"));
        }
        let mut out: Vec<(i32, f32)> = map
            .iter()
            .map(|(k, &v)| bias_entry(k, v, n_vocab))
            .collect::<Result<_, _>>()?;
        out.sort_by_key(|e| e.0); // a stable order: the same request, the same sampler
        Ok(out)
    }
}

fn bias_entry(key: &str, bias: f32, n_vocab: usize) -> Result<(i32, f32), ApiError> {
    let token = key.trim().parse::<usize>().ok().filter(|&t| t < n_vocab);
    let Some(token) = token else {
        let msg = format!(
            "logit_bias keys must be token ids from 0 to {}, got {key:?}",
            n_vocab - 1
        );
        return Err(ApiError::invalid(msg, "logit_bias"));
    };
    if !(-100.0..=100.0).contains(&bias) {
        let msg = format!("logit_bias values must be in [-100, 100], got {bias} for {key}");
        return Err(ApiError::invalid(msg, "logit_bias"));
    }
    Ok((token as i32, bias))
}

/// `v` (or `default`) when within `[lo, hi]`, else a 400 naming `name`. NaN is out of range.
fn in_range(
    v: Option<f32>,
    default: f32,
    lo: f32,
    hi: f32,
    name: &'static str,
) -> Result<f32, ApiError> {
    let v = v.unwrap_or(default);
    if !(lo..=hi).contains(&v) {
        let msg = format!("{name} must be between {lo} and {hi}, got {v}");
        return Err(ApiError::invalid(msg, name));
    }
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(v: serde_json::Value) -> SamplingFields {
        serde_json::from_value(v).expect("fields")
    }

    #[test]
    fn defaults_are_the_engine_defaults() {
        let p = fields(serde_json::json!({})).validate(100).unwrap();
        assert_eq!(p, SamplingParams::default());
    }

    #[test]
    fn every_field_reaches_the_engine() {
        let p = fields(serde_json::json!({
            "temperature": 0.5, "top_p": 0.9, "top_k": 40, "min_p": 0.05, "seed": 3,
            "frequency_penalty": 0.5, "presence_penalty": -0.5, "repetition_penalty": 1.1,
            "logit_bias": {"7": -100, "2": 5.5}
        }))
        .validate(100)
        .unwrap();
        assert_eq!(
            (p.temperature, p.top_p, p.top_k, p.min_p),
            (0.5, 0.9, 40, 0.05)
        );
        assert_eq!(
            p.penalties,
            Penalties {
                repeat: 1.1,
                frequency: 0.5,
                presence: -0.5
            }
        );
        assert_eq!(p.logit_bias, vec![(2, 5.5), (7, -100.0)]);
        assert_eq!(p.seed, Some(3));
        let all = fields(serde_json::json!({"top_k": -1}))
            .validate(100)
            .unwrap();
        assert_eq!(all.top_k, 0);
    }

    #[test]
    fn out_of_range_values_name_their_field() {
        let cases = [
            (serde_json::json!({"temperature": 2.5}), "temperature"),
            (serde_json::json!({"top_p": 0}), "top_p"),
            (serde_json::json!({"top_k": -2}), "top_k"),
            (serde_json::json!({"min_p": 1.5}), "min_p"),
            (
                serde_json::json!({"frequency_penalty": 2.1}),
                "frequency_penalty",
            ),
            (
                serde_json::json!({"presence_penalty": -3}),
                "presence_penalty",
            ),
            (
                serde_json::json!({"repetition_penalty": 0}),
                "repetition_penalty",
            ),
            (serde_json::json!({"logit_bias": {"100": 1}}), "logit_bias"),
            (serde_json::json!({"logit_bias": {"abc": 1}}), "logit_bias"),
            (serde_json::json!({"logit_bias": {"5": 101}}), "logit_bias"),
        ];
        for (body, field) in cases {
            match fields(body.clone()).validate(100) {
                Err(ApiError::Invalid { param, .. }) => {
                    assert_eq!(param.as_deref(), Some(field), "{body}")
                }
                other => panic!("{body}: {other:?}"),
            }
        }
        let many: HashMap<String, f32> = (0..301).map(|i| (i.to_string(), 1.0)).collect();
        let f = SamplingFields {
            logit_bias: Some(many),
            ..Default::default()
        };
        assert!(f.validate(1000).is_err());
    }
}
