//! llguidance grammars (Lark syntax with inline `%json` schemas) for tool calls and
//! `response_format`. A call is the parser format's markup around a JSON object whose `name`
//! is one of the callable tools and whose arguments follow that tool's schema. Calls are
//! written with fixed separators (`", "`, `": "`) and no free whitespace, so a small model
//! cannot wander off into blank space inside a call; JSON output (`response_format` and the
//! structured-output JSON rules) is too by default, or laid out as the model likes with
//! [`JsonLayout::Indented`].

use std::sync::{Arc, OnceLock};

use llguidance::api::TopLevelGrammar;
use llguidance::ParserFactory;
use serde_json::{json, Value};
use toktrie::ApproximateTokEnv;

use crate::defs::{ResponseFormat, ToolChoice, ToolDef, ToolRequest};
use crate::parser::ParserKind;
use crate::structured::{lark_of, OutputRule};

/// What to constrain and from when.
#[derive(Clone, Debug, PartialEq)]
pub enum GrammarPlan {
    /// The whole output follows the grammar from the first token.
    Forced(String),
    /// Output is free until it contains `trigger`; then `body` (what follows the trigger up to
    /// the end of the call) is enforced. After a call: free again when `parallel`, else the
    /// turn must end.
    Lazy {
        trigger: &'static str,
        body: String,
        parallel: bool,
    },
}

/// Object schemas that list `properties` but say nothing of `additionalProperties` get
/// `false` (as OpenAI's strict mode does): the output still validates against the original
/// schema, and a small model cannot keep inventing keys.
pub fn close_objects(schema: &mut Value) {
    match schema {
        Value::Object(m) => {
            if m.contains_key("properties") && !m.contains_key("additionalProperties") {
                m.insert("additionalProperties".into(), Value::Bool(false));
            }
            for (k, v) in m.iter_mut() {
                if k != "const" && k != "enum" && k != "default" && k != "examples" {
                    close_objects(v);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(close_objects),
        _ => {}
    }
}

const ITEM_SEPARATOR: &str = ", ";
const KEY_SEPARATOR: &str = ": ";

/// What may stand between two JSON tokens under [`JsonLayout::Indented`]: one space, or a
/// line break and an indent of up to 32 spaces or tabs (eight levels of four), once. Bounded
/// so a small model cannot fill its output with blank lines (llama-server's JSON grammars
/// bound it alike).
const INDENTED_WHITESPACE: &str = r"[ ]|\n[ \t]{0,32}";

/// How JSON output may be laid out (`tandem serve --json-layout`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum JsonLayout {
    /// On one line with `", "` and `": "` between items: the fewest tokens, and a schema's
    /// keys and separators are forced text (jump-forward appends them unsampled).
    #[default]
    Compact,
    /// Any of [`INDENTED_WHITESPACE`] between tokens, so the model may write JSON indented
    /// (as a file it copies or a `prediction` is) or compact.
    Indented,
}

fn json_options(layout: JsonLayout) -> Value {
    match layout {
        JsonLayout::Compact => json!({"whitespace_flexible": false,
            "item_separator": ITEM_SEPARATOR, "key_separator": KEY_SEPARATOR}),
        JsonLayout::Indented => json!({"whitespace_pattern": INDENTED_WHITESPACE,
            "item_separator": ",", "key_separator": ":"}),
    }
}

/// serde_json output with the grammars' separators.
struct Separators;

impl serde_json::ser::Formatter for Separators {
    fn begin_array_value<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        if first {
            Ok(())
        } else {
            w.write_all(ITEM_SEPARATOR.as_bytes())
        }
    }

    fn begin_object_key<W: ?Sized + std::io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> std::io::Result<()> {
        self.begin_array_value(w, first)
    }

    fn begin_object_value<W: ?Sized + std::io::Write>(&mut self, w: &mut W) -> std::io::Result<()> {
        w.write_all(KEY_SEPARATOR.as_bytes())
    }
}

/// `v` written as the grammars write JSON (what a constrained model produces), e.g. for
/// replayed calls.
pub fn grammar_json(v: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, Separators);
    serde::Serialize::serialize(v, &mut ser).expect("a Value serializes");
    String::from_utf8(out).expect("serde_json writes UTF-8")
}

/// The schema of one call object naming any of `tools`.
fn call_schema(kind: ParserKind, tools: &[&ToolDef]) -> Value {
    let args_key = match kind {
        ParserKind::Llama3 => "parameters",
        _ => "arguments",
    };
    let one = |t: &ToolDef| {
        let mut params = t.parameters.clone();
        close_objects(&mut params);
        json!({
            "type": "object",
            "properties": {"name": {"const": t.name}, args_key: params},
            "required": ["name", args_key],
            "additionalProperties": false,
        })
    };
    let mut schema = match tools {
        [t] => one(t),
        _ => json!({"anyOf": tools.iter().map(|t| one(t)).collect::<Vec<_>>()}),
    };
    schema["x-guidance"] = json_options(JsonLayout::Compact);
    schema
}

/// A Lark string literal.
fn lit(s: &str) -> String {
    serde_json::to_string(s).expect("string")
}

/// The grammar plan for a request's tools, or `None` when calls are not constrained.
pub fn for_tools(kind: ParserKind, req: &ToolRequest) -> Option<GrammarPlan> {
    if !req.active() {
        return None;
    }
    let call = format!("call: %json {}\n", call_schema(kind, &req.callable()));
    let fmt = kind.format();
    let forced = !matches!(req.choice, ToolChoice::Auto);
    let body = match kind {
        ParserKind::Hermes => format!("{} call {}", lit("\n"), lit("\n</tool_call>")),
        ParserKind::Llama3 => "call".to_string(),
        ParserKind::Mistral => format!("\"[\" {} \"]\"", many("call", ", ", req.parallel)),
    };
    if !forced {
        return Some(GrammarPlan::Lazy {
            trigger: fmt.start,
            body: format!("start: {body}\n{call}"),
            parallel: req.parallel,
        });
    }
    let start = match kind {
        ParserKind::Hermes => format!(
            "start: {}\none: {} {body}\n",
            many("one", "\n", req.parallel),
            lit(fmt.start)
        ),
        ParserKind::Llama3 => format!("start: {}\n", many("call", "; ", req.parallel)),
        ParserKind::Mistral => format!("start: {} {body}\n", lit(fmt.start)),
    };
    Some(GrammarPlan::Forced(format!("{start}{call}")))
}

/// `item (sep item)*`, or `item` alone without parallel calls, as a Lark expression.
fn many(item: &str, sep: &str, parallel: bool) -> String {
    if parallel {
        format!("{item} ({} {item})*", lit(sep))
    } else {
        item.to_string()
    }
}

/// The grammar for `response_format`, or `None` for text.
pub fn for_response_format(rf: &ResponseFormat, layout: JsonLayout) -> Option<GrammarPlan> {
    match rf {
        ResponseFormat::Text => None,
        ResponseFormat::JsonObject => Some(json_plan(json!({"type": "object"}), layout)),
        ResponseFormat::JsonSchema(s) => Some(json_plan(s.clone(), layout)),
    }
}

/// The grammar for a structured-output rule (`structured_outputs`, `guided_*`, ...); `layout`
/// applies to a JSON rule.
pub fn for_output_rule(rule: &OutputRule, layout: JsonLayout) -> GrammarPlan {
    match rule {
        OutputRule::Json(schema) => json_plan(schema.clone(), layout),
        other => GrammarPlan::Forced(lark_of(other).expect("only JSON rules have no Lark")),
    }
}

/// JSON following `schema`, laid out as `layout` says, with closed objects.
fn json_plan(mut schema: Value, layout: JsonLayout) -> GrammarPlan {
    close_objects(&mut schema);
    schema["x-guidance"] = json_options(layout);
    GrammarPlan::Forced(format!("start: %json {schema}\n"))
}

/// Compiles `lark` with `factory`: a grammar llguidance rejects is an error.
pub fn compile(factory: &ParserFactory, lark: &str) -> Result<llguidance::TokenParser, String> {
    factory
        .create_parser(TopLevelGrammar::from_lark(lark.to_string()))
        .map_err(|e| e.to_string())
}

/// A grammar compiler over a byte-level vocabulary: checks grammars without a model.
fn byte_factory() -> &'static ParserFactory {
    static FACTORY: OnceLock<Arc<ParserFactory>> = OnceLock::new();
    FACTORY.get_or_init(|| {
        let env = ApproximateTokEnv::single_byte_env();
        let mut f = ParserFactory::new_simple(&env).expect("byte-level factory");
        f.quiet();
        Arc::new(f)
    })
}

/// Checks that `lark` is a grammar constrained decoding can enforce (compiled against a
/// byte-level vocabulary, so no model is needed).
pub fn check_lark(lark: &str) -> Result<(), String> {
    compile(byte_factory(), lark).map(|_| ())
}

/// Checks that `schema` is a JSON Schema constrained decoding can enforce (compiled against a
/// byte-level vocabulary, so no model is needed).
pub fn check_schema(schema: &Value) -> Result<(), String> {
    if !schema.is_object() {
        return Err("a schema must be an object".into());
    }
    byte_factory()
        .create_parser(TopLevelGrammar::from_json_schema(schema.clone()))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::defs::ToolRequest;

    fn req(choice: Value, parallel: bool) -> ToolRequest {
        let tools = json!([
            {"type": "function", "function": {"name": "a", "parameters": {"type": "object", "properties": {"x": {"type": "integer"}}, "required": ["x"]}}},
            {"type": "function", "function": {"name": "b"}},
        ]);
        ToolRequest::parse(
            Some(&tools),
            Some(&choice),
            Some(&json!(parallel)),
            &check_schema,
        )
        .unwrap()
    }

    #[test]
    fn schemas_are_checked() {
        assert!(
            check_schema(&json!({"type": "object", "properties": {"a": {"enum": [1, 2]}}})).is_ok()
        );
        for bad in [
            json!({"type": "objekt"}),
            json!({"type": "object", "properties": 5}),
            json!({"$ref": "#/nope"}),
        ] {
            assert!(check_schema(&bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn open_objects_are_closed_unless_they_say_otherwise() {
        let mut s = json!({"type": "object", "properties": {"a": {"type": "object", "properties": {}},
            "b": {"type": "object", "properties": {}, "additionalProperties": true},
            "c": {"const": {"properties": {}}}}});
        close_objects(&mut s);
        assert_eq!(s["additionalProperties"], false);
        assert_eq!(s["properties"]["a"]["additionalProperties"], false);
        assert_eq!(s["properties"]["b"]["additionalProperties"], true);
        assert!(s["properties"]["c"]["const"]
            .get("additionalProperties")
            .is_none());
    }

    #[test]
    fn every_plan_compiles() {
        let env = ApproximateTokEnv::single_byte_env();
        let f = ParserFactory::new_simple(&env).unwrap();
        for kind in [ParserKind::Hermes, ParserKind::Llama3, ParserKind::Mistral] {
            for choice in [
                json!("auto"),
                json!("required"),
                json!({"type": "function", "function": {"name": "b"}}),
            ] {
                for parallel in [true, false] {
                    let lark = match for_tools(kind, &req(choice.clone(), parallel)).unwrap() {
                        GrammarPlan::Forced(l) => l,
                        GrammarPlan::Lazy { body, .. } => body,
                    };
                    compile(&f, &lark).unwrap_or_else(|e| panic!("{kind} {choice}: {e}\n{lark}"));
                }
            }
        }
        assert_eq!(
            for_tools(ParserKind::Hermes, &req(json!("none"), true)),
            None
        );
    }
}
