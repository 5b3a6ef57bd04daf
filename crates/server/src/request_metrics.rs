//! Request durations per route for `/metrics`: a Prometheus histogram labelled with the route
//! template (`/token`, `/auth/{connector}`), never the raw path, so the series stay few.

use std::collections::HashMap;
use std::fmt::Write;
use std::sync::RwLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds of the buckets, in seconds (bcrypt logins land around 0.05–0.25).
const BUCKETS: [f64; 10] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative); the last one is +Inf.
    counts: [AtomicU64; BUCKETS.len() + 1],
    sum_micros: AtomicU64,
}

/// Read-mostly: a route's histogram is added once, then every request takes the read lock and
/// bumps atomics (an exclusive lock on this path cost a third of a plain 200's CPU on two cores).
#[derive(Default)]
pub struct RequestMetrics {
    routes: RwLock<HashMap<String, Histogram>>,
}

impl RequestMetrics {
    pub fn observe(&self, route: &str, took: Duration) {
        let secs = took.as_secs_f64();
        let bucket = BUCKETS
            .iter()
            .position(|b| secs <= *b)
            .unwrap_or(BUCKETS.len());
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        let record = |h: &Histogram| {
            h.counts[bucket].fetch_add(1, Ordering::Relaxed);
            h.sum_micros.fetch_add(micros, Ordering::Relaxed);
        };
        if let Ok(routes) = self.routes.read()
            && let Some(h) = routes.get(route)
        {
            record(h);
            return;
        }
        if let Ok(mut routes) = self.routes.write() {
            record(routes.entry(route.to_owned()).or_default());
        }
    }

    pub fn render(&self) -> String {
        const NAME: &str = "keygate_http_request_duration_seconds";
        let mut out =
            format!("# HELP {NAME} Time to answer a request, by route.\n# TYPE {NAME} histogram\n");
        let Ok(routes) = self.routes.read() else {
            return out;
        };
        let mut names: Vec<&String> = routes.keys().collect();
        names.sort();
        for (route, h) in names.into_iter().filter_map(|n| Some((n, routes.get(n)?))) {
            let route = route.replace('\\', "\\\\").replace('"', "\\\"");
            let mut cumulative = 0;
            for (i, count) in h.counts.iter().enumerate() {
                cumulative += count.load(Ordering::Relaxed);
                let le = BUCKETS.get(i).map_or("+Inf".to_owned(), |b| b.to_string());
                let _ = writeln!(
                    out,
                    "{NAME}_bucket{{route=\"{route}\",le=\"{le}\"}} {cumulative}"
                );
            }
            let sum = h.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
            let _ = writeln!(out, "{NAME}_sum{{route=\"{route}\"}} {sum}");
            let _ = writeln!(out, "{NAME}_count{{route=\"{route}\"}} {cumulative}");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cumulative_buckets_sum_and_count() {
        let m = RequestMetrics::default();
        m.observe("/token", Duration::from_micros(800));
        m.observe("/token", Duration::from_millis(30));
        m.observe("/token", Duration::from_secs(5));
        m.observe("/keys", Duration::from_micros(100));
        let text = m.render();
        let line = |s: &str| text.lines().any(|l| l == s);
        assert!(
            line("keygate_http_request_duration_seconds_bucket{route=\"/token\",le=\"0.001\"} 1"),
            "{text}"
        );
        assert!(
            line("keygate_http_request_duration_seconds_bucket{route=\"/token\",le=\"0.025\"} 1"),
            "{text}"
        );
        assert!(
            line("keygate_http_request_duration_seconds_bucket{route=\"/token\",le=\"0.05\"} 2"),
            "{text}"
        );
        assert!(
            line("keygate_http_request_duration_seconds_bucket{route=\"/token\",le=\"+Inf\"} 3"),
            "{text}"
        );
        assert!(
            line("keygate_http_request_duration_seconds_count{route=\"/token\"} 3"),
            "{text}"
        );
        assert!(
            line("keygate_http_request_duration_seconds_sum{route=\"/token\"} 5.0308"),
            "{text}"
        );
        assert!(
            line("keygate_http_request_duration_seconds_count{route=\"/keys\"} 1"),
            "{text}"
        );
    }
}
