//! `keygate authenticator`: the authenticating proxy (Deckhouse's DexAuthenticator). In front of
//! any web application, through nginx `auth_request` or as a reverse proxy.
//!
//! The ID token and claims live in the session store (Redis), encrypted with a per-session key
//! that only the cookie holds; the cookie (AEAD-sealed with the cookie secret) also carries the
//! refresh token, so losing Redis or a replica costs one refresh, never a login.

mod handlers;
mod metrics;
mod provider_client;
mod proxy;
mod recent;
mod session;
mod state;

pub use handlers::{metrics_router, router};
pub use state::{AuthState, build_state};
