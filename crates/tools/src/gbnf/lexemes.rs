//! Which runs of a GBNF sequence can be one llguidance lexeme (a regular expression matched
//! by its lexer) instead of a chain of one-character rules.
//!
//! Why (tandem's own rule): llguidance parses rules with an Earley parser over lexemes; a GBNF
//! grammar taken literally makes every character class a lexeme, so a JSON string costs the
//! parser a step per character and a mask about 1 ms on the bench machine, against ~30 us for
//! the same JSON through llguidance's own schema compiler (bench/results/grammar.md). But its
//! lexer is greedy: a lexeme extends as long as its regex can, so `[a-z]+` made a lexeme and
//! followed by the literal `"x"` could never match `abx`. A run is therefore made a lexeme
//! only when its language is *prefix-free* (no match is a proper prefix of another, e.g. a
//! quoted string): then the lexer can stop nowhere but where the grammar would, and the
//! grammar's language is unchanged. Prefix-freeness is decided on the run's DFA (`regex-automata`): from no
//! accepting state can another accepting state be reached.

use std::collections::{HashMap, HashSet};

use regex_automata::dfa::{dense, Automaton, StartKind};
use regex_automata::util::primitives::StateID;
use regex_automata::{Anchored, Input, MatchKind};

use super::ast::{Atom, Item, Rule};

/// Regexes longer than this are not tried (a rule inlined into many others).
const MAX_REGEX: usize = 20_000;
/// Size limit of a run's DFA; a bigger one is not taken as a lexeme.
const DFA_LIMIT: usize = 1 << 20;
/// Longest run of items tried as one lexeme.
const MAX_RUN: usize = 24;
/// Most DFAs built for one grammar (a bound on the work a large grammar can cause; past it,
/// the rest is written item by item, which is correct, only slower to decode).
const MAX_DFAS: usize = 2000;
/// Deepest chain of rule references followed into a regex (the search recurses per rule).
const MAX_DEPTH: usize = 100;

/// The regular expressions of the grammar's non-recursive rules.
pub(super) struct Regular {
    rules: HashMap<String, Option<String>>,
    /// DFAs built so far.
    built: std::cell::Cell<usize>,
}

impl Regular {
    pub fn new(rules: &[Rule]) -> Self {
        let by_name: HashMap<&str, &Rule> = rules.iter().map(|r| (r.name.as_str(), r)).collect();
        let mut r = Regular {
            rules: HashMap::new(),
            built: std::cell::Cell::new(0),
        };
        for rule in rules {
            r.rule_regex(&rule.name, &by_name, &mut Vec::new());
        }
        r
    }

    /// A rule's regex, `None` when it refers to itself (directly or not), to an unknown rule,
    /// or grows too long.
    fn rule_regex(
        &mut self,
        name: &str,
        by_name: &HashMap<&str, &Rule>,
        visiting: &mut Vec<String>,
    ) -> Option<String> {
        if let Some(done) = self.rules.get(name) {
            return done.clone();
        }
        if visiting.len() >= MAX_DEPTH || visiting.iter().any(|v| v == name) {
            return None;
        }
        let rule = by_name.get(name)?;
        visiting.push(name.to_string());
        // Rules this one refers to first, so `alts_regex` finds them computed.
        for r in refs(&rule.alts) {
            self.rule_regex(&r, by_name, visiting);
        }
        visiting.pop();
        // A reference back to a rule on the path (recursion) has no entry yet: `None`.
        let rx = self.alts_regex(&rule.alts);
        self.rules.insert(name.to_string(), rx.clone());
        rx
    }

    fn alts_regex(&self, alts: &[Vec<Item>]) -> Option<String> {
        let parts: Option<Vec<String>> = alts.iter().map(|s| self.seq_regex(s)).collect();
        let rx = format!("(?:{})", parts?.join("|"));
        (rx.len() <= MAX_REGEX).then_some(rx)
    }

    /// The regex of a sequence of items, when all are regular.
    fn seq_regex(&self, seq: &[Item]) -> Option<String> {
        seq.iter().map(|i| self.item_regex(i)).collect()
    }

    fn item_regex(&self, item: &Item) -> Option<String> {
        let mut rx = match &item.atom {
            Atom::Literal(s) => s.chars().map(regex_char).collect(),
            Atom::Class(neg, ranges) if !ranges.is_empty() => class(*neg, ranges),
            Atom::Class(..) => return None,
            Atom::Any => "(?s:.)".to_string(),
            Atom::Ref(name) => format!("(?:{})", self.rules.get(name)?.as_ref()?),
            Atom::Group(alts) => self.alts_regex(alts)?,
        };
        for op in &item.ops {
            rx = format!("(?:{rx}){op}");
        }
        (rx.len() <= MAX_REGEX).then_some(rx)
    }

    /// The longest run `seq[i..j]` (more than a bare literal or class) whose language is
    /// prefix-free, with its regex.
    pub fn lexeme_at(&self, seq: &[Item], i: usize) -> Option<(usize, String)> {
        let regexes: Vec<String> = seq[i..]
            .iter()
            .take(MAX_RUN)
            .map_while(|it| self.item_regex(it))
            .collect();
        (1..=regexes.len()).rev().find_map(|len| {
            if let [one] = &seq[i..i + len] {
                let plain = matches!(one.atom, Atom::Literal(_) | Atom::Class(..) | Atom::Any);
                if plain && one.ops.is_empty() {
                    return None; // already one lexeme
                }
            }
            let rx = regexes[..len].concat();
            if self.built.get() >= MAX_DFAS {
                return None;
            }
            self.built.set(self.built.get() + 1);
            prefix_free(&rx).then_some((i + len, rx))
        })
    }
}

/// The rules a rule's alternatives refer to.
fn refs(alts: &[Vec<Item>]) -> Vec<String> {
    let mut out = Vec::new();
    for item in alts.iter().flatten() {
        match &item.atom {
            Atom::Ref(n) => out.push(n.clone()),
            Atom::Group(inner) => out.extend(refs(inner)),
            _ => {}
        }
    }
    out
}

/// A character in a regex: ASCII letters and digits as themselves, anything else as `\x{..}`
/// (never special, and never a `/` that would end a Lark regex).
fn regex_char(c: char) -> String {
    if c.is_ascii_alphanumeric() {
        c.to_string()
    } else {
        format!("\\x{{{:x}}}", c as u32)
    }
}

/// A character class, e.g. `[^a-z\x{2d}]`.
pub(super) fn class(negated: bool, ranges: &[(char, char)]) -> String {
    let mut out = String::from("[");
    if negated {
        out.push('^');
    }
    for &(a, b) in ranges {
        out.push_str(&regex_char(a));
        if b != a {
            out.push('-');
            out.push_str(&regex_char(b));
        }
    }
    out.push(']');
    out
}

/// Whether `rx` matches at least one non-empty string and no match is a proper prefix of
/// another (false too when its DFA is too big to build).
pub(super) fn prefix_free(rx: &str) -> bool {
    let config = dense::Config::new()
        .match_kind(MatchKind::All)
        .start_kind(StartKind::Anchored)
        .dfa_size_limit(Some(DFA_LIMIT))
        .determinize_size_limit(Some(DFA_LIMIT));
    let Ok(dfa) = dense::Builder::new().configure(config).build(rx) else {
        return false;
    };
    let Ok(start) = dfa.start_state_forward(&Input::new("").anchored(Anchored::Yes)) else {
        return false;
    };
    if accepts(&dfa, start) {
        return false; // the empty string matches
    }
    let mut after_match = reach(&dfa, vec![start])
        .into_iter()
        .filter(|&s| accepts(&dfa, s));
    after_match.all(|s| {
        !reach(&dfa, step(&dfa, s))
            .into_iter()
            .any(|t| accepts(&dfa, t))
    })
}

type Dfa = dense::DFA<Vec<u32>>;

/// Whether the input that led to `s` matches (a DFA reports a match one transition late: on
/// the end-of-input transition).
fn accepts(dfa: &Dfa, s: StateID) -> bool {
    dfa.is_match_state(dfa.next_eoi_state(s))
}

/// The live states one byte after `s`.
fn step(dfa: &Dfa, s: StateID) -> Vec<StateID> {
    (0..=255u8)
        .map(|b| dfa.next_state(s, b))
        .filter(|&t| !dfa.is_dead_state(t) && !dfa.is_quit_state(t))
        .collect()
}

/// The states reachable from `from` (included).
fn reach(dfa: &Dfa, from: Vec<StateID>) -> HashSet<StateID> {
    let mut seen: HashSet<StateID> = from.iter().copied().collect();
    let mut todo = from;
    while let Some(s) = todo.pop() {
        for t in step(dfa, s) {
            if seen.insert(t) {
                todo.push(t);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_freeness() {
        for (rx, want) in [
            (r#"\x{22}(?:[^\x{22}\x{5c}]|\x{5c}[nt])*\x{22}"#, true),
            ("abc", true),
            ("[0-9]{4}", true),
            ("a|ab", false),
            ("[0-9]+", false),
            ("(?:x)?", false),
            ("", false),
            (r#"\x{22}[a-z]*\x{22}(?: )?"#, false),
            ("(?s:.)", true),
        ] {
            assert_eq!(prefix_free(rx), want, "{rx}");
        }
    }
}
