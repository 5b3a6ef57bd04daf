//! Keygate's configuration: Deckhouse-compatible manifests (multi-document YAML, a file or a
//! directory) turned into one validated runtime model. Every error names the file, the document and
//! the field path.

mod authenticator;
mod duration;
mod error;
mod groups;
mod load;
mod manifests;
mod model;
mod net;
mod password;
mod providers;
mod secret;

pub use authenticator::{
    Application, AuthenticatorSettings, AuthenticatorSpec, SessionStoreConfig, load_authenticator,
};
pub use duration::parse_duration;
pub use error::ConfigError;
pub use load::{document_kinds, format_rfc3339, load};
pub use model::*;
pub use net::{IpNet, resolve_client_ip};
pub use password::{MAX_BCRYPT_COST, MIN_BCRYPT_COST, PasswordHash};
pub use providers::{
    BitbucketConnector, ConnectorKind, ConnectorSpec, CrowdConnector, GithubConnector,
    GitlabConnector, LdapConnector, LdapGroups, OidcConnector,
};

/// The connector id of the static users (`User` manifests).
pub const LOCAL_CONNECTOR_ID: &str = "local";
pub use secret::Secret;
