//! Prometheus metrics, served at `/metrics` by the HTTP API (`wasmq run --http`, `wasmq serve`)
//! in the OpenMetrics text format (`docs/metrics.md` lists every series).
//!
//! - [`Metrics`] - one per process: the counters and histograms a worker updates as jobs run,
//!   the gauges sampled from the worker at each scrape ([`HostSample`]), and the queue depths
//!   read from Redis at each scrape. `wasmq run` makes one and hands it to both the worker
//!   and the API beside it; `wasmq serve` has one of its own, with no worker to report.
//!
//! **Invariant:** recording is a few atomic operations and never waits on I/O, so metrics cannot
//! slow the job path; anything that needs Redis (queue depths) happens at scrape time, bounded by
//! a timeout, and a scrape that cannot reach Redis still answers with everything else.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

use crate::alerts::{DeliveryCounts, DeliveryStats};
use crate::queue::{Client, JobState};

/// The content type of [`Metrics::render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// How long a scrape waits for a queue's counts before leaving them out.
const COUNTS_TIMEOUT: Duration = Duration::from_secs(2);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    handler: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerLabels {
    queue: String,
    handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutboundLabels {
    handler: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SqlLabels {
    handler: String,
    database: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SqlDurationLabels {
    handler: String,
    database: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HandlerOnlyLabels {
    handler: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueStateLabels {
    queue: String,
    state: String,
}

/// What a worker reports of itself at each scrape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HostSample {
    /// Slots taken: jobs running, and room a fetch holds for the jobs it leases.
    pub slots_in_use: u64,
    /// Most jobs that may run at once (`--concurrency`).
    pub slots: u64,
    /// Bytes of the memory budget held by running jobs (their handlers' caps).
    pub memory_in_use: u64,
    /// `--memory-budget`.
    pub memory_budget: u64,
    /// Whether the worker's last Redis call succeeded.
    pub redis_up: bool,
}

type Sampler = Box<dyn Fn() -> HostSample + Send + Sync>;

/// The metrics of one process. Cheap to share: clone the `Arc`.
pub struct Metrics {
    registry: Registry,
    jobs: Family<JobLabels, Counter>,
    duration: Family<HandlerLabels, Histogram>,
    instantiation: Family<HandlerLabels, Histogram>,
    recoveries: Family<QueueLabels, Counter>,
    cancels: Family<QueueLabels, Counter>,
    rate_limited: Family<QueueLabels, Counter>,
    reconnects: Counter,
    queue_jobs: Family<QueueStateLabels, Gauge>,
    slots_in_use: Gauge,
    slots: Gauge,
    memory_in_use: Gauge,
    memory_budget: Gauge,
    redis_up: Gauge,
    alerts: Family<ResultLabels, Counter>,
    outbound: Family<OutboundLabels, Counter>,
    outbound_duration: Family<HandlerOnlyLabels, Histogram>,
    sql_queries: Family<SqlLabels, Counter>,
    sql_duration: Family<SqlDurationLabels, Histogram>,
    sampler: Mutex<Option<Sampler>>,
    /// The alert sender's counters, and what of them the `alerts` family has taken so far.
    alert_stats: Mutex<Option<(Arc<DeliveryStats>, DeliveryCounts)>>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    // Long as a table is: one registration (name, help, buckets) per series of docs/metrics.md.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("wasmq");
        let jobs = Family::<JobLabels, Counter>::default();
        registry.register(
            "jobs",
            "Finished attempts, by queue, handler and outcome (ok, or the failure class)",
            jobs.clone(),
        );
        // 1 ms to about 9 minutes, doubling.
        let duration = Family::<HandlerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.001, 2.0, 20))
        });
        registry.register(
            "job_duration_seconds",
            "Time an attempt ran in the sandbox, instantiation included",
            duration.clone(),
        );
        // 5 µs to about 40 ms, doubling.
        let instantiation = Family::<HandlerLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.000_005, 2.0, 14))
        });
        registry.register(
            "instantiation_seconds",
            "Time to instantiate a handler for one attempt",
            instantiation.clone(),
        );
        let recoveries = Family::<QueueLabels, Counter>::default();
        registry.register(
            "lease_recoveries",
            "Jobs whose lease expired (their host died or hung) recovered by this host",
            recoveries.clone(),
        );
        let cancels = Family::<QueueLabels, Counter>::default();
        registry.register(
            "cancelled_attempts",
            "Running attempts this host stopped because their job was cancelled",
            cancels.clone(),
        );
        let rate_limited = Family::<QueueLabels, Counter>::default();
        registry.register(
            "rate_limited_fetches",
            "Fetches that a queue or group rate limit held back while jobs were waiting",
            rate_limited.clone(),
        );
        let reconnects = Counter::default();
        registry.register(
            "redis_reconnects",
            "Times the worker got Redis back after losing it",
            reconnects.clone(),
        );
        let queue_jobs = Family::<QueueStateLabels, Gauge>::default();
        registry.register(
            "queue_jobs",
            "Jobs per queue and state, read from Redis at scrape time",
            queue_jobs.clone(),
        );
        let gauge = |registry: &mut Registry, name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(name, help, gauge.clone());
            gauge
        };
        let slots_in_use = gauge(
            &mut registry,
            "slots_in_use",
            "Slots taken on this host: jobs running, and room a fetch holds for the jobs it leases",
        );
        let slots = gauge(
            &mut registry,
            "slots",
            "Most jobs this host runs at once (--concurrency)",
        );
        let memory_in_use = gauge(
            &mut registry,
            "memory_budget_in_use_bytes",
            "Memory budget held by running jobs (the sum of their handlers' memory caps)",
        );
        let memory_budget = gauge(
            &mut registry,
            "memory_budget_bytes",
            "This host's memory budget (--memory-budget)",
        );
        let redis_up = gauge(
            &mut registry,
            "redis_up",
            "1 when this host's last Redis call succeeded (wasmq serve: when Redis answered PING at this scrape)",
        );
        let alerts = Family::<ResultLabels, Counter>::default();
        registry.register(
            "alerts",
            "Alert deliveries (per channel: webhook, e-mail) by result: sent (accepted), retried \
             (an attempt failed and was tried again), failed (given up), lost (trimmed from an \
             events stream unread)",
            alerts.clone(),
        );
        let outbound = Family::<OutboundLabels, Counter>::default();
        registry.register(
            "outbound_requests",
            "Outbound HTTP requests of handlers, by handler and outcome: ok (a response \
             arrived), denied (not granted, or a forbidden address; nothing sent), error, timeout",
            outbound.clone(),
        );
        // 1 ms to about 65 s, doubling.
        let outbound_duration =
            Family::<HandlerOnlyLabels, Histogram>::new_with_constructor(|| {
                Histogram::new(exponential_buckets(0.001, 2.0, 17))
            });
        registry.register(
            "outbound_request_duration_seconds",
            "Time from sending an outbound HTTP request to its response's head (or its failure)",
            outbound_duration.clone(),
        );
        let sql_queries = Family::<SqlLabels, Counter>::default();
        registry.register(
            "sql_queries",
            "SQL statements of handlers, by handler, database and outcome: ok, failed (the \
             server refused or failed it), conversion (a parameter or value), too_large, \
             connection_failed, timeout (cancelled on the server at the job's deadline)",
            sql_queries.clone(),
        );
        // 0.25 ms to about 16 s, doubling.
        let sql_duration = Family::<SqlDurationLabels, Histogram>::new_with_constructor(|| {
            Histogram::new(exponential_buckets(0.00025, 2.0, 17))
        });
        registry.register(
            "sql_query_duration_seconds",
            "Time a handler's SQL statement took, from sending it to its last row (or its failure)",
            sql_duration.clone(),
        );
        Metrics {
            registry,
            jobs,
            outbound,
            outbound_duration,
            sql_queries,
            sql_duration,
            duration,
            instantiation,
            recoveries,
            cancels,
            rate_limited,
            reconnects,
            queue_jobs,
            slots_in_use,
            slots,
            memory_in_use,
            memory_budget,
            redis_up,
            alerts,
            sampler: Mutex::new(None),
            alert_stats: Mutex::new(None),
        }
    }

    /// Counts an outbound HTTP request of a handler.
    pub fn outbound(&self, handler: &str, outcome: &str, elapsed: Option<Duration>) {
        self.outbound
            .get_or_create(&OutboundLabels {
                handler: handler.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some(elapsed) = elapsed {
            self.outbound_duration
                .get_or_create(&HandlerOnlyLabels {
                    handler: handler.to_string(),
                })
                .observe(elapsed.as_secs_f64());
        }
    }

    /// Counts a finished attempt: its outcome class, and (when it ran) its duration and
    /// instantiation time.
    pub fn attempt(
        &self,
        queue: &str,
        handler: &str,
        outcome: &str,
        timing: Option<(Duration, Duration)>,
    ) {
        self.jobs
            .get_or_create(&JobLabels {
                queue: queue.to_string(),
                handler: handler.to_string(),
                outcome: outcome.to_string(),
            })
            .inc();
        if let Some((duration, instantiation)) = timing {
            let labels = HandlerLabels {
                queue: queue.to_string(),
                handler: handler.to_string(),
            };
            self.duration
                .get_or_create(&labels)
                .observe(duration.as_secs_f64());
            self.instantiation
                .get_or_create(&labels)
                .observe(instantiation.as_secs_f64());
        }
    }

    /// Counts jobs recovered from expired leases.
    pub fn recovered(&self, queue: &str, jobs: u64) {
        self.recoveries
            .get_or_create(&QueueLabels {
                queue: queue.to_string(),
            })
            .inc_by(jobs);
    }

    /// Counts a running attempt stopped because its job was cancelled (not a failure: its
    /// job's outcome is `cancelled`, recorded by the cancel itself).
    pub fn cancelled(&self, queue: &str) {
        self.cancels
            .get_or_create(&QueueLabels {
                queue: queue.to_string(),
            })
            .inc();
    }

    /// Counts a fetch that a rate limit held back.
    pub fn rate_limited(&self, queue: &str) {
        self.rate_limited
            .get_or_create(&QueueLabels {
                queue: queue.to_string(),
            })
            .inc();
    }

    /// Counts Redis coming back after an outage.
    pub fn redis_reconnected(&self) {
        self.reconnects.inc();
    }

    /// Sets what is sampled from the worker at each scrape (a process without a worker, such as
    /// `wasmq serve`, has none and reports no host gauges' values but zero).
    pub fn set_sampler(&self, sampler: impl Fn() -> HostSample + Send + Sync + 'static) {
        *self.lock_sampler() = Some(Box::new(sampler));
    }

    /// Reports the alert sender's counters from now on.
    pub fn set_alert_stats(&self, stats: Arc<DeliveryStats>) {
        *self
            .alert_stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) =
            Some((stats, DeliveryCounts::default()));
    }

    /// Moves what the alert sender counted since the last scrape into the `alerts` family.
    fn take_alert_stats(&self) {
        let mut guard = self
            .alert_stats
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let Some((stats, seen)) = guard.as_mut() else {
            return;
        };
        let now = stats.snapshot();
        for (result, now, before) in [
            ("sent", now.sent, seen.sent),
            ("retried", now.retried, seen.retried),
            ("failed", now.failed, seen.failed),
            ("lost", now.lost, seen.lost),
        ] {
            self.alerts
                .get_or_create(&ResultLabels {
                    result: result.to_string(),
                })
                .inc_by(now.saturating_sub(before));
        }
        *seen = now;
    }

    fn lock_sampler(&self) -> std::sync::MutexGuard<'_, Option<Sampler>> {
        self.sampler
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Sets `wasmq_redis_up` where no worker reports it (a server of its own, `wasmq serve`,
    /// which PINGs Redis at each scrape).
    pub fn set_redis_up(&self, up: bool) {
        self.redis_up.set(i64::from(up));
    }

    /// The text a scrape returns: everything counted, the worker's sample, and the depth of
    /// each of `queues` read with `client` (a queue whose counts do not come within
    /// [`COUNTS_TIMEOUT`] keeps its last values).
    pub async fn render(&self, client: Option<&Client>, queues: &[String]) -> String {
        if let Some(client) = client {
            for queue in queues {
                let counts =
                    tokio::time::timeout(COUNTS_TIMEOUT, client.counts(queue.as_str())).await;
                if let Ok(Ok(counts)) = counts {
                    for state in JobState::ALL {
                        let value = i64::try_from(counts.get(state)).unwrap_or(i64::MAX);
                        self.queue_jobs
                            .get_or_create(&QueueStateLabels {
                                queue: queue.clone(),
                                state: state.as_str().to_string(),
                            })
                            .set(value);
                    }
                }
            }
        }
        self.take_alert_stats();
        let sample = self.lock_sampler().as_ref().map(|sampler| sampler());
        if let Some(sample) = sample {
            let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
            self.slots_in_use.set(gauge(sample.slots_in_use));
            self.slots.set(gauge(sample.slots));
            self.memory_in_use.set(gauge(sample.memory_in_use));
            self.memory_budget.set(gauge(sample.memory_budget));
            self.redis_up.set(i64::from(sample.redis_up));
        }
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// A shared [`Metrics`].
pub type SharedMetrics = Arc<Metrics>;

impl crate::capability::SqlObserver for Metrics {
    fn statement(
        &self,
        handler: &str,
        database: &str,
        outcome: crate::capability::SqlOutcome,
        elapsed: Duration,
    ) {
        self.sql_queries
            .get_or_create(&SqlLabels {
                handler: handler.to_string(),
                database: database.to_string(),
                outcome: outcome.as_str().to_string(),
            })
            .inc();
        self.sql_duration
            .get_or_create(&SqlDurationLabels {
                handler: handler.to_string(),
                database: database.to_string(),
            })
            .observe(elapsed.as_secs_f64());
    }
}

impl crate::capability::OutboundObserver for Metrics {
    fn request(
        &self,
        handler: &str,
        outcome: crate::capability::OutboundOutcome,
        elapsed: Duration,
    ) {
        let sent = outcome != crate::capability::OutboundOutcome::Denied;
        self.outbound(handler, outcome.as_str(), sent.then_some(elapsed));
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn counts_render_as_openmetrics_with_labels() {
        let metrics = Metrics::new();
        metrics.attempt(
            "emails",
            "send",
            "ok",
            Some((Duration::from_millis(3), Duration::from_micros(20))),
        );
        metrics.attempt("emails", "send", "ok", None);
        metrics.attempt("emails", "send", "timeout", None);
        metrics.recovered("emails", 2);
        metrics.set_sampler(|| HostSample {
            slots_in_use: 3,
            slots: 8,
            memory_in_use: 3 << 20,
            memory_budget: 1 << 30,
            redis_up: true,
        });
        let text = metrics.render(None, &[]).await;
        assert!(
            text.contains(r#"wasmq_jobs_total{queue="emails",handler="send",outcome="ok"} 2"#),
            "{text}"
        );
        assert!(
            text.contains(r#"wasmq_jobs_total{queue="emails",handler="send",outcome="timeout"} 1"#)
        );
        assert!(
            text.contains(r#"wasmq_job_duration_seconds_count{queue="emails",handler="send"} 1"#)
        );
        assert!(text.contains(r#"wasmq_lease_recoveries_total{queue="emails"} 2"#));
        assert!(text.contains("wasmq_slots_in_use 3\n"));
        assert!(text.contains("wasmq_memory_budget_bytes 1073741824\n"));
        assert!(text.ends_with("# EOF\n"));
    }
}
