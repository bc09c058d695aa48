//! The shared vocabulary of what went wrong: every failed step carries a [`Failure`], the
//! journal stores it, the report counts it by [`FailureClass`].
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailureClass {
    /// The image does not exist locally or in its registry.
    ImageMissing,
    /// The pull failed for another reason (network, auth, disk).
    PullFailed,
    /// A patch did not apply cleanly.
    PatchFailed,
    /// A patch touches compiled sources and no rebuild command is configured.
    NeedsRebuild,
    /// The server exited (see [`CrashCause`]).
    Crashed,
    /// The server never became ready within its timeout.
    StartupTimeout,
    /// A measure step ran past its timeout.
    Timeout,
    /// The server answered, but no request succeeded.
    AllRequestsFailed,
    /// isobench was interrupted (Ctrl-C, SIGTERM) while the step ran.
    Interrupted,
    /// Anything else (a bug, a full disk, a Docker daemon error).
    Internal,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::ImageMissing => "image_missing",
            FailureClass::PullFailed => "pull_failed",
            FailureClass::PatchFailed => "patch_failed",
            FailureClass::NeedsRebuild => "needs_rebuild",
            FailureClass::Crashed => "crashed",
            FailureClass::StartupTimeout => "startup_timeout",
            FailureClass::Timeout => "timeout",
            FailureClass::AllRequestsFailed => "all_requests_failed",
            FailureClass::Interrupted => "interrupted",
            FailureClass::Internal => "internal",
        }
    }
}

impl std::fmt::Display for FailureClass {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a server crashed, read from its exit status and log tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CrashCause {
    CudaOutOfMemory,
    ImportError,
    Nccl,
    AddressInUse,
    UnsupportedModel,
    Killed,
    Unknown,
}

impl CrashCause {
    /// Classifies a crash from the tail of the server's log (most specific pattern first).
    pub fn from_log(exit_code: Option<i64>, log_tail: &str) -> CrashCause {
        let has = |needle: &str| log_tail.contains(needle);
        if has("CUDA out of memory") || has("OutOfMemoryError") || has("CUDA error: out of memory")
        {
            CrashCause::CudaOutOfMemory
        } else if has("NCCL error") || has("ncclSystemError") || has("NCCL WARN") {
            CrashCause::Nccl
        } else if has("Address already in use") || has("address already in use") {
            CrashCause::AddressInUse
        } else if has("ModuleNotFoundError") || has("ImportError") {
            CrashCause::ImportError
        } else if has("Unknown RoPE scaling type")
            || has("is not supported")
            || has("not supported for now")
        {
            CrashCause::UnsupportedModel
        } else if matches!(exit_code, Some(137) | Some(-9)) {
            CrashCause::Killed
        } else {
            CrashCause::Unknown
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CrashCause::CudaOutOfMemory => "cuda_out_of_memory",
            CrashCause::ImportError => "import_error",
            CrashCause::Nccl => "nccl",
            CrashCause::AddressInUse => "address_in_use",
            CrashCause::UnsupportedModel => "unsupported_model",
            CrashCause::Killed => "killed",
            CrashCause::Unknown => "unknown",
        }
    }
}

/// A classified failure of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failure {
    pub class: FailureClass,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cause: Option<CrashCause>,
    /// One line for humans.
    pub message: String,
    /// The most telling line of the log, for the report's failure breakdown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sample_log_line: Option<String>,
    /// Where the full log is (relative to the state directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_path: Option<String>,
}

impl Failure {
    pub fn new(class: FailureClass, message: impl Into<String>) -> Failure {
        Failure {
            class,
            cause: None,
            message: message.into(),
            sample_log_line: None,
            log_path: None,
        }
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.cause {
            Some(cause) => write!(f, "{} ({}): {}", self.class, cause.as_str(), self.message),
            None => write!(f, "{}: {}", self.class, self.message),
        }
    }
}

impl std::error::Error for Failure {}
