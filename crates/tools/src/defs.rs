//! The tool-calling fields of a chat request, checked: `tools`, `tool_choice`,
//! `parallel_tool_calls` and `response_format`. Every problem is a [`DefError`] that names the
//! offending field, for a 400 response.

use serde_json::{json, Value};

/// A bad tool definition or choice; `param` is the request field at fault.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{message}")]
pub struct DefError {
    pub message: String,
    pub param: String,
}

fn err(param: impl Into<String>, message: impl Into<String>) -> DefError {
    DefError {
        message: message.into(),
        param: param.into(),
    }
}

/// One function tool.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolDef {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments (an object schema).
    pub parameters: Value,
}

impl ToolDef {
    /// The OpenAI form, for templates and rendered prompts.
    pub fn to_json(&self) -> Value {
        let mut f = json!({"name": self.name, "parameters": self.parameters});
        if let Some(d) = &self.description {
            f["description"] = json!(d);
        }
        json!({"type": "function", "function": f})
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum ToolChoice {
    None,
    Auto,
    Required,
    Named(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema(Value),
}

/// The checked tool fields of one request.
#[derive(Clone, Debug, PartialEq)]
pub struct ToolRequest {
    pub tools: Vec<ToolDef>,
    pub choice: ToolChoice,
    pub parallel: bool,
}

impl ToolRequest {
    /// Checks `tools`, `tool_choice` and `parallel_tool_calls` (any may be absent). Schemas
    /// are checked by `check_schema` (the constrained-decoding compiler).
    pub fn parse(
        tools: Option<&Value>,
        choice: Option<&Value>,
        parallel: Option<&Value>,
        check_schema: &dyn Fn(&Value) -> Result<(), String>,
    ) -> Result<Self, DefError> {
        let tools = match tools {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(list)) => parse_tools(list, check_schema)?,
            Some(_) => return Err(err("tools", "tools must be a list of tool definitions")),
        };
        let choice = parse_choice(choice, &tools)?;
        let parallel = match parallel {
            None | Some(Value::Null) => true,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(err(
                    "parallel_tool_calls",
                    "parallel_tool_calls must be a boolean",
                ))
            }
        };
        Ok(Self {
            tools,
            choice,
            parallel,
        })
    }

    /// Whether calls are parsed out of the output at all.
    pub fn active(&self) -> bool {
        !self.tools.is_empty() && self.choice != ToolChoice::None
    }

    /// The tools a call may name under the choice.
    pub fn callable(&self) -> Vec<&ToolDef> {
        match &self.choice {
            ToolChoice::None => vec![],
            ToolChoice::Named(n) => self.tools.iter().filter(|t| &t.name == n).collect(),
            _ => self.tools.iter().collect(),
        }
    }
}

fn parse_tools(
    list: &[Value],
    check_schema: &dyn Fn(&Value) -> Result<(), String>,
) -> Result<Vec<ToolDef>, DefError> {
    let mut out: Vec<ToolDef> = Vec::new();
    for (i, t) in list.iter().enumerate() {
        let tool = parse_tool(i, t, check_schema)?;
        if out.iter().any(|o| o.name == tool.name) {
            let msg = format!("tools[{i}]: duplicate tool name '{}'", tool.name);
            return Err(err(format!("tools[{i}].function.name"), msg));
        }
        out.push(tool);
    }
    Ok(out)
}

fn parse_tool(
    i: usize,
    t: &Value,
    check_schema: &dyn Fn(&Value) -> Result<(), String>,
) -> Result<ToolDef, DefError> {
    let at = |field: &str| format!("tools[{i}]{field}");
    let obj = t
        .as_object()
        .ok_or_else(|| err(at(""), format!("tools[{i}] must be an object")))?;
    match obj.get("type").and_then(Value::as_str) {
        Some("function") => {}
        _ => {
            let other = obj.get("type").unwrap_or(&Value::Null);
            let msg = format!("tools[{i}].type must be \"function\", got {other}");
            return Err(err(at(".type"), msg));
        }
    }
    let f = obj
        .get("function")
        .and_then(Value::as_object)
        .ok_or_else(|| {
            err(
                at(".function"),
                format!("tools[{i}].function must be an object"),
            )
        })?;
    let name = f.get("name").and_then(Value::as_str).unwrap_or_default();
    if !valid_name(name) {
        let msg = format!(
            "tools[{i}].function.name must be 1-64 letters, digits, '_' or '-', got {}",
            f.get("name").unwrap_or(&Value::Null)
        );
        return Err(err(at(".function.name"), msg));
    }
    let description = match f.get("description") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            return Err(err(
                at(".function.description"),
                "description must be a string",
            ))
        }
    };
    let parameters = match f.get("parameters") {
        None | Some(Value::Null) => json!({"type": "object", "properties": {}}),
        Some(p @ Value::Object(_)) => p.clone(),
        Some(_) => {
            let msg = format!("tools[{i}].function.parameters must be a JSON Schema object");
            return Err(err(at(".function.parameters"), msg));
        }
    };
    check_schema(&parameters).map_err(|e| {
        let msg =
            format!("tools[{i}].function.parameters ('{name}') is not a usable JSON Schema: {e}");
        err(at(".function.parameters"), msg)
    })?;
    Ok(ToolDef {
        name: name.to_string(),
        description,
        parameters,
    })
}

fn valid_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

fn parse_choice(choice: Option<&Value>, tools: &[ToolDef]) -> Result<ToolChoice, DefError> {
    let choice = match choice {
        None | Some(Value::Null) => {
            return Ok(if tools.is_empty() {
                ToolChoice::None
            } else {
                ToolChoice::Auto
            })
        }
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "auto" => ToolChoice::Auto,
            "required" => ToolChoice::Required,
            other => {
                let msg = format!("tool_choice must be \"none\", \"auto\", \"required\" or a function, got \"{other}\"");
                return Err(err("tool_choice", msg));
            }
        },
        Some(v) => named_choice(v, tools)?,
    };
    if tools.is_empty() && choice != ToolChoice::None {
        return Err(err("tool_choice", "tool_choice needs `tools`"));
    }
    Ok(choice)
}

fn named_choice(v: &Value, tools: &[ToolDef]) -> Result<ToolChoice, DefError> {
    let name = v
        .get("function")
        .and_then(|f| f.get("name"))
        .and_then(Value::as_str)
        .filter(|_| v.get("type").and_then(Value::as_str) == Some("function"))
        .ok_or_else(|| {
            err("tool_choice", "tool_choice must be a string or {\"type\": \"function\", \"function\": {\"name\": ...}}")
        })?;
    if !tools.iter().any(|t| t.name == name) {
        let known: Vec<_> = tools.iter().map(|t| t.name.as_str()).collect();
        let msg = format!("tool_choice names function '{name}', which is not in tools {known:?}");
        return Err(err("tool_choice", msg));
    }
    Ok(ToolChoice::Named(name.to_string()))
}

impl ResponseFormat {
    /// Checks `response_format`: `{"type": "text" | "json_object" | "json_schema",
    /// "json_schema": {"name": ..., "schema": {...}}}`.
    pub fn parse(
        v: Option<&Value>,
        check_schema: &dyn Fn(&Value) -> Result<(), String>,
    ) -> Result<Self, DefError> {
        let Some(v) = v.filter(|v| !v.is_null()) else {
            return Ok(Self::Text);
        };
        match v.get("type").and_then(Value::as_str) {
            Some("text") => Ok(Self::Text),
            Some("json_object") => Ok(Self::JsonObject),
            Some("json_schema") => {
                let schema = v
                    .get("json_schema")
                    .and_then(|s| s.get("schema"))
                    .filter(|s| s.is_object())
                    .ok_or_else(|| {
                        err(
                            "response_format.json_schema.schema",
                            "response_format json_schema needs `json_schema.schema`, an object",
                        )
                    })?;
                check_schema(schema).map_err(|e| {
                    err(
                        "response_format.json_schema.schema",
                        format!("not a usable JSON Schema: {e}"),
                    )
                })?;
                Ok(Self::JsonSchema(schema.clone()))
            }
            _ => Err(err(
                "response_format.type",
                "response_format.type must be \"text\", \"json_object\" or \"json_schema\"",
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(_: &Value) -> Result<(), String> {
        Ok(())
    }

    fn tool(name: &str) -> Value {
        json!({"type": "function", "function": {"name": name, "parameters": {"type": "object"}}})
    }

    fn parse(tools: Value, choice: Value) -> Result<ToolRequest, DefError> {
        ToolRequest::parse(Some(&tools), Some(&choice), None, &ok)
    }

    #[test]
    fn choices() {
        let r = parse(json!([tool("a"), tool("b")]), Value::Null).unwrap();
        assert_eq!((r.choice, r.parallel), (ToolChoice::Auto, true));
        let r = parse(
            json!([tool("a"), tool("b")]),
            json!({"type": "function", "function": {"name": "b"}}),
        )
        .unwrap();
        assert_eq!(r.callable().len(), 1);
        assert!(!parse(json!([tool("a")]), json!("none")).unwrap().active());
    }

    #[test]
    fn bad_definitions_name_the_problem() {
        let cases = [
            (json!("x"), Value::Null, "tools must be a list"),
            (json!([5]), Value::Null, "tools[0] must be an object"),
            (
                json!([{"type": "retrieval"}]),
                Value::Null,
                "must be \"function\"",
            ),
            (json!([tool("a b")]), Value::Null, "function.name"),
            (
                json!([tool("a"), tool("a")]),
                Value::Null,
                "duplicate tool name 'a'",
            ),
            (
                json!([{"type": "function", "function": {"name": "a", "parameters": 3}}]),
                Value::Null,
                "parameters must be a JSON Schema",
            ),
            (
                json!([tool("a")]),
                json!({"type": "function", "function": {"name": "zz"}}),
                "'zz', which is not in tools",
            ),
            (
                json!([tool("a")]),
                json!("sometimes"),
                "tool_choice must be",
            ),
            (json!([]), json!("required"), "needs `tools`"),
        ];
        for (tools, choice, want) in cases {
            let e = parse(tools.clone(), choice).unwrap_err();
            assert!(e.message.contains(want), "{tools}: {}", e.message);
        }
        let bad_schema = |_: &Value| Err("type 'objekt' unknown".to_string());
        let e = ToolRequest::parse(Some(&json!([tool("a")])), None, None, &bad_schema).unwrap_err();
        assert!(e.message.contains("objekt") && e.param == "tools[0].function.parameters");
    }

    #[test]
    fn response_formats() {
        assert_eq!(
            ResponseFormat::parse(None, &ok).unwrap(),
            ResponseFormat::Text
        );
        let v = json!({"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}});
        assert!(matches!(
            ResponseFormat::parse(Some(&v), &ok).unwrap(),
            ResponseFormat::JsonSchema(_)
        ));
        assert!(ResponseFormat::parse(Some(&json!({"type": "json_schema"})), &ok).is_err());
        assert!(ResponseFormat::parse(Some(&json!({"type": "yaml"})), &ok).is_err());
    }
}
