//! Samples, immutable snapshots and the short per-series history.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::Arc;
use std::time::SystemTime;

use rustc_hash::FxBuildHasher;

use crate::catalog::{MetricDesc, MetricKind};

/// A descriptor that is either from the static catalog or built at run time
/// (netstat fields the catalog does not know yet).
#[derive(Clone, Debug)]
pub enum DescRef {
    Static(&'static MetricDesc),
    Owned(Arc<MetricDesc>),
}

impl Deref for DescRef {
    type Target = MetricDesc;
    fn deref(&self) -> &MetricDesc {
        match self {
            DescRef::Static(d) => d,
            DescRef::Owned(d) => d,
        }
    }
}

impl From<&'static MetricDesc> for DescRef {
    fn from(d: &'static MetricDesc) -> Self {
        DescRef::Static(d)
    }
}

impl From<Arc<MetricDesc>> for DescRef {
    fn from(d: Arc<MetricDesc>) -> Self {
        DescRef::Owned(d)
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct HistogramValue {
    /// Upper bounds, ascending, without +Inf.
    pub bounds: Arc<[f64]>,
    /// Cumulative counts per bound (same length as `bounds`).
    pub cumulative: Vec<u64>,
    pub count: u64,
    pub sum: f64,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    Scalar(f64),
    /// Boxed: a snapshot holds hundreds of scalars for each histogram, and an
    /// inline histogram made every sample 80 bytes instead of 32.
    Histogram(Box<HistogramValue>),
}

impl Value {
    pub fn as_f64(&self) -> Option<f64> {
        match self {
            Value::Scalar(v) => Some(*v),
            Value::Histogram(_) => None,
        }
    }
}

/// A label value. `Arc<str>` rather than `String` so that series carrying the same
/// value share one allocation: the rule engine's outputs for ten thousand groups all
/// repeat their rule's name, severity and layer, and a clone is a reference count.
pub type LabelValue = Arc<str>;

/// The label values of one sample, in the order of its family's label names.
pub type LabelValues = Arc<[LabelValue]>;

/// What a collector may hand to [`Emitter::push`] as label values.
pub trait IntoLabels {
    fn into_labels(self) -> LabelValues;
}

impl IntoLabels for LabelValues {
    fn into_labels(self) -> LabelValues {
        self
    }
}

impl IntoLabels for &LabelValues {
    fn into_labels(self) -> LabelValues {
        self.clone()
    }
}

impl IntoLabels for Vec<LabelValue> {
    fn into_labels(self) -> LabelValues {
        self.into()
    }
}

impl IntoLabels for Vec<String> {
    fn into_labels(self) -> LabelValues {
        self.into_iter().map(LabelValue::from).collect()
    }
}

impl IntoLabels for Vec<&str> {
    fn into_labels(self) -> LabelValues {
        self.into_iter().map(LabelValue::from).collect()
    }
}

impl<const N: usize> IntoLabels for [String; N] {
    fn into_labels(self) -> LabelValues {
        self.into_iter().map(LabelValue::from).collect()
    }
}

impl<const N: usize> IntoLabels for [&str; N] {
    fn into_labels(self) -> LabelValues {
        self.into_iter().map(LabelValue::from).collect()
    }
}

impl<const N: usize> IntoLabels for [LabelValue; N] {
    fn into_labels(self) -> LabelValues {
        self.into_iter().collect()
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// Label values in the order of the descriptor's `labels`. Shared so that
    /// history entries and derived series reuse them without copying strings.
    pub labels: LabelValues,
    pub value: Value,
}

/// A family's samples: one is held inline (most families have one sample).
pub type Samples = smallvec::SmallVec<[Sample; 1]>;

#[derive(Clone, Debug)]
pub struct Family {
    pub desc: DescRef,
    pub samples: Samples,
    /// Label names decided at run time (the rule engine's outputs carry the union of
    /// the loaded rules' group labels); `None` means the descriptor's `labels`.
    pub dynamic_labels: Option<Arc<[String]>>,
    /// [`name_key`] of the name, computed once when the family is made: the
    /// snapshot's index is built from these without reading every family's
    /// descriptor (~500 pointer chases into memory a tick has not touched).
    key: u64,
}

impl Family {
    pub fn new(desc: impl Into<DescRef>) -> Family {
        let desc = desc.into();
        Family {
            key: name_key(&desc.name),
            desc,
            samples: Samples::new(),
            dynamic_labels: None,
        }
    }

    pub fn label_names(&self) -> Vec<&str> {
        match &self.dynamic_labels {
            Some(names) => names.iter().map(String::as_str).collect(),
            None => self.desc.labels.to_vec(),
        }
    }

    /// Whether the family's label names are `names`, in order (without the
    /// allocation of [`Family::label_names`]).
    pub fn label_names_eq(&self, names: &[String]) -> bool {
        match &self.dynamic_labels {
            Some(own) => own.iter().eq(names.iter()),
            None => self.desc.labels.iter().copied().eq(names.iter().map(String::as_str)),
        }
    }

    /// Index of label `name`, if the family has it.
    pub fn label_index(&self, name: &str) -> Option<usize> {
        match &self.dynamic_labels {
            Some(names) => names.iter().position(|n| n == name),
            None => self.desc.labels.iter().position(|n| *n == name),
        }
    }
}

/// The key of a family name in the emitter's and the snapshot's indexes. Names
/// are ours (catalog and kernel field names), not adversarial input, so the
/// cheap Fx hash is fine; a collision costs a scan, never a wrong family.
pub fn name_key(name: &str) -> u64 {
    use std::hash::BuildHasher;
    FxBuildHasher.hash_one(name)
}

/// What a collector writes into during one collection.
#[derive(Default, Debug)]
pub struct Emitter {
    families: Vec<Family>,
    /// Family by [`name_key`] (the first family of a name; a colliding name is
    /// found by a scan). Keyed by hash so that creating a family allocates no
    /// key: netstat alone creates ~400 families a tick.
    index: HashMap<u64, usize, FxBuildHasher>,
    /// Families from this position on are not in `index` yet: those made by
    /// [`Emitter::push0_keyed`], indexed only when a lookup needs them.
    indexed: usize,
    /// Family index by the address of a `'static` descriptor: the rule engine
    /// pushes ~50k samples a tick over a handful of static descriptors, and
    /// hashing the name for each push showed in profiles. Static addresses are
    /// never reused, so an address hit is always the right family. (A 32-slot
    /// direct-mapped cache stood here before; descriptors laid out at a fixed
    /// stride collided in it, and netdev's 30 families missed on most pushes.)
    statics: HashMap<usize, usize, FxBuildHasher>,
    /// The last static descriptor pushed and its family: pushes of one family
    /// usually follow each other.
    last_static: (usize, usize),
    /// Initial sample capacity for families not created yet, by static descriptor
    /// address (avoids regrowing 10k-sample vectors every tick).
    hints: Vec<(usize, usize)>,
}

/// The label values of a sample without labels: one shared allocation per
/// thread instead of one per sample.
fn no_labels() -> LabelValues {
    thread_local! {
        static EMPTY: LabelValues = Arc::from(Vec::new());
    }
    EMPTY.with(Arc::clone)
}

impl Emitter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Families made so far.
    pub fn family_count(&self) -> usize {
        self.families.len()
    }

    /// Room for `n` more families, so a collector that knows how many it makes
    /// (netstat: ~400) does not regrow as it goes.
    pub fn reserve_families(&mut self, n: usize) {
        self.families.reserve(n);
    }

    /// Reserves room for `n` samples of `desc` when its family is created (the
    /// family still only appears once something is pushed to it).
    pub fn size_hint(&mut self, desc: &'static MetricDesc, n: usize) {
        self.hints.push((desc as *const MetricDesc as usize, n));
    }

    fn family(&mut self, desc: DescRef) -> &mut Family {
        let addr = match &desc {
            DescRef::Static(d) => *d as *const MetricDesc as usize,
            DescRef::Owned(_) => 0,
        };
        if addr != 0 {
            let idx = if self.last_static.0 == addr {
                self.last_static.1
            } else {
                match self.statics.get(&addr) {
                    Some(&i) => i,
                    None => {
                        let key = name_key(&desc.name);
                        let i = self.family_index(desc, key, addr);
                        self.statics.insert(addr, i);
                        i
                    }
                }
            };
            self.last_static = (addr, idx);
            return &mut self.families[idx];
        }
        let key = name_key(&desc.name);
        let idx = self.family_index(desc, key, addr);
        &mut self.families[idx]
    }

    /// The index of the family named `desc.name` (whose [`name_key`] is `key`),
    /// created if new.
    fn family_index(&mut self, desc: DescRef, key: u64, addr: usize) -> usize {
        self.index_all();
        // Rows of one dynamic family are usually pushed one after another.
        let last = self.families.len().wrapping_sub(1);
        if addr == 0
            && self
                .families
                .last()
                .is_some_and(|f| f.key == key && f.desc.name == desc.name)
        {
            return last;
        }
        let found = match self.index.get(&key) {
            Some(&i) if self.families[i].desc.name == desc.name => Some(i),
            Some(_) => self.families.iter().position(|f| f.desc.name == desc.name),
            None => None,
        };
        if let Some(i) = found {
            return i;
        }
        let i = self.families.len();
        self.index.entry(key).or_insert(i);
        // A family without labels holds one sample: room for exactly one,
        // not the four an empty Vec grows to on its first push (netstat's
        // ~400 families a tick would each take 4 samples' room).
        let single = usize::from(desc.labels.is_empty());
        let cap = self
            .hints
            .iter()
            .find(|h| addr != 0 && h.0 == addr)
            .map_or(single, |h| h.1);
        self.families.push(Family {
            desc,
            samples: Samples::with_capacity(cap),
            dynamic_labels: None,
            key,
        });
        self.indexed = self.families.len();
        i
    }

    /// Puts the families [`Emitter::push0_keyed`] made into the index.
    fn index_all(&mut self) {
        for (i, f) in self.families.iter().enumerate().skip(self.indexed) {
            self.index.entry(f.key).or_insert(i);
        }
        self.indexed = self.families.len();
    }

    /// [`Emitter::push0`] of a family of its own: one of many descriptors whose
    /// [`name_key`] the caller keeps and which it pushes once each (netstat's
    /// ~400 kernel fields a tick). The family is made without reading its name
    /// (memory the tick has not touched yet), without taking a slot of the
    /// static-descriptor cache, and without entering the name index, which is
    /// only caught up if a later push looks a name up: netstat's probes and
    /// inserts into a fresh 400-entry map were most of its own CPU time.
    pub fn push0_keyed(&mut self, desc: &'static MetricDesc, key: u64, value: f64) {
        debug_assert_eq!(key, name_key(&desc.name));
        let mut samples = Samples::new();
        samples.push(Sample {
            labels: no_labels(),
            value: Value::Scalar(value),
        });
        self.families.push(Family {
            desc: DescRef::Static(desc),
            samples,
            dynamic_labels: None,
            key,
        });
    }

    /// Records one scalar sample. `labels` must match the descriptor's label names.
    pub fn push(&mut self, desc: impl Into<DescRef>, labels: impl IntoLabels, value: f64) {
        let desc = desc.into();
        let labels = labels.into_labels();
        debug_assert_eq!(desc.labels.len(), labels.len(), "labels of {}", desc.name);
        self.family(desc).samples.push(Sample {
            labels,
            value: Value::Scalar(value),
        });
    }

    /// Records a sample without labels.
    pub fn push0(&mut self, desc: impl Into<DescRef>, value: f64) {
        self.push(desc, no_labels(), value);
    }

    pub fn push_histogram(&mut self, desc: impl Into<DescRef>, labels: impl IntoLabels, value: HistogramValue) {
        let desc = desc.into();
        let labels = labels.into_labels();
        debug_assert_eq!(desc.kind, MetricKind::Histogram);
        self.family(desc).samples.push(Sample {
            labels,
            value: Value::Histogram(Box::new(value)),
        });
    }

    /// Records a sample of a family whose label names are decided at run time.
    pub fn push_dynamic(
        &mut self,
        desc: impl Into<DescRef>,
        names: &Arc<[String]>,
        labels: impl IntoLabels,
        value: f64,
    ) {
        let labels = labels.into_labels();
        debug_assert_eq!(names.len(), labels.len());
        let fam = self.family(desc.into());
        fam.dynamic_labels = Some(names.clone());
        fam.samples.push(Sample {
            labels,
            value: Value::Scalar(value),
        });
    }

    /// Makes sure a family appears even when it has no samples this tick.
    pub fn declare(&mut self, desc: impl Into<DescRef>) {
        self.family(desc.into());
    }

    pub fn into_families(self) -> Vec<Family> {
        self.families
    }

    pub fn len(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// One immutable, timestamped view of everything collected in a tick.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub taken_at: SystemTime,
    pub families: Vec<Family>,
    /// Family index by [`name_key`], built on first lookup (a snapshot holds ~700
    /// families; the rule engine looks names up thousands of times a tick).
    index: std::sync::OnceLock<HashMap<u64, usize, FxBuildHasher>>,
    /// Hash of the families' name keys in order ([`FamilyName`]).
    layout: u64,
}

/// Hash of `families`' name keys in order, continuing from `seed`; never 0,
/// which stands for "no snapshot looked up yet" in [`FamilyName`].
fn layout_of(seed: u64, families: &[Family]) -> u64 {
    families
        .iter()
        .fold(seed, |h, f| {
            (h.rotate_left(5) ^ f.key).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95)
        })
        .max(1)
}

/// [`FamilyName`]'s position for a family the snapshot does not hold.
const ABSENT: usize = usize::MAX;

/// A metric name looked up in snapshot after snapshot (the history's and the
/// rules' inputs): its [`name_key`], computed once, and where it was in the last
/// snapshot of the same layout. An unchanged host's snapshots hold the same
/// families in the same order, so a lookup is two comparisons instead of a hash
/// of the name and, once per tick, building the snapshot's ~500-entry index.
///
/// One thread at a time looks a name up (the history and the engine are each
/// behind a mutex): the two atomics are not updated together, so concurrent
/// lookups in snapshots of different layouts could pair one's layout with the
/// other's "absent". A snapshot's `families` are not changed after it is made
/// but through [`Snapshot::extend`], which the layout (like the index) relies on.
#[derive(Debug)]
pub struct FamilyName {
    name: Box<str>,
    key: u64,
    /// The layout the position below was found in.
    layout: std::sync::atomic::AtomicU64,
    /// Position in `families`, or [`ABSENT`].
    at: std::sync::atomic::AtomicUsize,
}

impl FamilyName {
    pub fn new(name: &str) -> Self {
        FamilyName {
            name: name.into(),
            key: name_key(name),
            // No snapshot's layout is looked up yet: the first lookup searches.
            layout: std::sync::atomic::AtomicU64::new(0),
            at: std::sync::atomic::AtomicUsize::new(ABSENT),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.name
    }
}

impl Clone for FamilyName {
    fn clone(&self) -> Self {
        FamilyName::new(&self.name)
    }
}

impl PartialEq for FamilyName {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Snapshot {
    pub fn new(taken_at: SystemTime, families: Vec<Family>) -> Self {
        Snapshot {
            taken_at,
            layout: layout_of(0x9e37_79b9_7f4a_7c15, &families),
            families,
            index: std::sync::OnceLock::new(),
        }
    }

    pub fn empty() -> Self {
        Snapshot::new(SystemTime::UNIX_EPOCH, Vec::new())
    }

    /// Appends families (the rule engine's outputs) and invalidates the index.
    pub fn extend(&mut self, families: Vec<Family>) {
        self.layout = layout_of(self.layout, &families);
        self.families.extend(families);
        self.index = std::sync::OnceLock::new();
    }

    pub fn family(&self, name: &str) -> Option<&Family> {
        self.position(name, name_key(name)).and_then(|i| self.families.get(i))
    }

    /// Where the first family named `name` (whose [`name_key`] is `key`) is.
    fn position(&self, name: &str, key: u64) -> Option<usize> {
        let index = self.index.get_or_init(|| {
            let mut m = HashMap::with_capacity_and_hasher(self.families.len(), FxBuildHasher);
            for (i, f) in self.families.iter().enumerate() {
                m.entry(f.key).or_insert(i);
            }
            m
        });
        match index.get(&key) {
            Some(&i) if self.families.get(i).is_some_and(|f| f.desc.name == name) => Some(i),
            // Two names with one hash: the first family of this name, if any.
            Some(_) => self.families.iter().position(|f| f.desc.name == name),
            None => None,
        }
    }

    /// [`Snapshot::family`] for a name looked up every tick.
    pub fn find(&self, name: &FamilyName) -> Option<&Family> {
        use std::sync::atomic::Ordering::Relaxed;
        if name.layout.load(Relaxed) == self.layout {
            let at = name.at.load(Relaxed);
            if at == ABSENT {
                return None;
            }
            if let Some(f) = self
                .families
                .get(at)
                .filter(|f| f.key == name.key && *f.desc.name == *name.name)
            {
                return Some(f);
            }
        }
        let at = self.position(&name.name, name.key);
        name.at.store(at.unwrap_or(ABSENT), Relaxed);
        name.layout.store(self.layout, Relaxed);
        at.and_then(|i| self.families.get(i))
    }

    /// Value of the first sample of `name` whose labels include every `(label, value)`.
    pub fn value(&self, name: &str, matchers: &[(&str, &str)]) -> Option<f64> {
        let fam = self.family(name)?;
        fam.samples
            .iter()
            .find(|s| {
                matchers.iter().all(|(l, v)| {
                    fam.label_index(l)
                        .and_then(|i| s.labels.get(i))
                        .is_some_and(|x| &**x == *v)
                })
            })
            .and_then(|s| s.value.as_f64())
    }

    pub fn series_count(&self) -> usize {
        self.families.iter().map(|f| f.samples.len()).sum()
    }
}

mod history;
pub use history::{series_hash, History, Ring, SavedSeries};

#[cfg(test)]
mod tests {
    use super::*;

    fn snapshot(names: &[&'static str]) -> Snapshot {
        let mut e = Emitter::new();
        for (i, n) in names.iter().enumerate() {
            let desc = crate::catalog::find(n).expect("in catalog");
            e.push0(desc, i as f64);
        }
        Snapshot::new(SystemTime::now(), e.into_families())
    }

    /// A remembered position is used only for a snapshot of the same layout;
    /// any other is searched, whether the family moved, appeared or went away.
    #[test]
    fn a_family_name_finds_its_family_whatever_the_layout() {
        let (a, b, c) = (
            "netsight_snapshot_series",
            "netsight_snapshot_timestamp_seconds",
            "netsight_rules_loaded",
        );
        let name = FamilyName::new(b);
        let value = |s: &Snapshot| s.find(&name).and_then(|f| f.samples[0].value.as_f64());
        let first = snapshot(&[a, b]);
        assert_eq!(value(&first), Some(1.0));
        assert_eq!(value(&snapshot(&[a, b])), Some(1.0), "same layout");
        assert_eq!(value(&snapshot(&[b, a])), Some(0.0), "moved");
        assert_eq!(value(&snapshot(&[a, c])), None, "gone");
        assert_eq!(value(&snapshot(&[a, c])), None, "still gone, remembered");
        assert_eq!(value(&snapshot(&[c, a, b])), Some(2.0), "back");
        let mut extended = snapshot(&[a, c]);
        assert_eq!(value(&extended), None);
        let mut e = Emitter::new();
        e.push0(crate::catalog::find(b).expect("in catalog"), 7.0);
        extended.extend(e.into_families());
        assert_eq!(value(&extended), Some(7.0), "appended after a lookup");
        assert_eq!(name.clone().as_str(), b);
    }
}
