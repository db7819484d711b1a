//! A closed-loop load driver for `benches/server_load.rs`.
//!
//! Criterion answers "how long does one call take"; a load run asks how
//! many calls per second a server sustains under a fixed number of
//! concurrent clients, and how long each waits (p50/p99). Here each of
//! `concurrency` workers repeats one [`Op`] back to back (a new request
//! only when its previous one answered — a closed loop, so the server is
//! never asked for more than `concurrency` requests at once), until a
//! shared request budget or the phase's duration runs out, whichever comes
//! first. Both bounds keep a run short whatever the machine does.
//!
//! Workers first warm up (connections opened, caches filled, first-use
//! allocations made), then wait for each other, and only then does the
//! clock start.
//!
//! [`measure`] hands the ops back with their samples, so a caller can
//! interleave several variants in rounds (A, B, A, B, …) and pool each
//! one's samples: on a shared machine, load from other jobs then hits every
//! variant alike instead of whichever ran during a burst.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The error of a failed request or setup step, with its cause as text.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// The future one [`Op::call`] returns.
pub type OpFuture<'a> = Pin<Box<dyn Future<Output = Result<(), BoxError>> + Send + 'a>>;

/// One kind of request a worker repeats: an HTTP call or the library call
/// behind it. An `Op` holds its worker's own state (its connection, its
/// user, the refresh token it rotates), so workers never share a chain.
pub trait Op: Send + 'static {
    /// Make one request and check its answer; an unexpected answer is an
    /// error, so a run that measured failures can't pass for a fast one.
    fn call(&mut self) -> OpFuture<'_>;
}

/// How one phase of a load run is bounded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// Requests each worker makes before the clock starts.
    pub warmup_per_worker: u32,
    /// Most requests measured in the phase, over all workers.
    pub max_requests: u64,
    /// Longest the measured part of the phase runs (a request in flight
    /// at the deadline is still waited for and counted).
    pub max_duration: Duration,
}

/// A shared count of requests still allowed in a phase.
#[derive(Debug)]
pub struct Budget {
    remaining: AtomicU64,
}

impl Budget {
    /// A budget of `requests`.
    pub fn new(requests: u64) -> Self {
        Self {
            remaining: AtomicU64::new(requests),
        }
    }

    /// Take one request from the budget; `false` once it is spent.
    pub fn take(&self) -> bool {
        self.remaining
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Spend the rest, so every worker stops after its current request
    /// (used when one worker failed: the phase's figures are void).
    pub fn stop(&self) {
        self.remaining.store(0, Ordering::Release);
    }
}

/// What a phase measured.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    /// Requests completed in the measured part.
    pub requests: u64,
    /// Wall time of the measured part: from the start signal until the
    /// last worker's last request answered.
    pub elapsed: Duration,
    /// Median latency.
    pub p50: Duration,
    /// 99th-percentile latency.
    pub p99: Duration,
    /// Slowest request.
    pub max: Duration,
}

impl Summary {
    /// Summarise per-request latencies measured over `elapsed`; `None`
    /// when there are none.
    pub fn from_samples(mut samples: Vec<Duration>, elapsed: Duration) -> Option<Self> {
        samples.sort_unstable();
        Some(Self {
            requests: u64::try_from(samples.len()).ok()?,
            elapsed,
            p50: percentile(&samples, 50)?,
            p99: percentile(&samples, 99)?,
            max: *samples.last()?,
        })
    }

    /// Completed requests per second of wall time.
    pub fn per_sec(&self) -> f64 {
        // Request counts are far below 2^52: the conversion is exact.
        #[allow(clippy::cast_precision_loss)]
        let requests = self.requests as f64;
        requests / self.elapsed.as_secs_f64()
    }
}

/// The `p`-th percentile (1–100) of ascending `sorted` samples by the
/// nearest-rank method: the smallest sample with at least `p` % of the
/// samples at or below it. `None` for no samples or `p` outside 1–100.
pub fn percentile(sorted: &[Duration], p: u32) -> Option<Duration> {
    if sorted.is_empty() || !(1..=100).contains(&p) {
        return None;
    }
    // rank = ceil(p/100 · n), in integers.
    let rank = (sorted.len() * p as usize).div_ceil(100);
    sorted.get(rank.max(1) - 1).copied()
}

/// What [`measure`] returns: the ops, ready for another round, and what
/// they measured.
pub struct Measured {
    /// The ops, with their state (connections, token chains) as the round
    /// left it.
    pub ops: Vec<Box<dyn Op>>,
    /// Every measured request's latency, unordered.
    pub samples: Vec<Duration>,
    /// Wall time of the measured part.
    pub elapsed: Duration,
}

/// Run one phase and summarise it (see [`measure`]).
pub async fn run(
    runtime: &tokio::runtime::Handle,
    ops: Vec<Box<dyn Op>>,
    plan: Plan,
) -> Result<Summary, BoxError> {
    let measured = measure(runtime, ops, plan).await?;
    Summary::from_samples(measured.samples, measured.elapsed)
        .ok_or_else(|| "the phase completed no request within its bounds".into())
}

/// Run one phase: one worker per op, spawned on `runtime` (the client's
/// runtime for HTTP ops, the server's for library calls, where a handler
/// would make them), warmed up, then measured under `plan`'s bounds.
/// Fails with the first worker's error, if any.
pub async fn measure(
    runtime: &tokio::runtime::Handle,
    ops: Vec<Box<dyn Op>>,
    plan: Plan,
) -> Result<Measured, BoxError> {
    let workers = ops.len();
    if workers == 0 {
        return Err("a load phase needs at least one worker".into());
    }
    let budget = Arc::new(Budget::new(plan.max_requests));
    // Every worker and this task meet here once warmed up.
    let ready = Arc::new(tokio::sync::Barrier::new(workers + 1));
    let (start_tx, start_rx) = tokio::sync::watch::channel(None::<Instant>);
    let mut tasks = Vec::with_capacity(workers);
    for mut op in ops {
        let budget = Arc::clone(&budget);
        let ready = Arc::clone(&ready);
        let mut start_rx = start_rx.clone();
        tasks.push(runtime.spawn(async move {
            let mut warmup = Ok(());
            for _ in 0..plan.warmup_per_worker {
                warmup = op.call().await;
                if warmup.is_err() {
                    budget.stop();
                    break;
                }
            }
            // Meet the others even after a failure, so nobody waits forever.
            ready.wait().await;
            warmup?;
            let start = (*start_rx
                .wait_for(Option::is_some)
                .await
                .map_err(|_| "the phase ended before it started")?)
            .ok_or("no start time")?;
            let deadline = start + plan.max_duration;
            let mut samples = Vec::new();
            while Instant::now() < deadline && budget.take() {
                let sent = Instant::now();
                if let Err(e) = op.call().await {
                    budget.stop();
                    return Err(e);
                }
                samples.push(sent.elapsed());
            }
            Ok::<_, BoxError>((op, samples))
        }));
    }
    ready.wait().await;
    let start = Instant::now();
    start_tx.send_replace(Some(start));
    let mut samples = Vec::new();
    let mut ops = Vec::with_capacity(workers);
    let mut first_error = None;
    for task in tasks {
        match task.await {
            Ok(Ok((op, mine))) => {
                ops.push(op);
                samples.extend(mine);
            }
            Ok(Err(e)) => {
                first_error.get_or_insert(e);
            }
            Err(join) => {
                first_error.get_or_insert_with(|| format!("load worker died: {join}").into());
            }
        }
    }
    let elapsed = start.elapsed();
    if let Some(e) = first_error {
        return Err(e);
    }
    Ok(Measured {
        ops,
        samples,
        elapsed,
    })
}

/// Ticks per second of the CPU times in `/proc` (`USER_HZ`, 100 on every
/// Linux architecture keystead builds for).
const USER_HZ: u64 = 100;

/// CPU time (user + system) of this process so far, and of its live
/// threads named `thread_name`, from `/proc` (Linux; `None` elsewhere or
/// if `/proc` is unreadable). Resolution 10 ms.
///
/// A load run's client shares the machine with the server; this splits
/// where the CPU went, so "HTTP costs X more CPU per request than the
/// library call" can be read apart from "the client took CPU the server
/// could have used". The process total includes threads that have
/// exited (the blocking pools retire idle threads).
pub fn cpu_time(thread_name: &str) -> Option<(Duration, Duration)> {
    let ticks = |stat: &str| -> Option<(String, u64)> {
        // `pid (comm) state ppid …`: comm may hold spaces and parentheses,
        // so split at the last ')'. utime and stime are fields 14 and 15.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_owned();
        let mut fields = stat.get(close + 1..)?.split_whitespace().skip(11);
        let utime: u64 = fields.next()?.parse().ok()?;
        let stime: u64 = fields.next()?.parse().ok()?;
        Some((comm, utime + stime))
    };
    let to_duration = |t: u64| Duration::from_millis(t * 1000 / USER_HZ);
    let (_, process) = ticks(&std::fs::read_to_string("/proc/self/stat").ok()?)?;
    let mut named = 0;
    for task in std::fs::read_dir("/proc/self/task").ok()?.flatten() {
        // A thread may exit between listing and reading: skip it.
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue;
        };
        if let Some((comm, t)) = ticks(&stat)
            && comm == thread_name
        {
            named += t;
        }
    }
    Some((to_duration(process), to_duration(named)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU32;

    fn ms(values: impl IntoIterator<Item = u64>) -> Vec<Duration> {
        values.into_iter().map(Duration::from_millis).collect()
    }

    #[test]
    fn percentile_is_nearest_rank() {
        let hundred = ms(1..=100);
        assert_eq!(percentile(&hundred, 50), Some(Duration::from_millis(50)));
        assert_eq!(percentile(&hundred, 99), Some(Duration::from_millis(99)));
        assert_eq!(percentile(&hundred, 100), Some(Duration::from_millis(100)));
        assert_eq!(percentile(&hundred, 1), Some(Duration::from_millis(1)));
        // Ten samples: p99 is the largest, p50 the fifth.
        let ten = ms(1..=10);
        assert_eq!(percentile(&ten, 99), Some(Duration::from_millis(10)));
        assert_eq!(percentile(&ten, 50), Some(Duration::from_millis(5)));
        let one = ms([7]);
        assert_eq!(percentile(&one, 50), Some(Duration::from_millis(7)));
    }

    #[test]
    fn percentile_refuses_nonsense() {
        assert_eq!(percentile(&[], 50), None);
        assert_eq!(percentile(&ms([1]), 0), None);
        assert_eq!(percentile(&ms([1]), 101), None);
    }

    #[test]
    fn summary_sorts_and_counts() {
        let summary = Summary::from_samples(ms([30, 10, 20, 40]), Duration::from_secs(2)).unwrap();
        assert_eq!(summary.requests, 4);
        assert_eq!(summary.p50, Duration::from_millis(20));
        assert_eq!(summary.p99, Duration::from_millis(40));
        assert_eq!(summary.max, Duration::from_millis(40));
        assert!((summary.per_sec() - 2.0).abs() < 1e-9);
        assert_eq!(
            Summary::from_samples(Vec::new(), Duration::from_secs(1)),
            None
        );
    }

    #[test]
    fn budget_allows_exactly_its_count() {
        let budget = Budget::new(3);
        assert!(budget.take() && budget.take() && budget.take());
        assert!(!budget.take());
        let stopped = Budget::new(10);
        stopped.stop();
        assert!(!stopped.take());
    }

    /// Counts its calls; fails on call `fail_at` if set.
    struct Counting {
        calls: Arc<AtomicU32>,
        fail_at: Option<u32>,
    }

    impl Op for Counting {
        fn call(&mut self) -> OpFuture<'_> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
                tokio::task::yield_now().await;
                if self.fail_at == Some(n) {
                    return Err("refused".into());
                }
                Ok(())
            })
        }
    }

    fn ops(calls: &Arc<AtomicU32>, n: usize, fail_at: Option<u32>) -> Vec<Box<dyn Op>> {
        (0..n)
            .map(|_| {
                Box::new(Counting {
                    calls: Arc::clone(calls),
                    fail_at,
                }) as Box<dyn Op>
            })
            .collect()
    }

    #[test]
    fn run_stops_at_the_request_budget_after_warmup() {
        let rt = crate::runtime();
        let calls = Arc::new(AtomicU32::new(0));
        let plan = Plan {
            warmup_per_worker: 2,
            max_requests: 50,
            max_duration: Duration::from_secs(30),
        };
        let summary = rt
            .block_on(run(rt.handle(), ops(&calls, 4, None), plan))
            .unwrap();
        assert_eq!(summary.requests, 50);
        // Warm-up calls are made but not measured.
        assert_eq!(calls.load(Ordering::SeqCst), 4 * 2 + 50);
    }

    #[test]
    fn measure_hands_the_ops_back_for_another_round() {
        let rt = crate::runtime();
        let calls = Arc::new(AtomicU32::new(0));
        let plan = Plan {
            warmup_per_worker: 0,
            max_requests: 10,
            max_duration: Duration::from_secs(30),
        };
        let first = rt
            .block_on(measure(rt.handle(), ops(&calls, 3, None), plan))
            .unwrap();
        assert_eq!((first.ops.len(), first.samples.len()), (3, 10));
        let second = rt.block_on(measure(rt.handle(), first.ops, plan)).unwrap();
        assert_eq!((second.ops.len(), second.samples.len()), (3, 10));
        assert_eq!(calls.load(Ordering::SeqCst), 20);
    }

    #[test]
    fn cpu_time_finds_a_named_thread() {
        let name = "cpu-time-probe";
        let burner = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                // Spin until /proc shows this thread at 50 ms of CPU, or
                // give up after 20 s of wall time (the parse found nothing).
                let started = Instant::now();
                let mut x = 0u64;
                while started.elapsed() < Duration::from_secs(20) {
                    for i in 0..100_000u64 {
                        x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(i));
                    }
                    let (process, named) = cpu_time(name).expect("/proc readable");
                    if named >= Duration::from_millis(50) {
                        return Some((process, named));
                    }
                }
                None
            })
            .unwrap();
        let (process, named) = burner.join().unwrap().expect("the named thread's CPU time");
        assert!(process >= named, "{process:?} < {named:?}");
        assert_eq!(
            cpu_time("no thread has this name").unwrap().1,
            Duration::ZERO
        );
    }

    #[test]
    fn run_stops_at_the_deadline() {
        let rt = crate::runtime();
        let calls = Arc::new(AtomicU32::new(0));
        let plan = Plan {
            warmup_per_worker: 0,
            max_requests: u64::MAX,
            max_duration: Duration::from_millis(50),
        };
        let started = Instant::now();
        let summary = rt
            .block_on(run(rt.handle(), ops(&calls, 2, None), plan))
            .unwrap();
        assert!(summary.requests > 0);
        assert!(summary.elapsed >= Duration::from_millis(50));
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn run_reports_a_failed_request() {
        let rt = crate::runtime();
        let calls = Arc::new(AtomicU32::new(0));
        let plan = Plan {
            warmup_per_worker: 1,
            max_requests: 1_000,
            max_duration: Duration::from_secs(30),
        };
        // Call 10 (after the 3 warm-up calls) fails.
        let err = rt
            .block_on(run(rt.handle(), ops(&calls, 3, Some(10)), plan))
            .unwrap_err();
        assert_eq!(err.to_string(), "refused");
        // A failure during warm-up is reported too, without hanging.
        let calls = Arc::new(AtomicU32::new(0));
        let err = rt
            .block_on(run(rt.handle(), ops(&calls, 3, Some(1)), plan))
            .unwrap_err();
        assert_eq!(err.to_string(), "refused");
    }
}
