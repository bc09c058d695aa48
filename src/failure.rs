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
    /// Building an image from its recipe (`[images.build]`) failed: a Dockerfile step, the
    /// source export, or the engine.
    BuildFailed,
    /// Pushing a built image to its registry failed (the image is still measured).
    PushFailed,
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
    /// A cluster job ran past its time limit (Slurm `TIMEOUT`).
    TimeLimit,
    /// A cluster job was preempted (Slurm `PREEMPTED`).
    Preempted,
    /// A cluster job lost its node (Slurm `NODE_FAIL`, a node set down, a vanished job).
    NodeFailure,
    /// The session could not get its GPUs: it needs more than the host (or pool) has, or none
    /// read idle within `resources.gpu_idle_wait` (other processes hold them).
    NoGpu,
    /// Anything else (a bug, a full disk, a Docker daemon error).
    Internal,
}

impl FailureClass {
    pub fn as_str(self) -> &'static str {
        match self {
            FailureClass::ImageMissing => "image_missing",
            FailureClass::PullFailed => "pull_failed",
            FailureClass::PatchFailed => "patch_failed",
            FailureClass::BuildFailed => "build_failed",
            FailureClass::PushFailed => "push_failed",
            FailureClass::NeedsRebuild => "needs_rebuild",
            FailureClass::Crashed => "crashed",
            FailureClass::StartupTimeout => "startup_timeout",
            FailureClass::Timeout => "timeout",
            FailureClass::AllRequestsFailed => "all_requests_failed",
            FailureClass::Interrupted => "interrupted",
            FailureClass::TimeLimit => "time_limit",
            FailureClass::Preempted => "preempted",
            FailureClass::NodeFailure => "node_failure",
            FailureClass::NoGpu => "no_gpu",
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

/// Log patterns per cause, most specific cause first: a CUDA OOM often drags an NCCL error
/// after it, so OOM must win.
const CAUSE_PATTERNS: &[(CrashCause, &[&str])] = &[
    (
        CrashCause::CudaOutOfMemory,
        &[
            "CUDA out of memory",
            "OutOfMemoryError",
            "CUDA error: out of memory",
            // vLLM: the weights fit, the KV cache does not.
            "No available memory for the cache blocks",
            "larger than the maximum number of tokens that can be stored in KV cache",
        ],
    ),
    (
        CrashCause::Nccl,
        &[
            "NCCL error",
            "ncclSystemError",
            "ncclInternalError",
            "NCCL WARN",
        ],
    ),
    (
        CrashCause::AddressInUse,
        &[
            "Address already in use",
            "address already in use",
            "[Errno 98]",
        ],
    ),
    (
        CrashCause::ImportError,
        &["ModuleNotFoundError", "ImportError", "undefined symbol"],
    ),
    (
        CrashCause::UnsupportedModel,
        &[
            "Unknown RoPE scaling type",
            "is not supported",
            "not supported for now",
        ],
    ),
];

/// Words that make a log line worth showing when no cause pattern matched.
const ERRORISH: &[&str] = &[
    "Error",
    "error",
    "Exception",
    "FATAL",
    "Fatal",
    "panicked",
    "Traceback",
];

impl CrashCause {
    /// Classifies a crash from the tail of the server's log (most specific pattern first).
    pub fn from_log(exit_code: Option<i64>, log_tail: &str) -> CrashCause {
        for (cause, patterns) in CAUSE_PATTERNS {
            if patterns.iter().any(|p| log_tail.contains(p)) {
                return *cause;
            }
        }
        if matches!(exit_code, Some(137) | Some(-9)) {
            CrashCause::Killed
        } else {
            CrashCause::Unknown
        }
    }

    /// The most telling line of a log tail for the failure breakdown: the last line showing the
    /// cause [`CrashCause::from_log`] found, else the last line that looks like an error, else
    /// the last non-empty line. Trimmed and cut to 300 characters.
    pub fn sample_line(log_tail: &str) -> Option<String> {
        let lines: Vec<&str> = log_tail
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        let last_matching = |needles: &[&str]| {
            lines
                .iter()
                .rev()
                .find(|l| needles.iter().any(|n| l.contains(n)))
                .copied()
        };
        let cause_line = CAUSE_PATTERNS
            .iter()
            .find(|(_, patterns)| patterns.iter().any(|p| log_tail.contains(p)))
            .and_then(|(_, patterns)| last_matching(patterns));
        let line = cause_line
            .or_else(|| last_matching(ERRORISH))
            .or_else(|| lines.last().copied())?;
        Some(line.chars().take(300).collect())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn oom_wins_over_the_nccl_error_that_follows_it() {
        let log = "INFO loading weights\n\
                   torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n\
                   NCCL error: unhandled system error\n";
        assert_eq!(
            CrashCause::from_log(Some(1), log),
            CrashCause::CudaOutOfMemory
        );
        assert_eq!(
            CrashCause::sample_line(log).as_deref(),
            Some("torch.OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB")
        );
    }

    #[test]
    fn vllm_kv_cache_shortfall_counts_as_out_of_memory() {
        let log = "ValueError: No available memory for the cache blocks. Try increasing \
                   `gpu_memory_utilization` when initializing the engine.";
        assert_eq!(
            CrashCause::from_log(Some(1), log),
            CrashCause::CudaOutOfMemory
        );
    }

    #[test]
    fn causes_are_read_from_their_typical_lines() {
        let cases = [
            (
                "ModuleNotFoundError: No module named 'vllm._C'",
                CrashCause::ImportError,
            ),
            (
                "ImportError: /x/_C.abi3.so: undefined symbol: _ZN3c10",
                CrashCause::ImportError,
            ),
            (
                "OSError: [Errno 98] error while attempting to bind",
                CrashCause::AddressInUse,
            ),
            (
                "RuntimeError: NCCL error in: ../nccl.cpp:1, ncclSystemError",
                CrashCause::Nccl,
            ),
            (
                "ValueError: Unknown RoPE scaling type yarn2",
                CrashCause::UnsupportedModel,
            ),
        ];
        for (log, cause) in cases {
            assert_eq!(CrashCause::from_log(Some(1), log), cause, "{log}");
        }
    }

    #[test]
    fn exit_code_decides_only_when_the_log_says_nothing() {
        assert_eq!(
            CrashCause::from_log(Some(137), "INFO serving"),
            CrashCause::Killed
        );
        assert_eq!(CrashCause::from_log(Some(-9), ""), CrashCause::Killed);
        assert_eq!(
            CrashCause::from_log(Some(1), "INFO serving"),
            CrashCause::Unknown
        );
        assert_eq!(
            CrashCause::from_log(Some(137), "CUDA out of memory"),
            CrashCause::CudaOutOfMemory
        );
    }

    #[test]
    fn sample_line_falls_back_to_errors_then_to_the_last_line() {
        let log = "INFO a\nRuntimeError: engine died\nINFO shutting down\n\n";
        assert_eq!(
            CrashCause::sample_line(log).as_deref(),
            Some("RuntimeError: engine died")
        );
        assert_eq!(
            CrashCause::sample_line("INFO a\n  INFO b  \n").as_deref(),
            Some("INFO b")
        );
        assert_eq!(CrashCause::sample_line(" \n"), None);
        let long = "Error ".repeat(100);
        assert_eq!(
            CrashCause::sample_line(&long).map(|l| l.chars().count()),
            Some(300)
        );
    }
}
