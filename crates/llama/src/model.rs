//! A loaded GGUF model and its tokenizer. The model is loaded once and lives for the whole
//! process (leaked), so tokenization can run on any thread while the engine thread decodes.

use std::path::Path;
use std::sync::OnceLock;

use llama_cpp_2::llama_backend::LlamaBackend;
use llama_cpp_2::model::params::LlamaModelParams;
use llama_cpp_2::model::LlamaModel;
use llama_cpp_2::token::LlamaToken;
use tandem_engine::Token;

#[derive(Debug, thiserror::Error)]
pub enum ModelError {
    #[error("model file not found: {0}")]
    NotFound(String),
    #[error("llama.cpp could not load {path}: {msg}")]
    Load { path: String, msg: String },
    #[error("llama.cpp backend: {0}")]
    Backend(String),
    #[error("llama.cpp context: {0}")]
    Context(String),
}

/// llama.cpp's backend may be initialised once per process.
pub(crate) fn backend() -> Result<&'static LlamaBackend, ModelError> {
    static BACKEND: OnceLock<Result<LlamaBackend, String>> = OnceLock::new();
    let b = BACKEND.get_or_init(|| {
        let mut b = LlamaBackend::init().map_err(|e| e.to_string())?;
        b.void_logs();
        Ok(b)
    });
    b.as_ref().map_err(|e| ModelError::Backend(e.clone()))
}

#[derive(Clone, Copy)]
pub struct Model {
    pub(crate) inner: &'static LlamaModel,
}

impl Model {
    /// Loads a GGUF file (CPU; `gpu_layers` > 0 offloads layers when built with `cuda`).
    pub fn load(path: &Path, gpu_layers: u32) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::NotFound(path.display().to_string()));
        }
        let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
        let model = LlamaModel::load_from_file(backend()?, path, &params).map_err(|e| {
            ModelError::Load {
                path: path.display().to_string(),
                msg: e.to_string(),
            }
        })?;
        Ok(Self {
            inner: Box::leak(Box::new(model)),
        })
    }

    /// Tokenizes text. `add_special` adds BOS where the model wants one; special-token text
    /// (e.g. `<|im_start|>`) is parsed as the special token when `parse_special`.
    pub fn tokenize(&self, text: &str, add_special: bool, parse_special: bool) -> Vec<Token> {
        self.tokenize_bytes_with(text.as_bytes(), add_special, parse_special)
    }

    /// Raw bytes (not necessarily UTF-8, such as a grammar's forced text cut mid-character)
    /// as the model's tokenizer splits them: no BOS, no control-token parsing.
    pub fn tokenize_bytes(&self, bytes: &[u8]) -> Vec<Token> {
        self.tokenize_bytes_with(bytes, false, false)
    }

    fn tokenize_bytes_with(&self, bytes: &[u8], add_special: bool, parse: bool) -> Vec<Token> {
        let v = self.inner.vocab();
        v.tokenize(bytes, add_special, parse)
            .into_iter()
            .map(|t| t.0)
            .collect()
    }

    /// The bytes a token stands for (special tokens render as nothing).
    pub fn piece(&self, token: Token) -> Vec<u8> {
        self.inner
            .vocab()
            .token_to_piece(LlamaToken(token), false, None)
    }

    /// The bytes of a token, a special token's written out (`<|im_end|>`).
    pub fn special_piece(&self, token: Token) -> Vec<u8> {
        self.inner
            .vocab()
            .token_to_piece(LlamaToken(token), true, None)
    }

    /// The text of a token sequence (bytes joined, then decoded: a character split across
    /// tokens comes out whole); `special` writes special tokens out.
    pub fn detokenize(&self, tokens: &[Token], special: bool) -> String {
        let piece = |&t: &Token| {
            if special {
                self.special_piece(t)
            } else {
                self.piece(t)
            }
        };
        let bytes: Vec<u8> = tokens.iter().flat_map(piece).collect();
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The text of a token including special tokens (for templates' `bos_token`/`eos_token`).
    pub fn special_text(&self, token: Token) -> String {
        String::from_utf8_lossy(&self.special_piece(token)).into_owned()
    }

    /// Every token's bytes, by id, for grammar engines: a special token (which prints as
    /// nothing) is 0xFF followed by its text, so grammars never take it for text.
    pub fn token_words(&self) -> Vec<Vec<u8>> {
        (0..self.n_vocab() as Token)
            .map(|t| {
                let piece = self.piece(t);
                if !piece.is_empty() {
                    return piece;
                }
                let mut w = vec![0xFF];
                match self.special_text(t) {
                    s if s.is_empty() => w.extend(format!("<[{t}]>").bytes()),
                    s => w.extend(s.bytes()),
                }
                w
            })
            .collect()
    }

    /// The end-of-generation tokens.
    pub fn eog_tokens(&self) -> Vec<Token> {
        (0..self.n_vocab() as Token)
            .filter(|&t| self.is_eog(t))
            .collect()
    }

    pub fn is_eog(&self, token: Token) -> bool {
        self.inner.vocab().is_eog(LlamaToken(token))
    }

    pub fn bos(&self) -> Token {
        self.inner.vocab().bos().0
    }

    pub fn eos(&self) -> Token {
        self.inner.vocab().eos().0
    }

    pub fn add_bos(&self) -> bool {
        self.inner.vocab().should_add_bos()
    }

    pub fn n_vocab(&self) -> usize {
        self.inner.n_vocab() as usize
    }

    /// The model's hidden size: the length of its embeddings.
    pub fn n_embd(&self) -> usize {
        self.inner.n_embd() as usize
    }

    pub fn n_ctx_train(&self) -> usize {
        self.inner.n_ctx_train() as usize
    }

    /// The GGUF's Jinja chat template (`tokenizer.chat_template`), if it has one.
    pub fn chat_template(&self) -> Option<String> {
        let t = self.inner.chat_template(None).ok()?;
        t.to_string().ok()
    }
}
