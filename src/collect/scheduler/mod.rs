//! Runs the collectors each tick with a time budget and a CPU budget, and assembles
//! one immutable snapshot from whatever they produced.

mod batch;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use tokio::task::JoinHandle;

use self::batch::{spawn, Batch, BatchRunner, RunResult, SharedCollector};
use super::{
    CollectContext, Collector, BUILD_INFO, COLLECTOR_CPU, COLLECTOR_DURATION, COLLECTOR_ERRORS, COLLECTOR_INTERVAL,
    COLLECTOR_UP, SNAPSHOT_SERIES, SNAPSHOT_TIMESTAMP,
};
use crate::snapshot::{Emitter, Family, IntoLabels, LabelValues, Snapshot};

/// The most a collector may slow itself down: 64 ticks between runs.
const MAX_SKIP: u32 = 64;
/// Runs needed before the CPU average is trusted to change a cadence.
const WARMUP_RUNS: u32 = 3;
/// A collector whose last run took less wall time than this runs in the tick's
/// shared blocking task instead of a task of its own: at idle most collectors
/// take 0.03–0.5 ms, and a `spawn_blocking` round trip per collector (queue,
/// thread wake-up, join wake-up) was a sizeable share of the tick's CPU.
const FAST_RUN: Duration = Duration::from_millis(1);
/// When the shared task has not finished after this (or a quarter of the
/// collector timeout, if shorter), the collectors it has not started yet get
/// tasks of their own, so one collector that suddenly hangs delays the others
/// by at most this and the per-collector time budget still holds.
const SPILL_AFTER: Duration = Duration::from_millis(50);

struct Slot {
    name: &'static str,
    /// `{collector="<name>"}`, made once.
    label: LabelValues,
    collector: SharedCollector,
    running: Arc<AtomicBool>,
    last_families: Vec<Family>,
    up: bool,
    errors_total: u64,
    cpu_total: f64,
    last_wall: f64,
    cpu_avg: f64,
    runs: u32,
    every: u32,
    /// The least `every` the collector accepts ([`Collector::min_interval`]).
    floor: u32,
    countdown: u32,
    logged_error: Option<String>,
}

pub struct Scheduler {
    slots: Vec<Slot>,
    ctx: Arc<CollectContext>,
    interval: Duration,
    timeout: Duration,
    cpu_budget: f64,
    batches: BatchRunner,
}

impl Scheduler {
    /// `cpu_percent` is the average share of one core all collectors together may use.
    pub fn new(
        collectors: Vec<Box<dyn Collector>>,
        ctx: CollectContext,
        interval: Duration,
        timeout: Duration,
        cpu_percent: f64,
    ) -> Self {
        let slots = collectors
            .into_iter()
            .map(|c| {
                let floor = ticks_at_least(c.min_interval(), interval);
                (c, floor)
            })
            .map(|(c, floor)| Slot {
                name: c.name(),
                label: [c.name()].into_labels(),
                collector: Arc::new(Mutex::new(c)),
                running: Arc::new(AtomicBool::new(false)),
                last_families: Vec::new(),
                up: false,
                errors_total: 0,
                cpu_total: 0.0,
                last_wall: 0.0,
                cpu_avg: 0.0,
                runs: 0,
                every: floor,
                floor,
                countdown: 0,
                logged_error: None,
            })
            .collect();
        Scheduler {
            slots,
            ctx: Arc::new(ctx),
            interval,
            timeout,
            cpu_budget: cpu_percent / 100.0,
            batches: BatchRunner::default(),
        }
    }

    pub fn collector_names(&self) -> Vec<&'static str> {
        self.slots.iter().map(|s| s.name).collect()
    }

    /// Runs every due collector once and returns the new snapshot.
    pub async fn tick(&mut self) -> Snapshot {
        let taken_at = SystemTime::now();
        self.ctx.tick_files.next_tick();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut pending: Vec<(usize, JoinHandle<RunResult>)> = Vec::new();
        let mut batched = Vec::new();
        for (i, slot) in self.slots.iter_mut().enumerate() {
            if slot.countdown > 0 {
                slot.countdown -= 1;
                continue;
            }
            slot.countdown = slot.every - 1;
            if slot.running.swap(true, Ordering::AcqRel) {
                record_failure(slot, "still running from an earlier tick".into());
                continue;
            }
            // Unknown (first run) or slow collectors get a task of their own.
            if slot.runs > 0 && slot.last_wall < FAST_RUN.as_secs_f64() {
                batched.push((i, slot.collector.clone(), slot.running.clone()));
                continue;
            }
            pending.push((i, spawn(&self.ctx, slot.collector.clone(), slot.running.clone())));
        }
        // A lone fast collector gains nothing from the shared task.
        if batched.len() == 1 {
            for (i, collector, running) in batched.drain(..) {
                pending.push((i, spawn(&self.ctx, collector, running)));
            }
        }
        let mut batch = (!batched.is_empty()).then(|| {
            let batch = Arc::new(Batch::new(batched));
            let handle = self.batches.start(batch.clone(), &self.ctx);
            (batch, handle)
        });
        let mut batch_done = true;
        let mut spilled = Vec::new();
        if let Some((batch, handle)) = &mut batch {
            let spill_at = (tokio::time::Instant::now() + SPILL_AFTER.min(self.timeout / 4)).min(deadline);
            batch_done = tokio::time::timeout_at(spill_at, handle).await.is_ok();
            spilled = vec![false; batch.items.len()];
            if !batch_done {
                for (k, (i, collector, running)) in batch.items.iter().enumerate() {
                    if batch.claim(k) {
                        spilled[k] = true;
                        pending.push((*i, spawn(&self.ctx, collector.clone(), running.clone())));
                    }
                }
            }
        }
        for (i, handle) in pending {
            let slot = &mut self.slots[i];
            match tokio::time::timeout_at(deadline, handle).await {
                Ok(Ok(r)) => record_run(slot, r),
                Ok(Err(e)) => record_failure(slot, format!("collector task failed: {e}")),
                Err(_) => record_failure(slot, format!("exceeded its time budget of {:?}", self.timeout)),
            }
        }
        if let Some((batch, mut handle)) = batch {
            if !batch_done {
                // Whatever the shared task has not finished by the deadline is late.
                let _ = tokio::time::timeout_at(deadline, &mut handle).await;
            }
            for (k, ((i, _, _), result)) in batch.items.iter().zip(batch.take_results()).enumerate() {
                if spilled[k] {
                    continue; // ran in a task of its own, recorded above
                }
                let slot = &mut self.slots[*i];
                match result {
                    Some(r) => record_run(slot, r),
                    None => record_failure(slot, format!("exceeded its time budget of {:?}", self.timeout)),
                }
            }
        }
        self.adjust_cadence();
        self.assemble(taken_at)
    }

    /// Slows the costliest collectors while the total exceeds the CPU budget, and
    /// speeds them back up once there is room again.
    fn adjust_cadence(&mut self) {
        let interval = self.interval.as_secs_f64();
        let share = |s: &Slot| s.cpu_avg / (interval * s.every as f64);
        let mut total: f64 = self.slots.iter().map(share).sum();
        while total > self.cpu_budget {
            let Some(slot) = self
                .slots
                .iter_mut()
                .filter(|s| s.runs >= WARMUP_RUNS && s.every < MAX_SKIP)
                .max_by(|a, b| share(a).total_cmp(&share(b)))
            else {
                break;
            };
            let before = share(slot);
            // Floors need not be powers of two (30 s at 5 s ticks is 6): capped
            // at MAX_SKIP, or at the floor when that is higher.
            slot.every = (slot.every * 2).min(MAX_SKIP.max(slot.floor));
            total -= before / 2.0;
            tracing::warn!(
                collector = slot.name,
                cpu_ms_per_run = slot.cpu_avg * 1e3,
                interval_s = interval * slot.every as f64,
                budget_percent = self.cpu_budget * 100.0,
                "collector exceeds the CPU budget; lowering its cadence"
            );
        }
        for slot in self.slots.iter_mut().filter(|s| s.every > s.floor) {
            let gain = share(slot);
            if total + gain < self.cpu_budget * 0.5 {
                slot.every = (slot.every / 2).max(slot.floor);
                total += gain;
                tracing::info!(
                    collector = slot.name,
                    interval_s = interval * slot.every as f64,
                    "CPU budget has room again; raising the collector's cadence"
                );
            }
        }
    }

    fn assemble(&mut self, taken_at: SystemTime) -> Snapshot {
        let mut core = Emitter::new();
        let interval = self.interval.as_secs_f64();
        for s in &self.slots {
            let l = || s.label.clone();
            core.push(&COLLECTOR_UP, l(), if s.up { 1.0 } else { 0.0 });
            core.push(&COLLECTOR_DURATION, l(), s.last_wall);
            core.push(&COLLECTOR_CPU, l(), s.cpu_total);
            core.push(&COLLECTOR_ERRORS, l(), s.errors_total as f64);
            core.push(&COLLECTOR_INTERVAL, l(), interval * s.every as f64);
        }
        core.push(&BUILD_INFO, [env!("CARGO_PKG_VERSION")], 1.0);
        let ts = taken_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs_f64())
            .unwrap_or(0.0);
        core.push0(&SNAPSHOT_TIMESTAMP, ts);
        let mut families = core.into_families();
        // Room for every family at once: appending ~500 families to a vector that
        // starts small copied them over and over as it doubled.
        families.reserve(self.slots.iter().map(|s| s.last_families.len()).sum::<usize>() + 1);
        for s in &mut self.slots {
            if s.countdown == 0 {
                // Due next tick, whose run replaces these (or whose failure clears
                // them) before anything could repeat them: move, not copy. Cloning
                // every family and dropping the old copy was a visible share of an
                // idle tick.
                families.append(&mut s.last_families);
            } else {
                // Not due next tick: the same samples are repeated until it is.
                families.extend(s.last_families.iter().cloned());
            }
        }
        let series: usize = families.iter().map(|f| f.samples.len()).sum::<usize>() + 1;
        let mut tail = Emitter::new();
        tail.push0(&SNAPSHOT_SERIES, series as f64);
        families.extend(tail.into_families());
        Snapshot::new(taken_at, families)
    }
}

/// Ticks of `interval` that span at least `min` (one at least).
fn ticks_at_least(min: Duration, interval: Duration) -> u32 {
    if interval.is_zero() {
        return 1;
    }
    // Rounded up in integers, so 30 s at 4 s ticks is every 8th tick (not 7.5
    // rounded down) and an exact multiple is not pushed up by a float error.
    let n = min.as_nanos().div_ceil(interval.as_nanos());
    u32::try_from(n).unwrap_or(u32::MAX).clamp(1, MAX_SKIP)
}

fn record_run(slot: &mut Slot, r: RunResult) {
    let cpu = r.cpu.as_secs_f64();
    slot.cpu_total += cpu;
    slot.last_wall = r.wall.as_secs_f64();
    slot.cpu_avg = if slot.runs == 0 {
        cpu
    } else {
        slot.cpu_avg * 0.7 + cpu * 0.3
    };
    slot.runs = slot.runs.saturating_add(1);
    match r.outcome {
        Ok(families) => {
            if slot.logged_error.take().is_some() {
                tracing::info!(collector = slot.name, "collector recovered");
            }
            slot.up = true;
            slot.last_families = families;
        }
        Err(e) => record_failure(slot, e),
    }
}

/// Marks the collector down and logs the reason once per distinct reason.
fn record_failure(slot: &mut Slot, reason: String) {
    slot.up = false;
    slot.errors_total += 1;
    slot.last_families.clear();
    if slot.logged_error.as_deref() != Some(reason.as_str()) {
        tracing::warn!(collector = slot.name, %reason, "collector disabled for this tick");
        slot.logged_error = Some(reason);
    }
}

#[cfg(test)]
mod tests;
