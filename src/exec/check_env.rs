//! `plan --check-env`: is the environment able to run this plan?
use crate::manifest::Campaign;
use crate::pipeline::expand::Dag;

/// Prints one line per check; returns whether all passed.
pub async fn check(_campaign: &Campaign, _dag: &Dag) -> bool {
    eprintln!("check-env: not implemented yet");
    false
}
