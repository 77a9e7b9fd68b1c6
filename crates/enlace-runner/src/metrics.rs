//! Prometheus metrics of the runner. The web crate registers its own beside these and
//! serves the whole registry at `/metrics`.

use std::sync::Mutex;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    pub registry: Mutex<Registry>,
    /// Events stored in the inbox, by source (webhook, cron, emit, manual).
    pub events_accepted: Family<Labels, Counter>,
    /// Duplicate events dropped by their dedupe key, by source.
    pub events_duplicate: Family<Labels, Counter>,
    /// Runs that ended or parked, by status.
    pub runs: Family<Labels, Counter>,
    /// Action call latency, by app and action.
    pub step_seconds: Family<Labels, Histogram>,
    /// Retries scheduled, by error class.
    pub retries: Family<Labels, Counter>,
    /// OAuth2 token refreshes, by outcome (`ok` or the error class).
    pub oauth_refreshes: Family<Labels, Counter>,
    /// Send policy decisions about messages to people, by decision.
    pub send_decisions: Family<Labels, Counter>,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("enlace");
        let events_accepted = Family::<Labels, Counter>::default();
        let events_duplicate = Family::<Labels, Counter>::default();
        let runs = Family::<Labels, Counter>::default();
        let step_seconds =
            Family::<Labels, Histogram>::new_with_constructor(|| Histogram::new(exponential_buckets(0.0005, 2.0, 18)) as Histogram);
        let retries = Family::<Labels, Counter>::default();
        let oauth_refreshes = Family::<Labels, Counter>::default();
        registry.register("events_accepted", "Events stored in the inbox, by source", events_accepted.clone());
        registry.register("events_duplicate", "Events dropped as duplicates of an earlier dedupe key, by source", events_duplicate.clone());
        registry.register(
            "runs",
            "Runs that reached a status (succeeded, filtered, failed, cancelled, waiting, queued for retry), by status",
            runs.clone(),
        );
        registry.register("step_duration_seconds", "Latency of action calls, by app and action", step_seconds.clone());
        registry.register("step_retries", "Retries scheduled for action steps, by error class", retries.clone());
        registry.register("oauth_refreshes", "OAuth2 token refreshes, by outcome (ok, or the error class)", oauth_refreshes.clone());
        let send_decisions = Family::<Labels, Counter>::default();
        registry.register(
            "send_decisions",
            "Send policy decisions about messages to people (sent, deferred, blocked, held)",
            send_decisions.clone(),
        );
        Metrics {
            registry: Mutex::new(registry),
            events_accepted,
            events_duplicate,
            runs,
            step_seconds,
            retries,
            oauth_refreshes,
            send_decisions,
        }
    }
}

impl Metrics {
    pub(crate) fn policy_decisions(&self, decision: &str) {
        self.send_decisions.get_or_create(&vec![("decision", decision.to_string())]).inc();
    }

    /// The text exposition format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let reg = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        let _ = prometheus_client::encoding::text::encode(&mut out, &reg);
        out
    }
}
