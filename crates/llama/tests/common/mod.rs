//! The default model for the real-model tests: `scripts/fetch-model.sh` puts it in the model
//! cache (`TANDEM_TEST_MODEL` names another), loaded once per test binary.

use std::path::PathBuf;
use std::sync::OnceLock;

use tandem_llama::Model;

pub fn model_path() -> PathBuf {
    std::env::var_os("TANDEM_TEST_MODEL")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").expect("HOME");
            PathBuf::from(home).join(".cache/tandem/models/SmolLM2-135M-Instruct.Q4_1.gguf")
        })
}

#[allow(dead_code)] // each test binary compiles this module; not every one loads the model
pub fn model() -> Model {
    static M: OnceLock<Model> = OnceLock::new();
    *M.get_or_init(|| Model::load(&model_path(), 0).expect("run scripts/fetch-model.sh first"))
}
