//! GPU telemetry through NVML for exactly a session's GPUs, sampled on a thread of its own (NVML
//! calls block for up to a few milliseconds; they must not stall the load generator's runtime).

use serde::Serialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// One reading of one GPU; a field NVML does not give for this GPU is `None`.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct GpuSample {
    pub t: f64,
    pub gpu: u32,
    pub sm_util_pct: Option<u32>,
    pub memory_used_mib: Option<u64>,
    pub power_w: Option<f64>,
    /// The energy counter (millijoules since the driver loaded), where the GPU has one; read at
    /// the window's first and last sample only.
    pub energy_mj: Option<u64>,
    pub sm_clock_mhz: Option<u32>,
    /// Clock limiters active now, by name (idle and the application-clock setting excluded).
    pub throttle: Vec<&'static str>,
    pub temperature_c: Option<u32>,
}

/// Throttle reasons that mean the window ran slower than the GPU can: a quality warning.
const THROTTLES: &[(nvml_wrapper::bitmasks::device::ThrottleReasons, &str)] = {
    use nvml_wrapper::bitmasks::device::ThrottleReasons as T;
    &[
        (T::SW_POWER_CAP, "sw_power_cap"),
        (T::HW_SLOWDOWN, "hw_slowdown"),
        (T::SYNC_BOOST, "sync_boost"),
        (T::SW_THERMAL_SLOWDOWN, "sw_thermal_slowdown"),
        (T::HW_THERMAL_SLOWDOWN, "hw_thermal_slowdown"),
        (T::HW_POWER_BRAKE_SLOWDOWN, "hw_power_brake_slowdown"),
    ]
};

/// One reading; the energy counter only when `energy` (on an H200 that query alone costs 4 ms of
/// CPU, forty times all the others together: it is read at the window's first and last sample,
/// which is all its delta needs).
fn sample(device: &nvml_wrapper::Device<'_>, gpu: u32, t: f64, energy: bool) -> GpuSample {
    use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
    let throttle = device
        .current_throttle_reasons()
        .map(|r| {
            THROTTLES
                .iter()
                .filter(|(bit, _)| r.contains(*bit))
                .map(|(_, name)| *name)
                .collect()
        })
        .unwrap_or_default();
    GpuSample {
        t,
        gpu,
        sm_util_pct: device.utilization_rates().ok().map(|u| u.gpu),
        memory_used_mib: device.memory_info().ok().map(|m| m.used / (1024 * 1024)),
        power_w: device.power_usage().ok().map(|mw| f64::from(mw) / 1000.0),
        energy_mj: energy
            .then(|| device.total_energy_consumption().ok())
            .flatten(),
        sm_clock_mhz: device.clock_info(Clock::SM).ok(),
        throttle,
        temperature_c: device.temperature(TemperatureSensor::Gpu).ok(),
    }
}

/// Samples GPUs from [`GpuSampler::start`] until [`GpuSampler::finish`].
pub struct GpuSampler {
    inner: Result<Running, String>,
}

struct Running {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<Result<Vec<GpuSample>, String>>,
}

impl Drop for GpuSampler {
    /// A window abandoned (an interrupted measurement) stops its thread too.
    fn drop(&mut self) {
        if let Ok(run) = &self.inner {
            run.stop.store(true, Ordering::Relaxed);
        }
    }
}

fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

impl GpuSampler {
    /// A sampler that has nothing, for `reason`.
    pub fn absent(reason: &str) -> GpuSampler {
        GpuSampler {
            inner: Err(reason.to_string()),
        }
    }

    /// Starts sampling `gpus` (NVML indices) `hz` times a second, each sample also written to
    /// `raw_path` as a JSON line. No NVML, or a GPU it does not know: no GPU telemetry, with the
    /// reason.
    pub fn start(gpus: &[u32], hz: u32, raw_path: PathBuf) -> GpuSampler {
        if gpus.is_empty() || hz == 0 {
            let reason = if hz == 0 {
                "resources.telemetry_hz = 0"
            } else {
                "the session has no GPUs"
            };
            return GpuSampler {
                inner: Err(reason.to_string()),
            };
        }
        let nvml = match nvml_wrapper::Nvml::init() {
            Ok(n) => n,
            Err(e) => {
                return GpuSampler {
                    inner: Err(format!("NVML: {e}")),
                };
            }
        };
        for &g in gpus {
            if let Err(e) = nvml.device_by_index(g) {
                return GpuSampler {
                    inner: Err(format!("NVML: GPU {g}: {e}")),
                };
            }
        }
        let stop = Arc::new(AtomicBool::new(false));
        let every = Duration::from_secs_f64(1.0 / f64::from(hz));
        let gpus = gpus.to_vec();
        let flag = stop.clone();
        let thread = std::thread::Builder::new()
            .name("isobench-nvml".into())
            .spawn(move || sample_loop(&nvml, &gpus, every, &flag, raw_path));
        GpuSampler {
            inner: thread
                .map(|thread| Running { stop, thread })
                .map_err(|e| format!("sampling thread: {e}")),
        }
    }

    /// Stops (after one last sample) and summarises: the `isobench.telemetry.gpu` object.
    pub fn finish(mut self) -> Value {
        let run = match std::mem::replace(&mut self.inner, Err(String::new())) {
            Ok(r) => r,
            Err(reason) => return super::absent(&reason),
        };
        run.stop.store(true, Ordering::Relaxed);
        match run.thread.join() {
            Ok(Ok(samples)) => summarise(&samples),
            Ok(Err(reason)) => super::absent(&reason),
            Err(_) => super::absent("the sampling thread panicked"),
        }
    }
}

/// Samples until `stop`, then once more, so the energy counter spans the whole window.
fn sample_loop(
    nvml: &nvml_wrapper::Nvml,
    gpus: &[u32],
    every: Duration,
    stop: &AtomicBool,
    raw_path: PathBuf,
) -> Result<Vec<GpuSample>, String> {
    let devices = gpus
        .iter()
        .map(|&g| nvml.device_by_index(g).map(|d| (g, d)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("NVML: {e}"))?;
    let mut raw = std::fs::File::create(&raw_path)
        .map(std::io::BufWriter::new)
        .map_err(|e| format!("{}: {e}", raw_path.display()))?;
    let mut samples = Vec::new();
    let mut next = std::time::Instant::now();
    let mut first = true;
    loop {
        let last = stop.load(Ordering::Relaxed);
        let t = unix_now();
        for (g, d) in &devices {
            let s = sample(d, *g, t, first || last);
            let _ = writeln!(raw, "{}", json!(s));
            samples.push(s);
        }
        if last {
            break;
        }
        first = false;
        // Fixed-rate ticks: a slow NVML call shortens the next wait instead of shifting all.
        next += every;
        let now = std::time::Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            next = now;
        }
    }
    raw.flush()
        .map_err(|e| format!("{}: {e}", raw_path.display()))?;
    Ok(samples)
}

/// One GPU's window.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct GpuSummary {
    pub samples: usize,
    pub sm_util_mean_pct: Option<f64>,
    pub sm_util_max_pct: Option<f64>,
    pub memory_used_max_mib: Option<f64>,
    pub power_mean_w: Option<f64>,
    pub power_max_w: Option<f64>,
    pub sm_clock_mean_mhz: Option<f64>,
    pub sm_clock_min_mhz: Option<f64>,
    pub temperature_max_c: Option<f64>,
    pub energy_j: Option<f64>,
    /// `counter` (NVML's energy counter) or `power_integral` (no counter on this GPU).
    pub energy_source: Option<&'static str>,
    /// Limiters seen in any sample, and in what fraction of samples any was.
    pub throttle_reasons: BTreeSet<&'static str>,
    pub throttled_fraction: f64,
}

fn stats(v: impl Iterator<Item = f64>) -> (Option<f64>, Option<f64>, Option<f64>) {
    let v: Vec<f64> = v.collect();
    if v.is_empty() {
        return (None, None, None);
    }
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    (Some(mean), Some(max), Some(min))
}

/// Energy of one GPU's samples (in time order): the counter's delta where the first and last
/// sample have it, else the trapezoid integral of power.
fn energy(samples: &[&GpuSample]) -> (Option<f64>, Option<&'static str>) {
    let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
        return (None, None);
    };
    if samples.len() < 2 {
        return (None, None);
    }
    if let (Some(a), Some(b)) = (first.energy_mj, last.energy_mj)
        && b >= a
    {
        return (Some((b - a) as f64 / 1000.0), Some("counter"));
    }
    let mut joules = 0.0;
    for w in samples.windows(2) {
        let (Some(p0), Some(p1)) = (w[0].power_w, w[1].power_w) else {
            return (None, None);
        };
        joules += (p0 + p1) / 2.0 * (w[1].t - w[0].t);
    }
    (Some(joules), Some("power_integral"))
}

pub fn summarise_gpu(samples: &[&GpuSample]) -> GpuSummary {
    let (util_mean, util_max, _) =
        stats(samples.iter().filter_map(|s| s.sm_util_pct.map(f64::from)));
    let (_, mem_max, _) = stats(
        samples
            .iter()
            .filter_map(|s| s.memory_used_mib.map(|m| m as f64)),
    );
    let (power_mean, power_max, _) = stats(samples.iter().filter_map(|s| s.power_w));
    let (clock_mean, _, clock_min) =
        stats(samples.iter().filter_map(|s| s.sm_clock_mhz.map(f64::from)));
    let (_, temp_max, _) = stats(
        samples
            .iter()
            .filter_map(|s| s.temperature_c.map(f64::from)),
    );
    let (energy_j, energy_source) = energy(samples);
    let throttled = samples.iter().filter(|s| !s.throttle.is_empty()).count();
    GpuSummary {
        samples: samples.len(),
        sm_util_mean_pct: util_mean,
        sm_util_max_pct: util_max,
        memory_used_max_mib: mem_max,
        power_mean_w: power_mean,
        power_max_w: power_max,
        sm_clock_mean_mhz: clock_mean,
        sm_clock_min_mhz: clock_min,
        temperature_max_c: temp_max,
        energy_j,
        energy_source,
        throttle_reasons: samples
            .iter()
            .flat_map(|s| s.throttle.iter().copied())
            .collect(),
        throttled_fraction: if samples.is_empty() {
            0.0
        } else {
            throttled as f64 / samples.len() as f64
        },
    }
}

/// Every GPU's summary, the energy of all of them, and a note where it is not the counter's.
pub fn summarise(samples: &[GpuSample]) -> Value {
    let mut by_gpu: BTreeMap<u32, Vec<&GpuSample>> = BTreeMap::new();
    for s in samples {
        by_gpu.entry(s.gpu).or_default().push(s);
    }
    let per_gpu: BTreeMap<String, GpuSummary> = by_gpu
        .iter()
        .map(|(g, s)| (g.to_string(), summarise_gpu(s)))
        .collect();
    let energies: Vec<Option<f64>> = per_gpu.values().map(|s| s.energy_j).collect();
    let energy_j = energies
        .iter()
        .copied()
        .sum::<Option<f64>>()
        .filter(|_| !energies.is_empty());
    let integrated = per_gpu
        .values()
        .any(|s| s.energy_source == Some("power_integral"));
    let throttled: BTreeSet<&str> = per_gpu
        .values()
        .flat_map(|s| s.throttle_reasons.iter().copied())
        .collect();
    let mut value = json!({
        "available": true,
        "gpus": per_gpu,
        "energy_j": energy_j,
        "sm_util_mean_pct": mean_of(per_gpu.values().filter_map(|s| s.sm_util_mean_pct)),
        "throttled": !throttled.is_empty(),
        "throttle_reasons": throttled,
    });
    if energy_j.is_none() {
        value["energy_note"] = json!("no energy counter and no power readings: energy is absent");
    } else if integrated {
        value["energy_note"] =
            json!("no energy counter on some GPU: its energy is the integral of sampled power");
    }
    value
}

fn mean_of(v: impl Iterator<Item = f64>) -> Option<f64> {
    stats(v).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(
        t: f64,
        gpu: u32,
        power: f64,
        energy: Option<u64>,
        throttle: Vec<&'static str>,
    ) -> GpuSample {
        GpuSample {
            t,
            gpu,
            sm_util_pct: Some(50),
            memory_used_mib: Some(1000),
            power_w: Some(power),
            energy_mj: energy,
            sm_clock_mhz: Some(1980),
            throttle,
            temperature_c: Some(60),
        }
    }

    #[test]
    fn energy_from_the_counter_else_the_power_integral() {
        let samples = vec![
            s(0.0, 0, 100.0, Some(5_000), vec![]),
            // The sampler reads the counter at the first and last sample only.
            s(0.5, 0, 300.0, None, vec!["sw_power_cap"]),
            s(1.0, 0, 300.0, Some(255_000), vec![]),
            // GPU 1 has no counter: (100+300)/2*0.5 + 300*0.5 = 250 J.
            s(0.0, 1, 100.0, None, vec![]),
            s(0.5, 1, 300.0, None, vec![]),
            s(1.0, 1, 300.0, None, vec![]),
        ];
        let v = summarise(&samples);
        assert_eq!(v["gpus"]["0"]["energy_j"], 250.0);
        assert_eq!(v["gpus"]["0"]["energy_source"], "counter");
        assert_eq!(v["gpus"]["1"]["energy_j"], 250.0);
        assert_eq!(v["gpus"]["1"]["energy_source"], "power_integral");
        assert_eq!(v["energy_j"], 500.0);
        assert!(v["energy_note"].as_str().unwrap().contains("integral"));
        assert_eq!(v["throttled"], true);
        assert_eq!(v["throttle_reasons"], json!(["sw_power_cap"]));
        let frac = v["gpus"]["0"]["throttled_fraction"].as_f64().unwrap();
        assert!((frac - 1.0 / 3.0).abs() < 1e-12);
    }

    #[test]
    fn without_nvml_gpu_telemetry_is_absent_with_the_reason() {
        // This host has no NVIDIA driver; on one that has, GPU 4096 does not exist.
        let dir = tempfile::tempdir().unwrap();
        let v = GpuSampler::start(&[4096], 10, dir.path().join("gpu.jsonl")).finish();
        assert_eq!(v["available"], false);
        assert!(v["reason"].as_str().unwrap().starts_with("NVML"), "{v}");
        let v = GpuSampler::start(&[0], 0, dir.path().join("gpu.jsonl")).finish();
        assert_eq!(v["reason"], "resources.telemetry_hz = 0");
    }

    /// On a host with an NVIDIA GPU (`cargo test --lib telemetry::gpu -- --ignored`): GPU 0
    /// sampled for a second at 20 Hz gives every field and an energy that matches its power.
    #[test]
    #[ignore = "needs an NVIDIA GPU"]
    fn samples_a_real_gpu() {
        let dir = tempfile::tempdir().unwrap();
        let raw = dir.path().join("gpu.jsonl");
        let sampler = GpuSampler::start(&[0], 20, raw.clone());
        std::thread::sleep(Duration::from_secs(1));
        let v = sampler.finish();
        println!("{v:#}");
        assert_eq!(v["available"], true, "{v}");
        let g = &v["gpus"]["0"];
        let samples = g["samples"].as_u64().unwrap();
        assert!(
            (18..=23).contains(&samples),
            "{samples} samples in 1 s at 20 Hz"
        );
        for field in [
            "sm_util_mean_pct",
            "memory_used_max_mib",
            "power_mean_w",
            "sm_clock_mean_mhz",
            "temperature_max_c",
        ] {
            assert!(g[field].is_number(), "{field}: {g}");
        }
        // Energy over ~1 s is about the mean power (counter) or exactly its integral.
        let (energy, power) = (
            g["energy_j"].as_f64().unwrap(),
            g["power_mean_w"].as_f64().unwrap(),
        );
        assert!(
            energy > 0.5 * power && energy < 1.5 * power,
            "{energy} J at {power} W"
        );
        let lines = std::fs::read_to_string(&raw).unwrap().lines().count();
        assert_eq!(lines as u64, samples);

        // What sampling costs this process at the default rate (docs/telemetry.md, "Cost").
        let cpu_s = || {
            // SAFETY: getrusage fills the struct it is given.
            let mut u: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
            let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
            tv(u.ru_utime) + tv(u.ru_stime)
        };
        let before = cpu_s();
        let sampler = GpuSampler::start(&[0], 10, raw);
        let started = cpu_s();
        std::thread::sleep(Duration::from_secs(3));
        sampler.finish();
        let ms_per_s = (cpu_s() - started) * 1000.0 / 3.0;
        println!(
            "NVML start: {:.1} ms of CPU; sampling one GPU at 10 Hz: {ms_per_s:.2} ms of CPU per second",
            (started - before) * 1000.0
        );
        // Each query's own cost, to see which one dominates.
        let nvml = nvml_wrapper::Nvml::init().unwrap();
        let d = nvml.device_by_index(0).unwrap();
        use nvml_wrapper::enum_wrappers::device::{Clock, TemperatureSensor};
        let time = |name: &str, f: &dyn Fn()| {
            let t = cpu_s();
            for _ in 0..50 {
                f();
            }
            println!("  {name}: {:.3} ms CPU", (cpu_s() - t) * 1000.0 / 50.0);
        };
        time("utilization_rates", &|| drop(d.utilization_rates()));
        time("memory_info", &|| drop(d.memory_info()));
        time("power_usage", &|| drop(d.power_usage()));
        time("total_energy_consumption", &|| {
            drop(d.total_energy_consumption())
        });
        time("clock_info(SM)", &|| drop(d.clock_info(Clock::SM)));
        time("current_throttle_reasons", &|| {
            drop(d.current_throttle_reasons())
        });
        time("temperature", &|| {
            drop(d.temperature(TemperatureSensor::Gpu))
        });
        assert!(ms_per_s < 100.0, "{ms_per_s} ms/s");
    }
}
