//! llama.cpp's quantizer: writes a GGUF with its weights in another type. tandem's tests use
//! it to make models with other kernels out of the default one (no model is downloaded at
//! test time); `examples/requantize.rs` is its command line.

use std::ffi::CString;
use std::path::Path;

use crate::model::{backend, ModelError};

/// Weight types the quantizer can write (llama.cpp's file types of the same names).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightType {
    Q4_0,
    Q4KM,
    Q5KM,
    Q6K,
    Q8_0,
}

impl WeightType {
    /// By llama-quantize's name (`q4_0`, `q4_k_m`, `q5_k_m`, `q6_k`, `q8_0`).
    pub fn parse(name: &str) -> Option<Self> {
        let t = match name.to_ascii_lowercase().as_str() {
            "q4_0" => Self::Q4_0,
            "q4_k_m" => Self::Q4KM,
            "q5_k_m" => Self::Q5KM,
            "q6_k" => Self::Q6K,
            "q8_0" => Self::Q8_0,
            _ => return None,
        };
        Some(t)
    }

    fn ftype(self) -> llama_cpp_sys_2::llama_ftype {
        match self {
            Self::Q4_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_0,
            Self::Q4KM => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q4_K_M,
            Self::Q5KM => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q5_K_M,
            Self::Q6K => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q6_K,
            Self::Q8_0 => llama_cpp_sys_2::LLAMA_FTYPE_MOSTLY_Q8_0,
        }
    }
}

/// Writes `src`'s model to `dst` with its weights in `to` (an already quantized source is
/// quantized again, as llama-quantize's `--allow-requantize` does: a test model, not a good
/// one). Tensors whose rows do not fit the type's blocks get llama.cpp's fallback type.
pub fn requantize(
    src: &Path,
    dst: &Path,
    to: WeightType,
    threads: usize,
) -> Result<(), ModelError> {
    backend()?;
    let c = |p: &Path| {
        let s = p
            .to_str()
            .ok_or_else(|| ModelError::NotFound(p.display().to_string()))?;
        CString::new(s).map_err(|_| ModelError::NotFound(p.display().to_string()))
    };
    let (from, into) = (c(src)?, c(dst)?);
    // SAFETY: both paths are NUL-terminated and outlive the call; the parameters are
    // llama.cpp's defaults with three plain fields changed.
    let rc = unsafe {
        let mut p = llama_cpp_sys_2::llama_model_quantize_default_params();
        p.ftype = to.ftype();
        p.allow_requantize = true;
        p.nthread = threads as i32;
        llama_cpp_sys_2::llama_model_quantize(from.as_ptr(), into.as_ptr(), &p)
    };
    if rc != 0 {
        return Err(ModelError::Load {
            path: src.display().to_string(),
            msg: format!("llama_model_quantize to {to:?} failed ({rc})"),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::WeightType;

    #[test]
    fn names_are_llama_quantize_s() {
        assert_eq!(WeightType::parse("Q6_K"), Some(WeightType::Q6K));
        assert_eq!(WeightType::parse("q4_k_m"), Some(WeightType::Q4KM));
        assert_eq!(WeightType::parse("q4_k"), None);
    }
}
