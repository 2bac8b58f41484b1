//! Splits a rule's series into label groups and selects the series a variable
//! stands for in a group.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use rustc_hash::{FxBuildHasher, FxHasher};

use crate::rules::load::CompiledRule;
use crate::snapshot::{Family, FamilyName, Sample, Snapshot};

pub(super) struct Group<'a> {
    pub(super) names: &'a [String],
    pub(super) values: &'a [&'a str],
    pub(super) own: &'a [&'a Sample],
    /// The family of the rule's own series (looked up once per rule, not per group).
    pub(super) fam: Option<&'a Family>,
}

impl Group<'_> {
    pub(super) fn label_map(&self) -> BTreeMap<String, String> {
        self.names
            .iter()
            .cloned()
            .zip(self.values.iter().map(|v| v.to_string()))
            .collect()
    }
}

/// Key of a group's state. Only kept in memory (persisted state is re-keyed on
/// import), so the hash function can change between versions.
pub(super) fn group_hash<'a>(values: impl Iterator<Item = &'a str>) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = FxHasher::default();
    for v in values {
        v.hash(&mut h);
    }
    h.finish()
}

pub(super) struct GroupSpan {
    pub(super) key: u64,
    /// Range of the group's samples in [`Discovered::samples`].
    pub(super) start: usize,
    pub(super) len: usize,
}

/// A rule's series split into label groups, in flat vectors that one evaluation
/// pass reuses from rule to rule ([`Scratch`]).
pub(super) struct Discovered<'a, 's> {
    pub(super) fam: Option<&'a Family>,
    /// Group label names (shared by every group of the rule).
    pub(super) names: Arc<[String]>,
    pub(super) groups: &'s [GroupSpan],
    /// `names.len()` label values per group, in group order.
    pub(super) values: &'s [&'a str],
    /// Samples of every group, grouped, in snapshot order within a group.
    pub(super) samples: &'s [&'a Sample],
}

/// Buffers [`discover_groups`] fills, kept for a whole evaluation pass: a handful
/// of allocations per tick instead of per rule.
#[derive(Default)]
pub(super) struct Scratch<'a> {
    index: HashMap<u64, usize, FxBuildHasher>,
    groups: Vec<GroupSpan>,
    values: Vec<&'a str>,
    member: Vec<(usize, &'a Sample)>,
    samples: Vec<&'a Sample>,
    idx: Vec<Option<usize>>,
    matchers: Vec<Option<usize>>,
}

/// The group label names of `rule` over `fam`, reusing the rule's last ones when
/// they are the same (they are unless the rules or the family's labels changed).
fn group_names(rule: &CompiledRule, fam: &Family, cached: &mut Option<Arc<[String]>>) -> Arc<[String]> {
    let same = |c: &Arc<[String]>| match &rule.by {
        Some(by) => c.iter().eq(by.iter()),
        None => fam.label_names_eq(c),
    };
    if let Some(c) = cached.as_ref().filter(|c| same(c)) {
        return c.clone();
    }
    let names: Arc<[String]> = match &rule.by {
        Some(by) => by.as_slice().into(),
        None => fam.label_names().iter().map(|s| s.to_string()).collect(),
    };
    *cached = Some(names.clone());
    names
}

/// Splits the rule's series into label groups (after matchers), without copying
/// label strings: groups are keyed by a hash of their label values.
pub(super) fn discover_groups<'a, 's>(
    rule: &CompiledRule,
    snap: &'a Snapshot,
    names_cache: &mut Option<Arc<[String]>>,
    scratch: &'s mut Scratch<'a>,
) -> Discovered<'a, 's> {
    let Scratch {
        index,
        groups,
        values,
        member,
        samples,
        idx,
        matchers,
    } = scratch;
    index.clear();
    groups.clear();
    values.clear();
    member.clear();
    samples.clear();
    let Some(fam) = snap.find(&rule.series) else {
        return Discovered {
            fam: None,
            names: Arc::from(Vec::new()),
            groups,
            values,
            samples,
        };
    };
    let names = group_names(rule, fam, names_cache);
    idx.clear();
    idx.extend(names.iter().map(|n| fam.label_index(n)));
    matchers.clear();
    matchers.extend(rule.matchers.iter().map(|(l, _)| fam.label_index(l)));
    let label = |s: &'a Sample, i: Option<usize>| -> &'a str { i.and_then(|i| s.labels.get(i)).map_or("", |v| &**v) };
    for s in &fam.samples {
        if !matchers
            .iter()
            .zip(&rule.matchers)
            .all(|(&i, (_, re))| re.is_match(label(s, i)))
        {
            continue;
        }
        let h = group_hash(idx.iter().map(|&i| label(s, i)));
        let gi = *index.entry(h).or_insert_with(|| {
            values.extend(idx.iter().map(|&i| label(s, i)));
            groups.push(GroupSpan {
                key: h,
                start: 0,
                len: 0,
            });
            groups.len() - 1
        });
        groups[gi].len += 1;
        member.push((gi, s));
    }
    let mut at = 0;
    for g in groups.iter_mut() {
        g.start = at;
        at += g.len;
    }
    // Stable: a group's samples keep their snapshot order.
    member.sort_by_key(|m| m.0);
    samples.extend(member.iter().map(|m| m.1));
    Discovered {
        fam: Some(fam),
        names,
        groups,
        values,
        samples,
    }
}

/// The samples a variable stands for in a group: usually one, kept inline.
pub(super) type Selected<'a> = smallvec::SmallVec<[&'a Sample; 4]>;

/// The series a variable stands for in a group: samples of `metric` that agree with
/// the group on every label both have.
pub(super) fn select<'a>(snap: &'a Snapshot, metric: &FamilyName, group: &Group) -> Option<(&'a Family, Selected<'a>)> {
    let fam = snap.find(metric)?;
    let shared: smallvec::SmallVec<[(usize, usize); 4]> = group
        .names
        .iter()
        .enumerate()
        .filter_map(|(gi, n)| fam.label_index(n).map(|fi| (fi, gi)))
        .collect();
    let samples: Selected = fam
        .samples
        .iter()
        .filter(|s| {
            shared
                .iter()
                .all(|&(fi, gi)| s.labels.get(fi).map(|l| &**l) == group.values.get(gi).copied())
        })
        .collect();
    (!samples.is_empty()).then_some((fam, samples))
}
