//! Runs the collectors each tick with a time budget and a CPU budget, and assembles
//! one immutable snapshot from whatever they produced.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

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

struct RunResult {
    outcome: Result<Vec<Family>, String>,
    wall: Duration,
    cpu: Duration,
}

type SharedCollector = Arc<Mutex<Box<dyn Collector>>>;

/// Collectors run one after another in one blocking task. Each is claimed
/// (`claimed[k]`) by whoever runs it: the shared task, or the scheduler spilling
/// it to a task of its own when the shared one stalls.
struct Batch {
    /// `(slot index, collector, its running flag)`.
    items: Vec<(usize, SharedCollector, Arc<AtomicBool>)>,
    claimed: Vec<AtomicBool>,
    results: Mutex<Vec<Option<RunResult>>>,
}

impl Batch {
    fn run(&self, ctx: &CollectContext) {
        // One thread-CPU reading ends a run and starts the next: the clock is a
        // syscall that takes the run-queue lock, and two per collector showed in
        // idle-tick profiles.
        let mut cpu_mark = thread_cpu_time();
        for (k, (_, collector, running)) in self.items.iter().enumerate() {
            if self.claimed[k].swap(true, Ordering::AcqRel) {
                continue;
            }
            let (r, cpu_end) = run_one_from(collector, ctx, cpu_mark);
            cpu_mark = cpu_end;
            running.store(false, Ordering::Release);
            // A run that ends after the tick gave up on it finds its slot taken
            // (None) and is dropped, like the result of a late task of its own.
            if let Some(slot) = self.results.lock().ok().as_mut().and_then(|r| r.get_mut(k)) {
                *slot = Some(r);
            }
        }
    }
}

struct Slot {
    name: &'static str,
    /// `{collector="<name>"}`, made once.
    label: LabelValues,
    collector: Arc<Mutex<Box<dyn Collector>>>,
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
    batch_worker: Option<BatchWorker>,
}

/// The tick's shared batch, its context and where to say it is done.
type BatchJob = (Arc<Batch>, Arc<CollectContext>, oneshot::Sender<()>);

/// One thread that runs the shared batch tick after tick.
///
/// Why not `spawn_blocking`: tokio's blocking pool wakes its longest-idle
/// thread, so the batch rotated over every thread the pool had grown (eight at
/// 1 s ticks after a slow start, each with a cold stack and malloc arena); at
/// 5 s ticks the idle threads also outlived the pool's keep-alive and were
/// created anew. A thread of its own stays warm.
struct BatchWorker {
    jobs: mpsc::Sender<BatchJob>,
    /// Set while a batch runs: a worker still busy at the next tick is stuck in
    /// a hung collector and is left to finish alone while a new one takes over.
    busy: Arc<AtomicBool>,
}

impl BatchWorker {
    fn start() -> std::io::Result<Self> {
        let (jobs, rx) = mpsc::channel::<BatchJob>();
        let busy = Arc::new(AtomicBool::new(false));
        let flag = busy.clone();
        std::thread::Builder::new()
            .name("netsight-batch".into())
            .spawn(move || {
                // Ends when the scheduler drops or replaces this worker.
                for (batch, ctx, done) in rx {
                    batch.run(&ctx);
                    flag.store(false, Ordering::Release);
                    let _ = done.send(());
                }
            })?;
        Ok(BatchWorker { jobs, busy })
    }
}

fn thread_cpu_time() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes into the timespec we own; the clock id is valid.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn run_one(collector: &Mutex<Box<dyn Collector>>, ctx: &CollectContext) -> RunResult {
    run_one_from(collector, ctx, thread_cpu_time()).0
}

/// [`run_one`] with the thread's CPU time at its start given; returns the CPU time
/// at its end too.
fn run_one_from(collector: &Mutex<Box<dyn Collector>>, ctx: &CollectContext, cpu0: Duration) -> (RunResult, Duration) {
    let start = Instant::now();
    let mut out = Emitter::new();
    let outcome = match collector.lock() {
        Ok(mut c) => match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| c.collect(ctx, &mut out))) {
            Ok(Ok(())) => Ok(out.into_families()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("collector panicked".to_string()),
        },
        Err(_) => Err("collector state poisoned by an earlier panic".to_string()),
    };
    let cpu1 = thread_cpu_time();
    let run = RunResult {
        outcome,
        wall: start.elapsed(),
        cpu: cpu1.saturating_sub(cpu0),
    };
    (run, cpu1)
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
            batch_worker: None,
        }
    }

    /// Hands the batch to the batch worker (a new one when there is none, or the
    /// last is stuck), or to the blocking pool if no thread can be started.
    fn start_batch(&mut self, batch: Arc<Batch>) -> oneshot::Receiver<()> {
        let (done, finished) = oneshot::channel();
        if self
            .batch_worker
            .as_ref()
            .is_none_or(|w| w.busy.load(Ordering::Acquire))
        {
            self.batch_worker = BatchWorker::start()
                .map_err(|e| tracing::warn!(error = %e, "cannot start the collectors' thread; using the blocking pool"))
                .ok();
        }
        let job = (batch, self.ctx.clone(), done);
        let job = match &self.batch_worker {
            Some(w) => {
                w.busy.store(true, Ordering::Release);
                match w.jobs.send(job) {
                    Ok(()) => return finished,
                    Err(mpsc::SendError(job)) => {
                        self.batch_worker = None;
                        job
                    }
                }
            }
            None => job,
        };
        let (batch, ctx, done) = job;
        tokio::task::spawn_blocking(move || {
            batch.run(&ctx);
            let _ = done.send(());
        });
        finished
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
            let n = batched.len();
            let batch = Arc::new(Batch {
                items: batched,
                claimed: (0..n).map(|_| AtomicBool::new(false)).collect(),
                results: Mutex::new((0..n).map(|_| None).collect()),
            });
            let handle = self.start_batch(batch.clone());
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
                    if !batch.claimed[k].swap(true, Ordering::AcqRel) {
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
            // Taken slot by slot: a run still going keeps a place to write to.
            let mut results: Vec<Option<RunResult>> = match batch.results.lock() {
                Ok(mut r) => r.iter_mut().map(Option::take).collect(),
                Err(_) => Vec::new(),
            };
            results.resize_with(batch.items.len(), || None);
            for (k, ((i, _, _), result)) in batch.items.iter().zip(results).enumerate() {
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

/// Runs one collector in a blocking task of its own.
fn spawn(ctx: &Arc<CollectContext>, collector: SharedCollector, running: Arc<AtomicBool>) -> JoinHandle<RunResult> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let r = run_one(&collector, &ctx);
        running.store(false, Ordering::Release);
        r
    })
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
mod tests {
    use super::*;
    use crate::collect::CollectError;

    struct Fixed(&'static str, f64);
    impl Collector for Fixed {
        fn name(&self) -> &'static str {
            self.0
        }
        fn collect(&mut self, _: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
            out.push0(&SNAPSHOT_SERIES, self.1);
            Ok(())
        }
    }

    struct Failing;
    impl Collector for Failing {
        fn name(&self) -> &'static str {
            "failing"
        }
        fn collect(&mut self, _: &CollectContext, _: &mut Emitter) -> Result<(), CollectError> {
            Err(CollectError::Unavailable("module not loaded".into()))
        }
    }

    struct Hanging;
    impl Collector for Hanging {
        fn name(&self) -> &'static str {
            "hanging"
        }
        fn collect(&mut self, _: &CollectContext, _: &mut Emitter) -> Result<(), CollectError> {
            std::thread::sleep(Duration::from_millis(600));
            Ok(())
        }
    }

    /// Burns CPU so the budget logic has something to react to.
    struct Busy;
    impl Collector for Busy {
        fn name(&self) -> &'static str {
            "busy"
        }
        fn collect(&mut self, _: &CollectContext, _: &mut Emitter) -> Result<(), CollectError> {
            let start = Instant::now();
            let mut x = 0u64;
            while start.elapsed() < Duration::from_millis(5) {
                x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
            }
            Ok(())
        }
    }

    static SLOW_RUNS: crate::catalog::MetricDesc = crate::catalog::MetricDesc::new(
        "test_slow_runs",
        crate::catalog::MetricKind::Gauge,
        "",
        "Runs so far.",
        &[],
        "test.slow.runs",
    );
    static FAST_RUNS: crate::catalog::MetricDesc = crate::catalog::MetricDesc::new(
        "test_fast_runs",
        crate::catalog::MetricKind::Gauge,
        "",
        "Runs so far.",
        &[],
        "test.fast.runs",
    );

    /// Emits how many times it ran; the slow one burns 5 ms of CPU per run.
    struct Counting(&'static crate::catalog::MetricDesc, u32);
    impl Collector for Counting {
        fn name(&self) -> &'static str {
            if std::ptr::eq(self.0, &SLOW_RUNS) {
                "slow"
            } else {
                "fast"
            }
        }
        fn collect(&mut self, c: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
            if std::ptr::eq(self.0, &SLOW_RUNS) {
                Busy.collect(c, out)?;
            }
            self.1 += 1;
            out.push0(self.0, f64::from(self.1));
            Ok(())
        }
    }

    /// Samples are moved into the snapshot when the collector runs again next
    /// tick and copied when it does not: a slowed collector's last samples are
    /// repeated on every tick in between, a collector due every tick always
    /// shows its latest run.
    #[tokio::test]
    async fn slowed_collectors_repeat_their_last_samples() {
        let mut sched = Scheduler::new(
            vec![Box::new(Counting(&SLOW_RUNS, 0)), Box::new(Counting(&FAST_RUNS, 0))],
            CollectContext::new("/nonexistent", "/nonexistent"),
            Duration::from_secs(1),
            Duration::from_secs(1),
            0.01,
        );
        let mut repeated = 0;
        let mut last = [0.0, 0.0];
        for tick in 1..=16 {
            let snap = sched.tick().await;
            for (k, name) in ["test_slow_runs", "test_fast_runs"].into_iter().enumerate() {
                let v = snap.value(name, &[]).expect("samples on every tick");
                // Before the budget has WARMUP_RUNS runs to go on, both run every tick.
                if tick <= WARMUP_RUNS {
                    assert_eq!(v, f64::from(tick), "{name}, tick {tick}");
                }
                assert!(
                    v == last[k] || v == last[k] + 1.0,
                    "{name}, tick {tick}: {v} after {}",
                    last[k]
                );
                if v == last[k] {
                    repeated += 1;
                }
                last[k] = v;
            }
        }
        assert!(repeated > 0, "no collector was slowed down");
    }

    fn up(s: &Snapshot, name: &str) -> Option<f64> {
        s.value("netsight_collector_up", &[("collector", name)])
    }

    #[tokio::test]
    async fn a_failing_or_hanging_collector_does_not_stop_the_others() {
        let mut sched = Scheduler::new(
            vec![Box::new(Fixed("fixed", 7.0)), Box::new(Failing), Box::new(Hanging)],
            CollectContext::new("/nonexistent", "/nonexistent"),
            Duration::from_secs(1),
            Duration::from_millis(100),
            100.0,
        );
        let started = Instant::now();
        let snap = sched.tick().await;
        assert!(
            started.elapsed() < Duration::from_millis(500),
            "tick waited for the hang"
        );
        assert_eq!(up(&snap, "fixed"), Some(1.0));
        assert_eq!(up(&snap, "failing"), Some(0.0));
        assert_eq!(up(&snap, "hanging"), Some(0.0));
        assert_eq!(
            snap.value("netsight_collector_errors_total", &[("collector", "hanging")]),
            Some(1.0)
        );
        // The hung run is still going: the next tick must not start a second one.
        let snap = sched.tick().await;
        assert_eq!(up(&snap, "hanging"), Some(0.0));
        assert_eq!(up(&snap, "fixed"), Some(1.0));
    }

    /// Fast on its first run (so it joins the shared task), then hangs.
    struct HangsLater(u32);
    impl Collector for HangsLater {
        fn name(&self) -> &'static str {
            "hangs_later"
        }
        fn collect(&mut self, _: &CollectContext, _: &mut Emitter) -> Result<(), CollectError> {
            self.0 += 1;
            if self.0 == 2 {
                std::thread::sleep(Duration::from_millis(800));
            }
            Ok(())
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_fast_collector_that_hangs_does_not_hold_up_the_ones_batched_after_it() {
        let mut sched = Scheduler::new(
            vec![
                Box::new(HangsLater(0)),
                Box::new(Fixed("fixed", 7.0)),
                Box::new(Fixed("fixed2", 8.0)),
            ],
            CollectContext::new("/nonexistent", "/nonexistent"),
            Duration::from_secs(1),
            Duration::from_millis(300),
            100.0,
        );
        let snap = sched.tick().await;
        assert_eq!(up(&snap, "hangs_later"), Some(1.0));
        // All three ran fast: this tick they share one task, the first one hangs.
        let snap = sched.tick().await;
        assert_eq!(up(&snap, "hangs_later"), Some(0.0));
        assert_eq!(up(&snap, "fixed"), Some(1.0), "spilled to its own task");
        assert_eq!(up(&snap, "fixed2"), Some(1.0));
        assert_eq!(
            snap.value("netsight_collector_errors_total", &[("collector", "fixed")]),
            Some(0.0)
        );
    }

    #[tokio::test]
    async fn a_tiny_cpu_budget_lowers_the_cadence() {
        let mut sched = Scheduler::new(
            vec![Box::new(Busy)],
            CollectContext::new("/nonexistent", "/nonexistent"),
            Duration::from_secs(1),
            Duration::from_secs(1),
            0.01,
        );
        let mut interval = 1.0;
        for _ in 0..12 {
            let snap = sched.tick().await;
            interval = snap
                .value("netsight_collector_interval_seconds", &[("collector", "busy")])
                .unwrap_or(0.0);
        }
        assert!(interval >= 4.0, "cadence stayed at {interval}s");
    }

    /// Runs every 3rd tick at most, however much budget there is.
    struct Settings(u32);
    impl Collector for Settings {
        fn name(&self) -> &'static str {
            "settings"
        }
        fn collect(&mut self, _: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
            self.0 += 1;
            out.push0(&FAST_RUNS, f64::from(self.0));
            Ok(())
        }
        fn min_interval(&self) -> Duration {
            Duration::from_millis(2500)
        }
    }

    /// A collector's minimum interval is a floor on its cadence: it runs on the
    /// first tick and then every ceil(2.5 s / 1 s) = 3 ticks, its samples repeated
    /// in between, and an ample budget does not raise the cadence above it.
    #[tokio::test]
    async fn a_minimum_interval_spaces_the_runs_and_repeats_the_samples() {
        let mut sched = Scheduler::new(
            vec![Box::new(Settings(0))],
            CollectContext::new("/nonexistent", "/nonexistent"),
            Duration::from_secs(1),
            Duration::from_secs(1),
            100.0,
        );
        let mut seen = Vec::new();
        for _ in 0..10 {
            let snap = sched.tick().await;
            seen.push(snap.value("test_fast_runs", &[]).expect("repeated between runs"));
            assert_eq!(
                snap.value("netsight_collector_interval_seconds", &[("collector", "settings")]),
                Some(3.0)
            );
        }
        assert_eq!(seen, [1.0, 1.0, 1.0, 2.0, 2.0, 2.0, 3.0, 3.0, 3.0, 4.0]);
        assert_eq!(ticks_at_least(Duration::from_secs(30), Duration::from_secs(4)), 8);
        assert_eq!(ticks_at_least(Duration::ZERO, Duration::from_secs(5)), 1);
        assert_eq!(
            ticks_at_least(Duration::from_secs(3600), Duration::from_secs(1)),
            MAX_SKIP
        );
    }
}
