//! The provider's protocol core: authorization requests, logins, codes, tokens, refresh, keys.
//! It knows no HTTP and no SQL: the server crate maps its results to responses, the store crate
//! persists its objects. Every time-dependent decision takes `now` from the injected [`Clock`].

pub mod accounts;
mod claims;
mod clients;
mod clock;
mod connector;
mod discovery;
mod error;
mod hashing;
mod jose;
mod keys;
mod limits;
mod metrics;
mod provider;
mod random;
mod scopes;
mod seal;
mod users;

pub use claims::{Audience, IdTokenClaims};
pub use clients::{Client, ClientAuth, ClientRegistry, KUBERNETES_CLIENT_ID};
pub use clock::{Clock, ManualClock, SystemClock};
pub use connector::{Connector, ConnectorError, Upstream, UpstreamLogin};
pub use error::{ErrorCode, OAuthError, ProviderError};
pub use keys::KeyManager;
pub use limits::IpLimiter;
pub use metrics::{
    CONTENT_TYPE as METRICS_CONTENT_TYPE, Counter, Family, Metrics, render_families,
};
pub use provider::{
    AuthorizeError, AuthorizeParams, ConnectorInfo, DeviceAuthorization, LoginOutcome, Provider,
    SessionInfo, TokenRequest, TokenResponse, normalize_user_code, sessions,
};
pub use random::random_id;

/// Verifies a compact JWS against a set of public JWKs; the payload when valid (for relying
/// parties such as the authenticator).
pub fn verify_jws(token: &str, jwks: &[serde_json::Value]) -> Option<Vec<u8>> {
    jose::verify(token, jwks)
}

/// A signing function with a freshly generated, parsed key: for the benchmark harness's
/// in-process limit (the provider signs with exactly this code).
pub fn bench_signer(alg: keygate_config::SigningAlgorithm) -> impl Fn(&[u8]) -> Option<String> {
    let signer = jose::Signer::generate(alg).ok().map(|(s, _)| s);
    move |payload| signer.as_ref().and_then(|s| s.sign("bench", payload).ok())
}

/// PKCE S256 transform (for built-in relying parties such as the demo page).
pub fn pkce_s256(verifier: &str) -> String {
    jose::s256(verifier)
}
pub use scopes::Scopes;
pub use seal::{MAX_COOKIE, Sealer};
pub use users::{LoginResult, UserDirectory, default_hashing_permits};

/// The one connector this version has: static users from `User` manifests.
pub const LOCAL_CONNECTOR: &str = "local";
