//! The HTTP edge: axum handlers for the provider endpoints and the pages people see. Handlers are
//! thin: they parse, call `keygate_oidc::Provider`, and map its results to responses once, here.

mod build;
mod client_ip;
mod form;
mod handlers;
mod kubeconfig;
mod request_metrics;
mod respond;
mod serve;
mod state;

pub use axum::Router;
pub use build::{
    BuildError, Built, KUBECONFIG_CLIENT_ID, LOGIN_CLIENT_ID, build_provider, builtin_clients,
    open_store,
};
pub use handlers::{metrics_router, router};
pub use keygate_pages::{Pages, unknown_templates};
pub use serve::{ServeError, check_tls, load_tls, serve};
pub use state::AppState;
