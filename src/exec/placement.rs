//! Balanced placement: which devices each (commit, arm, trial) session runs on.
//!
//! A verdict must never rest on which card an arm happened to get. Devices are cut into
//! `devices / width` groups; arm `a` of commit `c` in trial `t` gets group `(a + t − 1 + c) mod G`, a
//! Latin square over trials × groups: within one trial the arms take different groups (so a
//! paired round measures on different cards at once), and across trials every arm visits every
//! group in turn, as evenly as the trial count allows (exactly, when it is a multiple of G).
//! With more arms than groups, a round is measured in parts of G arms (`part`, for
//! `isolate = "paired"`); who shares a part rotates with the trial, and each arm's groups even
//! out over `arms × G` trials.
//!
//! Pure over (sessions, devices), so a node-level placer (Slurm) can reuse it with nodes as
//! "devices".

/// One session to place.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// The unit whose arms are compared (a commit).
    pub group: usize,
    /// The arm's rank among its group's arms (0-based, manifest order).
    pub arm: usize,
    /// How many arms the group has.
    pub arms: usize,
    /// Trial number, 1-based.
    pub trial: u32,
    /// Devices one session needs (the server's `gpus`).
    pub width: usize,
}

/// Device positions (indices into the device list) for each slot, in slot order; `None` where
/// a slot needs more devices than exist, and an empty list for a slot that needs none.
pub fn place(slots: &[Slot], devices: usize) -> Vec<Option<Vec<usize>>> {
    slots
        .iter()
        .map(|s| {
            if s.width == 0 {
                return Some(Vec::new());
            }
            let groups = devices / s.width;
            if groups == 0 {
                return None;
            }
            // The commit's index rotates the square, so that with an odd trial count the extra
            // trial of each arm lands on a different GPU from one commit to the next.
            let g = if s.arms <= groups {
                (s.arm + s.trial.saturating_sub(1) as usize + s.group) % groups
            } else {
                // More arms than groups: consecutive rotated ranks share a round's part (see
                // `part`), so they take consecutive groups; a shift after every full rotation
                // evens out each arm's GPUs over `arms × groups` trials.
                let shift = s.trial.saturating_sub(1) as usize / s.arms;
                (rotated(s) % groups + shift) % groups
            };
            Some((g * s.width..(g + 1) * s.width).collect())
        })
        .collect()
}

/// The arm's rank in its trial's rotated order: who shares a part of the round changes from
/// trial to trial, so no arm is always the one measured alone.
fn rotated(s: &Slot) -> usize {
    (s.arm + s.trial.saturating_sub(1) as usize + s.group) % s.arms.max(1)
}

/// Which part of its round a slot is measured in when at most `at_once` sessions run together
/// (`isolate = "paired"`): 0 when all arms fit on the devices at once; otherwise consecutive
/// rotated ranks, which `place` puts on different devices.
pub fn part(s: &Slot, devices: usize, at_once: usize) -> usize {
    rotated(s) / groups(devices, s.width).min(at_once).max(1)
}

/// How many device groups sessions of `width` devices have: arms of one trial beyond this
/// many cannot be measured at the same moment.
pub fn groups(devices: usize, width: usize) -> usize {
    devices.checked_div(width).unwrap_or(usize::MAX).max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{BTreeMap, BTreeSet};

    fn slots(commits: usize, arms: usize, trials: u32, width: usize) -> Vec<Slot> {
        let mut out = Vec::new();
        for group in 0..commits {
            for trial in 1..=trials {
                for arm in 0..arms {
                    out.push(Slot {
                        group,
                        arm,
                        arms,
                        trial,
                        width,
                    });
                }
            }
        }
        out
    }

    /// Uses of each device per (group, arm).
    fn usage(s: &[Slot], placed: &[Option<Vec<usize>>]) -> BTreeMap<(usize, usize), Vec<usize>> {
        let mut m: BTreeMap<(usize, usize), Vec<usize>> = BTreeMap::new();
        for (slot, devs) in s.iter().zip(placed) {
            let e = m.entry((slot.group, slot.arm)).or_default();
            for &d in devs.as_ref().unwrap() {
                if e.len() <= d {
                    e.resize(d + 1, 0);
                }
                e[d] += 1;
            }
        }
        m
    }

    #[test]
    fn every_arm_uses_every_device_evenly() {
        for (arms, trials, devices) in [(2, 4, 2), (3, 6, 2), (3, 3, 3), (2, 5, 2), (4, 8, 4)] {
            let s = slots(2, arms, trials, 1);
            let placed = place(&s, devices);
            for ((_, arm), uses) in usage(&s, &placed) {
                let (lo, hi) = (
                    uses.iter().copied().min().unwrap(),
                    uses.iter().copied().max().unwrap(),
                );
                assert_eq!(uses.len(), devices, "arm {arm} never used some device");
                assert!(hi - lo <= 1, "arm {arm}: uses per device {uses:?}");
            }
        }
    }

    #[test]
    fn arms_of_one_trial_take_different_devices_when_they_fit() {
        let s = slots(3, 2, 5, 1);
        let placed = place(&s, 2);
        for pair in s.chunks(2).zip(placed.chunks(2)) {
            assert_ne!(pair.1[0], pair.1[1], "{:?}", pair.0);
        }
    }

    #[test]
    fn with_more_arms_than_gpus_no_arm_is_always_measured_alone() {
        // 3 arms on 2 GPUs, 3 trials: each round has a part of two arms and one alone.
        let s = slots(2, 3, 3, 1);
        let placed = place(&s, 2);
        let mut alone = BTreeMap::new();
        for (round, slots) in s.chunks(3).enumerate() {
            let parts: Vec<usize> = slots.iter().map(|x| part(x, 2, usize::MAX)).collect();
            for p in 0..2 {
                let members: Vec<usize> = (0..3).filter(|&i| parts[i] == p).collect();
                let devs: BTreeSet<_> = members.iter().map(|&i| &placed[round * 3 + i]).collect();
                assert_eq!(
                    devs.len(),
                    members.len(),
                    "round {round}: partners share a GPU"
                );
                if members.len() == 1 {
                    *alone.entry((slots[0].group, members[0])).or_insert(0) += 1;
                }
            }
        }
        // Per commit, every arm is the lone one exactly once in 3 trials.
        assert_eq!(alone.len(), 6, "{alone:?}");
        assert!(alone.values().all(|&n| n == 1), "{alone:?}");
        // max_parallel 1: every session is a part of its own.
        let p: BTreeSet<usize> = s[..3].iter().map(|x| part(x, 2, 1)).collect();
        assert_eq!(p.len(), 3);
    }

    #[test]
    fn wide_servers_take_whole_groups() {
        let s = slots(1, 2, 2, 2);
        let placed = place(&s, 4);
        assert_eq!(placed[0], Some(vec![0, 1]));
        assert_eq!(placed[1], Some(vec![2, 3]));
        assert_eq!(placed[2], Some(vec![2, 3]));
        assert_eq!(placed[3], Some(vec![0, 1]));
        assert_eq!(place(&s, 1), vec![None; 4]);
        let none = slots(1, 1, 1, 0);
        assert_eq!(place(&none, 0), vec![Some(vec![])]);
    }
}
