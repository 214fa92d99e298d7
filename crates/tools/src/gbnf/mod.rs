//! GBNF (llama.cpp's grammar format, also what vLLM's and SGLang's xgrammar backends read)
//! rewritten as the Lark dialect llguidance compiles, so `grammar` / `guided_grammar` / `ebnf`
//! fields written for llama-server, vLLM or SGLang work unchanged here.
//!
//! Written by hand because no crate does it: llguidance reads Lark only (its authors ship a
//! Python converter), and the GBNF crates on crates.io wrap llama.cpp's own parser, which
//! builds llama.cpp's grammar sampler rather than a grammar text. The two notations are close:
//! rules become `name: body`, string literals are re-quoted as JSON strings, character classes
//! and `.` become regular expressions, `( ) | * + ? {m,n}` carry over, comments go. Rule names
//! are re-spelled to fit Lark's lower-case rule names, and `root` becomes the entry rule.
//! Token references (`<[id]>`, `<think>`, `!<...>`) are refused. Runs of a rule that are
//! regular and prefix-free become one regex lexeme ([`lexemes`]), which keeps the language and
//! makes masks much cheaper.

mod ast;
mod lexemes;
mod lexer;

use std::fmt::Write;

use ast::{Atom, Item};
use lexemes::Regular;
use lexer::Lexer;

/// A GBNF text that could not be read; `line` counts from 1.
#[derive(Debug, thiserror::Error, PartialEq)]
#[error("GBNF grammar, line {line}: {message}")]
pub struct GbnfError {
    pub line: usize,
    pub message: String,
}

/// Whether `text` is written in GBNF (its rules are defined with `::=`; Lark uses `:`).
pub fn is_gbnf(text: &str) -> bool {
    text.contains("::=")
}

/// The Lark grammar for GBNF `text`, starting at its `root` rule.
pub fn to_lark(text: &str) -> Result<String, GbnfError> {
    let tokens = Lexer::new(text).tokens()?;
    let rules = ast::rules(&tokens)?;
    if !rules.iter().any(|r| r.name == "root") {
        return Err(GbnfError {
            line: 1,
            message: "the grammar has no `root` rule (the rule the whole output must match)".into(),
        });
    }
    let regular = Regular::new(&rules);
    let mut out = format!("start: {}\n", lark_name("root"));
    for rule in &rules {
        let _ = writeln!(
            out,
            "{}: {}",
            lark_name(&rule.name),
            alts(&regular, &rule.alts)
        );
    }
    Ok(out)
}

fn alts(regular: &Regular, alts: &[Vec<Item>]) -> String {
    let seqs: Vec<String> = alts.iter().map(|s| seq(regular, s)).collect();
    seqs.join(" | ")
}

/// A sequence in Lark: its prefix-free regular runs as regex lexemes, the rest item by
/// item; an empty sequence as `""`.
fn seq(regular: &Regular, items: &[Item]) -> String {
    if items.is_empty() {
        return "\"\"".into();
    }
    let mut parts = Vec::new();
    let mut i = 0;
    while i < items.len() {
        if let Some((end, rx)) = regular.lexeme_at(items, i) {
            parts.push(format!("/{rx}/"));
            i = end;
        } else {
            parts.push(item(regular, &items[i]));
            i += 1;
        }
    }
    parts.join(" ")
}

fn item(regular: &Regular, it: &Item) -> String {
    let atom = match &it.atom {
        Atom::Literal(s) => serde_json::to_string(s).expect("a string serializes"),
        Atom::Class(negated, ranges) => format!("/{}/", lexemes::class(*negated, ranges)),
        Atom::Any => "/(?s:.)/".into(),
        Atom::Ref(name) => lark_name(name),
        Atom::Group(inner) => format!("({})", alts(regular, inner)),
    };
    let ops: String = it.ops.concat();
    atom + &ops
}

/// A GBNF rule name as a Lark rule name (lower case letters, digits, `-` and `_`, starting
/// with a letter). Upper-case letters become `_` and the letter (GBNF names have no `_`, so
/// distinct names stay distinct), a name not starting with a letter gets `z_`, and `start`
/// (the Lark entry rule this converter writes) becomes `start_`.
fn lark_name(name: &str) -> String {
    let mut out = String::with_capacity(name.len() + 2);
    if !name.starts_with(|c: char| c.is_ascii_alphabetic()) {
        out.push_str("z_");
    }
    for c in name.chars() {
        if c.is_ascii_uppercase() {
            out.push('_');
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    if out == "start" {
        out.push('_');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rules_literals_and_classes() {
        let text = r#"root ::= "a\n" [^0-9\]] . name
name ::= ("x" | "y")+ [a-]{2,5}"#;
        // The fixed-length run of the root is one lexeme; a repeated group stays a rule.
        let want = r#"start: root
root: /a\x{a}[^0-9\x{5d}](?s:.)/ name
name: ("x" | "y")+ /[a\x{2d}]/{2,5}
"#;
        assert_eq!(to_lark(text).unwrap(), want);
    }

    #[test]
    fn empty_alternatives_become_empty_strings() {
        let lark = to_lark(r#"root ::= | " " | ("a" |)"#).unwrap();
        assert_eq!(lark, "start: root\nroot: \"\" | \" \" | (\"a\" | \"\")\n");
    }

    #[test]
    fn rules_span_lines_and_comments_go() {
        let text = "# a list\nroot ::= item\n  (\",\" item)*  # more\nitem ::=\n  [a-z]+\n";
        let want = "start: root\nroot: item (\",\" item)*\nitem: /[a-z]/+\n";
        assert_eq!(to_lark(text).unwrap(), want);
    }

    #[test]
    fn names_fit_lark() {
        assert_eq!(lark_name("check-mate"), "check-mate");
        assert_eq!(lark_name("Move"), "_move");
        assert_eq!(lark_name("myRule2"), "my_rule2");
        assert_eq!(lark_name("2x"), "z_2x");
        assert_eq!(lark_name("start"), "start_");
    }

    #[test]
    fn repetitions_are_normalized() {
        let lark = to_lark(r#"root ::= "a"{3} "b"{1,} "c"{,4} "d"{ 2 , 3 }"#).unwrap();
        // `"a"{3}` is fixed-length, so prefix-free: one lexeme.
        let want = r#"start: root
root: /(?:a){3}/ "b"{1,} "c"{0,4} "d"{2,3}
"#;
        assert_eq!(lark, want);
    }

    #[test]
    fn escapes() {
        let lark = to_lark(r#"root ::= "\x41\u00e9\U0001F600\"\\" | [\t\x00-\x1F]"#).unwrap();
        let want = r#"start: root
root: "Aé😀\"\\" | /[\x{9}\x{0}-\x{1f}]/
"#;
        assert_eq!(lark, want);
    }

    #[test]
    fn quoted_strings_become_lexemes_and_what_follows_stays() {
        let text = r#"root ::= "[" str ("," str)* "]"
str ::= "\"" ([^"\\] | "\\" ["n])* "\"" ws
ws ::= | " ""#;
        let lark = to_lark(text).unwrap();
        let lines: Vec<&str> = lark.lines().collect();
        // The whole list is regular and ends at its `]`: one lexeme.
        assert!(lines[1].starts_with(r"root: /\x{5b}") && lines[1].ends_with(r"\x{5d}/"));
        // A string followed by optional blank is not prefix-free; the quoted part is.
        let str_rule = r"str: /\x{22}(?:(?:[^\x{22}\x{5c}]|\x{5c}[\x{22}n]))*\x{22}/ ws";
        assert_eq!(lines[2..], [str_rule, r#"ws: "" | " ""#]);
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("item ::= \"a\"", 1, "no `root`"),
            ("root ::= \"a\n\"", 1, "unterminated string"),
            ("root ::= [a-", 1, "unterminated character class"),
            ("root ::= x\nx ::= <think>", 2, "token references"),
            ("root ::= \"\\q\"", 1, "unknown escape"),
            ("root ::= \"\\x4\"", 1, "hex digits"),
            ("root ::= [z-a]", 1, "reversed"),
            ("root ::= \"a\"{3,1}", 1, "max below min"),
            ("root ::= \"a\"{x}", 1, "repetition"),
            ("\"a\" root ::= \"b\"", 1, "expected a rule"),
            ("root ::= \"a\" ::= \"b\"", 1, "without a rule name"),
            ("root := \"a\"", 1, "expected `::=`"),
            ("root ::= \"a\" ;", 1, "unexpected character"),
        ];
        for (text, line, msg) in cases {
            let e = to_lark(text).unwrap_err();
            assert_eq!(e.line, line, "{text}: {e}");
            assert!(e.message.contains(msg), "{text}: {e}");
        }
    }

    #[test]
    fn deep_or_long_grammars_are_bounded() {
        let deep = format!("root ::= {}\"a\"{}", "(".repeat(101), ")".repeat(101));
        assert!(to_lark(&deep)
            .unwrap_err()
            .message
            .contains("nested more than 100"));
        let ok = format!("root ::= {}\"a\"{}", "(".repeat(100), ")".repeat(100));
        assert!(to_lark(&ok).is_ok());
        // A chain of 300 rules: converted, the regex search stops following it at its depth.
        let mut chain = String::from("root ::= r0\n");
        for i in 0..300 {
            chain.push_str(&format!("r{i} ::= \"x\" r{}\n", i + 1));
        }
        chain.push_str("r300 ::= \"y\"\n");
        assert!(to_lark(&chain).unwrap().lines().count() == 303);
        // A long sequence of items: converted (past the DFA budget, item by item).
        let long = format!("root ::= {}", "[a-z]+ \"-\" ".repeat(2000));
        assert!(to_lark(&long).is_ok());
    }

    #[test]
    fn detects_gbnf() {
        assert!(is_gbnf("root ::= \"a\""));
        assert!(!is_gbnf("start: \"a\""));
    }
}
