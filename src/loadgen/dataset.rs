//! Datasets: random prompts of exact token lengths from the model's tokenizer.
use std::path::{Path, PathBuf};

/// `tokenizer.json` itself, or the one inside a model directory.
pub fn resolve_tokenizer_file(path: &Path) -> Option<PathBuf> {
    if path.is_file() {
        return Some(path.to_path_buf());
    }
    let inside = path.join("tokenizer.json");
    inside.is_file().then_some(inside)
}
