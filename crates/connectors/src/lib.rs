//! Upstream identity providers (Deckhouse's `DexProvider`): LDAP (a password connector) and
//! OpenID Connect (a redirect connector). Each implements `keygate_oidc::Connector`.

mod ldap;
mod oidc;
mod tls;

use std::sync::Arc;

use keygate_config::{ConnectorKind, ConnectorSpec};
use keygate_oidc::Connector;

/// Builds the connector a `DexProvider` describes.
pub fn build(spec: &ConnectorSpec) -> Result<Arc<dyn Connector>, String> {
    Ok(match &spec.kind {
        ConnectorKind::Ldap(l) => Arc::new(ldap::Ldap::new(
            spec.id.clone(),
            spec.display_name.clone(),
            l.clone(),
        )?),
        ConnectorKind::Oidc(o) => Arc::new(oidc::Oidc::new(
            spec.id.clone(),
            spec.display_name.clone(),
            o.clone(),
        )?),
    })
}
