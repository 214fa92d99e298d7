//! Where a request's speculative drafts come from: the client's predicted output (`predict`)
//! or, without one, the request's own context (`lookup`, when the server enables it). The
//! scheduler asks for a draft, verifies it in the runner and reports back; only drafts of a
//! client's prediction are counted in its usage.

use crate::lookup::Lookup;
use crate::predict::Prediction;
use crate::types::Token;

#[derive(Clone, Debug)]
pub enum Drafter {
    Predicted(Prediction),
    Lookup(Lookup),
}

impl Drafter {
    /// The client's prediction if it sent one, else prompt lookup if `lookup_min` > 0.
    pub fn new(prediction: Vec<Token>, lookup_min: usize) -> Option<Self> {
        match Prediction::new(prediction) {
            Some(p) => Some(Self::Predicted(p)),
            None => Lookup::new(lookup_min).map(Self::Lookup),
        }
    }

    /// The next tokens to draft, at most `max`; `context` is the request's tokens.
    pub fn draft<'a>(&'a self, context: &'a [Token], max: usize) -> &'a [Token] {
        match self {
            Self::Predicted(p) => p.draft(max),
            Self::Lookup(l) => l.draft(context, max),
        }
    }

    pub fn verified(&mut self, drafted: usize, accepted: usize) {
        match self {
            Self::Predicted(p) => p.verified(drafted, accepted),
            Self::Lookup(l) => l.verified(drafted, accepted),
        }
    }

    /// Follows one more output token, the last of `context`; the output starts at `prompt_len`.
    pub fn observe(&mut self, context: &[Token], prompt_len: usize) {
        match self {
            Self::Predicted(p) => p.observe(&context[prompt_len..]),
            Self::Lookup(l) => l.observe(context),
        }
    }

    /// Whether the drafts are the client's prediction (OpenAI's usage counts them).
    pub fn is_prediction(&self) -> bool {
        matches!(self, Self::Predicted(_))
    }
}
