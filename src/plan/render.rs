//! Plan renderers: text (grouped per commit and arm, identical lines collapsed), JSON (stable
//! schema, `version` 1) and Graphviz dot.

use super::{Action, Plan, Planned};
use crate::manifest::model::Campaign;
use crate::pipeline::expand::{Dag, Target};
use crate::util::term::Style;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

fn painted(style: Style, action: Action) -> String {
    let text = format!("{} {}", action.symbol(), action.word());
    match action {
        Action::Run => style.green(&text),
        Action::Rerun => style.yellow(&text),
        Action::Incomplete => style.red(&text),
        Action::Cached => style.dim(&text),
        Action::Orphaned => style.cyan(&text),
    }
}

/// Groups nodes by (action, reason) and counts them per step id: `3×measure, 3×start`.
fn collapse<'a>(
    items: impl Iterator<Item = (&'a Planned, &'a str)>,
    step_order: &[&str],
) -> Vec<(Action, String, String)> {
    let mut groups: BTreeMap<(Action, String), BTreeMap<(usize, String), usize>> = BTreeMap::new();
    let mut order: Vec<(Action, String)> = Vec::new();
    for (p, step) in items {
        let k = (p.action, p.reason.clone());
        if !groups.contains_key(&k) {
            order.push(k.clone());
        }
        let rank = step_order
            .iter()
            .position(|s| *s == step)
            .unwrap_or(usize::MAX);
        *groups
            .entry(k)
            .or_default()
            .entry((rank, step.to_string()))
            .or_default() += 1;
    }
    order
        .into_iter()
        .map(|k| {
            let steps = &groups[&k];
            let list = steps
                .iter()
                .map(|((_, s), n)| {
                    if *n == 1 {
                        s.clone()
                    } else {
                        format!("{n}×{s}")
                    }
                })
                .collect::<Vec<_>>()
                .join(", ");
            (k.0, list, k.1)
        })
        .collect()
}

pub fn text(campaign: &Campaign, dag: &Dag, plan: &Plan, verbose: bool, style: Style) -> String {
    let mut out = String::new();
    let order: Vec<&str> = campaign
        .pipeline
        .steps
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    let arms = campaign
        .arms
        .iter()
        .map(|a| a.name.as_str())
        .collect::<Vec<_>>()
        .join(", ");
    let _ = writeln!(
        out,
        "{} {} · pipeline {} · state {}",
        style.bold("campaign"),
        style.bold(&campaign.name),
        campaign.pipeline.name,
        campaign.state_dir.display()
    );
    let _ = writeln!(out, "{} commits · arms: {arms}", campaign.commits.len());
    let line = |out: &mut String, action: Action, what: &str, reason: &str| {
        let reason = if reason.is_empty() {
            String::new()
        } else {
            format!("  {}", style.dim(&format!("({reason})")))
        };
        let _ = writeln!(out, "    {:<14} {what}{reason}", painted(style, action));
    };
    // Shared pulls (or builds, each followed by its push) first.
    let pulls: Vec<&Planned> = dag
        .pulls
        .iter()
        .enumerate()
        .flat_map(|(image, node)| std::iter::once(node).chain(dag.pushes.get(&image)))
        .map(|i| plan.get(*i))
        .collect();
    if !pulls.is_empty() {
        let _ = writeln!(out, "\n{}", style.bold("images"));
        if verbose || pulls.len() <= 12 {
            for p in &pulls {
                line(&mut out, p.action, &p.address, &p.reason);
            }
        } else {
            for (action, list, reason) in
                collapse(pulls.iter().map(|p| (*p, step_of(&p.address))), &order)
            {
                line(&mut out, action, &list, &reason);
            }
        }
    }
    // Per commit, per arm.
    let mut per_commit: Vec<BTreeMap<String, Vec<&Planned>>> =
        vec![BTreeMap::new(); campaign.commits.len()];
    let mut compare_of: BTreeMap<usize, &Planned> = BTreeMap::new();
    for idx in dag.graph.node_indices() {
        let node = &dag.graph[idx];
        let p = plan.get(idx);
        match node.target {
            Target::Image(_) => {}
            Target::Commit(c) => {
                compare_of.insert(c, p);
            }
            _ => {
                let (Some(c), Some(arm)) = dag.owner(campaign, node) else {
                    continue;
                };
                per_commit[c].entry(arm.to_string()).or_default().push(p);
            }
        }
    }
    for (ci, commit) in campaign.commits.iter().enumerate() {
        let subject = commit
            .subject
            .as_deref()
            .map(|s| format!(" · {s}"))
            .unwrap_or_default();
        let _ = writeln!(
            out,
            "\n{} {} · {}{subject}",
            style.bold("commit"),
            style.bold(&commit.short),
            commit.model.hf
        );
        for search in commit.load.points.iter().filter_map(|p| p.search.as_ref()) {
            let _ = writeln!(out, "  {}", style.dim(&search_line(search)));
        }
        for arm in &campaign.arms {
            if let Some(absent) = commit.absent.iter().find(|a| a.arm == arm.name) {
                let _ = writeln!(out, "  {}", arm.name);
                let _ = writeln!(
                    out,
                    "    {:<14} {}",
                    style.dim("∅ absent"),
                    style.dim(&absent.reason)
                );
                continue;
            }
            let Some(items) = per_commit[ci].get(&arm.name) else {
                continue;
            };
            let _ = writeln!(out, "  {}", arm.name);
            if verbose {
                for p in items {
                    line(&mut out, p.action, &p.address, &p.reason);
                }
            } else {
                for (action, list, reason) in
                    collapse(items.iter().map(|p| (*p, step_of(&p.address))), &order)
                {
                    line(&mut out, action, &list, &reason);
                }
            }
        }
        if let Some(p) = compare_of.get(&ci) {
            let _ = writeln!(out, "  compare");
            line(&mut out, p.action, &p.address, &p.reason);
        }
    }
    orphaned_section(&mut out, plan, verbose, &order, &line, style);
    let c = &plan.counts;
    let _ = writeln!(
        out,
        "\n{}: {} to run, {} to rerun, {} incomplete, {} cached, {} orphaned; {} arm{} absent",
        style.bold("Plan"),
        c.run,
        c.rerun,
        c.incomplete,
        c.cached,
        c.orphaned,
        c.absent_arms,
        if c.absent_arms == 1 { "" } else { "s" }
    );
    out
}

/// Nodes the manifest no longer has (their results are kept), listed or collapsed.
fn orphaned_section(
    out: &mut String,
    plan: &Plan,
    verbose: bool,
    order: &[&str],
    line: &dyn Fn(&mut String, Action, &str, &str),
    style: Style,
) {
    if plan.orphaned.is_empty() {
        return;
    }
    let _ = writeln!(out, "\n{}", style.bold("orphaned"));
    if verbose || plan.orphaned.len() <= 12 {
        for p in &plan.orphaned {
            line(out, p.action, &p.address, &p.reason);
        }
    } else {
        for (action, list, reason) in collapse(
            plan.orphaned.iter().map(|p| (p, step_of(&p.address))),
            order,
        ) {
            line(out, action, &list, &reason);
        }
    }
}

/// What a search step will do and cost at most: `search=rate in [1, 64] req/s until within
/// 10 % against TTFT ≤ 500 ms (99 % of requests): at most 8 probes of 100 requests per session`.
fn search_line(search: &crate::loadgen::search::Search) -> String {
    use crate::loadgen::search::Over;
    let until = match search.over {
        Over::Rate => format!(" until within {} %", search.tolerance * 100.0),
        Over::Concurrency => String::new(),
    };
    format!(
        "{} in [{}, {}] {}{until} against {} ({} % of requests): at most {} probes of {} requests per session",
        search.label(),
        search.lo,
        search.hi,
        search.over.unit(),
        search.slo.describe(),
        search.attainment * 100.0,
        search.max_probes(),
        search.num_prompts
    )
}

fn step_of(address: &str) -> &str {
    address.split('[').next().unwrap_or(address)
}

#[derive(Serialize)]
struct JsonPlan<'a> {
    version: u32,
    campaign: &'a str,
    manifest: String,
    pipeline: &'a str,
    state_dir: String,
    nodes: Vec<JsonNode<'a>>,
    orphaned: &'a [Planned],
    absent: Vec<JsonAbsent<'a>>,
    summary: &'a super::Counts,
}

#[derive(Serialize)]
struct JsonNode<'a> {
    address: &'a str,
    step: &'a str,
    kind: &'a str,
    commit: Option<&'a str>,
    arm: Option<&'a str>,
    action: Action,
    reason: &'a str,
    key: String,
    depends_on: Vec<&'a str>,
}

#[derive(Serialize)]
struct JsonAbsent<'a> {
    commit: &'a str,
    arm: &'a str,
    reason: &'a str,
}

/// Machine-readable plan (schema version 1; fields are only ever added).
pub fn json(campaign: &Campaign, dag: &Dag, plan: &Plan) -> String {
    let nodes = dag
        .graph
        .node_indices()
        .map(|idx| {
            let node = &dag.graph[idx];
            let p = plan.get(idx);
            let (commit, arm) = dag.owner(campaign, node);
            let mut deps: Vec<&str> = dag
                .graph
                .neighbors_directed(idx, petgraph::Direction::Incoming)
                .map(|d| dag.graph[d].address.as_str())
                .collect();
            deps.sort();
            deps.dedup();
            JsonNode {
                address: &node.address,
                step: &node.step_id,
                kind: node.kind.name(),
                commit: commit.map(|c| campaign.commits[c].short.as_str()),
                arm,
                action: p.action,
                reason: &p.reason,
                key: node.key.hex(),
                depends_on: deps,
            }
        })
        .collect();
    let absent = campaign
        .commits
        .iter()
        .flat_map(|c| {
            c.absent.iter().map(move |a| JsonAbsent {
                commit: &c.short,
                arm: &a.arm,
                reason: &a.reason,
            })
        })
        .collect();
    let doc = JsonPlan {
        version: 1,
        campaign: &campaign.name,
        manifest: campaign.manifest_path.display().to_string(),
        pipeline: &campaign.pipeline.name,
        state_dir: campaign.state_dir.display().to_string(),
        nodes,
        orphaned: &plan.orphaned,
        absent,
        summary: &plan.counts,
    };
    serde_json::to_string_pretty(&doc).expect("plan serialises")
}

/// Graphviz dot: nodes coloured by action.
pub fn dot(dag: &Dag, plan: &Plan) -> String {
    let mut out = String::from(
        "digraph isobench {\n  rankdir=LR;\n  node [shape=box, style=filled, fontname=\"monospace\"];\n",
    );
    for idx in dag.graph.node_indices() {
        let node = &dag.graph[idx];
        let color = match plan.get(idx).action {
            Action::Run => "palegreen",
            Action::Rerun => "khaki",
            Action::Incomplete => "salmon",
            Action::Cached => "lightgrey",
            Action::Orphaned => "lightblue",
        };
        let _ = writeln!(
            out,
            "  n{} [label=\"{}\", fillcolor={color}];",
            idx.index(),
            node.address.replace('"', "\\\"")
        );
    }
    for e in dag.graph.raw_edges() {
        let _ = writeln!(out, "  n{} -> n{};", e.source().index(), e.target().index());
    }
    out.push_str("}\n");
    out
}
