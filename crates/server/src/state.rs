use std::sync::Arc;

use keygate_oidc::Provider;

use crate::Pages;

/// What every handler gets.
#[derive(Clone)]
pub struct AppState {
    pub provider: Arc<Provider>,
    pub pages: Arc<Pages>,
    /// The issuer's origin (`scheme://host[:port]`), for the login form's CSRF check.
    pub origin: String,
    /// Whether cookies must be `Secure`.
    pub https: bool,
    /// The issuer's path without a trailing slash ("" at the root), for cookie paths and links.
    pub base_path: String,
    /// Proxies whose forwarded-for headers are believed.
    pub trusted_proxies: Arc<Vec<keygate_config::IpNet>>,
    /// Seals the kubeconfig page's cookies; its key lives in storage, loaded on first use.
    pub page_sealer: Arc<tokio::sync::OnceCell<keygate_oidc::Sealer>>,
    /// Request durations per route, for `/metrics`.
    pub requests: Arc<crate::request_metrics::RequestMetrics>,
}

impl AppState {
    pub fn new(provider: Arc<Provider>, pages: Arc<Pages>) -> Self {
        let issuer = provider.settings().issuer.clone();
        let (origin, https, base_path) = match url::Url::parse(&issuer) {
            Ok(u) => (
                u.origin().ascii_serialization(),
                u.scheme() == "https",
                u.path().trim_end_matches('/').to_owned(),
            ),
            Err(_) => (String::new(), false, String::new()),
        };
        let trusted_proxies = Arc::new(provider.settings().brute_force.trusted_proxies.clone());
        Self {
            provider,
            pages,
            origin,
            https,
            base_path,
            trusted_proxies,
            page_sealer: Arc::new(tokio::sync::OnceCell::new()),
            requests: Arc::default(),
        }
    }
}
