//! Proxy metrics per backend workload: Prometheus series named as Linkerd's
//! (`response_total` with `classification`, `response_latency_ms_bucket`), so PromQL
//! written for Linkerd works unchanged, and an in-process window for the canary
//! engine's built-in checks (success rate %, p99 ms over the last `1m`). The window keeps
//! each second's requests apart by the pod-template revision that served them, so a
//! canary's checks count only its current revision, never the release before it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt::Write;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

/// Linkerd's latency buckets, in ms.
const BUCKETS: [f64; 24] = [
    1.0, 2.0, 3.0, 4.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 100.0, 200.0, 300.0, 400.0, 500.0,
    1000.0, 2000.0, 3000.0, 4000.0, 5000.0, 10000.0, 20000.0, 30000.0, 40000.0,
];
const WINDOW_SECS: u64 = 600;
const SAMPLES_PER_SECOND: usize = 20_000;

#[derive(Default)]
struct Second {
    at: u64,
    /// The `pod-template-hash` of the pods that served these requests (shared with
    /// the [`Recorder`], so a new second copies no string).
    revision: Arc<str>,
    total: u64,
    failures: u64,
    latencies_us: Vec<u32>,
}

#[derive(Default)]
struct Series {
    by_status: BTreeMap<u16, u64>,
    /// Per bucket, the responses slower than the bucket below it: summed up to each
    /// `le` when rendered, so a response touches one counter.
    buckets: [u64; BUCKETS.len()],
    sum_ms: f64,
    count: u64,
    window: VecDeque<Second>,
}

/// One workload's series behind its own lock: responses of different workloads never
/// wait for each other, and the lock is not shared with the lookup of recorders.
type Cell = Arc<Mutex<Series>>;

/// A workload's series with its recorders, one per pod-template revision seen.
#[derive(Default)]
struct Entry {
    cell: Cell,
    recorders: Vec<Arc<Recorder>>,
}

/// Statistics for every (namespace, deployment).
#[derive(Default)]
pub struct Stats {
    /// namespace -> deployment -> series; looked up by `&str`, so finding a recorder
    /// allocates nothing once it exists.
    series: RwLock<BTreeMap<String, BTreeMap<String, Entry>>>,
}

/// Where the responses served by one workload revision are counted. The proxy finds it
/// once when it picks the endpoint and records through it, with no lookup by name.
pub struct Recorder {
    cell: Cell,
    deployment: Arc<str>,
    revision: Arc<str>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("deployment", &self.deployment)
            .field("revision", &self.revision)
            .finish()
    }
}

/// What a window says.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WindowFigures {
    /// Requests in the window.
    pub requests: u64,
    /// Non-5xx share, percent.
    pub success_rate: f64,
    /// 99th percentile latency, ms.
    pub p99_ms: f64,
}

/// Which requests of a workload a window counts.
#[derive(Clone, Copy, Debug)]
pub struct Scope<'a> {
    /// Only requests served by pods of this `pod-template-hash`; `None` counts all.
    pub revision: Option<&'a str>,
    /// Only requests at or after this second (Unix), e.g. since an analysis started.
    pub since: u64,
    /// How far back from `now` to look.
    pub span: Duration,
    /// The window's last second (Unix), inclusive.
    pub now: u64,
}

impl Scope<'_> {
    /// Every request in the last `span` up to second `now`.
    pub fn last(span: Duration, now: u64) -> Scope<'static> {
        Scope {
            revision: None,
            since: 0,
            span,
            now,
        }
    }

    fn counts(&self, sec: &Second) -> bool {
        let from = self.now.saturating_sub(self.span.as_secs().max(1));
        sec.at > from
            && sec.at <= self.now
            && sec.at >= self.since
            && self.revision.is_none_or(|r| r == &*sec.revision)
    }
}

/// Linkerd's classification: 5xx and transport failures are failures.
pub fn is_failure(status: u16) -> bool {
    status >= 500
}

impl Recorder {
    /// The Deployment whose responses this counts.
    pub fn deployment(&self) -> &str {
        &self.deployment
    }

    /// Records one response (`status` 502/503 for transport failures) at second `now`.
    pub fn record(&self, status: u16, latency: Duration, now: u64) {
        let mut guard = self.cell.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        *s.by_status.entry(status).or_default() += 1;
        let ms = latency.as_secs_f64() * 1000.0;
        if let Some(b) = BUCKETS.iter().position(|b| ms <= *b) {
            s.buckets[b] += 1;
        }
        s.sum_ms += ms;
        s.count += 1;
        // During a rollout two revisions share a second: look back over this second's
        // entries (one per revision, so very few) before starting another.
        let found = s
            .window
            .iter()
            .rev()
            .take_while(|sec| sec.at == now)
            .position(|sec| Arc::ptr_eq(&sec.revision, &self.revision));
        let idx = match found {
            Some(back) => s.window.len() - 1 - back,
            None => {
                s.window.push_back(Second {
                    at: now,
                    revision: self.revision.clone(),
                    ..Default::default()
                });
                while s
                    .window
                    .front()
                    .is_some_and(|sec| sec.at + WINDOW_SECS <= now)
                {
                    s.window.pop_front();
                }
                s.window.len() - 1
            }
        };
        let sec = &mut s.window[idx];
        sec.total += 1;
        if is_failure(status) {
            sec.failures += 1;
        }
        if sec.latencies_us.len() < SAMPLES_PER_SECOND {
            sec.latencies_us
                .push(latency.as_micros().min(u32::MAX as u128) as u32);
        }
    }
}

impl Stats {
    /// The recorder of responses served by `deployment`'s pods of `revision` (their
    /// `pod-template-hash`) in `namespace`, created on first use.
    pub fn recorder(&self, namespace: &str, deployment: &str, revision: &str) -> Arc<Recorder> {
        {
            let all = self.series.read().unwrap_or_else(|e| e.into_inner());
            let found = all
                .get(namespace)
                .and_then(|m| m.get(deployment))
                .and_then(|e| e.recorders.iter().find(|r| &*r.revision == revision));
            if let Some(r) = found {
                return r.clone();
            }
        }
        let mut all = self.series.write().unwrap_or_else(|e| e.into_inner());
        let entry = all
            .entry(namespace.to_string())
            .or_default()
            .entry(deployment.to_string())
            .or_default();
        if let Some(r) = entry.recorders.iter().find(|r| &*r.revision == revision) {
            return r.clone();
        }
        let r = Arc::new(Recorder {
            cell: entry.cell.clone(),
            deployment: deployment.into(),
            revision: revision.into(),
        });
        entry.recorders.push(r.clone());
        r
    }

    /// Records one response (`status` 502/503 for transport failures) at second `now`,
    /// served by `deployment`'s pods of `revision` (their `pod-template-hash`).
    pub fn record(
        &self,
        namespace: &str,
        (deployment, revision): (&str, &str),
        status: u16,
        latency: Duration,
        now: u64,
    ) {
        self.recorder(namespace, deployment, revision)
            .record(status, latency, now);
    }

    /// Success rate and exact p99 of `deployment`'s requests in `scope`; `None` without
    /// requests (Flagger counts that as a failed check).
    pub fn window(
        &self,
        namespace: &str,
        deployment: &str,
        scope: &Scope,
    ) -> Option<WindowFigures> {
        let cell = {
            let all = self.series.read().unwrap_or_else(|e| e.into_inner());
            all.get(namespace)?.get(deployment)?.cell.clone()
        };
        let s = cell.lock().unwrap_or_else(|e| e.into_inner());
        let secs: Vec<&Second> = s.window.iter().filter(|sec| scope.counts(sec)).collect();
        let total: u64 = secs.iter().map(|s| s.total).sum();
        if total == 0 {
            return None;
        }
        let failures: u64 = secs.iter().map(|s| s.failures).sum();
        let mut lat: Vec<u32> = secs
            .iter()
            .flat_map(|s| s.latencies_us.iter().copied())
            .collect();
        lat.sort_unstable();
        let idx = ((lat.len() as f64 * 0.99).ceil() as usize).clamp(1, lat.len()) - 1;
        Some(WindowFigures {
            requests: total,
            success_rate: (total - failures) as f64 * 100.0 / total as f64,
            p99_ms: lat.get(idx).map(|us| *us as f64 / 1000.0).unwrap_or(0.0),
        })
    }

    /// Prometheus text for every series.
    pub fn render(&self) -> String {
        let all = self.series.read().unwrap_or_else(|e| e.into_inner());
        let mut out = String::new();
        if all.is_empty() {
            return out;
        }
        // Each series is locked in turn; the map's read lock keeps the set still.
        let locked: Vec<(&String, &String, std::sync::MutexGuard<'_, Series>)> = all
            .iter()
            .flat_map(|(ns, m)| m.iter().map(move |(d, e)| (ns, d, &e.cell)))
            .map(|(ns, d, cell)| (ns, d, cell.lock().unwrap_or_else(|e| e.into_inner())))
            .collect();
        out.push_str("# HELP response_total Responses served by the gitcanary proxy, per backend workload.\n# TYPE response_total counter\n");
        for (ns, dep, s) in &locked {
            for (code, n) in &s.by_status {
                let class = if is_failure(*code) {
                    "failure"
                } else {
                    "success"
                };
                let _ = writeln!(out, "response_total{{direction=\"inbound\",namespace=\"{ns}\",deployment=\"{dep}\",classification=\"{class}\",status_code=\"{code}\"}} {n}");
            }
        }
        out.push_str("# HELP response_latency_ms Response latency through the gitcanary proxy, per backend workload.\n# TYPE response_latency_ms histogram\n");
        for (ns, dep, s) in &locked {
            let labels = format!("direction=\"inbound\",namespace=\"{ns}\",deployment=\"{dep}\"");
            let mut cumulative = 0;
            for (i, b) in BUCKETS.iter().enumerate() {
                cumulative += s.buckets[i];
                let _ = writeln!(
                    out,
                    "response_latency_ms_bucket{{{labels},le=\"{b}\"}} {cumulative}"
                );
            }
            let _ = writeln!(
                out,
                "response_latency_ms_bucket{{{labels},le=\"+Inf\"}} {}",
                s.count
            );
            let _ = writeln!(out, "response_latency_ms_sum{{{labels}}} {}", s.sum_ms);
            let _ = writeln!(out, "response_latency_ms_count{{{labels}}} {}", s.count);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn window_figures_and_exposition() {
        let st = Stats::default();
        for i in 0..100u64 {
            let status = if i % 4 == 0 { 500 } else { 200 };
            st.record(
                "test",
                ("podinfo", "abc"),
                status,
                Duration::from_millis(i + 1),
                1000 + i / 50,
            );
        }
        let w = st
            .window(
                "test",
                "podinfo",
                &Scope::last(Duration::from_secs(60), 1001),
            )
            .unwrap();
        assert_eq!(w.requests, 100);
        assert_eq!(w.success_rate, 75.0);
        assert_eq!(w.p99_ms, 99.0);
        assert!(
            st.window(
                "test",
                "podinfo",
                &Scope::last(Duration::from_secs(60), 5000)
            )
            .is_none(),
            "old data leaves the window"
        );
        let text = st.render();
        assert!(text.contains("response_total{direction=\"inbound\",namespace=\"test\",deployment=\"podinfo\",classification=\"failure\",status_code=\"500\"} 25"), "{text}");
        assert!(text.contains("response_latency_ms_bucket{direction=\"inbound\",namespace=\"test\",deployment=\"podinfo\",le=\"+Inf\"} 100"));
        // Cumulative, as Prometheus histograms are: latencies were 1..=100 ms.
        for (le, n) in [("1", 1), ("5", 5), ("50", 50), ("100", 100), ("40000", 100)] {
            assert!(text.contains(&format!("response_latency_ms_bucket{{direction=\"inbound\",namespace=\"test\",deployment=\"podinfo\",le=\"{le}\"}} {n}\n")), "{le}: {text}");
        }
    }

    #[test]
    fn a_scope_counts_only_its_revision_since_its_start() {
        let st = Stats::default();
        let ms = Duration::from_millis(3);
        // The previous release: all good, up to second 100.
        for at in 90..=100 {
            st.record("ns", ("app", "old"), 200, ms, at);
        }
        // The new release from second 100 on, sharing that second: all failing.
        for at in 100..=102 {
            st.record("ns", ("app", "new"), 500, ms, at);
            st.record("ns", ("app", "new"), 500, ms, at);
        }
        let span = Duration::from_secs(60);
        let all = st.window("ns", "app", &Scope::last(span, 102)).unwrap();
        assert_eq!((all.requests, all.success_rate), (17, 11.0 * 100.0 / 17.0));
        let scope = |revision, since| Scope {
            revision,
            since,
            span,
            now: 102,
        };
        let new = st.window("ns", "app", &scope(Some("new"), 0)).unwrap();
        assert_eq!((new.requests, new.success_rate), (6, 0.0));
        let since = st.window("ns", "app", &scope(None, 101)).unwrap();
        assert_eq!(since.requests, 4);
        assert!(st.window("ns", "app", &scope(Some("old"), 101)).is_none());
    }
}
