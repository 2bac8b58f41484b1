//! A bounded in-memory log of firing/resolved transitions, served at
//! `/api/v1/events?from=&to=` in a shape Grafana's JSON/Infinity datasources read
//! as annotations (`time`, `timeEnd` in epoch ms, `title`, `text`, `tags`).

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CauseReport {
    pub name: String,
    pub layer: String,
    pub explanation: String,
    pub recommendation: String,
    /// The values that made the cause hold, by the expression text that read them.
    pub evidence: BTreeMap<String, f64>,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Event {
    pub id: u64,
    pub rule: String,
    pub severity: String,
    pub layer: String,
    pub labels: BTreeMap<String, String>,
    /// Unix seconds.
    pub start: f64,
    pub end: Option<f64>,
    pub value: f64,
    pub baseline: Option<f64>,
    pub cause: Option<CauseReport>,
    pub text: String,
}

#[derive(Debug)]
pub struct EventLog {
    cap: usize,
    next_id: u64,
    events: VecDeque<Event>,
}

impl EventLog {
    pub fn new(cap: usize) -> Self {
        EventLog {
            cap: cap.max(1),
            next_id: 1,
            events: VecDeque::new(),
        }
    }

    pub fn open(&mut self, mut e: Event) -> u64 {
        e.id = self.next_id;
        self.next_id += 1;
        if self.events.len() == self.cap {
            self.events.pop_front();
        }
        let id = e.id;
        self.events.push_back(e);
        id
    }

    pub fn get(&self, id: u64) -> Option<&Event> {
        self.events.iter().rev().find(|e| e.id == id)
    }

    /// Events opened after the one with id `id`, oldest first (ids only grow).
    pub fn opened_after(&self, id: u64) -> impl Iterator<Item = &Event> {
        let skip = self.events.partition_point(|e| e.id <= id);
        self.events.iter().skip(skip)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut Event> {
        self.events.iter_mut().rev().find(|e| e.id == id)
    }

    /// Events overlapping `[from, to]` (unix seconds), oldest first.
    pub fn range(&self, from: f64, to: f64) -> Vec<Event> {
        self.events
            .iter()
            .filter(|e| e.start <= to && e.end.is_none_or(|end| end >= from))
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.events.len()
    }

    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }
}

impl CauseReport {
    /// "Root cause NAME (LAYER layer): EXPLANATION", then the evidence and the
    /// recommendation on lines of their own: what people read in notifications.
    pub fn describe(&self) -> String {
        let mut t = format!("Root cause {} ({} layer): {}", self.name, self.layer, self.explanation);
        if !self.evidence.is_empty() {
            let ev: Vec<String> = self.evidence.iter().map(|(k, v)| format!("{k} = {v}")).collect();
            t.push_str(&format!("\nEvidence: {}", ev.join(", ")));
        }
        if !self.recommendation.is_empty() {
            t.push_str(&format!("\nRecommendation: {}", self.recommendation));
        }
        t
    }
}

/// Grafana tags of an event: `rule:…`, `layer:…`, `severity:…` and `cause:…`.
pub fn annotation_tags(e: &Event) -> Vec<String> {
    let mut tags = vec![
        format!("rule:{}", e.rule),
        format!("layer:{}", e.layer),
        format!("severity:{}", e.severity),
    ];
    if let Some(c) = &e.cause {
        tags.push(format!("cause:{}", c.name));
    }
    tags
}

/// The Grafana annotation shape of an event.
pub fn to_annotation(e: &Event) -> serde_json::Value {
    let tags = annotation_tags(e);
    serde_json::json!({
        "id": e.id,
        "time": (e.start * 1000.0) as i64,
        "timeEnd": e.end.map(|t| (t * 1000.0) as i64),
        "title": e.rule,
        "text": e.text,
        "tags": tags,
        "labels": e.labels,
        "value": e.value,
        "baseline": e.baseline,
        "cause": e.cause,
        "firing": e.end.is_none(),
    })
}
