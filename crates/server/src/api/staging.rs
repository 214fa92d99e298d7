//! Staged tool results: while a paused request waits for its turn's server-side calls, the
//! part of the tool turn already known — the results of the calls that returned and the
//! published start of the first one still running (`tandem_tools::runtime::ResultPrefix`) —
//! is rendered as the template writes it, tokenized, and given to the engine to prefill
//! before the resume (the engine's `stage` module). When the results are in, the engine keeps
//! the staged tokens the real tool turn begins with and drops the rest, so the request
//! continues exactly as it would have without staging.
//!
//! The known text is rendered with a marker after it, through the same template rendering as
//! the resume, and cut at the marker: whatever the template writes around tool results, the
//! staged text is the start of what the resume appends. Its last token is not staged (the
//! text after it may merge with it into another token).

use futures::FutureExt;
use serde_json::{json, Value};
use tandem_engine::Token;
use tandem_tools::runtime::ResultStart;
use tokio::sync::watch;

/// Marks where the known text ends inside a rendering (private-use characters no tool output
/// or template is expected to contain).
const MARK: &str = "\u{F8FE}tandem-staged\u{F8FF}";

/// Fewest new tokens worth a stage (each is a message to the engine and a plan item).
const MIN_STAGE: usize = 8;

/// One call of the turn, in call order.
pub(crate) struct StagedCall {
    pub id: String,
    pub name: String,
    pub source: Source,
}

pub(crate) enum Source {
    /// The model-facing content, already final (the call returned before the turn ended).
    Known(String),
    /// A running call's published result start; `open` until its tool is gone.
    Running {
        rx: watch::Receiver<ResultStart>,
        open: bool,
    },
}

/// What a paused request has been given ahead of its tool results.
pub struct Staging {
    calls: Vec<StagedCall>,
    staged: Vec<Token>,
    /// A rendering that did not extend what was staged: no more stages this turn.
    stopped: bool,
}

impl Staging {
    pub(crate) fn new(calls: Vec<StagedCall>) -> Self {
        Self {
            calls,
            staged: Vec::new(),
            stopped: false,
        }
    }

    /// The tokens staged so far.
    pub fn staged(&self) -> &[Token] {
        &self.staged
    }

    /// Waits until a running call publishes more (never returns when none can).
    pub async fn changed(&mut self) {
        loop {
            let open: Vec<usize> = (0..self.calls.len())
                .filter(|&i| matches!(self.calls[i].source, Source::Running { open: true, .. }))
                .collect();
            if open.is_empty() || self.stopped {
                return std::future::pending().await;
            }
            let waits = self.calls.iter_mut().filter_map(|c| match &mut c.source {
                Source::Running { rx, open: true } => Some(rx.changed().boxed()),
                _ => None,
            });
            let (result, i, _) = futures::future::select_all(waits).await;
            if result.is_ok() {
                return;
            }
            // Its tool returned: the last value stays, nothing more will come.
            if let Source::Running { open, .. } = &mut self.calls[open[i]].source {
                *open = false;
            }
        }
    }

    /// The tool messages known so far, the last one's content ending in the marker; `None`
    /// when every result is complete (the resume follows at once) or staging stopped.
    pub fn messages(&self) -> Option<Vec<Value>> {
        if self.stopped {
            return None;
        }
        let mut out = Vec::new();
        for c in &self.calls {
            let (text, complete) = match &c.source {
                Source::Known(text) => (text.clone(), true),
                Source::Running { rx, .. } => {
                    let s = rx.borrow();
                    (s.text.clone(), s.complete)
                }
            };
            let content = if complete {
                text
            } else {
                format!("{text}{MARK}")
            };
            out.push(
                json!({"role": "tool", "tool_call_id": c.id, "name": c.name, "content": content}),
            );
            if !complete {
                return Some(out);
            }
        }
        None
    }

    /// Given the appended text rendered from `messages()` and a tokenizer: the tokens to
    /// stage now, if the known text grew by enough. A rendering whose tokens do not begin
    /// with what was staged stops staging for this turn.
    pub fn next_stage(
        &mut self,
        rendered: &str,
        tokenize: impl Fn(&str) -> Vec<Token>,
    ) -> Option<Vec<Token>> {
        let Some(end) = rendered.find(MARK) else {
            self.stopped = true; // the template changed the content: nothing safe to stage
            return None;
        };
        let mut tokens = tokenize(&rendered[..end]);
        tokens.pop();
        if !tokens.starts_with(&self.staged) {
            self.stopped = true;
            return None;
        }
        if tokens.len() < self.staged.len() + MIN_STAGE {
            return None;
        }
        let new = tokens[self.staged.len()..].to_vec();
        self.staged = tokens;
        Some(new)
    }

    /// How many staged tokens the real appended tokens begin with.
    pub fn keep(&self, appended: &[Token]) -> usize {
        self.staged
            .iter()
            .zip(appended)
            .take_while(|(a, b)| a == b)
            .count()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tokenizer of one token per character.
    fn chars(s: &str) -> Vec<Token> {
        s.chars().map(|c| c as Token).collect()
    }

    fn running(text: &str) -> (watch::Sender<ResultStart>, StagedCall) {
        let (tx, rx) = watch::channel(ResultStart {
            text: text.into(),
            complete: false,
        });
        let source = Source::Running { rx, open: true };
        let call = StagedCall {
            id: "c1".into(),
            name: "plan".into(),
            source,
        };
        (tx, call)
    }

    /// A template's rendering of a tool message: a header, the content, a footer.
    fn render(messages: &[Value]) -> String {
        let parts = messages.iter().map(|m| {
            let c = m["content"].as_str().unwrap();
            format!("<tool>{c}</tool>\n")
        });
        parts.collect::<String>() + "<assistant>\n"
    }

    #[test]
    fn stages_the_known_start_and_keeps_what_the_result_begins_with() {
        let (tx, call) = running("[{\"step\":0}");
        let known = StagedCall {
            id: "c0".into(),
            name: "calc".into(),
            source: Source::Known("42".into()),
        };
        let mut s = Staging::new(vec![known, call]);
        let m = s.messages().unwrap();
        assert_eq!(m.len(), 2);
        let first = s.next_stage(&render(&m), chars).unwrap();
        // Everything before the marker but its last character.
        assert_eq!(first, chars("<tool>42</tool>\n<tool>[{\"step\":0"));
        // Too little new text: no stage.
        tx.send_replace(ResultStart {
            text: "[{\"step\":0},{".into(),
            complete: false,
        });
        assert!(s
            .next_stage(&render(&s.messages().unwrap()), chars)
            .is_none());
        tx.send_replace(ResultStart {
            text: "[{\"step\":0},{\"step\":1}".into(),
            complete: false,
        });
        let more = s
            .next_stage(&render(&s.messages().unwrap()), chars)
            .unwrap();
        assert_eq!(more, chars("},{\"step\":1"));
        // Complete: nothing more to stage; the resume keeps all that was staged.
        tx.send_replace(ResultStart {
            text: "[{\"step\":0},{\"step\":1}]".into(),
            complete: true,
        });
        assert!(s.messages().is_none());
        let whole = chars(&render(&[
            json!({"content": "42"}),
            json!({"content": "[{\"step\":0},{\"step\":1}]"}),
        ]));
        assert_eq!(s.keep(&whole), s.staged().len());
    }

    #[test]
    fn a_start_the_result_does_not_have_stops_staging_and_is_not_kept() {
        let (tx, call) = running("[{\"step\":0,\"content\":\"ok\"}");
        let mut s = Staging::new(vec![call]);
        s.next_stage(&render(&s.messages().unwrap()), chars)
            .unwrap();
        // The tool published a start that does not extend the first (a misbehaving tool).
        tx.send_replace(ResultStart {
            text: "[{\"step\":9,\"content\":\"other\"}".into(),
            complete: false,
        });
        assert!(s
            .next_stage(&render(&s.messages().unwrap()), chars)
            .is_none());
        assert!(s.messages().is_none(), "stopped");
        // An error result: the resume keeps only the common start.
        let whole = chars("<tool>Error: [{\"step\":0}]</tool>\n<assistant>\n");
        assert_eq!(s.keep(&whole), "<tool>".len());
        // A template that escapes the content hides the marker: nothing is staged.
        let (_tx, call) = running("[1");
        let mut s = Staging::new(vec![call]);
        let escaped = render(&s.messages().unwrap()).replace(MARK, "?");
        assert!(s.next_stage(&escaped, chars).is_none());
    }

    #[tokio::test]
    async fn changed_wakes_on_a_publish_and_not_for_a_closed_call() {
        let (tx, call) = running("");
        let mut s = Staging::new(vec![call]);
        tx.send_replace(ResultStart {
            text: "[1".into(),
            complete: false,
        });
        let woke = tokio::time::timeout(std::time::Duration::from_secs(1), s.changed()).await;
        assert!(woke.is_ok());
        drop(tx);
        let woke = tokio::time::timeout(std::time::Duration::from_millis(50), s.changed()).await;
        assert!(woke.is_err(), "a closed call never wakes it");
        // Marked closed, so the wait is a plain pending one, not a loop on a closed channel.
        assert!(matches!(
            s.calls[0].source,
            Source::Running { open: false, .. }
        ));
    }
}
