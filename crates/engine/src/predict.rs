//! Predicted outputs (OpenAI's `prediction`): text the client expects most of the output to
//! repeat (a file being edited, a document being revised). The prediction is a free draft for
//! speculative decoding: each step the scheduler appends its next tokens to a decoding
//! request's item, the runner samples every row in turn and keeps the drafted tokens while
//! they equal what it samples, and the rejected rows' KV is cut. Sampling each row as usual
//! and accepting a drafted token only when it is the one sampled gives exactly the
//! distribution of decoding without a draft (a draft that puts all its mass on one token).
//!
//! tandem's own part is following the prediction: a cursor marks the predicted token the
//! next output token should equal. It moves on while the output matches; after an edit (the
//! output leaves the prediction) it re-aligns where the last `ALIGN` output tokens occur in
//! the prediction, nearest after the cursor, the way prompt-lookup decoding finds a draft.

use crate::types::Token;

/// Output tokens that must match the prediction before drafting resumes after an edit.
const ALIGN: usize = 3;
/// Draft length: a step drafts `len` tokens, doubled after a step that accepted all of its
/// draft and cut to what was accepted after one that did not, so text copied verbatim goes
/// fast and a drifting output wastes few rows. A draft rejected at its first token stops
/// drafting (`len` 0) until an output token equals the predicted one without a draft.
const START_DRAFT: usize = 4;
const MAX_DRAFT: usize = 16;

#[derive(Clone, Debug)]
pub struct Prediction {
    tokens: Vec<Token>,
    /// Index of the predicted token the next output token should equal; `None` while the
    /// output is off the prediction.
    cursor: Option<usize>,
    /// Where the cursor last was: re-alignment searches from here first.
    last: usize,
    pace: Pace,
}

/// How many tokens to draft next step (see `MAX_DRAFT`), for any source of drafts.
#[derive(Clone, Debug)]
pub(crate) struct Pace(usize);

impl Default for Pace {
    fn default() -> Self {
        Self(START_DRAFT)
    }
}

impl Pace {
    /// A pace that drafts `len` tokens first (a source less sure than a client's prediction
    /// starts lower and doubles as it is accepted).
    pub(crate) fn starting(len: usize) -> Self {
        Self(len.min(MAX_DRAFT))
    }

    /// The next draft from `source`: its tokens from `at`, at most `max` and this pace's
    /// length, fewer where `source` ends.
    pub(crate) fn window<'a>(&self, source: &'a [Token], at: usize, max: usize) -> &'a [Token] {
        &source[at..(at + max.min(self.0)).min(source.len())]
    }

    /// After a verified draft of `drafted` tokens, `accepted` of them taken.
    pub(crate) fn verified(&mut self, drafted: usize, accepted: usize) {
        self.0 = if accepted == drafted {
            (2 * self.0).min(MAX_DRAFT)
        } else {
            accepted
        };
    }

    /// An output token equal to the drafted source's next one, without a draft: drafting
    /// resumes if a rejection had stopped it.
    pub(crate) fn on_track(&mut self) {
        self.0 = self.0.max(1);
    }
}

impl Prediction {
    /// `None` for an empty prediction.
    pub fn new(tokens: Vec<Token>) -> Option<Self> {
        (!tokens.is_empty()).then_some(Self {
            tokens,
            cursor: Some(0),
            last: 0,
            pace: Pace::default(),
        })
    }

    /// The next predicted tokens to draft, at most `max` (none while off the prediction).
    pub fn draft(&self, max: usize) -> &[Token] {
        match self.cursor {
            Some(c) => self.pace.window(&self.tokens, c, max),
            None => &[],
        }
    }

    /// Adapts the draft length to a verified draft of `drafted` tokens.
    pub fn verified(&mut self, drafted: usize, accepted: usize) {
        self.pace.verified(drafted, accepted);
    }

    /// Follows one more output token; `output` is every output token so far, that one last.
    pub fn observe(&mut self, output: &[Token]) {
        let Some(&token) = output.last() else {
            return;
        };
        if let Some(c) = self.cursor {
            if self.tokens.get(c) == Some(&token) {
                self.cursor = Some(c + 1);
                self.last = c + 1;
                self.pace.on_track();
                return;
            }
        }
        self.cursor = self.realign(output);
        if let Some(c) = self.cursor {
            self.last = c;
        }
    }

    /// Just after the first occurrence of the output's last `ALIGN` tokens in the
    /// prediction at or after the last cursor, else anywhere before it.
    fn realign(&self, output: &[Token]) -> Option<usize> {
        let tail = output.get(output.len().checked_sub(ALIGN)?..)?;
        let at = |from: usize, to: usize| {
            let found = self
                .tokens
                .get(from..to)?
                .windows(ALIGN)
                .position(|w| w == tail);
            found.map(|i| from + i + ALIGN)
        };
        let n = self.tokens.len();
        let start = self.last.saturating_sub(ALIGN - 1);
        at(start, n).or_else(|| at(0, (start + ALIGN - 1).min(n)))
    }
}

#[cfg(test)]
mod tests {
    use super::Prediction;

    fn follow(p: &mut Prediction, output: &[i32]) {
        for i in 1..=output.len() {
            p.observe(&output[..i]);
        }
    }

    #[test]
    fn the_draft_follows_a_matching_output() {
        let mut p = Prediction::new(vec![1, 2, 3, 4, 5]).unwrap();
        assert_eq!(p.draft(3), &[1, 2, 3]);
        assert_eq!(p.draft(8), &[1, 2, 3, 4], "four to start with");
        follow(&mut p, &[1, 2]);
        assert_eq!(p.draft(8), &[3, 4, 5]);
        follow(&mut p, &[1, 2, 3, 4, 5]);
        assert!(p.draft(8).is_empty(), "the prediction is used up");
        assert!(Prediction::new(vec![]).is_none());
    }

    #[test]
    fn the_draft_grows_while_accepted_and_shrinks_to_what_was() {
        let mut p = Prediction::new((0..100).collect()).unwrap();
        p.verified(4, 4);
        assert_eq!(p.draft(99).len(), 8);
        p.verified(8, 8);
        p.verified(16, 16);
        assert_eq!(p.draft(99).len(), 16, "at most MAX_DRAFT");
        p.verified(16, 5);
        assert_eq!(p.draft(99).len(), 5);
        p.verified(5, 0);
        assert!(p.draft(99).is_empty(), "rejected at once: no draft");
        p.observe(&[0]);
        assert_eq!(p.draft(99).len(), 1, "the output met the prediction again");
    }

    #[test]
    fn an_edit_stops_the_draft_until_the_output_rejoins_the_prediction() {
        // Predicted: 10 11 12 13 14 15 16 17; the output replaces 12 by 99 98, then goes on.
        let mut p = Prediction::new((10..18).collect()).unwrap();
        follow(&mut p, &[10, 11, 99]);
        assert!(p.draft(4).is_empty(), "off the prediction");
        follow(&mut p, &[10, 11, 99, 98, 13]);
        assert!(p.draft(4).is_empty(), "one token back on it is not enough");
        follow(&mut p, &[10, 11, 99, 98, 13, 14, 15]);
        assert_eq!(p.draft(4), &[16, 17], "13 14 15 found: drafting resumes");
    }

    #[test]
    fn realignment_prefers_the_occurrence_after_the_cursor() {
        // The phrase 5 6 7 occurs twice; the output is past the first.
        let pred = vec![5, 6, 7, 1, 2, 3, 5, 6, 7, 8, 9];
        let mut p = Prediction::new(pred).unwrap();
        follow(&mut p, &[5, 6, 7, 1, 2, 3, 0, 5, 6, 7]);
        assert_eq!(p.draft(2), &[8, 9]);
        // Off the prediction from the start, it is found anywhere.
        let mut q = Prediction::new(vec![1, 2, 3, 4]).unwrap();
        follow(&mut q, &[9, 9, 1, 2, 3]);
        assert_eq!(q.draft(2), &[4]);
    }
}
