//! The text appended to a paused request when its server-side calls return: the template's
//! rendering of the tool results and of the next assistant prompt, exactly as the model's
//! chat template writes them after an assistant turn with calls.
//!
//! The model's own turn is already in its context (decoded, up to and including its
//! end-of-turn token). The template is rendered twice — the conversation ending with that
//! assistant turn, and the same conversation with the tool results and a generation prompt —
//! and what the second adds past their common prefix is appended, after whatever the template
//! writes between the end-of-turn token and that point (a newline in ChatML).

use serde_json::Value;

use crate::error::ApiError;

/// Renders messages with the model's template, with or without the generation prompt.
pub type Render<'a> = &'a dyn Fn(&[Value], bool) -> Result<String, ApiError>;

/// `render(messages, add_generation_prompt)` renders with the model's template;
/// `conversation` ends with the assistant turn, `results` are its tool messages; `eot` is the
/// text of the token that ended the turn.
pub fn appended_text(
    render: Render,
    conversation: &[Value],
    results: &[Value],
    eot: &str,
) -> Result<String, ApiError> {
    let before = render(conversation, false)?;
    let mut all = conversation.to_vec();
    all.extend_from_slice(results);
    let after = render(&all, true)?;
    let common = common_prefix(&before, &after);
    let added = &after[common..];
    // Between the end-of-turn token (already in the context) and the divergence.
    let gap = if eot.is_empty() {
        ""
    } else {
        match before[..common].rfind(eot) {
            Some(at) => &before[at + eot.len()..common],
            None => "",
        }
    };
    let added = added.strip_prefix(eot).unwrap_or(added);
    Ok(format!("{gap}{added}"))
}

/// Length in bytes of the common prefix, at a char boundary.
fn common_prefix(a: &str, b: &str) -> usize {
    a.char_indices()
        .zip(b.chars())
        .find(|((_, x), y)| x != y)
        .map_or(a.len().min(b.len()), |((i, _), _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::template::ChatTemplate;
    use serde_json::json;

    const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";
    /// Llama 3 style: no newline after the end-of-turn token, header tokens per message.
    const LLAMA3: &str = "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n{{ m.content }}<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}";
    /// Gemma style: tool results as a user turn, `<end_of_turn>\n`.
    const GEMMA: &str = "{% for m in messages %}{% set role = 'model' if m.role == 'assistant' else 'user' %}<start_of_turn>{{ role }}\n{{ m.content }}<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}";

    fn appended(src: &str, eot: &str) -> String {
        let t = ChatTemplate::new(src.into(), "<s>".into(), String::new()).unwrap();
        let render = |m: &[Value], g: bool| t.render_with(m, None, g);
        let conv = vec![
            json!({"role": "user", "content": "2+2?"}),
            json!({"role": "assistant", "content": "<call>calc</call>"}),
        ];
        let results = vec![json!({"role": "tool", "content": "4"})];
        appended_text(&render, &conv, &results, eot).unwrap()
    }

    #[test]
    fn chatml_appends_the_newline_the_model_did_not_write() {
        assert_eq!(
            appended(CHATML, "<|im_end|>"),
            "\n<|im_start|>tool\n4<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn llama3_appends_right_after_the_end_of_turn_token() {
        assert_eq!(
            appended(LLAMA3, "<|eot_id|>"),
            "<|start_header_id|>tool<|end_header_id|>\n\n4<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n"
        );
    }

    #[test]
    fn gemma_and_a_turn_end_the_template_does_not_write() {
        let g = appended(GEMMA, "<end_of_turn>");
        assert_eq!(
            g,
            "\n<start_of_turn>user\n4<end_of_turn>\n<start_of_turn>model\n"
        );
        // An end-of-turn text the template never writes: everything past the common prefix.
        let odd = appended(CHATML, "<eos>");
        assert!(odd.starts_with("<|im_start|>tool\n4"), "{odd}");
    }

    /// Appending to the prefix text gives exactly the full rendering.
    #[test]
    fn context_plus_appended_is_the_full_rendering() {
        for (src, eot) in [
            (CHATML, "<|im_end|>"),
            (LLAMA3, "<|eot_id|>"),
            (GEMMA, "<end_of_turn>"),
        ] {
            let t = ChatTemplate::new(src.into(), "<s>".into(), String::new()).unwrap();
            let conv = vec![
                json!({"role": "user", "content": "hi"}),
                json!({"role": "assistant", "content": "call"}),
            ];
            let results = vec![
                json!({"role": "tool", "content": "r1"}),
                json!({"role": "tool", "content": "r2"}),
            ];
            let render = |m: &[Value], g: bool| t.render_with(m, None, g);
            let before = render(&conv, false).unwrap();
            let context = &before[..before.rfind(eot).unwrap() + eot.len()];
            let add = appended_text(&render, &conv, &results, eot).unwrap();
            let mut all = conv.clone();
            all.extend(results);
            assert_eq!(format!("{context}{add}"), render(&all, true).unwrap());
        }
    }
}
