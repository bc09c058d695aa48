//! The two-node Slurm test cluster (`scripts/slurm-cluster.sh start`). Outside CI a missing
//! cluster skips the test with a message; in CI (`CI=true`) it fails it.
use std::path::PathBuf;
use std::process::Command;

/// `$SLURM_CONF`, else the cluster script's default.
pub fn slurm_conf() -> PathBuf {
    std::env::var_os("SLURM_CONF")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/tmp/isobench-slurm/slurm.conf"))
}

/// A Slurm client command pointed at the test cluster.
pub fn slurm_cmd(program: &str) -> Command {
    let mut c = Command::new(program);
    c.env("SLURM_CONF", slurm_conf());
    c
}

/// The `SLURM_CONF` to give isobench; `None` (after a message) when the cluster does not
/// answer and `CI` is not `true`.
pub fn slurm_or_skip(test: &str) -> Option<PathBuf> {
    let conf = slurm_conf();
    let up = conf.exists()
        && slurm_cmd("sinfo")
            .args(["-h", "-N", "-o", "%N %t"])
            .output()
            .is_ok_and(|o| {
                let text = String::from_utf8_lossy(&o.stdout);
                o.status.success() && text.contains("n1") && text.contains("n2")
            });
    if up {
        return Some(conf);
    }
    let why = format!(
        "no Slurm test cluster answers (SLURM_CONF={})",
        conf.display()
    );
    if super::docker_env::in_ci() {
        panic!("{test}: {why} (CI=true: Slurm tests must run; see scripts/slurm-cluster.sh)");
    }
    eprintln!("SKIPPED {test}: {why}; run scripts/slurm-cluster.sh start to enable Slurm tests");
    None
}
