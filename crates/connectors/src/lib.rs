//! Upstream identity providers (Deckhouse's `DexProvider`): LDAP and Atlassian Crowd (password
//! connectors), OpenID Connect, GitHub, GitLab and Bitbucket Cloud (redirect connectors). Each
//! implements `keygate_oidc::Connector`.

mod bitbucket;
mod crowd;
mod github;
mod gitlab;
mod ldap;
mod oauth2;
mod oidc;
pub mod remote_keys;
mod tls;

use std::sync::Arc;

use keygate_config::{ConnectorKind, ConnectorSpec};
use keygate_oidc::Connector;

/// Builds the connector a `DexProvider` describes.
pub fn build(spec: &ConnectorSpec) -> Result<Arc<dyn Connector>, String> {
    let (id, name) = (spec.id.clone(), spec.display_name.clone());
    Ok(match &spec.kind {
        ConnectorKind::Ldap(c) => Arc::new(ldap::Ldap::new(id, name, c.clone())?),
        ConnectorKind::Oidc(c) => Arc::new(oidc::Oidc::new(id, name, c.clone())?),
        ConnectorKind::Github(c) => Arc::new(github::Github::new(id, name, c.clone())?),
        ConnectorKind::Gitlab(c) => Arc::new(gitlab::Gitlab::new(id, name, c.clone())?),
        ConnectorKind::Bitbucket(c) => Arc::new(bitbucket::Bitbucket::new(id, name, c.clone())?),
        ConnectorKind::Crowd(c) => Arc::new(crowd::Crowd::new(id, name, c.clone())?),
    })
}
