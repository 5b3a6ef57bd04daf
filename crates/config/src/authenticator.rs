//! `DexAuthenticator` manifests (the authenticating proxy in front of an application) and the
//! `AuthenticatorConfig` runtime document of `keygate authenticator`.

use std::path::Path;

use serde::Deserialize;
use serde_json::Value;

use crate::load::{Document, positive_seconds, read_documents};
use crate::secret;
use crate::{ClientSpec, ConfigError, IpNet, Logging, Secret};

/// Deckhouse's annotation: the authenticator may request tokens for kube-apiserver (Kubernetes
/// Dashboard forwards them).
pub const KUBE_ACCESS_ANNOTATION: &str = "dexauthenticator.deckhouse.io/allow-access-to-kubernetes";

// Some fields steer the Kubernetes deployment in Deckhouse and have no effect here.
#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DexAuthenticatorSpec {
    #[serde(default)]
    application_domain: Option<String>,
    #[serde(default)]
    application_ingress_class_name: Option<String>,
    #[serde(default)]
    application_ingress_certificate_secret_name: Option<String>,
    #[serde(default)]
    send_authorization_header: bool,
    #[serde(default, rename = "signOutURL")]
    sign_out_url: Option<String>,
    #[serde(default)]
    keep_users_logged_in_for: Option<String>,
    #[serde(default)]
    allowed_emails: Vec<String>,
    #[serde(default)]
    allowed_groups: Vec<String>,
    #[serde(default)]
    whitelist_source_ranges: Vec<String>,
    #[serde(default)]
    node_selector: Option<Value>,
    #[serde(default)]
    tolerations: Option<Value>,
    #[serde(default)]
    high_availability: Option<bool>,
    #[serde(default)]
    resources: Option<Value>,
    #[serde(default, rename = "gatewayAPI")]
    gateway_api: Option<Value>,
    #[serde(default)]
    additional_applications: Vec<ApplicationSpec>,
    /// v2alpha1.
    #[serde(default)]
    applications: Vec<ApplicationSpec>,
    /// Keygate extension: the client secret, outside Kubernetes.
    #[serde(default)]
    secret: Option<String>,
    #[serde(default)]
    secret_from_env: Option<String>,
    #[serde(default)]
    secret_file: Option<String>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ApplicationSpec {
    domain: String,
    #[serde(default)]
    ingress_class_name: Option<String>,
    #[serde(default)]
    ingress_secret_name: Option<String>,
    #[serde(default, rename = "signOutURL")]
    sign_out_url: Option<String>,
    #[serde(default)]
    whitelist_source_ranges: Vec<String>,
    #[serde(default, rename = "gatewayAPI")]
    gateway_api: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct AuthenticatorConfigSpec {
    #[serde(default)]
    listen: Option<String>,
    issuer: String,
    #[serde(default, rename = "issuerCAFile")]
    issuer_ca_file: Option<String>,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_from_env: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
    #[serde(default)]
    cookie_secret: Option<String>,
    #[serde(default)]
    cookie_secret_from_env: Option<String>,
    #[serde(default)]
    cookie_secret_file: Option<String>,
    #[serde(default)]
    session_store: Option<SessionStoreSpec>,
    #[serde(default)]
    upstream: Option<String>,
    #[serde(default)]
    trusted_proxies: Vec<String>,
    #[serde(default)]
    refresh_before: Option<String>,
    #[serde(default)]
    logging: Option<crate::manifests::LoggingSpec>,
    #[serde(default)]
    frontend: Option<crate::manifests::FrontendSpec>,
    #[serde(default)]
    metrics_listen: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SessionStoreSpec {
    #[serde(rename = "type")]
    kind: String,
    #[serde(default)]
    url: Option<String>,
    #[serde(default)]
    url_from_env: Option<String>,
    #[serde(default)]
    url_file: Option<String>,
    /// Serve the checks of one cookie within a second from the session this replica opened.
    #[serde(default)]
    cache: Option<bool>,
    #[serde(default, rename = "caFile")]
    ca_file: Option<String>,
}

/// One application domain the authenticator protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    /// Host (and optional port) as in `applicationDomain`.
    pub domain: String,
    pub sign_out_url: Option<String>,
    /// Empty: every address.
    pub whitelist: Vec<IpNet>,
}

/// A `DexAuthenticator` manifest.
#[derive(Debug, Clone)]
pub struct AuthenticatorSpec {
    pub name: String,
    pub namespace: String,
    /// `<name>-<namespace>-dex-authenticator`, as Deckhouse registers it.
    pub client_id: String,
    pub applications: Vec<Application>,
    pub send_authorization_header: bool,
    /// Seconds a login lasts (`keepUsersLoggedInFor`, default 168h).
    pub keep_users_logged_in_for: i64,
    pub allowed_emails: Vec<String>,
    pub allowed_groups: Vec<String>,
    pub allow_access_to_kubernetes: bool,
    pub secret: Option<Secret>,
}

impl AuthenticatorSpec {
    /// `https://<domain>/dex-authenticator/callback` for each application.
    pub fn redirect_uris(&self) -> Vec<String> {
        self.applications
            .iter()
            .map(|a| format!("https://{}/dex-authenticator/callback", a.domain))
            .collect()
    }

    /// The client `keygate serve` registers for this authenticator.
    pub fn client_spec(&self) -> ClientSpec {
        ClientSpec {
            id: self.client_id.clone(),
            legacy_id: None,
            display_name: self
                .applications
                .first()
                .map_or_else(|| self.client_id.clone(), |a| a.domain.clone()),
            secret: self.secret.clone(),
            public: false,
            redirect_uris: self.redirect_uris(),
            trusted_peers: Vec::new(),
            allowed_groups: self.allowed_groups.clone(),
            allowed_emails: self.allowed_emails.clone(),
            allow_access_to_kubernetes: self.allow_access_to_kubernetes,
        }
    }

    /// The application serving `host` (the `Host` header), if it is one of ours.
    pub fn application(&self, host: &str) -> Option<&Application> {
        self.applications
            .iter()
            .find(|a| a.domain.eq_ignore_ascii_case(host))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionStoreConfig {
    Memory,
    Redis {
        url: Secret,
        /// PEM CA certificates to trust for `rediss://` (else the system's).
        ca_file: Option<std::path::PathBuf>,
    },
}

/// Everything `keygate authenticator` needs.
#[derive(Debug, Clone)]
pub struct AuthenticatorSettings {
    pub authenticator: AuthenticatorSpec,
    pub listen: String,
    pub issuer: String,
    pub issuer_ca_file: Option<std::path::PathBuf>,
    pub client_secret: Secret,
    pub cookie_secret: Secret,
    pub session_store: SessionStoreConfig,
    /// Checks of one cookie within a second reuse the session this replica opened
    /// (`sessionStore.cache`, default true).
    pub session_cache: bool,
    pub upstream: Option<String>,
    pub trusted_proxies: Vec<IpNet>,
    /// Refresh the ID token this many seconds before it expires.
    pub refresh_before: i64,
    pub logging: Logging,
    /// The look of the authenticator's pages (`spec.frontend`, as in KeygateConfig).
    pub frontend: crate::Frontend,
    /// A second address serving only `/metrics` (`spec.metricsListen`).
    pub metrics_listen: Option<String>,
    pub warnings: Vec<String>,
}

pub(crate) fn dex_authenticator(
    doc: &Document,
    warnings: &mut Vec<String>,
) -> Result<AuthenticatorSpec, ConfigError> {
    let name = doc.name()?;
    let namespace = doc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec: DexAuthenticatorSpec = doc.spec()?;
    let mut apps = Vec::new();
    let ranges = |field: &str, list: &[String]| -> Result<Vec<IpNet>, ConfigError> {
        list.iter()
            .enumerate()
            .map(|(i, r)| IpNet::parse(r).map_err(|e| doc.err(&format!("{field}[{i}]"), e)))
            .collect()
    };
    // Where each application came from, for errors: (domain field, signOutURL field).
    let mut fields: Vec<(String, String)> = Vec::new();
    if let Some(domain) = &spec.application_domain {
        fields.push(("spec.applicationDomain".into(), "spec.signOutURL".into()));
        apps.push(Application {
            domain: domain.clone(),
            sign_out_url: spec.sign_out_url.clone(),
            whitelist: ranges("spec.whitelistSourceRanges", &spec.whitelist_source_ranges)?,
        });
    }
    for (field, list) in [
        ("spec.additionalApplications", &spec.additional_applications),
        ("spec.applications", &spec.applications),
    ] {
        for (i, a) in list.iter().enumerate() {
            fields.push((
                format!("{field}[{i}].domain"),
                format!("{field}[{i}].signOutURL"),
            ));
            apps.push(Application {
                domain: a.domain.clone(),
                sign_out_url: a.sign_out_url.clone(),
                whitelist: ranges(
                    &format!("{field}[{i}].whitelistSourceRanges"),
                    &a.whitelist_source_ranges,
                )?,
            });
        }
    }
    if apps.is_empty() {
        return Err(doc.err(
            "spec.applicationDomain",
            "is required (or spec.applications in v2alpha1)",
        ));
    }
    for (a, (domain_field, sign_out_field)) in apps.iter().zip(&fields) {
        let ok = !a.domain.is_empty()
            && url::Url::parse(&format!("https://{}/", a.domain))
                .is_ok_and(|u| u.path() == "/" && u.host_str().is_some());
        if !ok {
            return Err(doc.err(domain_field, format!("{:?} is not a host name", a.domain)));
        }
        if let Some(u) = &a.sign_out_url
            && !u.starts_with('/')
        {
            url::Url::parse(u)
                .map_err(|e| doc.err(sign_out_field, format!("not a URL or a path: {e}")))?;
        }
    }
    if spec.node_selector.is_some()
        || spec.tolerations.is_some()
        || spec.resources.is_some()
        || spec.gateway_api.is_some()
    {
        warnings.push(format!("{}: nodeSelector, tolerations, resources and gatewayAPI steer the Kubernetes deployment; they have no effect here", doc.at));
    }
    let keep = positive_seconds(
        doc,
        "spec.keepUsersLoggedInFor",
        spec.keep_users_logged_in_for.as_deref(),
        168 * 3600,
    )?;
    let secret = secret::resolve(
        "secret",
        spec.secret.as_deref(),
        spec.secret_from_env.as_deref(),
        spec.secret_file.as_deref(),
    )
    .map_err(|e| e.within("spec.").at(&doc.at))?;
    Ok(AuthenticatorSpec {
        client_id: format!("{name}-{namespace}-dex-authenticator"),
        name,
        namespace,
        applications: apps,
        send_authorization_header: spec.send_authorization_header,
        keep_users_logged_in_for: keep,
        allowed_emails: spec
            .allowed_emails
            .iter()
            .map(|e| e.to_lowercase())
            .collect(),
        allowed_groups: spec.allowed_groups,
        allow_access_to_kubernetes: doc
            .metadata
            .annotations
            .contains_key(KUBE_ACCESS_ANNOTATION),
        secret,
    })
}

/// The configuration of `keygate authenticator`: one `DexAuthenticator` and one
/// `AuthenticatorConfig` (other documents are ignored with a warning, so a directory can be shared
/// with `keygate serve`).
pub fn load_authenticator(path: &Path) -> Result<AuthenticatorSettings, ConfigError> {
    let (_files, docs) = read_documents(path)?;
    let mut warnings = Vec::new();
    let mut auth: Option<(&Document, AuthenticatorSpec)> = None;
    let mut runtime: Option<(&Document, AuthenticatorConfigSpec)> = None;
    for doc in &docs {
        match doc.kind.as_str() {
            "DexAuthenticator" => {
                if let Some((first, _)) = &auth {
                    return Err(doc.err("kind", format!("a second DexAuthenticator (the first is {}): run one keygate authenticator per DexAuthenticator", first.at)));
                }
                auth = Some((doc, dex_authenticator(doc, &mut warnings)?));
            }
            "AuthenticatorConfig" => {
                if let Some((first, _)) = &runtime {
                    return Err(doc.err(
                        "kind",
                        format!("a second AuthenticatorConfig (the first is {})", first.at),
                    ));
                }
                runtime = Some((doc, doc.spec()?));
            }
            other => warnings.push(format!(
                "{}: {other} is for keygate serve; keygate authenticator ignores it",
                doc.at
            )),
        }
    }
    let Some((_, authenticator)) = auth else {
        return Err(ConfigError::new(
            "no DexAuthenticator document: it names the application to protect",
        ));
    };
    let Some((doc, spec)) = runtime else {
        return Err(ConfigError::new(
            "no AuthenticatorConfig document (apiVersion keygate.io/v1alpha1): it sets the issuer, secrets and session store",
        ));
    };
    let issuer = url::Url::parse(&spec.issuer)
        .map_err(|e| doc.err("spec.issuer", format!("not a URL: {e}")))?;
    if !matches!(issuer.scheme(), "http" | "https") {
        return Err(doc.err("spec.issuer", "must be an http or https URL"));
    }
    let client_secret = secret::resolve(
        "clientSecret",
        spec.client_secret.as_deref(),
        spec.client_secret_from_env.as_deref(),
        spec.client_secret_file.as_deref(),
    )
    .map_err(|e| e.within("spec.").at(&doc.at))?
    .or_else(|| authenticator.secret.clone())
    .ok_or_else(|| {
        doc.err(
            "spec.clientSecret",
            "is required (or spec.secret in the DexAuthenticator)",
        )
    })?;
    let cookie_secret = secret::resolve(
        "cookieSecret",
        spec.cookie_secret.as_deref(),
        spec.cookie_secret_from_env.as_deref(),
        spec.cookie_secret_file.as_deref(),
    )
    .map_err(|e| e.within("spec.").at(&doc.at))?
    .ok_or_else(|| {
        doc.err(
            "spec.cookieSecret",
            "is required: 32 or more random characters",
        )
    })?;
    if cookie_secret.expose().len() < 32 {
        return Err(doc.err(
            "spec.cookieSecret",
            "must be at least 32 characters (e.g. `openssl rand -base64 32`)",
        ));
    }
    let session_cache = spec
        .session_store
        .as_ref()
        .and_then(|s| s.cache)
        .unwrap_or(true);
    let session_store = match spec.session_store {
        None => SessionStoreConfig::Memory,
        Some(s) => match s.kind.as_str() {
            "memory" => SessionStoreConfig::Memory,
            "redis" => {
                let url = secret::resolve(
                    "url",
                    s.url.as_deref(),
                    s.url_from_env.as_deref(),
                    s.url_file.as_deref(),
                )
                .map_err(|e| e.within("spec.sessionStore.").at(&doc.at))?
                .ok_or_else(|| doc.err("spec.sessionStore.url", "is required for redis"))?;
                let tls = url.expose().starts_with("rediss://");
                if !tls && !url.expose().starts_with("redis://") {
                    return Err(doc.err(
                        "spec.sessionStore.url",
                        "must be a redis:// or rediss:// (TLS) URL",
                    ));
                }
                if s.ca_file.is_some() && !tls {
                    return Err(doc.err(
                        "spec.sessionStore.caFile",
                        "is for TLS: the url must be rediss://",
                    ));
                }
                SessionStoreConfig::Redis {
                    url,
                    ca_file: s.ca_file.map(Into::into),
                }
            }
            other => {
                return Err(doc.err(
                    "spec.sessionStore.type",
                    format!("{other:?}: use redis or memory"),
                ));
            }
        },
    };
    if let Some(u) = &spec.upstream {
        let parsed =
            url::Url::parse(u).map_err(|e| doc.err("spec.upstream", format!("not a URL: {e}")))?;
        if parsed.scheme() != "http" {
            return Err(doc.err("spec.upstream", "only http:// upstreams are supported"));
        }
    }
    let trusted_proxies = spec
        .trusted_proxies
        .iter()
        .enumerate()
        .map(|(i, p)| IpNet::parse(p).map_err(|e| doc.err(&format!("spec.trustedProxies[{i}]"), e)))
        .collect::<Result<_, _>>()?;
    let logging = crate::load::logging(doc, spec.logging)?;
    for (field, value) in [
        ("spec.listen", &spec.listen),
        ("spec.metricsListen", &spec.metrics_listen),
    ] {
        if let Some(v) = value {
            crate::net::host_port(v).map_err(|e| doc.err(field, e))?;
        }
    }
    Ok(AuthenticatorSettings {
        authenticator,
        listen: spec.listen.unwrap_or_else(|| "127.0.0.1:4180".into()),
        issuer: spec.issuer,
        issuer_ca_file: spec.issuer_ca_file.map(Into::into),
        client_secret,
        cookie_secret,
        session_store,
        session_cache,
        upstream: spec.upstream,
        trusted_proxies,
        refresh_before: positive_seconds(
            doc,
            "spec.refreshBefore",
            spec.refresh_before.as_deref(),
            60,
        )?,
        logging,
        frontend: crate::load::frontend(spec.frontend),
        metrics_listen: spec.metrics_listen,
        warnings,
    })
}
