//! The `validate` tool, the example of a tool that aborts early: it registers a list of user
//! records and checks each one as soon as it is complete in the arguments. The first invalid
//! record ends the call at once with an error naming it, while the model may still be
//! writing the rest; with partial execution off the error comes only after the whole call.

use serde_json::{json, Value};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::arg_events::ArgEvent;
use crate::defs::ToolDef;
use crate::runtime::{ResultPrefix, Tool, ToolFuture, ToolOutput};

pub struct Validate;

/// Why a record is invalid, if it is.
pub fn check_record(r: &Value) -> Option<String> {
    let name = r["name"].as_str().unwrap_or_default();
    if name.trim().is_empty() {
        return Some("name is empty".into());
    }
    let email = r["email"].as_str().unwrap_or_default();
    let valid_email = email.split_once('@').is_some_and(|(user, domain)| {
        !user.is_empty()
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
    });
    if !valid_email || email.contains(char::is_whitespace) {
        return Some(format!("'{email}' is not an email address"));
    }
    match r["age"].as_i64() {
        Some(a) if (0..=150).contains(&a) => None,
        _ => Some(format!("age {} is not between 0 and 150", r["age"])),
    }
}

impl Tool for Validate {
    fn def(&self) -> ToolDef {
        let record = json!({"type": "object", "properties": {
            "name": {"type": "string"}, "email": {"type": "string"}, "age": {"type": "integer"}},
            "required": ["name", "email", "age"]});
        ToolDef {
            name: "validate".into(),
            description: Some("Checks and registers user records (name, email, age); stops at the first invalid one.".into()),
            parameters: json!({"type": "object", "properties": {"records": {"type": "array", "items": record}}, "required": ["records"]}),
        }
    }

    fn run(&self, mut args: UnboundedReceiver<ArgEvent>, _prefix: ResultPrefix) -> ToolFuture {
        Box::pin(async move {
            let mut checked = 0;
            while let Some(ev) = args.recv().await {
                if let Some((i, r)) = ev.element_of("records") {
                    if let Some(why) = check_record(r) {
                        return ToolOutput::error(format!("record {i} is invalid: {why}"));
                    }
                    checked += 1;
                }
                if let ArgEvent::Complete(v) = ev {
                    let n = v["records"].as_array().map_or(0, Vec::len);
                    if n != checked {
                        return ToolOutput::error("`records` must be a list of records");
                    }
                    return ToolOutput::ok(format!("registered {n} records"));
                }
            }
            ToolOutput::error("the call ended before its arguments were complete")
        })
    }
}
