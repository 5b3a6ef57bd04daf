//! Counters for `/metrics`, in the Prometheus text format. Plain atomics: the hot paths pay one
//! relaxed increment, and no metrics framework is compiled in.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub logins_succeeded: Counter,
    pub logins_failed: Counter,
    pub codes_exchanged: Counter,
    pub codes_replayed: Counter,
    pub refresh_rotations: Counter,
    pub refresh_reused: Counter,
    pub refresh_families_revoked: Counter,
    /// Upstream (connector) refreshes: one per rotation, whatever the number of concurrent callers.
    pub upstream_refreshes: Counter,
    pub token_errors: Counter,
}

impl Metrics {
    pub fn render(&self) -> String {
        let rows: [(&str, &str, &Counter); 9] = [
            (
                "keygate_logins_succeeded_total",
                "Successful password logins.",
                &self.logins_succeeded,
            ),
            (
                "keygate_logins_failed_total",
                "Password logins refused for bad credentials.",
                &self.logins_failed,
            ),
            (
                "keygate_codes_exchanged_total",
                "Authorization codes exchanged for tokens.",
                &self.codes_exchanged,
            ),
            (
                "keygate_codes_replayed_total",
                "Authorization codes presented again (their tokens revoked).",
                &self.codes_replayed,
            ),
            (
                "keygate_refresh_rotations_total",
                "Refresh grants that rotated a refresh token.",
                &self.refresh_rotations,
            ),
            (
                "keygate_refresh_reused_total",
                "Refresh grants answered from the reuse window (obsolete tokens).",
                &self.refresh_reused,
            ),
            (
                "keygate_refresh_sessions_revoked_total",
                "Refresh token families revoked (RFC 7009, replay, refused refresh).",
                &self.refresh_families_revoked,
            ),
            (
                "keygate_upstream_refreshes_total",
                "Refreshes of the user at the connector.",
                &self.upstream_refreshes,
            ),
            (
                "keygate_token_errors_total",
                "Token endpoint requests answered with an error.",
                &self.token_errors,
            ),
        ];
        let mut out = String::new();
        for (name, help, counter) in rows {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                counter.get()
            );
        }
        out
    }
}
