use super::*;
use crate::collect::tick_files::SharedFile;
use crate::collect::CollectError;
use std::time::Instant;

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

/// Leaves a copy of a shared file, as the sockstat collector does.
struct Keeper;
impl Collector for Keeper {
    fn name(&self) -> &'static str {
        "keeper"
    }
    fn collect(&mut self, ctx: &CollectContext, _: &mut Emitter) -> Result<(), CollectError> {
        ctx.tick_files.keep(SharedFile::Sockstat, b"TCP: inuse 1");
        Ok(())
    }
}

static COPY_TAKEN: crate::catalog::MetricDesc = crate::catalog::MetricDesc::new(
    "test_copy_taken",
    crate::catalog::MetricKind::Gauge,
    "",
    "1 when this tick's copy was there.",
    &[],
    "test.copy.taken",
);

/// Emits 1 when it found this tick's copy, as the sockets collector looks for it.
struct Taker;
impl Collector for Taker {
    fn name(&self) -> &'static str {
        "taker"
    }
    fn collect(&mut self, ctx: &CollectContext, out: &mut Emitter) -> Result<(), CollectError> {
        let mut buf = Vec::new();
        let found = ctx.tick_files.take_copy(SharedFile::Sockstat, &mut buf);
        out.push0(&COPY_TAKEN, if found { 1.0 } else { 0.0 });
        Ok(())
    }
}

/// Every tick starts a new generation of shared files, and once both run in the
/// batch, the later collector takes what the earlier one kept on the same tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_collector_takes_the_copy_an_earlier_one_kept_this_tick() {
    let ctx = CollectContext::new("/nonexistent", "/nonexistent");
    let files = ctx.tick_files.clone();
    let mut sched = Scheduler::new(
        vec![Box::new(Keeper), Box::new(Taker)],
        ctx,
        Duration::from_secs(1),
        Duration::from_secs(5),
        100.0,
    );
    // Tick 1 runs each in a task of its own (no timing known yet): either order.
    sched.tick().await;
    let served = files.copies_served();
    let mut found_on = 0;
    for _ in 0..5 {
        // Both count as fast whatever a loaded host made of their last run, so
        // they share the batch, in their order.
        for slot in &mut sched.slots {
            slot.runs = slot.runs.max(1);
            slot.last_wall = 0.0;
        }
        let snap = sched.tick().await;
        if snap.value("test_copy_taken", &[]) == Some(1.0) {
            found_on += 1;
        }
    }
    // A batch stalled past SPILL_AFTER runs its collectors in parallel tasks,
    // where the taker may come first: rare, so most ticks must find the copy.
    assert!(found_on >= 3, "the copy was found on {found_on} of 5 ticks");
    assert_eq!(files.copies_served(), served + found_on);
    // A new tick has nothing kept yet: the last tick's copy is not served.
    files.next_tick();
    assert!(!files.take_copy(SharedFile::Sockstat, &mut Vec::new()));
}
