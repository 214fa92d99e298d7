//! Turning a token stream into text: bytes are released only as complete UTF-8, and text that
//! could be the start of a stop string is held back until it is known not to be one.

/// Incremental UTF-8 assembly of token pieces.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds a token's bytes; returns the text that is now complete.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(_) => self.pending.len(),
            Err(e) if e.error_len().is_some() => {
                // Invalid bytes (not an unfinished sequence): emit them lossily.
                let s = String::from_utf8_lossy(&self.pending).into_owned();
                self.pending.clear();
                return s;
            }
            Err(e) => e.valid_up_to(),
        };
        let rest = self.pending.split_off(valid);
        String::from_utf8(std::mem::replace(&mut self.pending, rest)).expect("valid")
    }

    /// Whatever is left at the end, lossily.
    pub fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.pending)).into_owned()
    }
}

/// Stop-string matching over streamed text.
pub struct StopMatcher {
    stops: Vec<String>,
    held: String,
}

/// What to do with newly arrived text.
#[derive(Debug, PartialEq)]
pub enum StopOutcome {
    /// Text safe to emit now (may be empty).
    Emit(String),
    /// A stop string matched: emit this text (everything before it) and finish; the second
    /// is the stop string.
    Stopped(String, String),
}

impl StopMatcher {
    pub fn new(stops: Vec<String>) -> Self {
        Self {
            stops,
            held: String::new(),
        }
    }

    pub fn push(&mut self, text: &str) -> StopOutcome {
        self.held.push_str(text);
        let found = self
            .stops
            .iter()
            .filter_map(|s| Some((self.held.find(s.as_str())?, s)));
        if let Some((pos, stop)) = found.min_by_key(|&(pos, _)| pos) {
            let stop = stop.clone();
            self.held.truncate(pos);
            return StopOutcome::Stopped(std::mem::take(&mut self.held), stop);
        }
        let keep = self.partial_suffix_len();
        let emit_to = self.held.len() - keep;
        let rest = self.held.split_off(emit_to);
        StopOutcome::Emit(std::mem::replace(&mut self.held, rest))
    }

    /// Text still held back at the end of generation.
    pub fn finish(&mut self) -> String {
        std::mem::take(&mut self.held)
    }

    /// Length of the longest suffix of `held` that is a proper prefix of some stop string.
    fn partial_suffix_len(&self) -> usize {
        let h = &self.held;
        (1..=h.len())
            .rev()
            .filter(|&n| h.is_char_boundary(h.len() - n))
            .find(|&n| {
                self.stops
                    .iter()
                    .any(|s| s.len() > n && s.starts_with(&h[h.len() - n..]))
            })
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_split_across_tokens() {
        let mut u = Utf8Stream::default();
        let bytes = "é€".as_bytes();
        assert_eq!(u.push(&bytes[..1]), "");
        assert_eq!(u.push(&bytes[1..3]), "é");
        assert_eq!(u.push(&bytes[3..]), "€");
        assert_eq!(u.finish(), "");
    }

    #[test]
    fn stop_across_pieces_is_never_emitted() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("abc E"), StopOutcome::Emit("abc ".into()));
        assert_eq!(m.push("N"), StopOutcome::Emit("".into()));
        assert_eq!(m.push("Dx"), StopOutcome::Stopped("".into(), "END".into()));
    }

    #[test]
    fn false_start_is_released() {
        let mut m = StopMatcher::new(vec!["END".into()]);
        assert_eq!(m.push("EN"), StopOutcome::Emit("".into()));
        assert_eq!(m.push("o"), StopOutcome::Emit("ENo".into()));
        assert_eq!(m.push("E"), StopOutcome::Emit("".into()));
        assert_eq!(m.finish(), "E");
    }
}
