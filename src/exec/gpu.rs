//! GPU inventory (NVML, else `nvidia-smi`, else declared) and the pool the scheduler hands GPUs
//! out from. A GPU is handed out only when it reads idle (memory in use under a threshold),
//! because a server that just stopped can hold its memory for seconds.

use crate::manifest::model::GpuInventory;
use crate::state::{GpuInfo, Inventory};
use std::collections::BTreeSet;

/// Reads live GPU memory use.
pub enum Probe {
    Nvml(Box<nvml_wrapper::Nvml>),
    Smi,
}

impl std::fmt::Debug for Probe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Probe::Nvml(_) => "NVML",
            Probe::Smi => "nvidia-smi",
        })
    }
}

impl Probe {
    /// Memory in use on GPU `index`, in MiB.
    pub fn memory_used_mib(&self, index: u32) -> Option<u64> {
        match self {
            Probe::Nvml(nvml) => nvml
                .device_by_index(index)
                .ok()?
                .memory_info()
                .ok()
                .map(|m| m.used / (1 << 20)),
            Probe::Smi => smi_query()
                .ok()?
                .into_iter()
                .find(|g| g.0.index == index)
                .map(|g| g.1),
        }
    }

    /// Compute processes on each GPU (`nvidia-smi --query-compute-apps`), as evidence of pinning.
    pub fn compute_apps(&self) -> Vec<(String, u32, u64)> {
        let Ok(out) = std::process::Command::new("nvidia-smi")
            .args([
                "--query-compute-apps=gpu_uuid,pid,used_memory",
                "--format=csv,noheader,nounits",
            ])
            .output()
        else {
            return Vec::new();
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split(',').map(str::trim).collect();
                Some((
                    f.first()?.to_string(),
                    f.get(1)?.parse().ok()?,
                    f.get(2)?.parse().ok()?,
                ))
            })
            .collect()
    }
}

/// `nvidia-smi` inventory: (info, memory used MiB) per GPU.
fn smi_query() -> Result<Vec<(GpuInfo, u64)>, String> {
    let out = std::process::Command::new("nvidia-smi")
        .args([
            "--query-gpu=index,uuid,name,memory.used,memory.total",
            "--format=csv,noheader,nounits",
        ])
        .output()
        .map_err(|e| format!("nvidia-smi: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "nvidia-smi exited with {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    let mut gpus = Vec::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 5 {
            continue;
        }
        let (Ok(index), Ok(used), Ok(total)) = (f[0].parse(), f[3].parse(), f[4].parse()) else {
            continue;
        };
        gpus.push((
            GpuInfo {
                index,
                uuid: f[1].to_string(),
                name: f[2].to_string(),
                memory_total_mib: total,
            },
            used,
        ));
    }
    Ok(gpus)
}

fn nvml_inventory() -> Result<(Vec<GpuInfo>, nvml_wrapper::Nvml), String> {
    let nvml = nvml_wrapper::Nvml::init().map_err(|e| format!("NVML: {e}"))?;
    let count = nvml.device_count().map_err(|e| format!("NVML: {e}"))?;
    let mut gpus = Vec::new();
    for index in 0..count {
        let d = nvml
            .device_by_index(index)
            .map_err(|e| format!("NVML: {e}"))?;
        gpus.push(GpuInfo {
            index,
            name: d.name().unwrap_or_default(),
            uuid: d.uuid().unwrap_or_default(),
            memory_total_mib: d.memory_info().map(|m| m.total / (1 << 20)).unwrap_or(0),
        });
    }
    Ok((gpus, nvml))
}

/// Finds the GPUs: declared ones (`--gpus`, then the manifest) or the host's (NVML, then
/// `nvidia-smi`). A probe for idle checks is returned whenever NVML or `nvidia-smi` works.
pub fn detect(
    setting: &GpuInventory,
    cli: Option<&[u32]>,
    kind: Option<&str>,
) -> Result<(Inventory, Option<Probe>), String> {
    let live = nvml_inventory()
        .map(|(g, n)| (g, Probe::Nvml(Box::new(n))))
        .or_else(|nvml_err| match smi_query() {
            Ok(g) => Ok((g.into_iter().map(|(i, _)| i).collect(), Probe::Smi)),
            Err(smi_err) => Err(format!("{nvml_err}; {smi_err}")),
        });
    let declared: Option<Vec<u32>> = cli.map(<[u32]>::to_vec).or(match setting {
        GpuInventory::Declared(list) => Some(list.clone()),
        GpuInventory::Auto => None,
    });
    match (declared, live) {
        (Some(list), live) => {
            let (found, probe) = match live {
                Ok((found, probe)) => (found, Some(probe)),
                Err(_) => (Vec::new(), None),
            };
            let gpus = list
                .iter()
                .map(|&index| {
                    found
                        .iter()
                        .find(|g| g.index == index)
                        .cloned()
                        .unwrap_or(GpuInfo {
                            index,
                            name: kind.unwrap_or("declared").to_string(),
                            uuid: String::new(),
                            memory_total_mib: 0,
                        })
                })
                .collect();
            let source = if probe.is_some() {
                "declared (live memory checks)"
            } else {
                "declared"
            };
            Ok((
                Inventory {
                    gpus,
                    source: source.into(),
                },
                probe,
            ))
        }
        (None, Ok((gpus, probe))) => {
            let source = format!("{probe:?}");
            Ok((Inventory { gpus, source }, Some(probe)))
        }
        (None, Err(e)) => Ok((
            Inventory {
                gpus: Vec::new(),
                source: format!("none found ({e})"),
            },
            None,
        )),
    }
}

/// The GPUs free to hand out.
#[derive(Debug)]
pub struct Pool {
    all: Vec<u32>,
    busy: BTreeSet<u32>,
    probe: Option<Probe>,
    idle_mib: u64,
}

/// Why a request could not be served right now.
#[derive(Debug, PartialEq)]
pub enum Shortage {
    /// Fewer GPUs exist than asked for: it can never be served.
    Never,
    /// Held by running servers: wait for one to stop.
    Busy,
    /// Free but not idle yet (memory still in use): (gpu, MiB used) of those seen busy.
    NotIdle(Vec<(u32, u64)>),
}

impl Pool {
    pub fn new(inventory: &Inventory, probe: Option<Probe>, idle_mib: u64) -> Pool {
        Pool {
            all: inventory.gpus.iter().map(|g| g.index).collect(),
            busy: BTreeSet::new(),
            probe,
            idle_mib,
        }
    }

    pub fn len(&self) -> usize {
        self.all.len()
    }

    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }

    pub fn probe(&self) -> Option<&Probe> {
        self.probe.as_ref()
    }

    /// Takes `n` free, idle GPUs (lowest indices first), or says why not.
    pub fn acquire(&mut self, n: usize) -> Result<Vec<u32>, Shortage> {
        if n == 0 {
            return Ok(Vec::new());
        }
        if n > self.all.len() {
            return Err(Shortage::Never);
        }
        let free: Vec<u32> = self
            .all
            .iter()
            .copied()
            .filter(|g| !self.busy.contains(g))
            .collect();
        if free.len() < n {
            return Err(Shortage::Busy);
        }
        let mut chosen = Vec::new();
        let mut not_idle = Vec::new();
        for g in free {
            match self.probe.as_ref().and_then(|p| p.memory_used_mib(g)) {
                Some(used) if used >= self.idle_mib => not_idle.push((g, used)),
                _ => chosen.push(g),
            }
            if chosen.len() == n {
                break;
            }
        }
        if chosen.len() < n {
            return Err(Shortage::NotIdle(not_idle));
        }
        self.busy.extend(chosen.iter().copied());
        Ok(chosen)
    }

    /// Takes exactly the GPUs `want` (a balanced placement), or says why not now.
    pub fn acquire_exact(&mut self, want: &[u32]) -> Result<Vec<u32>, Shortage> {
        if want.iter().any(|g| !self.all.contains(g)) {
            return Err(Shortage::Never);
        }
        if want.iter().any(|g| self.busy.contains(g)) {
            return Err(Shortage::Busy);
        }
        let not_idle: Vec<(u32, u64)> = want
            .iter()
            .filter_map(|&g| {
                let used = self.probe.as_ref()?.memory_used_mib(g)?;
                (used >= self.idle_mib).then_some((g, used))
            })
            .collect();
        if !not_idle.is_empty() {
            return Err(Shortage::NotIdle(not_idle));
        }
        self.busy.extend(want.iter().copied());
        Ok(want.to_vec())
    }

    pub fn release(&mut self, gpus: &[u32]) {
        for g in gpus {
            self.busy.remove(g);
        }
    }
}

/// Parses `--gpus 0,1,2,3`.
pub fn parse_gpu_list(text: &str) -> Result<Vec<u32>, String> {
    let mut out = Vec::new();
    for part in text.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let g: u32 = part
            .parse()
            .map_err(|_| format!("`{part}` is not a GPU index"))?;
        if out.contains(&g) {
            return Err(format!("GPU {g} listed twice"));
        }
        out.push(g);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inv(n: u32) -> Inventory {
        Inventory {
            gpus: (0..n)
                .map(|index| GpuInfo {
                    index,
                    name: "declared".into(),
                    uuid: String::new(),
                    memory_total_mib: 0,
                })
                .collect(),
            source: "declared".into(),
        }
    }

    #[test]
    fn hands_out_disjoint_sets_and_reuses_released() {
        let mut pool = Pool::new(&inv(4), None, 1024);
        let a = pool.acquire(2).unwrap();
        let b = pool.acquire(2).unwrap();
        assert_eq!(a, vec![0, 1]);
        assert_eq!(b, vec![2, 3]);
        assert_eq!(pool.acquire(1), Err(Shortage::Busy));
        assert_eq!(pool.acquire(5), Err(Shortage::Never));
        pool.release(&a);
        assert_eq!(pool.acquire_exact(&[1, 2]), Err(Shortage::Busy));
        assert_eq!(pool.acquire_exact(&[7]), Err(Shortage::Never));
        assert_eq!(pool.acquire_exact(&[1]).unwrap(), vec![1]);
        pool.release(&[1]);
        assert_eq!(pool.acquire(1).unwrap(), vec![0]);
        assert_eq!(pool.acquire(0).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn parses_gpu_lists() {
        assert_eq!(parse_gpu_list("0,1, 3").unwrap(), vec![0, 1, 3]);
        assert!(parse_gpu_list("0,0").is_err());
        assert!(parse_gpu_list("a").is_err());
    }
}
