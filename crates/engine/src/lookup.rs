//! Prompt-lookup drafts (`--prompt-lookup N`, vLLM's `ngram` method): a request's own context
//! is its draft source. When the context's last `N` tokens also occur earlier in it, the
//! tokens that followed that occurrence are drafted, and verified like a client's prediction
//! (`predict`). Output that copies from its prompt (a file being edited, a quoted document, a
//! tool result read back) then decodes several tokens a step, with no prediction sent.
//!
//! tandem's own part is only the bookkeeping: a cursor into the context that moves on while
//! the output keeps copying; when it stops, a search for the match from where the copy was
//! (so a copy goes on in order past an edit, rather than jumping to a repeated line nearer
//! the end), else the latest one; and the draft length that `predict::Pace` adapts.

use crate::predict::Pace;
use crate::types::Token;

/// The first draft's length. A match in the context is a weaker hint than a client's
/// prediction, and on a CPU a drafted row costs about half a decode step (docs/prediction.md),
/// so drafting starts at one token and doubles while accepted.
const START: usize = 1;

#[derive(Clone, Debug)]
pub struct Lookup {
    /// Tokens that must match before anything is drafted.
    min: usize,
    /// Index in the context of the token the next output token should equal, while the
    /// output copies an earlier part of the context.
    cursor: Option<usize>,
    /// Where the cursor was when the output last left the copy.
    last: Option<usize>,
    pace: Pace,
}

impl Lookup {
    /// `None` for `min` 0 (lookup off).
    pub fn new(min: usize) -> Option<Self> {
        (min > 0).then(|| Self {
            min,
            cursor: None,
            last: None,
            pace: Pace::starting(START),
        })
    }

    /// The context's tokens after the cursor, at most `max` (none while nothing matches).
    pub fn draft<'a>(&self, context: &'a [Token], max: usize) -> &'a [Token] {
        match self.cursor {
            Some(c) => self.pace.window(context, c, max),
            None => &[],
        }
    }

    pub fn verified(&mut self, drafted: usize, accepted: usize) {
        self.pace.verified(drafted, accepted);
    }

    /// Follows one more output token; `context` is the request's tokens, that one last.
    pub fn observe(&mut self, context: &[Token]) {
        let Some(&token) = context.last() else {
            return;
        };
        if let Some(c) = self.cursor {
            if context[c] == token {
                self.cursor = Some(c + 1);
                self.pace.on_track();
                return;
            }
            self.last = Some(c);
        }
        self.cursor = self.find(context);
    }

    /// Just after the first occurrence of the context's last `min` tokens from where the
    /// cursor last was (output that copies a text in order, past an edit, picks it up there),
    /// else just after the latest one; either must end before the context's last token.
    fn find(&self, context: &[Token]) -> Option<usize> {
        let n = context.len();
        let tail = context.get(n.checked_sub(self.min)?..)?;
        let earlier = context.get(..n - 1)?;
        let after_last = self.last.and_then(|last| {
            let from = last.saturating_sub(self.min - 1);
            let i = earlier
                .get(from..)?
                .windows(self.min)
                .position(|w| w == tail)?;
            Some(from + i)
        });
        let i = after_last.or_else(|| earlier.windows(self.min).rposition(|w| w == tail))?;
        Some(i + self.min)
    }
}

#[cfg(test)]
mod tests {
    use super::Lookup;

    fn follow(l: &mut Lookup, context: &[i32], from: usize) {
        for i in from..=context.len() {
            l.observe(&context[..i]);
        }
    }

    #[test]
    fn output_that_copies_its_prompt_is_drafted_from_it() {
        // Prompt: 1 2 3 4 5 6 7 8 9; the output starts copying it at 3 4 5.
        let prompt: Vec<i32> = (1..10).collect();
        let mut l = Lookup::new(3).unwrap();
        let mut ctx = prompt.clone();
        ctx.extend([3, 4]);
        follow(&mut l, &ctx, prompt.len() + 1);
        assert!(
            l.draft(&ctx, 8).is_empty(),
            "two tokens match, three are needed"
        );
        ctx.push(5);
        l.observe(&ctx);
        assert_eq!(l.draft(&ctx, 8), &[6], "one to start with");
        l.verified(1, 1);
        ctx.extend([6, 7]);
        follow(&mut l, &ctx, ctx.len() - 1);
        assert_eq!(l.draft(&ctx, 8), &[8, 9], "doubled once accepted");
        l.verified(2, 2);
        assert_eq!(
            l.draft(&ctx, 8),
            &[8, 9, 3, 4],
            "the copy runs on into the output"
        );
        assert!(Lookup::new(0).is_none());
    }

    #[test]
    fn the_latest_occurrence_is_drafted_and_a_divergence_searches_again() {
        // 7 8 is followed by 1 early on and by 2 later: the later one is drafted.
        let mut ctx = vec![7, 8, 1, 0, 0, 7, 8, 2, 5, 5, 7, 8];
        let mut l = Lookup::new(2).unwrap();
        l.observe(&ctx);
        assert_eq!(l.draft(&ctx, 1), &[2]);
        // The output takes 1 instead: 8 1 occurs once, followed by 0.
        ctx.push(1);
        l.observe(&ctx);
        l.verified(1, 1);
        assert_eq!(l.draft(&ctx, 2), &[0, 0]);
        // A token that occurs nowhere before: nothing to draft.
        ctx.push(42);
        l.observe(&ctx);
        assert!(l.draft(&ctx, 4).is_empty());
    }

    #[test]
    fn a_copy_goes_on_in_order_past_an_edit() {
        // The prompt holds a text with a repeated line (5 6); the output copies it, edits 3
        // into 30, then writes 4 5 6: the copy resumes after 4, not at the later 5 6.
        let text = [1, 2, 3, 4, 5, 6, 7, 8, 5, 6, 9];
        let mut ctx = text.to_vec();
        ctx.push(0);
        let start = ctx.len();
        ctx.extend([1, 2, 30, 4, 5, 6]);
        let mut l = Lookup::new(2).unwrap();
        l.observe(&ctx[..start]);
        follow(&mut l, &ctx, start + 1);
        l.verified(1, 1);
        assert_eq!(l.draft(&ctx, 2), &[7, 8]);
        // Without a copy to follow, the latest occurrence: 5 6 then 9.
        let mut fresh = Lookup::new(2).unwrap();
        fresh.observe(&ctx);
        assert_eq!(fresh.draft(&ctx, 1), &[9]);
    }
}
