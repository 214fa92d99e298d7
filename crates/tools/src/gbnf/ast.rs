//! GBNF tokens to rules: each rule's alternatives, sequences of items, an item an atom (a
//! literal, a class, `.`, a rule reference or a parenthesized group) with its postfix
//! operators.

use super::lexer::Tok;
use super::GbnfError;

pub(super) struct Rule {
    pub name: String,
    pub alts: Vec<Seq>,
}

pub(super) type Seq = Vec<Item>;

#[derive(Clone, Debug, PartialEq)]
pub(super) struct Item {
    pub atom: Atom,
    /// `*`, `+`, `?` or a normalized `{m,n}`, in order.
    pub ops: Vec<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Atom {
    Literal(String),
    Class(bool, Vec<(char, char)>),
    Any,
    Ref(String),
    Group(Vec<Seq>),
}

/// Rules: each starts at a `name ::=` and runs to the next one (GBNF's newline rules only
/// matter for where a rule ends, and a `name ::=` pair always starts a new rule).
pub(super) fn rules(tokens: &[(Tok, usize)]) -> Result<Vec<Rule>, GbnfError> {
    let starts: Vec<usize> = (0..tokens.len().saturating_sub(1))
        .filter(|&i| matches!(tokens[i].0, Tok::Name(_)) && tokens[i + 1].0 == Tok::Define)
        .collect();
    if starts.first() != Some(&0) {
        let line = tokens.first().map_or(1, |t| t.1);
        return Err(fail(line, "expected a rule (`name ::= ...`)"));
    }
    let mut out = Vec::with_capacity(starts.len());
    for (k, &s) in starts.iter().enumerate() {
        let end = starts.get(k + 1).copied().unwrap_or(tokens.len());
        let Tok::Name(name) = &tokens[s].0 else {
            unreachable!("starts are names")
        };
        if out.iter().any(|r: &Rule| &r.name == name) {
            return Err(fail(tokens[s].1, format!("rule `{name}` is defined twice")));
        }
        let mut p = Parser {
            tokens: &tokens[s + 2..end],
            pos: 0,
            line: tokens[s].1,
            depth: 0,
        };
        let alts = p.alts()?;
        if let Some((_, line)) = p.tokens.get(p.pos) {
            return Err(fail(*line, "unbalanced `)` or `::=` without a rule name"));
        }
        out.push(Rule {
            name: name.clone(),
            alts,
        });
    }
    Ok(out)
}

fn fail(line: usize, message: impl Into<String>) -> GbnfError {
    GbnfError {
        line,
        message: message.into(),
    }
}

/// Deepest nesting of parentheses accepted (the parser recurses per level).
const MAX_DEPTH: usize = 100;

struct Parser<'t> {
    tokens: &'t [(Tok, usize)],
    pos: usize,
    /// The line of the last token taken (for errors at the end).
    line: usize,
    /// Open parentheses around the current position.
    depth: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Tok> {
        self.tokens.get(self.pos).map(|t| &t.0)
    }

    fn take(&mut self) -> Option<&Tok> {
        let t = self.tokens.get(self.pos)?;
        self.pos += 1;
        self.line = t.1;
        Some(&t.0)
    }

    fn alts(&mut self) -> Result<Vec<Seq>, GbnfError> {
        let mut alts = vec![self.seq()?];
        while self.peek() == Some(&Tok::Bar) {
            self.take();
            alts.push(self.seq()?);
        }
        Ok(alts)
    }

    fn seq(&mut self) -> Result<Seq, GbnfError> {
        let mut seq = Vec::new();
        while let Some(atom) = self.atom()? {
            let mut ops = Vec::new();
            while let Some(op) = self.peek().and_then(op_text) {
                ops.push(op);
                self.take();
            }
            seq.push(Item { atom, ops });
        }
        Ok(seq)
    }

    fn atom(&mut self) -> Result<Option<Atom>, GbnfError> {
        let atom = match self.peek() {
            Some(Tok::Literal(s)) => Atom::Literal(s.clone()),
            Some(Tok::Class(neg, ranges)) => Atom::Class(*neg, ranges.clone()),
            Some(Tok::Any) => Atom::Any,
            Some(Tok::Name(n)) => Atom::Ref(n.clone()),
            Some(Tok::Open) => {
                self.take();
                if self.depth == MAX_DEPTH {
                    let msg = format!("parentheses nested more than {MAX_DEPTH} deep");
                    return Err(fail(self.line, msg));
                }
                self.depth += 1;
                let alts = self.alts()?;
                self.depth -= 1;
                if self.take() != Some(&Tok::Close) {
                    return Err(fail(self.line, "a `(` is not closed"));
                }
                return Ok(Some(Atom::Group(alts)));
            }
            Some(Tok::Op(_) | Tok::Repeat(_)) => {
                return Err(fail(
                    self.tokens[self.pos].1,
                    "a repetition operator with nothing before it",
                ))
            }
            _ => return Ok(None),
        };
        self.take();
        Ok(Some(atom))
    }
}

fn op_text(t: &Tok) -> Option<String> {
    match t {
        Tok::Op(c) => Some(c.to_string()),
        Tok::Repeat(r) => Some(r.clone()),
        _ => None,
    }
}
