//! The authenticator's counters for `/metrics` (Prometheus text format), plain atomics as in the
//! provider.

use keygate_oidc::{Counter, Family, render_families};

#[derive(Debug, Default)]
pub(crate) struct AuthMetrics {
    pub checks_allowed: Counter,
    pub checks_unauthenticated: Counter,
    pub checks_forbidden: Counter,
    /// Allowed checks answered from the sessions opened in the current second.
    pub checks_from_memory: Counter,
    pub refreshes_ok: Counter,
    pub refreshes_refused: Counter,
    pub refreshes_unavailable: Counter,
    pub sign_ins: Counter,
    pub sign_outs: Counter,
}

impl AuthMetrics {
    /// `store_failures`: session store calls that failed or timed out (Redis down).
    pub fn render(&self, store_failures: &Counter) -> String {
        let families: [Family; 7] = [
            (
                "keygate_authenticator_checks_total",
                "Session checks (auth_request and reverse-proxy requests) by result.",
                vec![
                    ("result=\"allowed\"", &self.checks_allowed),
                    ("result=\"unauthenticated\"", &self.checks_unauthenticated),
                    ("result=\"forbidden\"", &self.checks_forbidden),
                ],
            ),
            (
                "keygate_authenticator_checks_from_memory_total",
                "Allowed checks answered from a session this replica opened in the same second.",
                vec![("", &self.checks_from_memory)],
            ),
            (
                "keygate_authenticator_refreshes_total",
                "ID token refreshes at the provider by result.",
                vec![
                    ("result=\"ok\"", &self.refreshes_ok),
                    ("result=\"refused\"", &self.refreshes_refused),
                    ("result=\"unavailable\"", &self.refreshes_unavailable),
                ],
            ),
            (
                "keygate_authenticator_sign_ins_total",
                "Completed sign-ins (sessions created).",
                vec![("", &self.sign_ins)],
            ),
            (
                "keygate_authenticator_sign_outs_total",
                "Sign-outs of a valid session.",
                vec![("", &self.sign_outs)],
            ),
            (
                "keygate_authenticator_store_failures_total",
                "Session store calls that failed or timed out (the session then costs a refresh).",
                vec![("", store_failures)],
            ),
            (
                "keygate_authenticator_build_info",
                "Always 1; the version label says which build runs.",
                vec![],
            ),
        ];
        render_families(&families)
    }
}
