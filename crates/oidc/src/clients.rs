//! OAuth2 clients: `DexClient` manifests, the built-in `kubernetes` client, generated secrets.

use std::collections::HashMap;
use std::sync::Arc;

use keygate_config::{ClientSpec, Secret};
use keygate_store::Store;
use keygate_store::model::GeneratedClientSecret;

use crate::{OAuthError, ProviderError, random_id};

/// The audience kube-apiserver checks (`--oidc-client-id=kubernetes`).
pub const KUBERNETES_CLIENT_ID: &str = "kubernetes";

#[derive(Debug, Clone)]
pub struct Client {
    pub id: String,
    pub name: String,
    /// `None` with `public == false` means the client cannot authenticate (a pure audience).
    pub secret: Option<Secret>,
    pub public: bool,
    pub redirect_uris: Vec<String>,
    /// Clients allowed to mint tokens for this one (`audience:server:client_id:<this>`).
    pub trusted_peers: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub allowed_emails: Vec<String>,
}

/// How a client presented itself at the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuth {
    pub client_id: String,
    pub secret: Option<String>,
    /// Whether the credentials came in an `Authorization: Basic` header.
    pub basic: bool,
}

#[derive(Debug, Default)]
pub struct ClientRegistry {
    by_id: HashMap<String, Arc<Client>>,
}

impl ClientRegistry {
    /// Builds the registry from manifests, resolving secrets Keygate generated earlier (or
    /// generating them now). Returns the ids whose secret was generated in this call.
    pub async fn build(
        specs: &[ClientSpec],
        store: &Store,
        now: i64,
    ) -> Result<(Self, Vec<String>), ProviderError> {
        let mut by_id = HashMap::new();
        let mut generated = Vec::new();
        let mut kube_peers = Vec::new();
        // trustedPeers may name a client by Deckhouse's legacy `dex-client-<name>:<ns>` id.
        let canonical: HashMap<&str, &str> = specs
            .iter()
            .filter_map(|s| s.legacy_id.as_deref().map(|legacy| (legacy, s.id.as_str())))
            .collect();
        for spec in specs {
            let secret = match (&spec.secret, spec.public) {
                (Some(s), _) => Some(s.clone()),
                (None, true) => None,
                (None, false) => {
                    let (secret, fresh) = generated_secret(store, &spec.id, now).await?;
                    if fresh {
                        generated.push(spec.id.clone());
                    }
                    Some(secret)
                }
            };
            if spec.allow_access_to_kubernetes {
                kube_peers.push(spec.id.clone());
            }
            let client = Arc::new(Client {
                id: spec.id.clone(),
                name: spec.display_name.clone(),
                secret,
                public: spec.public,
                redirect_uris: spec.redirect_uris.clone(),
                trusted_peers: spec
                    .trusted_peers
                    .iter()
                    .map(|p| {
                        canonical
                            .get(p.as_str())
                            .map_or_else(|| p.clone(), |c| (*c).to_owned())
                    })
                    .collect(),
                allowed_groups: spec.allowed_groups.clone(),
                allowed_emails: spec.allowed_emails.clone(),
            });
            if let Some(legacy) = &spec.legacy_id {
                by_id.insert(legacy.clone(), client.clone());
            }
            by_id.insert(spec.id.clone(), client);
        }
        by_id.insert(
            KUBERNETES_CLIENT_ID.to_owned(),
            Arc::new(Client {
                id: KUBERNETES_CLIENT_ID.into(),
                name: "Kubernetes".into(),
                secret: None,
                public: false,
                redirect_uris: Vec::new(),
                trusted_peers: kube_peers,
                allowed_groups: Vec::new(),
                allowed_emails: Vec::new(),
            }),
        );
        Ok((Self { by_id }, generated))
    }

    /// Adds (or replaces) a client; used for built-in clients such as the demo page.
    pub fn insert(&mut self, client: Client) {
        self.by_id.insert(client.id.clone(), Arc::new(client));
    }

    pub fn get(&self, id: &str) -> Option<Arc<Client>> {
        self.by_id.get(id).cloned()
    }

    /// Checks the client's credentials in constant time.
    pub fn authenticate(&self, auth: &ClientAuth) -> Result<Arc<Client>, OAuthError> {
        let invalid = || OAuthError::invalid_client("Invalid client credentials.");
        let Some(client) = self.get(&auth.client_id) else {
            // Spend the same comparison on a dummy so unknown ids do not answer faster.
            let _ = Secret::new("x".repeat(32)).matches(auth.secret.as_deref().unwrap_or(""));
            return Err(invalid());
        };
        if client.public {
            return Ok(client);
        }
        match (&client.secret, auth.secret.as_deref()) {
            (Some(expected), Some(given)) if expected.matches(given) => Ok(client),
            _ => Err(invalid()),
        }
    }
}

async fn generated_secret(
    store: &Store,
    id: &str,
    now: i64,
) -> Result<(Secret, bool), ProviderError> {
    if let Some(s) = store.get::<GeneratedClientSecret>(id).await? {
        return Ok((Secret::new(s.secret), false));
    }
    let record = GeneratedClientSecret {
        id: id.to_owned(),
        secret: random_id(24),
        created_at: now,
    };
    match store.create(&record).await {
        Ok(()) => Ok((Secret::new(record.secret), true)),
        Err(keygate_store::StoreError::AlreadyExists) => {
            // Another replica generated it at the same moment: use the stored one.
            let stored = store.get::<GeneratedClientSecret>(id).await?;
            let secret = stored
                .map(|s| s.secret)
                .ok_or_else(|| ProviderError::Crypto("generated secret vanished".into()))?;
            Ok((Secret::new(secret), false))
        }
        Err(e) => Err(e.into()),
    }
}

impl Client {
    /// Dex's redirect URI rule: an exact match always; for a public client that lists no URIs,
    /// also the out-of-band URI, `/device/callback` and any http loopback URL.
    pub fn redirect_uri_allowed(&self, uri: &str) -> bool {
        if self.redirect_uris.iter().any(|u| u == uri) {
            return true;
        }
        if !self.public || !self.redirect_uris.is_empty() {
            return false;
        }
        if uri == "urn:ietf:wg:oauth:2.0:oob" || uri == "/device/callback" {
            return true;
        }
        let Ok(url) = url::Url::parse(uri) else {
            return false;
        };
        if url.scheme() != "http"
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return false;
        }
        match url.host() {
            Some(url::Host::Domain(d)) => d == "localhost",
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        }
    }

    /// Applies the client's `allowedEmails`/`allowedGroups`. Returns the groups to put in tokens
    /// (intersected with `allowedGroups` when set), or `None` when the user may not use this client.
    pub fn filter_user(&self, email: &str, groups: &[String]) -> Option<Vec<String>> {
        if !self.allowed_emails.is_empty()
            && !self
                .allowed_emails
                .iter()
                .any(|e| e.eq_ignore_ascii_case(email))
        {
            return None;
        }
        if self.allowed_groups.is_empty() {
            return Some(groups.to_vec());
        }
        let kept: Vec<String> = groups
            .iter()
            .filter(|g| self.allowed_groups.contains(g))
            .cloned()
            .collect();
        if kept.is_empty() { None } else { Some(kept) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(public: bool, uris: &[&str]) -> Client {
        Client {
            id: "c".into(),
            name: "c".into(),
            secret: None,
            public,
            redirect_uris: uris.iter().map(|s| s.to_string()).collect(),
            trusted_peers: vec![],
            allowed_groups: vec![],
            allowed_emails: vec![],
        }
    }

    #[test]
    fn redirect_rules_follow_dex() {
        let confidential = client(false, &["https://app.example.com/cb"]);
        assert!(confidential.redirect_uri_allowed("https://app.example.com/cb"));
        for bad in [
            "https://app.example.com/cb/",
            "https://app.example.com/cb?x=1",
            "https://app.example.com/CB",
            "http://localhost:8000",
        ] {
            assert!(!confidential.redirect_uri_allowed(bad), "{bad}");
        }
        let public = client(true, &[]);
        for good in [
            "http://localhost:8000",
            "http://localhost/cb",
            "http://127.0.0.1:18000/x",
            "http://[::1]:9/",
            "urn:ietf:wg:oauth:2.0:oob",
            "/device/callback",
        ] {
            assert!(public.redirect_uri_allowed(good), "{good}");
        }
        for bad in [
            "https://localhost:8000",
            "http://evil.example.com/",
            "http://localhost.evil.com/",
            "http://user@localhost/",
            "http://127.0.0.1.nip.io/",
        ] {
            assert!(!public.redirect_uri_allowed(bad), "{bad}");
        }
        let public_listed = client(true, &["http://localhost:8000"]);
        assert!(!public_listed.redirect_uri_allowed("http://localhost:9000"));
    }

    #[test]
    fn filters_intersect_groups() {
        let mut c = client(false, &[]);
        let groups = vec!["devs".to_string(), "ops".to_string()];
        assert_eq!(c.filter_user("a@x", &groups), Some(groups.clone()));
        c.allowed_groups = vec!["ops".into(), "admins".into()];
        assert_eq!(c.filter_user("a@x", &groups), Some(vec!["ops".to_string()]));
        assert_eq!(c.filter_user("a@x", &["devs".to_string()]), None);
        c.allowed_groups.clear();
        c.allowed_emails = vec!["a@x".into()];
        assert!(c.filter_user("A@X", &groups).is_some());
        assert!(c.filter_user("b@x", &groups).is_none());
    }

    #[test]
    fn authentication_is_exact() {
        let mut reg = ClientRegistry::default();
        let mut c = client(false, &[]);
        c.secret = Some(Secret::new("s3cret"));
        reg.insert(c);
        let auth = |id: &str, secret: Option<&str>| ClientAuth {
            client_id: id.into(),
            secret: secret.map(Into::into),
            basic: true,
        };
        assert!(reg.authenticate(&auth("c", Some("s3cret"))).is_ok());
        assert!(reg.authenticate(&auth("c", Some("s3cre"))).is_err());
        assert!(reg.authenticate(&auth("c", Some("s3cret "))).is_err());
        assert!(reg.authenticate(&auth("c", None)).is_err());
        assert!(reg.authenticate(&auth("nope", Some("s3cret"))).is_err());
    }
}
