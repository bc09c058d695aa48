//! Output equivalence: every arm of a commit gets the same prompts with greedy decoding, so its
//! generated texts should match its reference's. A patch that is faster because it skips work
//! shows up here, not in the timings.
//!
//! Per comparison: each prompt's first answer of the candidate is compared with the reference's
//! in the same round (trial number; the first trial of each when they share none), giving the
//! identical fraction, the first divergence (the shortest common prefix, in tokens when the
//! commit's tokenizer is known, else in characters) and examples. The reference arm compared
//! with itself (each later trial against its first) is the nondeterminism floor. The finding
//! follows from both, and `[check.outputs] mode` decides whether it marks the speed verdict.
//! Reads results only; the one file it opens is the commits' `tokenizer.json`.
use super::input::{OutputsInput, TrialOutcome, TrialRecord};
use super::model::{DivergenceExample, DivergenceUnit, OutputsCheck, OutputsFinding, OutputsFloor};
use crate::manifest::types::OutputsMode;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use tokenizers::Tokenizer;

/// Examples of divergent text kept per comparison.
const MAX_EXAMPLES: usize = 3;
/// Characters of context an example shows on each side of the divergence.
const EXCERPT_CHARS: usize = 40;

/// The commits' tokenizers, each file loaded once (commits usually share one).
pub struct Tokenizers {
    by_path: HashMap<PathBuf, Option<Tokenizer>>,
    of_commit: BTreeMap<String, PathBuf>,
}

impl Tokenizers {
    /// Loads the tokenizers `input` names; one that cannot be loaded leaves its commits to be
    /// compared in characters. Loads nothing when outputs are not checked.
    pub fn load(input: &OutputsInput) -> Tokenizers {
        let mut by_path = HashMap::new();
        if input.mode != OutputsMode::Off {
            for path in input.tokenizers.values() {
                by_path.entry(path.clone()).or_insert_with(|| {
                    crate::loadgen::resolve_tokenizer_file(path)
                        .and_then(|file| Tokenizer::from_file(file).ok())
                });
            }
        }
        Tokenizers {
            by_path,
            of_commit: input.tokenizers.clone(),
        }
    }

    fn of(&self, commit: &str) -> Option<&Tokenizer> {
        self.by_path.get(self.of_commit.get(commit)?)?.as_ref()
    }
}

/// How a divergence is counted.
#[derive(Clone, Copy)]
enum Counter<'a> {
    Tokens(&'a Tokenizer),
    Chars,
}

impl Counter<'_> {
    fn unit(self) -> DivergenceUnit {
        match self {
            Counter::Tokens(_) => DivergenceUnit::Tokens,
            Counter::Chars => DivergenceUnit::Chars,
        }
    }

    /// The length of the common prefix of two different texts, in this counter's unit.
    fn common_prefix(self, a: &str, b: &str) -> usize {
        if let Counter::Tokens(tokenizer) = self
            && let (Ok(ea), Ok(eb)) = (tokenizer.encode(a, false), tokenizer.encode(b, false))
        {
            return common_len(ea.get_ids(), eb.get_ids());
        }
        a.chars().zip(b.chars()).take_while(|(x, y)| x == y).count()
    }
}

fn common_len<T: PartialEq>(a: &[T], b: &[T]) -> usize {
    a.iter().zip(b).take_while(|(x, y)| x == y).count()
}

/// One arm's answers at one load point: per measured trial (ascending), prompt → first answer.
/// Trials whose results hold no generated texts are left out.
pub struct ArmAnswers<'a> {
    trials: Vec<(u32, BTreeMap<usize, &'a str>)>,
}

impl<'a> ArmAnswers<'a> {
    pub fn of(records: &[&'a TrialRecord]) -> ArmAnswers<'a> {
        let mut trials: Vec<(u32, BTreeMap<usize, &'a str>)> = records
            .iter()
            .filter_map(|r| match &r.outcome {
                TrialOutcome::Ok(m) => Some((r.trial, m.answers()?)),
                _ => None,
            })
            .collect();
        trials.sort_by_key(|(t, _)| *t);
        ArmAnswers { trials }
    }
}

/// Counts of one side-by-side comparison of answers.
#[derive(Default)]
struct Counts {
    compared: usize,
    identical: usize,
    first: Option<usize>,
    prefix_sum: usize,
    examples: Vec<DivergenceExample>,
}

impl Counts {
    fn diverged(&self) -> usize {
        self.compared - self.identical
    }

    fn fraction(&self) -> Option<f64> {
        (self.compared > 0).then(|| self.identical as f64 / self.compared as f64)
    }

    /// Every prompt both trials answered.
    fn add(
        &mut self,
        trial: u32,
        candidate: &BTreeMap<usize, &str>,
        reference: &BTreeMap<usize, &str>,
        counter: Counter<'_>,
    ) {
        for (prompt, ours) in candidate {
            let Some(theirs) = reference.get(prompt) else {
                continue;
            };
            self.compared += 1;
            if ours == theirs {
                self.identical += 1;
                continue;
            }
            let at = counter.common_prefix(theirs, ours);
            self.prefix_sum += at;
            if self.first.is_none_or(|f| at < f) {
                self.first = Some(at);
                // The earliest divergences are the telling examples: keep those.
                self.examples
                    .insert(0, example(*prompt, trial, at, theirs, ours));
                self.examples.truncate(MAX_EXAMPLES);
            } else if self.examples.len() < MAX_EXAMPLES {
                self.examples
                    .push(example(*prompt, trial, at, theirs, ours));
            }
        }
    }
}

/// The texts around their first differing character, `…` where cut.
fn example(
    prompt: usize,
    trial: u32,
    at: usize,
    reference: &str,
    candidate: &str,
) -> DivergenceExample {
    let split = reference
        .chars()
        .zip(candidate.chars())
        .take_while(|(x, y)| x == y)
        .count();
    let excerpt = |text: &str| {
        let chars: Vec<char> = text.chars().collect();
        let from = split.saturating_sub(EXCERPT_CHARS);
        let to = (split + EXCERPT_CHARS).min(chars.len());
        let mut out = String::new();
        if from > 0 {
            out.push('…');
        }
        out.extend(&chars[from..to.max(from)]);
        if to < chars.len() {
            out.push('…');
        }
        out
    };
    DivergenceExample {
        prompt,
        trial,
        at,
        reference: excerpt(reference),
        candidate: excerpt(candidate),
    }
}

/// Candidate vs reference, round by round (each trial number both measured); the first trial
/// of each when they share none.
fn compare(candidate: &ArmAnswers<'_>, reference: &ArmAnswers<'_>, counter: Counter<'_>) -> Counts {
    let mut tally = Counts::default();
    let rounds: Vec<_> = candidate
        .trials
        .iter()
        .filter_map(|(t, c)| {
            let r = reference.trials.iter().find(|(rt, _)| rt == t)?;
            Some((*t, c, &r.1))
        })
        .collect();
    if rounds.is_empty()
        && let (Some((t, c)), Some((_, r))) = (candidate.trials.first(), reference.trials.first())
    {
        tally.add(*t, c, r, counter);
    }
    for (t, c, r) in rounds {
        tally.add(t, c, r, counter);
    }
    tally
}

/// The reference against itself: each later trial against its first. `None` with one trial.
fn floor(reference: &ArmAnswers<'_>, counter: Counter<'_>) -> Option<Counts> {
    let ((_, first), rest) = reference.trials.split_first()?;
    if rest.is_empty() {
        return None;
    }
    let mut tally = Counts::default();
    for (t, answers) in rest {
        tally.add(*t, answers, first, counter);
    }
    Some(tally)
}

/// The outputs finding of one comparison at one load point.
pub fn check(
    mode: OutputsMode,
    tokenizers: &Tokenizers,
    commit: &str,
    candidate: &ArmAnswers<'_>,
    reference: &ArmAnswers<'_>,
    reference_arm: &str,
) -> OutputsCheck {
    let counter = tokenizers
        .of(commit)
        .map_or(Counter::Chars, Counter::Tokens);
    let unit = counter.unit();
    let not_checked = |reason: &str| OutputsCheck {
        mode,
        unit,
        summary: format!("not checked: {reason}"),
        ..OutputsCheck::default()
    };
    if mode == OutputsMode::Off {
        return not_checked("[check.outputs] mode = \"off\"");
    }
    if candidate.trials.is_empty() || reference.trials.is_empty() {
        return not_checked("no generated texts recorded");
    }
    let tally = compare(candidate, reference, counter);
    if tally.compared == 0 {
        return not_checked("no prompt answered by both arms");
    }
    let floor = floor(reference, counter);
    let floor_diverged = floor
        .as_ref()
        .and_then(|f| f.fraction())
        .map(|identical| 1.0 - identical);
    let diverged = 1.0 - tally.fraction().unwrap_or(1.0);
    let finding = if tally.diverged() == 0 {
        OutputsFinding::Identical
    } else if floor_diverged.is_some_and(|f| f > 0.0 && diverged <= f) {
        OutputsFinding::WithinFloor
    } else {
        OutputsFinding::Diverged
    };
    let floor = floor.filter(|f| f.compared > 0).map(|f| OutputsFloor {
        arm: reference_arm.to_string(),
        compared: f.compared,
        identical: f.identical,
        identical_fraction: f.fraction().unwrap_or(1.0),
        first_divergence: f.first,
    });
    let summary = summary(finding, &tally, unit, floor.as_ref());
    OutputsCheck {
        finding,
        summary,
        mode,
        unit,
        compared: tally.compared,
        identical: tally.identical,
        identical_fraction: tally.fraction(),
        first_divergence: tally.first,
        mean_common_prefix: (tally.diverged() > 0)
            .then(|| tally.prefix_sum as f64 / tally.diverged() as f64),
        floor,
        marks_verdict: match mode {
            OutputsMode::Exact => finding != OutputsFinding::Identical,
            OutputsMode::Floor => finding == OutputsFinding::Diverged,
            OutputsMode::Off => false,
        },
        examples: tally.examples,
    }
}

/// `identical`, `within floor (…)`, `diverged: N/M requests, first at token k`.
fn summary(
    finding: OutputsFinding,
    tally: &Counts,
    unit: DivergenceUnit,
    floor: Option<&OutputsFloor>,
) -> String {
    let first = tally
        .first
        .map(|k| format!(", first at {} {k}", unit.singular()))
        .unwrap_or_default();
    let floor_text = floor.map(|f| {
        format!(
            "{} vs itself: {}/{} requests differ",
            f.arm,
            f.compared - f.identical,
            f.compared
        )
    });
    match finding {
        OutputsFinding::Identical => "identical".to_string(),
        OutputsFinding::WithinFloor => format!(
            "within floor: {}/{} requests{first} ({})",
            tally.diverged(),
            tally.compared,
            floor_text.unwrap_or_default()
        ),
        OutputsFinding::Diverged => format!(
            "diverged: {}/{} requests{first}",
            tally.diverged(),
            tally.compared
        ),
        OutputsFinding::NotChecked => "not checked".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::input::TrialMetrics;

    fn record(trial: u32, texts: &[&str]) -> TrialRecord {
        TrialRecord {
            commit: "c".into(),
            arm: "a".into(),
            trial,
            point: "conc=1".into(),
            outcome: TrialOutcome::Ok(Box::new(TrialMetrics {
                generated_texts: Some(texts.iter().map(|t| t.to_string()).collect()),
                ..TrialMetrics::default()
            })),
            timestamp: String::new(),
            duration_s: 0.0,
            result_path: None,
            run_s: None,
            image: None,
            node: None,
            measured: None,
        }
    }

    fn run(mode: OutputsMode, cand: &[TrialRecord], refr: &[TrialRecord]) -> OutputsCheck {
        let (c, r): (Vec<&TrialRecord>, Vec<&TrialRecord>) =
            (cand.iter().collect(), refr.iter().collect());
        let tokenizers = Tokenizers::load(&OutputsInput::default());
        check(
            mode,
            &tokenizers,
            "c",
            &ArmAnswers::of(&c),
            &ArmAnswers::of(&r),
            "baseline",
        )
    }

    #[test]
    fn identical_diverged_and_not_checked() {
        let base = [record(1, &["ab cd", "xy"]), record(2, &["ab cd", "xy"])];
        let same = run(OutputsMode::Floor, &base, &base);
        assert_eq!(
            (same.finding, same.summary.as_str()),
            (OutputsFinding::Identical, "identical")
        );
        assert_eq!(same.floor.as_ref().map(|f| f.identical_fraction), Some(1.0));
        assert!(!same.marks_verdict);

        let changed = [record(1, &["ab ce", "xy"]), record(2, &["ab ce", "xy"])];
        let d = run(OutputsMode::Floor, &changed, &base);
        assert_eq!(d.finding, OutputsFinding::Diverged);
        assert_eq!(d.summary, "diverged: 2/4 requests, first at character 4");
        assert_eq!(
            (d.unit, d.first_divergence, d.marks_verdict),
            (DivergenceUnit::Chars, Some(4), true)
        );
        assert_eq!(d.examples[0].reference, "ab cd");
        assert_eq!(d.examples[0].candidate, "ab ce");

        let off = run(OutputsMode::Off, &changed, &base);
        assert_eq!(
            (off.finding, off.marks_verdict),
            (OutputsFinding::NotChecked, false)
        );
        let no_text = [TrialRecord {
            outcome: TrialOutcome::Ok(Box::default()),
            ..record(1, &[])
        }];
        assert_eq!(
            run(OutputsMode::Floor, &no_text, &base).summary,
            "not checked: no generated texts recorded"
        );
    }

    #[test]
    fn divergence_within_the_reference_floor_is_marked_only_in_exact_mode() {
        // The reference differs from itself in one of two prompts; the candidate in one of two.
        let base = [record(1, &["aaaa", "bbbb"]), record(2, &["aaaa", "bbbX"])];
        let cand = [record(1, &["aaaa", "bbXb"]), record(2, &["aaaa", "bbbX"])];
        let floor = run(OutputsMode::Floor, &cand, &base);
        assert_eq!(floor.finding, OutputsFinding::WithinFloor);
        assert_eq!(
            floor.summary,
            "within floor: 1/4 requests, first at character 2 (baseline vs itself: 1/2 requests differ)"
        );
        assert!(!floor.marks_verdict);
        assert!(run(OutputsMode::Exact, &cand, &base).marks_verdict);
    }

    #[test]
    fn prompts_are_matched_by_index_and_failed_requests_are_skipped() {
        let mut timed = TrialMetrics {
            generated_texts: Some(vec![
                "p1".into(),
                "p0".into(),
                "p1 again".into(),
                "bad".into(),
            ]),
            prompt_indices: Some(vec![1, 0, 1, 2]),
            errors: Some(vec![
                String::new(),
                String::new(),
                String::new(),
                "boom".into(),
            ]),
            ..TrialMetrics::default()
        };
        let answers = timed.answers().unwrap();
        assert_eq!(
            answers.into_iter().collect::<Vec<_>>(),
            vec![(0, "p0"), (1, "p1")]
        );
        timed.prompt_indices = None;
        assert_eq!(timed.answers().unwrap().get(&2), Some(&"p1 again"));
    }

    #[test]
    fn examples_are_cut_around_the_divergence() {
        let long_a = format!("{}X{}", "a".repeat(100), "b".repeat(100));
        let long_b = format!("{}Y{}", "a".repeat(100), "b".repeat(100));
        let e = example(0, 1, 100, &long_a, &long_b);
        assert_eq!(
            e.reference,
            format!("…{}X{}…", "a".repeat(40), "b".repeat(39))
        );
        assert_eq!(
            e.candidate,
            format!("…{}Y{}…", "a".repeat(40), "b".repeat(39))
        );
    }
}
