//! Structured outputs beyond `response_format`: the request fields vLLM (`structured_outputs`
//! and the older `guided_json` / `guided_regex` / `guided_choice` / `guided_grammar`),
//! llama-server (`json_schema`, `grammar`) and SGLang (`json_schema`, `regex`, `ebnf`) take,
//! read into one [`OutputRule`] so clients written for those servers constrain tandem's output
//! the same way. One rule per request: a second one is an error naming both fields.

use serde_json::{json, Value};

use crate::defs::{DefError, ResponseFormat};
use crate::gbnf;
use crate::grammar::JsonLayout;

/// The field name of a rule that came from `response_format`.
pub const RESPONSE_FORMAT: &str = "response_format";

/// A request's rule and the field that gave it (for error messages).
#[derive(Clone, Debug, PartialEq)]
pub struct Structured {
    pub field: String,
    pub rule: OutputRule,
    /// vLLM's `structured_outputs.disable_any_whitespace: true`: JSON on one line even where
    /// the server lets it be indented.
    pub compact: bool,
}

impl Structured {
    /// How a JSON rule is laid out, given the server's default.
    pub fn layout(&self, default: JsonLayout) -> JsonLayout {
        if self.compact {
            JsonLayout::Compact
        } else {
            default
        }
    }
}

/// What the whole output must match.
#[derive(Clone, Debug, PartialEq)]
pub enum OutputRule {
    /// A JSON value following this schema.
    Json(Value),
    /// A match of this regular expression (Rust `regex` syntax, which covers the Python
    /// patterns clients send; the whole output matches, so `^`/`$` are not needed). `\d`,
    /// `\w` and `\s` are ASCII classes, as in xgrammar (vLLM's and SGLang's default): a
    /// model asked for `\d{4}` writes `2024`, not Unicode digits from other scripts.
    Regex(String),
    /// Exactly one of these strings.
    Choice(Vec<String>),
    /// A context-free grammar in llguidance's Lark dialect (GBNF already rewritten).
    Grammar(String),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Kind {
    Json,
    JsonObject,
    Regex,
    Choice,
    Grammar,
}

/// Top-level request fields and the rule each carries.
const FIELDS: [(&str, Kind); 8] = [
    ("guided_json", Kind::Json),
    ("guided_regex", Kind::Regex),
    ("guided_choice", Kind::Choice),
    ("guided_grammar", Kind::Grammar),
    ("json_schema", Kind::Json),
    ("grammar", Kind::Grammar),
    ("regex", Kind::Regex),
    ("ebnf", Kind::Grammar),
];

/// Keys of vLLM's `structured_outputs` object that carry a rule.
const NESTED: [(&str, Kind); 5] = [
    ("json", Kind::Json),
    ("json_object", Kind::JsonObject),
    ("regex", Kind::Regex),
    ("choice", Kind::Choice),
    ("grammar", Kind::Grammar),
];

/// vLLM's `structured_outputs` option for JSON without free whitespace (read by `parse`).
const COMPACT: &str = "disable_any_whitespace";

/// `structured_outputs` options that only say what tandem does anyway (closed objects, no
/// fallback to another backend).
const IGNORED: [&str; 4] = [
    COMPACT,
    "disable_additional_properties",
    "disable_fallback",
    "backend",
];

fn err(param: &str, message: impl Into<String>) -> DefError {
    DefError {
        message: message.into(),
        param: param.into(),
    }
}

/// Checks a rule's text compiles (`check_schema` for JSON schemas, `check_lark` for the
/// Lark grammars of the others).
pub struct Checks<'a> {
    pub schema: &'a dyn Fn(&Value) -> Result<(), String>,
    pub lark: &'a dyn Fn(&str) -> Result<(), String>,
}

/// The rule given by a request's fields (`get` reads a top-level field by name), if any.
pub fn parse(
    get: &dyn Fn(&str) -> Option<Value>,
    checks: &Checks,
) -> Result<Option<Structured>, DefError> {
    let found = given(get)?;
    match found.as_slice() {
        [] => Ok(None),
        [(param, kind, value)] => Ok(rule(param, *kind, value, checks)?.map(|rule| Structured {
            field: param.clone(),
            rule,
            compact: compact_requested(get),
        })),
        [(a, ..), (b, ..), ..] => Err(err(
            b,
            format!("`{a}` and `{b}` both constrain the output; give only one"),
        )),
    }
}

/// Whether the request asks for JSON without free whitespace (vLLM's
/// `structured_outputs.disable_any_whitespace: true`), whichever field carries its rule.
pub fn compact_requested(get: &dyn Fn(&str) -> Option<Value>) -> bool {
    get("structured_outputs").is_some_and(|so| so[COMPACT] == true)
}

/// Every rule-carrying field that is present and not null, with its kind.
fn given(get: &dyn Fn(&str) -> Option<Value>) -> Result<Vec<(String, Kind, Value)>, DefError> {
    let mut found = Vec::new();
    let present = |v: Option<Value>| v.filter(|v| !v.is_null());
    for (name, kind) in FIELDS {
        if let Some(v) = present(get(name)) {
            found.push((name.to_string(), kind, v));
        }
    }
    let Some(so) = present(get("structured_outputs")) else {
        return Ok(found);
    };
    let Value::Object(map) = so else {
        return Err(err(
            "structured_outputs",
            "structured_outputs must be an object",
        ));
    };
    for (key, v) in map {
        let param = format!("structured_outputs.{key}");
        match NESTED.iter().find(|(k, _)| *k == key) {
            Some(_) if v.is_null() || v == false => {}
            Some((_, kind)) => found.push((param, *kind, v)),
            None if IGNORED.contains(&key.as_str()) => {}
            None => {
                return Err(err(
                    &param,
                    format!("structured_outputs.{key} is not supported; tandem takes json, json_object, regex, choice and grammar"),
                ))
            }
        }
    }
    Ok(found)
}

fn rule(
    param: &str,
    kind: Kind,
    v: &Value,
    checks: &Checks,
) -> Result<Option<OutputRule>, DefError> {
    let rule = match kind {
        Kind::Json => OutputRule::Json(schema(param, v, checks)?),
        Kind::JsonObject => match v {
            Value::Bool(true) => OutputRule::Json(json!({"type": "object"})),
            Value::Bool(false) => return Ok(None),
            _ => return Err(err(param, format!("{param} must be a boolean"))),
        },
        Kind::Regex => OutputRule::Regex(text(param, v, "a regular expression")?.to_string()),
        Kind::Choice => OutputRule::Choice(choices(param, v)?),
        Kind::Grammar => OutputRule::Grammar(grammar(param, v)?),
    };
    if let Some(lark) = lark_of(&rule) {
        (checks.lark)(&lark).map_err(|e| err(param, format!("{param} does not compile: {e}")))?;
    }
    Ok(Some(rule))
}

/// The rule of a request that may carry `response_format` beside the structured-output
/// fields (`given`): at most one of them; `response_format` alone gives its JSON rule, compact
/// when the request asks for that (`compact_requested`).
pub fn with_response_format(
    given: Option<Structured>,
    rf: &ResponseFormat,
    compact: bool,
) -> Result<Option<Structured>, DefError> {
    let rule = match rf {
        ResponseFormat::Text => return Ok(given),
        ResponseFormat::JsonObject => OutputRule::Json(json!({"type": "object"})),
        ResponseFormat::JsonSchema(s) => OutputRule::Json(s.clone()),
    };
    if let Some(g) = given {
        let msg = format!(
            "`{}` and `{RESPONSE_FORMAT}` both constrain the output; give only one",
            g.field
        );
        return Err(err(&g.field, msg));
    }
    Ok(Some(Structured {
        field: RESPONSE_FORMAT.into(),
        rule,
        compact,
    }))
}

/// The Lark grammar of a rule that is not a JSON schema.
pub fn lark_of(rule: &OutputRule) -> Option<String> {
    let lit = |s: &String| serde_json::to_string(s).expect("a string serializes");
    match rule {
        OutputRule::Json(_) => None,
        OutputRule::Regex(rx) => Some(format!(
            "start: /{}/\n",
            llguidance::regex_to_lark(rx, "dws")
        )),
        OutputRule::Choice(list) => Some(format!(
            "start: {}\n",
            list.iter().map(lit).collect::<Vec<_>>().join(" | ")
        )),
        OutputRule::Grammar(lark) => Some(lark.clone()),
    }
}

fn text<'v>(param: &str, v: &'v Value, what: &str) -> Result<&'v str, DefError> {
    match v.as_str() {
        Some(s) if !s.trim().is_empty() => Ok(s),
        Some(_) => Err(err(param, format!("{param} is empty"))),
        None => Err(err(param, format!("{param} must be a string: {what}"))),
    }
}

/// A JSON schema given as an object or as its JSON text.
fn schema(param: &str, v: &Value, checks: &Checks) -> Result<Value, DefError> {
    let schema = match v {
        Value::String(s) => {
            serde_json::from_str(s).map_err(|e| err(param, format!("{param} is not JSON: {e}")))?
        }
        v => v.clone(),
    };
    if !schema.is_object() {
        return Err(err(param, format!("{param} must be a JSON Schema object")));
    }
    (checks.schema)(&schema)
        .map_err(|e| err(param, format!("{param} is not a usable JSON Schema: {e}")))?;
    Ok(schema)
}

fn choices(param: &str, v: &Value) -> Result<Vec<String>, DefError> {
    let bad = || {
        err(
            param,
            format!("{param} must be a non-empty list of strings"),
        )
    };
    let list = v.as_array().filter(|l| !l.is_empty()).ok_or_else(bad)?;
    let list: Option<Vec<String>> = list.iter().map(|c| c.as_str().map(String::from)).collect();
    let list = list.ok_or_else(bad)?;
    if list.iter().all(String::is_empty) {
        return Err(err(param, format!("{param} has only empty strings")));
    }
    Ok(list)
}

/// A grammar in GBNF (llama.cpp, xgrammar) or llguidance's Lark, as Lark.
fn grammar(param: &str, v: &Value) -> Result<String, DefError> {
    let text = text(param, v, "a GBNF or Lark grammar")?;
    if gbnf::is_gbnf(text) {
        gbnf::to_lark(text).map_err(|e| err(param, e.to_string()))
    } else {
        Ok(text.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok_schema(_: &Value) -> Result<(), String> {
        Ok(())
    }

    fn ok_lark(_: &str) -> Result<(), String> {
        Ok(())
    }

    fn run(body: Value) -> Result<Option<OutputRule>, DefError> {
        let checks = Checks {
            schema: &ok_schema,
            lark: &ok_lark,
        };
        Ok(parse(&|k| body.get(k).cloned(), &checks)?.map(|s| s.rule))
    }

    #[test]
    fn each_field_gives_its_rule() {
        let schema = json!({"type": "object"});
        assert_eq!(run(json!({})).unwrap(), None);
        assert_eq!(
            run(json!({"guided_json": schema})).unwrap(),
            Some(OutputRule::Json(schema.clone()))
        );
        assert_eq!(
            run(json!({"json_schema": "{\"type\": \"object\"}"})).unwrap(),
            Some(OutputRule::Json(schema.clone()))
        );
        assert_eq!(
            run(json!({"structured_outputs": {"json_object": true}})).unwrap(),
            Some(OutputRule::Json(schema))
        );
        assert_eq!(
            run(json!({"regex": "[0-9]+"})).unwrap(),
            Some(OutputRule::Regex("[0-9]+".into()))
        );
        assert_eq!(
            run(json!({"structured_outputs": {"choice": ["yes", "no"], "disable_fallback": true}}))
                .unwrap(),
            Some(OutputRule::Choice(vec!["yes".into(), "no".into()]))
        );
        assert_eq!(
            run(json!({"grammar": "root ::= \"a\""})).unwrap(),
            Some(OutputRule::Grammar("start: root\nroot: \"a\"\n".into()))
        );
        assert_eq!(
            run(json!({"guided_grammar": "start: \"a\""})).unwrap(),
            Some(OutputRule::Grammar("start: \"a\"".into()))
        );
        assert_eq!(run(json!({"guided_regex": null})).unwrap(), None);
    }

    #[test]
    fn bad_fields_name_themselves() {
        let cases = [
            (json!({"guided_json": 3}), "guided_json"),
            (json!({"json_schema": "{not json"}), "json_schema"),
            (json!({"guided_choice": []}), "guided_choice"),
            (json!({"guided_choice": ["a", 1]}), "guided_choice"),
            (json!({"guided_choice": [""]}), "guided_choice"),
            (json!({"regex": ""}), "regex"),
            (json!({"ebnf": "root ::= <x>"}), "ebnf"),
            (json!({"structured_outputs": 1}), "structured_outputs"),
            (
                json!({"structured_outputs": {"json_object": "yes"}}),
                "structured_outputs.json_object",
            ),
            (
                json!({"structured_outputs": {"structural_tag": {}}}),
                "structured_outputs.structural_tag",
            ),
            (json!({"regex": "a", "guided_choice": ["a"]}), "regex"),
            (
                json!({"grammar": "root ::= \"a\"", "structured_outputs": {"json": {}}}),
                "structured_outputs.json",
            ),
        ];
        for (body, param) in cases {
            let e = run(body.clone()).unwrap_err();
            assert_eq!(e.param, param, "{body}: {e:?}");
        }
    }

    #[test]
    fn check_failures_are_errors() {
        let no = |_: &str| Err("nope".to_string());
        let checks = Checks {
            schema: &ok_schema,
            lark: &no,
        };
        let body = json!({"regex": "("});
        let e = parse(&|k| body.get(k).cloned(), &checks).unwrap_err();
        assert!(e.message.contains("does not compile: nope"), "{e:?}");
    }

    #[test]
    fn response_format_is_a_rule_unless_another_is_given() {
        let rf = ResponseFormat::JsonObject;
        let r = with_response_format(None, &rf, false).unwrap().unwrap();
        assert_eq!(
            (r.field.as_str(), r.rule),
            (RESPONSE_FORMAT, OutputRule::Json(json!({"type": "object"})))
        );
        assert!(!r.compact);
        let compact = with_response_format(None, &rf, true).unwrap().unwrap();
        assert!(
            compact.compact,
            "disable_any_whitespace beside response_format"
        );
        let given = Structured {
            field: "regex".into(),
            rule: OutputRule::Regex("a".into()),
            compact: false,
        };
        assert_eq!(
            with_response_format(Some(given.clone()), &ResponseFormat::Text, false).unwrap(),
            Some(given.clone())
        );
        assert_eq!(
            with_response_format(Some(given), &rf, false)
                .unwrap_err()
                .param,
            "regex"
        );
    }

    #[test]
    fn compact_is_asked_by_structured_outputs_alone() {
        let asks = |body: Value| compact_requested(&|k| body.get(k).cloned());
        assert!(asks(
            json!({"structured_outputs": {"disable_any_whitespace": true}})
        ));
        assert!(!asks(
            json!({"structured_outputs": {"disable_any_whitespace": false}})
        ));
        assert!(!asks(json!({"disable_any_whitespace": true})));
        assert!(!asks(json!({})));
    }

    #[test]
    fn choices_and_regexes_as_lark() {
        let choice = OutputRule::Choice(vec!["a\"b".into(), "c/d".into()]);
        assert_eq!(lark_of(&choice).unwrap(), "start: \"a\\\"b\" | \"c/d\"\n");
        let rx = OutputRule::Regex("a/b\\d+".into());
        assert_eq!(lark_of(&rx).unwrap(), "start: /a\\/b[0-9]+/\n");
        assert_eq!(lark_of(&OutputRule::Json(json!({}))), None);
    }
}
