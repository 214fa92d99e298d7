//! The `calc` tool: evaluates an arithmetic expression (evalexpr). Its work is negligible,
//! so partial execution can gain nothing on it: it is the benchmarks' control.

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::arg_events::ArgEvent;
use crate::defs::ToolDef;
use crate::runtime::{ResultPrefix, Tool, ToolFuture, ToolOutput};

pub struct Calc;

fn evaluate(args: &Value) -> ToolOutput {
    let Some(expr) = args["expression"].as_str() else {
        return ToolOutput::error("`expression` must be a string");
    };
    match evalexpr::eval(expr) {
        Ok(v) => ToolOutput::ok(v.to_string()),
        Err(e) => ToolOutput::error(format!("cannot evaluate '{expr}': {e}")),
    }
}

impl Tool for Calc {
    fn def(&self) -> ToolDef {
        ToolDef {
            name: "calc".into(),
            description: Some("Evaluates an arithmetic expression, e.g. (2 + 3) * 4 / 5.".into()),
            parameters: json!({"type": "object", "properties": {"expression": {"type": "string"}}, "required": ["expression"]}),
        }
    }

    fn run(&self, mut args: UnboundedReceiver<ArgEvent>, _prefix: ResultPrefix) -> ToolFuture {
        Box::pin(async move {
            while let Some(ev) = args.recv().await {
                if let ArgEvent::Complete(v) = ev {
                    return evaluate(&v);
                }
            }
            ToolOutput::error("the call ended before its arguments were complete")
        })
    }
}
