//! `image.patch`: an agent's patch over a base arm's image or installation (being built on the
//! `patch` branch; this placeholder keeps the executor's call site compiling).
use crate::failure::{Failure, FailureClass};
use crate::manifest::model::PatchSpec;
use crate::runtime::{ImageInfo, Runtime, ServerSource};
use std::path::{Path, PathBuf};

pub enum PatchedSource {
    Image { reference: String, id: String },
    Tree { root: PathBuf, pythonpath: PathBuf },
}

pub struct PatchOutcome {
    pub source: PatchedSource,
    pub reused: bool,
    pub fuzz_used: Option<u32>,
    pub files: Vec<String>,
}

pub async fn build_patched(
    _runtime: &Runtime,
    _spec: &PatchSpec,
    _base: &ImageInfo,
    _base_source: &ServerSource,
    _cache_dir: &Path,
    _log: &Path,
) -> Result<PatchOutcome, Failure> {
    Err(Failure::new(
        FailureClass::Internal,
        "image.patch is not available in this build",
    ))
}
