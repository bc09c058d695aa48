//! `load.search`: the highest request rate (or concurrency) at which the SLOs hold, found inside
//! one server session by probing: the range's low end, its high end, then bisection of the
//! bracket between the highest pass and the lowest failure.
//!
//! Cost, stated up front ([`Search::max_probes`]): `2 + ⌈log2(ln(hi/lo) / ln(1 + tolerance))⌉`
//! probes for a rate (bisection in log space: a rate bracket is a ratio), `2 + ⌈log2(hi − lo)⌉`
//! for a concurrency (integers, searched to the exact value). `[1, 64]` req/s at 10 % takes at
//! most 8 probes, `[1, 256]` in-flight requests at most 10.
//!
//! A probe is one measured run of `num_prompts` requests (the same prompts every time), with
//! the SLOs as vLLM's goodput; it passes when at least `attainment` of its requests were good
//! (failed requests never are). Rate probes send without a concurrency limit (as `vllm bench
//! serve --request-rate` without `--max-concurrency`), so an overloaded server shows as latency
//! in the server, not as a queue in the client; concurrency probes send at rate `inf`.
use serde::Serialize;

use super::{BenchResult, Goodput, RunConfig};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Over {
    Rate,
    Concurrency,
}

impl Over {
    pub fn as_str(self) -> &'static str {
        match self {
            Over::Rate => "rate",
            Over::Concurrency => "concurrency",
        }
    }

    /// The unit of a probed value: `req/s` or `in flight`.
    pub fn unit(self) -> &'static str {
        match self {
            Over::Rate => "req/s",
            Over::Concurrency => "in flight",
        }
    }
}

/// One search's settings (resolved `[load.search]`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Search {
    pub over: Over,
    pub lo: f64,
    pub hi: f64,
    /// Rate: stop when `fail / pass ≤ 1 + tolerance`.
    pub tolerance: f64,
    /// A probe passes when at least this fraction of its requests is good.
    pub attainment: f64,
    /// Requests per probe: the first this many prompts of the measured dataset.
    pub num_prompts: u32,
    pub slo: Goodput,
}

impl Search {
    /// The most probes this search can take (the two ends, then the halvings).
    pub fn max_probes(&self) -> u32 {
        let halvings = match self.over {
            Over::Rate => ((self.hi / self.lo).ln() / (1.0 + self.tolerance).ln())
                .log2()
                .ceil(),
            Over::Concurrency => (self.hi - self.lo).log2().ceil(),
        };
        2 + halvings.max(0.0) as u32
    }

    /// The load point's label: `search=rate` or `search=concurrency`.
    pub fn label(&self) -> String {
        format!("search={}", self.over.as_str())
    }

    /// The run settings of a probe at `value`, from the session's measured settings.
    pub fn probe_config(&self, base: &RunConfig, value: f64) -> RunConfig {
        let mut run = base.clone();
        match self.over {
            Over::Rate => {
                run.request_rate = value;
                run.max_concurrency = None;
            }
            Over::Concurrency => {
                run.request_rate = f64::INFINITY;
                run.max_concurrency = Some(value as usize);
            }
        }
        run.goodput = self.slo;
        run.timed = None;
        if !run.percentiles.contains(&99.0) {
            run.percentiles.push(99.0);
        }
        run
    }

    /// Whether a probe's run met the SLOs.
    pub fn passed(&self, result: &BenchResult) -> (bool, f64) {
        let sent = result.records.len().max(1);
        let good = result.metrics.good_requests.unwrap_or(0);
        let fraction = good as f64 / sent as f64;
        // A hair of slack for the float (0.99 · 100 must admit 99 good requests).
        let passed = !result.timed_out && fraction + 1e-9 >= self.attainment;
        (passed, fraction)
    }
}

/// How a search ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Between a pass and a failure within the tolerance.
    Bracketed,
    /// Even the low end failed: the answer is below the range.
    BelowRange,
    /// The high end passed: the answer is at least the range's top.
    AtRangeTop,
}

/// The search's state: which value to probe next, from the outcomes so far.
#[derive(Debug, Clone)]
pub struct Bisection {
    search: Search,
    /// Highest passing value so far.
    pass: Option<f64>,
    /// Lowest failing value so far.
    fail: Option<f64>,
    probes: u32,
}

impl Bisection {
    pub fn new(search: Search) -> Bisection {
        Bisection {
            search,
            pass: None,
            fail: None,
            probes: 0,
        }
    }

    /// The next value to probe; `None` when the search is over.
    pub fn next(&self) -> Option<f64> {
        let s = &self.search;
        match (self.pass, self.fail) {
            (None, None) => Some(s.lo),
            (None, Some(_)) => None, // the low end failed
            (Some(p), None) if p >= s.hi => None,
            (Some(_), None) => Some(s.hi),
            (Some(p), Some(f)) => match s.over {
                Over::Rate => (f / p > 1.0 + s.tolerance).then(|| (p * f).sqrt()),
                Over::Concurrency => (f - p > 1.0).then(|| ((p + f) / 2.0).floor()),
            },
        }
    }

    pub fn record(&mut self, value: f64, passed: bool) {
        self.probes += 1;
        if passed {
            self.pass = Some(self.pass.map_or(value, |p| p.max(value)));
        } else {
            self.fail = Some(self.fail.map_or(value, |f| f.min(value)));
        }
    }

    /// `(found, bracket, outcome)` once [`Bisection::next`] is `None`.
    pub fn result(&self) -> (Option<f64>, [Option<f64>; 2], Outcome) {
        let outcome = match (self.pass, self.fail) {
            (None, _) => Outcome::BelowRange,
            (Some(_), None) => Outcome::AtRangeTop,
            (Some(_), Some(_)) => Outcome::Bracketed,
        };
        (self.pass, [self.pass, self.fail], outcome)
    }

    pub fn probes(&self) -> u32 {
        self.probes
    }
}

/// One probe, as the search's result records it.
#[derive(Debug, Clone, Serialize)]
pub struct ProbeSummary {
    pub value: f64,
    pub passed: bool,
    pub good_fraction: f64,
    pub requested_rate: Option<f64>,
    pub concurrency: Option<usize>,
    /// Requests released per second by the client (its self-audit).
    pub achieved_rate: Option<f64>,
    pub request_throughput: f64,
    pub output_throughput: f64,
    pub completed: usize,
    pub failed: usize,
    pub median_ttft_ms: f64,
    pub p99_ttft_ms: f64,
    pub median_tpot_ms: f64,
    pub p99_tpot_ms: f64,
    pub median_e2el_ms: f64,
    pub p99_e2el_ms: f64,
    pub duration_s: f64,
    pub audit_warnings: Vec<String>,
}

impl ProbeSummary {
    pub fn of(search: &Search, value: f64, result: &BenchResult) -> ProbeSummary {
        let (passed, good_fraction) = search.passed(result);
        let m = &result.metrics;
        // Summaries are in ms already; the probe's config always asks for p99.
        let p99 = |s: &super::stats::Summary| s.percentile(99.0).unwrap_or(0.0);
        // Achieved: requests released per second over the run (rate inf: all at once).
        let achieved_rate = (result.duration_s > 0.0)
            .then(|| result.records.len() as f64 / result.duration_s)
            .map(|whole_run| result.audit.achieved_rate.unwrap_or(whole_run));
        ProbeSummary {
            value,
            passed,
            good_fraction,
            requested_rate: result
                .run
                .request_rate
                .is_finite()
                .then_some(result.run.request_rate),
            concurrency: result.run.max_concurrency,
            achieved_rate,
            request_throughput: m.request_throughput,
            output_throughput: m.output_throughput,
            completed: m.completed,
            failed: m.failed,
            median_ttft_ms: m.ttft.median,
            p99_ttft_ms: p99(&m.ttft),
            median_tpot_ms: m.tpot.median,
            p99_tpot_ms: p99(&m.tpot),
            median_e2el_ms: m.e2el.median,
            p99_e2el_ms: p99(&m.e2el),
            duration_s: result.duration_s,
            audit_warnings: result.audit.warnings.clone(),
        }
    }
}

/// What a search found: the `isobench.search` block of its result.
#[derive(Debug, Clone, Serialize)]
pub struct SearchSummary {
    pub over: Over,
    pub slo: Goodput,
    pub attainment: f64,
    pub range: [f64; 2],
    pub tolerance: f64,
    pub max_probes: u32,
    pub found: Option<f64>,
    pub bracket: [Option<f64>; 2],
    pub outcome: Outcome,
    pub probes: Vec<ProbeSummary>,
}

impl SearchSummary {
    pub fn new(search: &Search, bisection: &Bisection, probes: Vec<ProbeSummary>) -> Self {
        let (found, bracket, outcome) = bisection.result();
        SearchSummary {
            over: search.over,
            slo: search.slo,
            attainment: search.attainment,
            range: [search.lo, search.hi],
            tolerance: search.tolerance,
            max_probes: search.max_probes(),
            found,
            bracket,
            outcome,
            probes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn search(over: Over, lo: f64, hi: f64, tolerance: f64) -> Search {
        Search {
            over,
            lo,
            hi,
            tolerance,
            attainment: 0.99,
            num_prompts: 10,
            slo: Goodput::default(),
        }
    }

    /// Runs the bisection against a server whose true capacity is `capacity`.
    fn run(s: Search, capacity: f64) -> (Bisection, Vec<f64>) {
        let mut b = Bisection::new(s);
        let mut probed = Vec::new();
        while let Some(v) = b.next() {
            probed.push(v);
            b.record(v, v <= capacity);
            assert!(probed.len() <= s.max_probes() as usize, "{probed:?}");
        }
        (b, probed)
    }

    #[test]
    fn the_stated_probe_budgets() {
        assert_eq!(search(Over::Rate, 1.0, 64.0, 0.1).max_probes(), 8);
        assert_eq!(search(Over::Concurrency, 1.0, 256.0, 0.0).max_probes(), 10);
        assert_eq!(search(Over::Concurrency, 1.0, 2.0, 0.0).max_probes(), 2);
    }

    #[test]
    fn rate_search_brackets_any_capacity_within_tolerance_and_budget() {
        let s = search(Over::Rate, 1.0, 64.0, 0.1);
        for i in 0..400 {
            let capacity = 1.0 * (64f64).powf(i as f64 / 399.0) * 0.999;
            let (b, _) = run(s, capacity);
            let (found, [pass, fail], outcome) = b.result();
            match outcome {
                Outcome::Bracketed => {
                    let (p, f) = (pass.unwrap(), fail.unwrap());
                    assert!(p <= capacity && capacity < f, "{p} {capacity} {f}");
                    assert!(f / p <= 1.1 + 1e-12);
                    assert_eq!(found, Some(p));
                }
                Outcome::BelowRange => assert!(capacity < 1.0),
                Outcome::AtRangeTop => assert!(capacity >= 64.0),
            }
        }
    }

    #[test]
    fn concurrency_search_finds_the_exact_value() {
        let s = search(Over::Concurrency, 1.0, 64.0, 0.0);
        for capacity in 1..64 {
            let (b, probed) = run(s, capacity as f64);
            assert_eq!(b.result().0, Some(capacity as f64), "{probed:?}");
            assert!(probed.iter().all(|v| v.fract() == 0.0));
        }
        assert_eq!(run(s, 64.0).0.result().2, Outcome::AtRangeTop);
        let (below, probed) = run(s, 0.5);
        assert_eq!(
            below.result(),
            (None, [None, Some(1.0)], Outcome::BelowRange)
        );
        assert_eq!(probed, vec![1.0], "nothing after the low end fails");
    }
}
