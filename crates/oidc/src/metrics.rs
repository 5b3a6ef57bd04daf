//! Counters for `/metrics`, in the Prometheus text format. Plain atomics: the hot paths pay one
//! relaxed increment, and no metrics framework is compiled in.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Debug, Default)]
pub struct Counter(AtomicU64);

impl Counter {
    pub const fn new() -> Self {
        Self(AtomicU64::new(0))
    }
    pub fn inc(&self) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
    pub fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub logins_ok: Counter,
    pub logins_invalid: Counter,
    pub logins_locked: Counter,
    pub logins_limited_user: Counter,
    pub logins_limited_ip: Counter,
    pub token_requests_limited_ip: Counter,
    pub codes_exchanged: Counter,
    pub codes_replayed: Counter,
    pub refresh_rotations: Counter,
    pub refresh_reused: Counter,
    pub refresh_families_revoked: Counter,
    /// Upstream (connector) refreshes: one per rotation, whatever the number of concurrent callers.
    pub upstream_refreshes: Counter,
    pub token_errors: Counter,
}

/// The Prometheus text exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A metric family: name, help, and its series as (labels, counter). No series: the build-info
/// gauge.
pub type Family<'a> = (&'static str, &'static str, Vec<(&'static str, &'a Counter)>);

/// The Prometheus text format of `families`.
pub fn render_families(families: &[Family]) -> String {
    let mut out = String::new();
    for (name, help, series) in families {
        let _ = writeln!(out, "# HELP {name} {help}");
        if series.is_empty() {
            let _ = writeln!(
                out,
                "# TYPE {name} gauge\n{name}{{version=\"{}\"}} 1",
                env!("CARGO_PKG_VERSION")
            );
            continue;
        }
        let _ = writeln!(out, "# TYPE {name} counter");
        for (labels, counter) in series {
            if labels.is_empty() {
                let _ = writeln!(out, "{name} {}", counter.get());
            } else {
                let _ = writeln!(out, "{name}{{{labels}}} {}", counter.get());
            }
        }
    }
    out
}

impl Metrics {
    pub fn render(&self) -> String {
        let families: [Family; 10] = [
            (
                "keygate_login_attempts_total",
                "Password login attempts by result.",
                vec![
                    ("result=\"ok\"", &self.logins_ok),
                    ("result=\"invalid\"", &self.logins_invalid),
                    ("result=\"locked\"", &self.logins_locked),
                    ("result=\"rate_limited_user\"", &self.logins_limited_user),
                    ("result=\"rate_limited_ip\"", &self.logins_limited_ip),
                ],
            ),
            (
                "keygate_token_requests_rate_limited_total",
                "Token endpoint requests refused by the per-address limit.",
                vec![("", &self.token_requests_limited_ip)],
            ),
            (
                "keygate_codes_exchanged_total",
                "Authorization codes exchanged for tokens.",
                vec![("", &self.codes_exchanged)],
            ),
            (
                "keygate_codes_replayed_total",
                "Authorization codes presented again (their tokens revoked).",
                vec![("", &self.codes_replayed)],
            ),
            (
                "keygate_refresh_rotations_total",
                "Refresh grants that rotated a refresh token.",
                vec![("", &self.refresh_rotations)],
            ),
            (
                "keygate_refresh_reused_total",
                "Refresh grants answered from the reuse window (obsolete tokens).",
                vec![("", &self.refresh_reused)],
            ),
            (
                "keygate_refresh_sessions_revoked_total",
                "Refresh token families revoked (RFC 7009, replay, refused refresh).",
                vec![("", &self.refresh_families_revoked)],
            ),
            (
                "keygate_upstream_refreshes_total",
                "Refreshes of the user at the connector.",
                vec![("", &self.upstream_refreshes)],
            ),
            (
                "keygate_token_errors_total",
                "Token endpoint requests answered with an error.",
                vec![("", &self.token_errors)],
            ),
            (
                "keygate_build_info",
                "Always 1; the version label says which build runs.",
                vec![],
            ),
        ];
        render_families(&families)
    }
}
