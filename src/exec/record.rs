//! Journal entries for DAG nodes: the only place that turns a node into a state record.
use crate::failure::Failure;
use crate::pipeline::expand::Node;
use crate::state::{Entry, Event, STATE_VERSION};
use std::collections::BTreeMap;

pub fn entry(node: &Node, event: Event, attempt: u32, run: &str) -> Entry {
    Entry {
        v: STATE_VERSION,
        t: crate::util::now_rfc3339(),
        addr: node.address.clone(),
        event,
        key: node.key.hex(),
        attempt,
        components: node
            .components
            .iter()
            .map(|(k, v)| (k.to_string(), v.hex()))
            .collect(),
        outputs: BTreeMap::new(),
        failure: None,
        run: run.to_string(),
        info: None,
    }
}

pub fn failed(node: &Node, attempt: u32, run: &str, failure: Failure) -> Entry {
    Entry {
        failure: Some(failure),
        ..entry(node, Event::Failed, attempt, run)
    }
}
