//! The `plan` tool: a list of steps, each naming another server-side tool and its arguments.
//! Each step is dispatched as soon as it is complete in the arguments; steps run in parallel
//! unless one refers to an earlier step's result with `$k` (k counts from 0) in a string
//! argument, in which case it waits for that step and the reference is replaced by the
//! result's text. The result lists every step's outcome.

use std::collections::HashMap;

use futures::future::{BoxFuture, FutureExt, Shared};
use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use super::array_start;
use crate::arg_events::ArgEvent;
use crate::defs::ToolDef;
use crate::runtime::{Registry, ResultPrefix, Tool, ToolFuture, ToolOutput};

pub struct Plan {
    /// The tools steps may use (not `plan` itself).
    pub tools: Registry,
    pub max_steps: usize,
}

type StepResult = Shared<BoxFuture<'static, ToolOutput>>;

/// The `$k` references in a step's arguments.
fn references(v: &Value, out: &mut Vec<usize>) {
    match v {
        Value::String(s) => {
            let mut rest = s.as_str();
            while let Some(at) = rest.find('$') {
                rest = &rest[at + 1..];
                let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
                if let Ok(k) = digits.parse() {
                    out.push(k);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|x| references(x, out)),
        Value::Object(o) => o.values().for_each(|x| references(x, out)),
        _ => {}
    }
}

/// Replaces `$k` by the text of result k (longest numbers first, so `$12` is not `$1`).
fn substitute(v: &Value, results: &HashMap<usize, String>) -> Value {
    match v {
        Value::String(s) => {
            let mut keys: Vec<&usize> = results.keys().collect();
            keys.sort_by_key(|k| std::cmp::Reverse(k.to_string().len()));
            let mut s = s.clone();
            for k in keys {
                s = s.replace(&format!("${k}"), &results[k]);
            }
            Value::String(s)
        }
        Value::Array(a) => Value::Array(a.iter().map(|x| substitute(x, results)).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| (k.clone(), substitute(x, results)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Starts step `i`: it waits for the steps it refers to, then runs its tool.
fn dispatch(tools: &Registry, i: usize, step: &Value, started: &[StepResult]) -> StepResult {
    let name = step["tool"].as_str().unwrap_or_default().to_string();
    let args = step["arguments"].clone();
    let mut refs = Vec::new();
    references(&args, &mut refs);
    if let Some(&bad) = refs.iter().find(|&&k| k >= i) {
        let e = ToolOutput::error(format!(
            "step {i} refers to ${bad}, which is not an earlier step"
        ));
        return async move { e }.boxed().shared();
    }
    let deps: Vec<(usize, StepResult)> = refs.iter().map(|&k| (k, started[k].clone())).collect();
    let run = tools.start(&name);
    async move {
        let Some(mut run) = run else {
            return ToolOutput::error(format!("step {i}: no tool named '{name}'"));
        };
        let mut results = HashMap::new();
        for (k, dep) in deps {
            results.insert(k, dep.await.content);
        }
        run.feed(&substitute(&args, &results).to_string());
        run.finish().await
    }
    .boxed()
    .shared()
}

impl Tool for Plan {
    fn def(&self) -> ToolDef {
        let step = json!({"type": "object", "properties": {
            "tool": {"type": "string", "enum": self.tools.names()},
            "arguments": {"type": "object"}}, "required": ["tool", "arguments"]});
        ToolDef {
            name: "plan".into(),
            description: Some("Runs a list of tool steps; independent steps run in parallel. Use \"$k\" inside a string argument to insert the result of step k (from 0).".into()),
            parameters: json!({"type": "object", "properties": {"steps": {"type": "array", "items": step, "minItems": 1, "maxItems": self.max_steps}}, "required": ["steps"]}),
        }
    }

    /// Publishes the results of the steps in order as they are done (the result is their
    /// JSON array), so the model can read the first steps' results while the last one runs.
    fn run(&self, mut args: UnboundedReceiver<ArgEvent>, prefix: ResultPrefix) -> ToolFuture {
        let (tools, max) = (self.tools.clone(), self.max_steps);
        Box::pin(async move {
            let mut started: Vec<StepResult> = Vec::new();
            // Background polls of the steps; dropped with the call (a cancel), it stops them.
            let mut running = tokio::task::JoinSet::new();
            let complete = loop {
                match args.recv().await {
                    Some(ArgEvent::Complete(v)) => break v,
                    Some(ev) => {
                        if let Some((i, step)) = ev
                            .element_of("steps")
                            .filter(|(i, _)| *i == started.len() && *i < max)
                        {
                            let r = dispatch(&tools, i, step, &started);
                            // Polled in the background so it runs while the model writes on.
                            running.spawn(r.clone());
                            started.push(r);
                        }
                    }
                    None => {
                        return ToolOutput::error(
                            "the call ended before its arguments were complete",
                        )
                    }
                }
            };
            let steps = complete["steps"].as_array().cloned().unwrap_or_default();
            if steps.is_empty() || steps.len() > max {
                return ToolOutput::error(format!("`steps` must list 1 to {max} steps"));
            }
            for (i, step) in steps.iter().enumerate().skip(started.len()) {
                let r = dispatch(&tools, i, step, &started);
                started.push(r);
            }
            let mut out = Vec::new();
            let mut failed = false;
            for (i, r) in started.into_iter().enumerate() {
                let o = r.await;
                failed |= o.is_error;
                out.push(json!({"step": i, "tool": steps[i]["tool"], "content": o.content, "is_error": o.is_error}));
                if !failed {
                    prefix.publish(array_start(&out));
                }
            }
            let text = Value::Array(out).to_string();
            if failed {
                ToolOutput::error(text)
            } else {
                ToolOutput::ok(text)
            }
        })
    }
}
