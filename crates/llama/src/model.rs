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

/// Whether this build of llama.cpp can offload layers to a GPU (a `cuda` build).
pub fn gpu_offload_supported() -> bool {
    backend().is_ok_and(|b| b.supports_gpu_offload())
}

/// How llama.cpp lays out a model's weights in CPU memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Weights {
    /// llama.cpp's default: weights of some types (Q4_0, Q4_K, IQ4_NL, ...) are repacked into
    /// interleaved rows for faster matmuls. The repacked Q4_K matmul runs a batch's last
    /// `rows % 4` rows one by one, so its results depend on how a prompt is cut into batches.
    Repacked,
    /// Weights stay as the file stores them, computed by ggml's plain kernels: what bit-exact
    /// mode (`--prefix-reuse exact`) needs, at some prefill speed on repackable types.
    AsStored,
}

/// Loads a model without llama.cpp's extra CPU buffer types (`use_extra_bufts = false`),
/// so no weight is repacked. llama-cpp-2 (=0.1.160, pinned in the workspace) exposes no
/// setter for that parameter, and a tensor override to the CPU buffer does not help (the
/// loader picks among the extra buffer types again for such overrides), so this calls
/// llama.cpp directly and hands the model to llama-cpp-2's owner type, which frees it.
fn load_as_stored(path: &Path, gpu_layers: u32) -> Result<LlamaModel, String> {
    backend().map_err(|e| e.to_string())?;
    let c_path = path
        .to_str()
        .and_then(|p| std::ffi::CString::new(p).ok())
        .ok_or("the path is not valid UTF-8 without NUL bytes")?;
    // SAFETY: plain C calls; the params struct is llama.cpp's own default, two fields set.
    let raw = unsafe {
        let mut params = llama_cpp_sys_2::llama_model_default_params();
        params.n_gpu_layers = i32::try_from(gpu_layers).unwrap_or(i32::MAX);
        params.use_extra_bufts = false;
        llama_cpp_sys_2::llama_model_load_from_file(c_path.as_ptr(), params)
    };
    let raw = std::ptr::NonNull::new(raw).ok_or("llama.cpp returned no model")?;
    // SAFETY: `LlamaModel` is `#[repr(transparent)]` over `Ptr<llama_model>`, itself
    // `#[repr(transparent)]` over `NonNull<llama_model>` (the pinned version's source), and
    // `transmute` checks the sizes; the model is ours, as from `LlamaModel::load_from_file`.
    Ok(unsafe {
        std::mem::transmute::<std::ptr::NonNull<llama_cpp_sys_2::llama_model>, LlamaModel>(raw)
    })
}

#[derive(Clone, Copy)]
pub struct Model {
    pub(crate) inner: &'static LlamaModel,
}

impl Model {
    /// Loads a GGUF file (CPU; `gpu_layers` > 0 offloads layers when built with `cuda`), with
    /// llama.cpp free to repack weights for its faster CPU kernels.
    pub fn load(path: &Path, gpu_layers: u32) -> Result<Self, ModelError> {
        Self::load_with(path, gpu_layers, Weights::Repacked)
    }

    /// Loads a GGUF file with the weight layout given: see [`Weights`].
    pub fn load_with(path: &Path, gpu_layers: u32, weights: Weights) -> Result<Self, ModelError> {
        if !path.is_file() {
            return Err(ModelError::NotFound(path.display().to_string()));
        }
        let load_error = |msg: String| ModelError::Load {
            path: path.display().to_string(),
            msg,
        };
        let model = match weights {
            Weights::Repacked => {
                let params = LlamaModelParams::default().with_n_gpu_layers(gpu_layers);
                LlamaModel::load_from_file(backend()?, path, &params)
                    .map_err(|e| load_error(e.to_string()))?
            }
            Weights::AsStored => load_as_stored(path, gpu_layers).map_err(load_error)?,
        };
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
