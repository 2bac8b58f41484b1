//! Where collectors run: fast ones one after another in the tick's shared batch
//! on a thread kept for it, slow or unknown ones in blocking tasks of their own.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::collect::{thread_cpu_time, CollectContext, Collector};
use crate::snapshot::{Emitter, Family};

pub(super) struct RunResult {
    pub outcome: Result<Vec<Family>, String>,
    pub wall: Duration,
    pub cpu: Duration,
}

pub(super) type SharedCollector = Arc<Mutex<Box<dyn Collector>>>;

/// `(slot index, collector, its running flag)`.
pub(super) type BatchItem = (usize, SharedCollector, Arc<AtomicBool>);

/// Collectors run one after another in one blocking task, in the order given.
/// Each is claimed (`claimed[k]`) by whoever runs it: the shared task, or the
/// scheduler spilling it to a task of its own when the shared one stalls.
pub(super) struct Batch {
    pub items: Vec<BatchItem>,
    claimed: Vec<AtomicBool>,
    results: Mutex<Vec<Option<RunResult>>>,
}

impl Batch {
    pub fn new(items: Vec<BatchItem>) -> Self {
        let n = items.len();
        Batch {
            items,
            claimed: (0..n).map(|_| AtomicBool::new(false)).collect(),
            results: Mutex::new((0..n).map(|_| None).collect()),
        }
    }

    /// Claims item `k` for the caller; false when someone already has.
    pub fn claim(&self, k: usize) -> bool {
        !self.claimed[k].swap(true, Ordering::AcqRel)
    }

    fn run(&self, ctx: &CollectContext) {
        // One thread-CPU reading ends a run and starts the next: the clock is a
        // syscall that takes the run-queue lock, and two per collector showed in
        // idle-tick profiles.
        let mut cpu_mark = thread_cpu_time();
        for (k, (_, collector, running)) in self.items.iter().enumerate() {
            if !self.claim(k) {
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

    /// The results so far, one per item (None: not finished). Taken slot by
    /// slot, so that a run still going keeps a place to write to.
    pub fn take_results(&self) -> Vec<Option<RunResult>> {
        let mut results: Vec<Option<RunResult>> = match self.results.lock() {
            Ok(mut r) => r.iter_mut().map(Option::take).collect(),
            Err(_) => Vec::new(),
        };
        results.resize_with(self.items.len(), || None);
        results
    }
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

/// Starts batches on the batch worker (a new one when there is none, or the
/// last is stuck), or in the blocking pool if no thread can be started.
#[derive(Default)]
pub(super) struct BatchRunner {
    worker: Option<BatchWorker>,
}

impl BatchRunner {
    /// Starts `batch`; the receiver completes when it has run.
    pub fn start(&mut self, batch: Arc<Batch>, ctx: &Arc<CollectContext>) -> oneshot::Receiver<()> {
        let (done, finished) = oneshot::channel();
        if self.worker.as_ref().is_none_or(|w| w.busy.load(Ordering::Acquire)) {
            self.worker = BatchWorker::start()
                .map_err(|e| tracing::warn!(error = %e, "cannot start the collectors' thread; using the blocking pool"))
                .ok();
        }
        let job = (batch, ctx.clone(), done);
        let job = match &self.worker {
            Some(w) => {
                w.busy.store(true, Ordering::Release);
                match w.jobs.send(job) {
                    Ok(()) => return finished,
                    Err(mpsc::SendError(job)) => {
                        self.worker = None;
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
}

/// Runs one collector in a blocking task of its own.
pub(super) fn spawn(
    ctx: &Arc<CollectContext>,
    collector: SharedCollector,
    running: Arc<AtomicBool>,
) -> JoinHandle<RunResult> {
    let ctx = ctx.clone();
    tokio::task::spawn_blocking(move || {
        let r = run_one_from(&collector, &ctx, thread_cpu_time()).0;
        running.store(false, Ordering::Release);
        r
    })
}

/// Runs one collector, given the thread's CPU time at its start; returns the
/// CPU time at its end too. A panic or an error becomes the outcome.
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
