//! Chat prompts from the GGUF's own Jinja chat template, rendered with minijinja under
//! Hugging Face conventions: `messages`, `add_generation_prompt`, `tools`, `bos_token`,
//! `eos_token`, `raise_exception(...)`, the `tojson` filter and Python string methods.
//! A model without a template gets a built-in one its vocabulary suits (`fallback`): Gemma's
//! turns when it has Gemma's turn tokens, else ChatML (llama-server's fallback).

use minijinja::{Environment, Error, ErrorKind, Value};
use serde_json::{json, Value as Json};

use crate::error::ApiError;

const CHATML: &str = "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}";

/// Gemma's turn format, for Gemma models whose GGUF has no template (base models): a system
/// message opens the next user turn, the assistant's role is `model`, and a tool result is a
/// user turn (Gemma has no tool role). Written for tandem; Gemma's own templates refuse
/// system and tool roles instead. A file of its own, so benchmarks can give llama-server the
/// same template.
const GEMMA_TURNS: &str = include_str!("../templates/gemma-turns.jinja");

/// The built-in template for a model without one, and its name: Gemma's turns when the
/// vocabulary has Gemma's turn tokens (ChatML's markers would be plain text to it), else
/// ChatML.
pub fn fallback(has_gemma_turns: bool) -> (&'static str, &'static str) {
    if has_gemma_turns {
        (GEMMA_TURNS, "Gemma's turn format")
    } else {
        (CHATML, "ChatML")
    }
}

pub struct ChatTemplate {
    env: Environment<'static>,
    bos: String,
    eos: String,
}

fn raise_exception(msg: String) -> Result<Value, Error> {
    Err(Error::new(ErrorKind::InvalidOperation, msg))
}

impl ChatTemplate {
    /// Compiles `source` (the model's template, `--chat-template-file`'s, or a `fallback`).
    pub fn new(source: String, bos: String, eos: String) -> Result<Self, Error> {
        let mut env = Environment::new();
        minijinja_contrib::add_to_environment(&mut env);
        env.set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        env.add_function("raise_exception", raise_exception);
        env.add_template_owned("chat", source)?;
        Ok(Self { env, bos, eos })
    }

    /// Whether the template writes a `tool` message as a turn of its own: it renders one
    /// without raising, with its content, and not as it renders the same text from the user.
    /// ChatML templates do; Gemma's raise, and Gemma's turn fallback folds it into a user
    /// turn.
    pub fn writes_tool_turns(&self) -> bool {
        const MARK: &str = "tandem probe: a tool result";
        let conversation = |role: &str| {
            [
                json!({"role": "user", "content": "question"}),
                json!({"role": "assistant", "content": "answer"}),
                json!({"role": role, "content": MARK, "tool_call_id": "probe"}),
            ]
        };
        let tool = self.render(&conversation("tool"), None);
        let user = self.render(&conversation("user"), None);
        match (tool, user) {
            (Ok(tool), Ok(user)) => tool.contains(MARK) && tool != user,
            (Ok(tool), Err(_)) => tool.contains(MARK),
            (Err(_), _) => false,
        }
    }

    /// Renders a conversation for the assistant's next turn; a template that raises (e.g.
    /// bad role order) gives a 400.
    pub fn render(&self, messages: &[Json], tools: Option<&[Json]>) -> Result<String, ApiError> {
        self.render_with(messages, tools, true)
    }

    /// Renders a conversation, with or without the assistant's generation prompt.
    pub fn render_with(
        &self,
        messages: &[Json],
        tools: Option<&[Json]>,
        add_generation_prompt: bool,
    ) -> Result<String, ApiError> {
        let tmpl = self
            .env
            .get_template("chat")
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        let ctx = minijinja::context! {
            messages => Value::from_serialize(messages),
            tools => tools.map(Value::from_serialize),
            add_generation_prompt => add_generation_prompt,
            bos_token => &self.bos,
            eos_token => &self.eos,
        };
        tmpl.render(ctx)
            .map_err(|e| ApiError::invalid(format!("chat template: {e:#}"), "messages"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hf_conventions() {
        let src = "{{ bos_token }}{% for m in messages %}{% if m.role == 'bad' %}{{ raise_exception('no ' + m.role) }}{% endif %}[{{ m.role }}]{{ m.content.strip() }}{% endfor %}{% if tools %}{{ tools | tojson }}{% endif %}{% if add_generation_prompt %}[assistant]{% endif %}";
        let t = ChatTemplate::new(src.into(), "<s>".into(), "</s>".into()).unwrap();
        let msgs = vec![json!({"role": "user", "content": "  hi "})];
        assert_eq!(t.render(&msgs, None).unwrap(), "<s>[user]hi[assistant]");
        let tools = vec![json!({"type": "function"})];
        assert!(t
            .render(&msgs, Some(&tools))
            .unwrap()
            .contains("\"type\":\"function\""));
        let err = t
            .render(&[json!({"role": "bad", "content": ""})], None)
            .unwrap_err();
        assert!(err.to_string().contains("no bad"), "{err}");
    }

    #[test]
    fn gemma_fallback_folds_system_into_the_next_user_turn() {
        let (src, _) = fallback(true);
        let t = ChatTemplate::new(src.into(), String::new(), String::new()).unwrap();
        let msgs = [
            json!({"role": "system", "content": "Be brief."}),
            json!({"role": "user", "content": "Hi"}),
            json!({"role": "assistant", "content": "Hello"}),
            json!({"role": "tool", "content": "42"}),
        ];
        assert_eq!(
            t.render(&msgs, None).unwrap(),
            "<start_of_turn>user\nBe brief.\n\nHi<end_of_turn>\n<start_of_turn>model\nHello<end_of_turn>\n<start_of_turn>user\n42<end_of_turn>\n<start_of_turn>model\n"
        );
        assert_eq!(fallback(false).0, CHATML);
    }

    #[test]
    fn a_template_writes_tool_turns_when_it_renders_the_role_apart() {
        let writes = |src: &str| {
            ChatTemplate::new(src.into(), String::new(), String::new())
                .unwrap()
                .writes_tool_turns()
        };
        assert!(writes(CHATML));
        assert!(!writes(GEMMA_TURNS), "a tool message is a user turn there");
        let refuses = "{% for m in messages %}{% if m.role == 'tool' %}{{ raise_exception('roles') }}{% endif %}{{ m.content }}{% endfor %}";
        assert!(!writes(refuses));
        let drops = "{% for m in messages %}{% if m.role in ['user', 'assistant'] %}[{{ m.role }}]{{ m.content }}{% endif %}{% endfor %}";
        assert!(!writes(drops), "the result is not in the prompt");
    }

    #[test]
    fn chatml_fallback() {
        let t = ChatTemplate::new(fallback(false).0.into(), String::new(), String::new()).unwrap();
        let out = t
            .render(&[json!({"role": "user", "content": "x"})], None)
            .unwrap();
        assert_eq!(
            out,
            "<|im_start|>user\nx<|im_end|>\n<|im_start|>assistant\n"
        );
    }
}
