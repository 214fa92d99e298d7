//! GBNF text to tokens: names, `::=`, string literals and character classes (unescaped),
//! `.`, parentheses, `|`, `* + ?` and `{m,n}` repetitions; blanks, newlines and `#` comments
//! skipped; every token with the line it starts on.

use super::GbnfError;

#[derive(Clone, Debug, PartialEq)]
pub(super) enum Tok {
    Name(String),
    Define,
    /// A string literal, unescaped.
    Literal(String),
    /// A character class: negated, and its ranges (a single character is a range of one).
    Class(bool, Vec<(char, char)>),
    Any,
    Open,
    Close,
    Bar,
    /// `*`, `+` or `?`.
    Op(char),
    /// `{m}`, `{m,}`, `{m,n}` or `{,n}`, normalized.
    Repeat(String),
}

pub(super) struct Lexer<'a> {
    chars: std::iter::Peekable<std::str::Chars<'a>>,
    line: usize,
}

impl<'a> Lexer<'a> {
    pub(super) fn new(text: &'a str) -> Self {
        Self {
            chars: text.chars().peekable(),
            line: 1,
        }
    }

    fn fail<T>(&self, message: impl Into<String>) -> Result<T, GbnfError> {
        Err(GbnfError {
            line: self.line,
            message: message.into(),
        })
    }

    /// Every token with the line it starts on.
    pub(super) fn tokens(mut self) -> Result<Vec<(Tok, usize)>, GbnfError> {
        let mut out = Vec::new();
        while let Some(c) = self.skip_space() {
            let line = self.line;
            out.push((self.token(c)?, line));
        }
        Ok(out)
    }

    /// Skips blanks, newlines and `#` comments; the next character, taken.
    fn skip_space(&mut self) -> Option<char> {
        loop {
            let c = self.chars.next()?;
            match c {
                '\n' => self.line += 1,
                '#' => while self.chars.next_if(|&c| c != '\n').is_some() {},
                c if c.is_whitespace() => {}
                c => return Some(c),
            }
        }
    }

    fn token(&mut self, c: char) -> Result<Tok, GbnfError> {
        Ok(match c {
            '"' => Tok::Literal(self.literal()?),
            '[' => self.class()?,
            '.' => Tok::Any,
            '(' => Tok::Open,
            ')' => Tok::Close,
            '|' => Tok::Bar,
            '*' | '+' | '?' => Tok::Op(c),
            '{' => Tok::Repeat(self.repeat()?),
            ':' => {
                if self.chars.next() == Some(':') && self.chars.next() == Some('=') {
                    Tok::Define
                } else {
                    return self.fail("expected `::=`");
                }
            }
            '<' | '!' => {
                return self.fail("token references (`<[id]>`, `<token>`, `!<...>`) are not supported; write the text instead")
            }
            c if is_name_char(c) => {
                let mut name = c.to_string();
                while let Some(c) = self.chars.next_if(|&c| is_name_char(c)) {
                    name.push(c);
                }
                Tok::Name(name)
            }
            c => return self.fail(format!("unexpected character {c:?}")),
        })
    }

    fn literal(&mut self) -> Result<String, GbnfError> {
        let mut s = String::new();
        loop {
            match self.chars.next() {
                None | Some('\n') => return self.fail("unterminated string literal"),
                Some('"') => return Ok(s),
                Some('\\') => s.push(self.escape()?),
                Some(c) => s.push(c),
            }
        }
    }

    fn class(&mut self) -> Result<Tok, GbnfError> {
        let negated = self.chars.next_if_eq(&'^').is_some();
        let mut ranges = Vec::new();
        loop {
            let first = match self.chars.next() {
                None | Some('\n') => return self.fail("unterminated character class"),
                Some(']') => return Ok(Tok::Class(negated, ranges)),
                Some('\\') => self.escape()?,
                Some(c) => c,
            };
            let mut last = first;
            if self.chars.peek() == Some(&'-') {
                self.chars.next();
                last = match self.chars.next() {
                    Some(']') => {
                        // A trailing `-` is the character itself.
                        ranges.push((first, first));
                        ranges.push(('-', '-'));
                        return Ok(Tok::Class(negated, ranges));
                    }
                    Some('\\') => self.escape()?,
                    Some(c) if c != '\n' => c,
                    _ => return self.fail("unterminated character class"),
                };
                if last < first {
                    return self.fail(format!("character range {first:?}-{last:?} is reversed"));
                }
            }
            ranges.push((first, last));
        }
    }

    /// The character after a backslash (in a literal or a class).
    fn escape(&mut self) -> Result<char, GbnfError> {
        let digits = match self.chars.next() {
            Some('x') => 2,
            Some('u') => 4,
            Some('U') => 8,
            Some('n') => return Ok('\n'),
            Some('r') => return Ok('\r'),
            Some('t') => return Ok('\t'),
            Some(c @ ('\\' | '"' | '[' | ']' | '-' | '^' | '/')) => return Ok(c),
            Some(c) => return self.fail(format!("unknown escape \\{c}")),
            None => return self.fail("the grammar ends inside an escape"),
        };
        let hex: String = (0..digits).filter_map(|_| self.chars.next()).collect();
        match u32::from_str_radix(&hex, 16).ok().and_then(char::from_u32) {
            Some(c) if hex.len() == digits => Ok(c),
            _ => self.fail(format!(
                "bad escape: {hex:?} is not {digits} hex digits of a character"
            )),
        }
    }

    fn repeat(&mut self) -> Result<String, GbnfError> {
        let mut inner = String::new();
        loop {
            match self.chars.next() {
                Some('}') => break,
                Some(c) if c.is_ascii_digit() || c == ',' || c == ' ' => inner.push(c),
                _ => return self.fail("a repetition is `{m}`, `{m,}`, `{m,n}` or `{,n}`"),
            }
        }
        let inner: String = inner.chars().filter(|c| *c != ' ').collect();
        let (min, max) = inner.split_once(',').unwrap_or((&inner, &inner));
        let min: u32 = if min.is_empty() { Ok(0) } else { min.parse() }
            .or_else(|_| self.fail(format!("bad repetition {{{inner}}}")))?;
        let max: Option<u32> = match max {
            "" => None,
            m => Some(
                m.parse()
                    .or_else(|_| self.fail(format!("bad repetition {{{inner}}}")))?,
            ),
        };
        match max {
            Some(m) if m < min => self.fail(format!("bad repetition {{{inner}}}: max below min")),
            Some(0) => {
                self.fail("a repetition of at most 0 times matches nothing; leave the item out")
            }
            Some(m) if m == min => Ok(format!("{{{m}}}")),
            Some(m) => Ok(format!("{{{min},{m}}}")),
            None => Ok(format!("{{{min},}}")),
        }
    }
}

fn is_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '-'
}
