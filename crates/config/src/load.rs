use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::Location;
use crate::groups::{self, GroupDef};
use crate::manifests::*;
use crate::model::*;
use crate::{ConfigError, PasswordHash, parse_duration, secret};

/// Reads a file or a directory of `*.yaml`/`*.yml` files (not recursive, in name order): the
/// configuration of `keygate serve`.
pub fn load(path: &Path) -> Result<Config, ConfigError> {
    let (files, docs) = read_documents(path)?;
    build(files, docs)
}

/// Every document of the file or directory, with its location.
/// The kinds of the documents at `path`, in order: tells a provider's configuration from an
/// authenticator's.
pub fn document_kinds(path: &Path) -> Result<Vec<String>, ConfigError> {
    Ok(read_documents(path)?
        .1
        .into_iter()
        .map(|d| d.kind)
        .collect())
}

pub(crate) fn read_documents(path: &Path) -> Result<(Vec<PathBuf>, Vec<Document>), ConfigError> {
    let files = list_files(path)?;
    let mut docs = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).map_err(|e| {
            let mut err = ConfigError::new(format!("cannot read: {e}"));
            err.file = Some(file.clone());
            err
        })?;
        let values: Vec<Value> = serde_saphyr::from_multiple(&text).map_err(|e| {
            let mut err = ConfigError::new(format!("invalid YAML: {e}"));
            err.file = Some(file.clone());
            err
        })?;
        for (i, value) in values.into_iter().enumerate() {
            if value.is_null() {
                continue;
            }
            let at = Location {
                file: file.clone(),
                document: i + 1,
                object: None,
            };
            // `kubectl get a,b -o yaml` prints one `kind: List` holding the objects.
            if value.get("kind").and_then(Value::as_str) == Some("List")
                && value.get("apiVersion").and_then(Value::as_str) == Some("v1")
            {
                let items = match value.get("items") {
                    Some(Value::Array(items)) => items.clone(),
                    _ => {
                        return Err(ConfigError::new("a List needs an items array")
                            .field("items")
                            .at(&at));
                    }
                };
                for item in items {
                    docs.push(Document::parse(item, at.clone())?);
                }
                continue;
            }
            docs.push(Document::parse(value, at)?);
        }
    }
    Ok((files, docs))
}

fn list_files(path: &Path) -> Result<Vec<PathBuf>, ConfigError> {
    let not_found = |e: std::io::Error| {
        let mut err = ConfigError::new(format!("cannot read: {e}"));
        err.file = Some(path.to_path_buf());
        err
    };
    let meta = std::fs::metadata(path).map_err(not_found)?;
    if !meta.is_dir() {
        return Ok(vec![path.to_path_buf()]);
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(path)
        .map_err(not_found)?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| {
            p.is_file() && matches!(p.extension().and_then(|x| x.to_str()), Some("yaml" | "yml"))
        })
        .collect();
    files.sort();
    if files.is_empty() {
        let mut err = ConfigError::new("the directory holds no .yaml or .yml file");
        err.file = Some(path.to_path_buf());
        return Err(err);
    }
    Ok(files)
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct Envelope {
    api_version: String,
    kind: String,
    #[serde(default)]
    metadata: Option<Value>,
    #[serde(default)]
    spec: Option<Value>,
    #[serde(default)]
    status: Option<Value>,
}

/// Deserializes `value` into `T`, reporting the failing field as `prefix.path`.
pub(crate) fn typed<T: DeserializeOwned>(
    value: Value,
    prefix: &str,
    at: &Location,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let path = e.path().to_string();
        let field = match (prefix, path.as_str()) {
            (p, ".") => p.to_owned(),
            ("", p) => p.to_owned(),
            (pre, p) => format!("{pre}.{p}"),
        };
        let err = ConfigError::new(e.into_inner().to_string()).at(at);
        if field.is_empty() {
            err
        } else {
            err.field(field)
        }
    })
}

pub(crate) struct Document {
    pub(crate) at: Location,
    pub(crate) kind: String,
    pub(crate) metadata: Metadata,
    pub(crate) spec: Value,
    pub(crate) status: Option<Value>,
}

impl Document {
    fn parse(value: Value, mut at: Location) -> Result<Self, ConfigError> {
        if !value.is_object() {
            return Err(
                ConfigError::new("a document must be a mapping with apiVersion and kind").at(&at),
            );
        }
        let env: Envelope = typed(value, "", &at)?;
        let metadata: Metadata = match env.metadata {
            Some(m) => typed(m, "metadata", &at)?,
            None => Metadata::default(),
        };
        at.object = Some(match &metadata.name {
            Some(name) => format!("{} {name:?}", env.kind),
            None => env.kind.clone(),
        });
        let expected: &[&str] = match env.kind.as_str() {
            "KeygateConfig" | "AuthenticatorConfig" => &["keygate.io/v1alpha1"],
            "ModuleConfig" => &["deckhouse.io/v1alpha1"],
            "DexAuthenticator" => &[
                "deckhouse.io/v1",
                "deckhouse.io/v1alpha1",
                "deckhouse.io/v2alpha1",
            ],
            "User" | "DexClient" | "DexProvider" => &["deckhouse.io/v1", "deckhouse.io/v1alpha1"],
            "Group" => &["deckhouse.io/v1alpha1"],
            other => {
                return Err(ConfigError::new(format!(
                    "unknown kind {other:?}: expected KeygateConfig, ModuleConfig, User, Group, DexClient, DexAuthenticator or AuthenticatorConfig"
                ))
                .field("kind")
                .at(&at));
            }
        };
        if !expected.contains(&env.api_version.as_str()) {
            return Err(ConfigError::new(format!(
                "{} is served as {}, not {:?}",
                env.kind,
                expected.join(" or "),
                env.api_version
            ))
            .field("apiVersion")
            .at(&at));
        }
        Ok(Self {
            at,
            kind: env.kind,
            metadata,
            spec: env.spec.unwrap_or(Value::Null),
            status: env.status,
        })
    }

    pub(crate) fn name(&self) -> Result<String, ConfigError> {
        match self.metadata.name.as_deref() {
            Some(n) if !n.trim().is_empty() => Ok(n.to_owned()),
            _ => Err(ConfigError::new("is required")
                .field("metadata.name")
                .at(&self.at)),
        }
    }

    pub(crate) fn spec<T: DeserializeOwned>(&self) -> Result<T, ConfigError> {
        if self.spec.is_null() {
            return Err(ConfigError::new("is required").field("spec").at(&self.at));
        }
        typed(self.spec.clone(), "spec", &self.at)
    }

    pub(crate) fn err(&self, field: &str, message: impl Into<String>) -> ConfigError {
        ConfigError::new(message).field(field).at(&self.at)
    }
}

pub(crate) fn seconds(
    doc: &Document,
    field: &str,
    value: Option<&str>,
    default: i64,
) -> Result<i64, ConfigError> {
    match value {
        None => Ok(default),
        Some(v) => parse_duration(v, false)
            .map(|d| d.as_secs() as i64)
            .map_err(|e| doc.err(field, e)),
    }
}

pub(crate) fn positive_seconds(
    doc: &Document,
    field: &str,
    value: Option<&str>,
    default: i64,
) -> Result<i64, ConfigError> {
    let s = seconds(doc, field, value, default)?;
    if s < 1 {
        return Err(doc.err(field, "must be at least 1s"));
    }
    Ok(s)
}

fn build(sources: Vec<PathBuf>, docs: Vec<Document>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    let mut keygate: Option<(&Document, KeygateConfigSpec)> = None;
    let mut module: Option<(&Document, UserAuthnSettings)> = None;
    let mut users = Vec::new();
    let mut groups = Vec::new();
    let mut clients = Vec::new();
    let mut connectors = Vec::new();

    for doc in &docs {
        match doc.kind.as_str() {
            "KeygateConfig" => {
                if let Some((first, _)) = &keygate {
                    return Err(doc.err(
                        "kind",
                        format!("a second KeygateConfig (the first is {})", first.at),
                    ));
                }
                keygate = Some((doc, doc.spec()?));
            }
            "ModuleConfig" => {
                let name = doc.name()?;
                if name != "user-authn" {
                    warnings.push(format!(
                        "{}: ModuleConfig {name:?} is not user-authn; ignored",
                        doc.at
                    ));
                    continue;
                }
                if let Some((first, _)) = &module {
                    return Err(doc.err(
                        "metadata.name",
                        format!(
                            "a second ModuleConfig user-authn (the first is {})",
                            first.at
                        ),
                    ));
                }
                let spec: ModuleConfigSpec = doc.spec()?;
                if spec.enabled == Some(false) {
                    warnings.push(format!(
                        "{}: the module is disabled there; Keygate serves it anyway",
                        doc.at
                    ));
                }
                if let Some(settings) = spec.settings {
                    module = Some((doc, settings));
                }
            }
            "User" => users.push(user(doc, &mut warnings)?),
            "Group" => groups.push(group(doc)?),
            "DexClient" => clients.push(client(doc)?),
            "DexProvider" => {
                if let Some(c) = crate::providers::dex_provider(doc, &mut warnings)? {
                    if connectors
                        .iter()
                        .any(|x: &crate::ConnectorSpec| x.id == c.id)
                    {
                        return Err(
                            doc.err("metadata.name", format!("a second DexProvider {:?}", c.id))
                        );
                    }
                    connectors.push(c);
                }
            }
            "DexAuthenticator" => {
                let a = crate::authenticator::dex_authenticator(doc, &mut warnings)?;
                clients.push((doc, a.client_spec()));
            }
            "AuthenticatorConfig" => {
                warnings.push(format!("{}: AuthenticatorConfig is for keygate authenticator; keygate serve ignores it", doc.at));
            }
            other => {
                return Err(doc.err(
                    "kind",
                    format!("{other} is not supported by this version of keygate serve yet"),
                ));
            }
        }
    }

    let Some((kdoc, kspec)) = keygate else {
        return Err(ConfigError::new(
            "no KeygateConfig document (apiVersion keygate.io/v1alpha1): it sets the issuer URL and storage",
        ));
    };
    let provider = provider(
        kdoc,
        kspec,
        module.as_ref().map(|(d, s)| (*d, s)),
        &mut warnings,
    )?;

    // Users and groups.
    let mut by_name = BTreeMap::new();
    let mut by_email = BTreeMap::new();
    for (doc, u) in &users {
        if let Some(prev) = by_name.insert(u.name.clone(), &doc.at) {
            return Err(doc.err(
                "metadata.name",
                format!("user {:?} is also defined in {prev}", u.name),
            ));
        }
        if let Some(prev) = by_email.insert(u.email.clone(), &doc.at) {
            return Err(doc.err(
                "spec.email",
                format!("email {:?} is already used by the user in {prev}", u.email),
            ));
        }
    }
    let mut group_names = BTreeMap::new();
    for (doc, g) in &groups {
        if let Some(prev) = group_names.insert(g.name.clone(), &doc.at) {
            return Err(doc.err(
                "spec.name",
                format!("group {:?} is also defined in {prev}", g.name),
            ));
        }
    }
    for (doc, g) in &groups {
        for (i, (kind, member)) in g.members.iter().enumerate() {
            let known = match kind {
                MemberKind::User => by_name.contains_key(member),
                MemberKind::Group => group_names.contains_key(member),
            };
            if !known {
                warnings.push(format!(
                    "{}: spec.members[{i}]: {kind:?} {member:?} does not exist",
                    doc.at
                ));
            }
        }
    }
    let defs: Vec<GroupDef> = groups.into_iter().map(|(_, g)| g).collect();
    if let Some(cycle) = groups::find_cycle(&defs) {
        warnings.push(format!(
            "groups form a cycle ({cycle}); each group is counted once, but groups should form a tree"
        ));
    }
    let memberships = groups::resolve(&defs);
    let users = users
        .into_iter()
        .map(|(_, mut u)| {
            u.groups = memberships
                .get(&u.name)
                .map(|g| g.iter().cloned().collect())
                .unwrap_or_default();
            u
        })
        .collect();

    // Clients.
    let mut client_ids = BTreeMap::new();
    for (doc, c) in &clients {
        if let Some(prev) = client_ids.insert(c.id.clone(), &doc.at) {
            return Err(doc.err(
                "metadata.name",
                format!("client {:?} is also defined in {prev}", c.id),
            ));
        }
    }
    for (doc, c) in &clients {
        for (i, peer) in c.trusted_peers.iter().enumerate() {
            let known = client_ids.contains_key(peer)
                || is_builtin_client(peer)
                || clients
                    .iter()
                    .any(|(_, other)| other.legacy_id.as_deref() == Some(peer.as_str()));
            if !known {
                warnings.push(format!(
                    "{}: spec.trustedPeers[{i}]: no client {peer:?} is defined",
                    doc.at
                ));
            }
        }
    }
    let clients = clients.into_iter().map(|(_, c)| c).collect();

    Ok(Config {
        sources,
        provider,
        users,
        clients,
        connectors,
        warnings,
    })
}

/// Client ids Keygate defines itself.
fn is_builtin_client(id: &str) -> bool {
    id == "kubernetes"
}

fn provider(
    doc: &Document,
    spec: KeygateConfigSpec,
    module: Option<(&Document, &UserAuthnSettings)>,
    warnings: &mut Vec<String>,
) -> Result<ProviderSettings, ConfigError> {
    let issuer = validate_issuer(doc, &spec.issuer, warnings)?;

    let mut id_token_ttl = 600;
    let mut refresh = RefreshPolicy::default();
    let mut kubeconfig_generator = Vec::new();
    let mut high_availability = false;
    let mut lockout = None;
    if let Some((mdoc, s)) = module {
        if let Some(p) = &s.password_policy {
            lockout = password_policy(mdoc, "spec.settings.passwordPolicy", p, warnings)?;
        }
        id_token_ttl = positive_seconds(
            mdoc,
            "spec.settings.idTokenTTL",
            s.id_token_ttl.as_deref(),
            id_token_ttl,
        )?;
        if let Some(v) = &s.refresh_token_absolute_lifetime {
            refresh.absolute_lifetime = Some(positive_seconds(
                mdoc,
                "spec.settings.refreshTokenAbsoluteLifetime",
                Some(v),
                0,
            )?);
        }
        if let Some(k) = &s.kubeconfig_generator {
            kubeconfig_generator =
                kubeconfig_clusters(mdoc, "spec.settings.kubeconfigGenerator", k)?;
        }
        high_availability = s.high_availability.unwrap_or(false);
        let inert = [
            ("publishAPI", s.publish_api.is_some()),
            ("staticUsers2FA", s.static_users_2fa.is_some()),
            ("nodeSelector", s.node_selector.is_some()),
            ("tolerations", s.tolerations.is_some()),
            ("ingressClass", s.ingress_class.is_some()),
            ("https", s.https.is_some()),
            (
                "controlPlaneConfigurator",
                s.control_plane_configurator.is_some(),
            ),
            ("resources", s.resources.is_some()),
        ];
        for (field, set) in inert {
            if set {
                warnings.push(format!(
                    "{}: spec.settings.{field} has no effect in keygate serve",
                    mdoc.at
                ));
            }
        }
    }

    id_token_ttl = positive_seconds(
        doc,
        "spec.idTokenTTL",
        spec.id_token_ttl.as_deref(),
        id_token_ttl,
    )?;
    let auth_request_ttl = positive_seconds(
        doc,
        "spec.authRequestTTL",
        spec.auth_request_ttl.as_deref(),
        600,
    )?;
    let auth_code_ttl =
        positive_seconds(doc, "spec.authCodeTTL", spec.auth_code_ttl.as_deref(), 300)?;
    if let Some(r) = &spec.refresh_tokens {
        refresh.reuse_interval = seconds(
            doc,
            "spec.refreshTokens.reuseInterval",
            r.reuse_interval.as_deref(),
            refresh.reuse_interval,
        )?;
        if let Some(v) = &r.valid_if_not_used_for {
            refresh.valid_if_not_used_for =
                optional_lifetime(doc, "spec.refreshTokens.validIfNotUsedFor", v)?;
        }
        if let Some(v) = &r.absolute_lifetime {
            refresh.absolute_lifetime =
                optional_lifetime(doc, "spec.refreshTokens.absoluteLifetime", v)?;
        }
        refresh.disable_rotation = r.disable_rotation.unwrap_or(false);
        refresh.revoke_on_reuse = r.revoke_on_reuse.unwrap_or(false);
        refresh.max_sessions_per_client = match r.max_sessions_per_client {
            Some(0) => {
                return Err(doc.err(
                    "spec.refreshTokens.maxSessionsPerClient",
                    "must be at least 1 (leave it out for no limit)",
                ));
            }
            other => other,
        };
    }
    if let Some(abs) = refresh.absolute_lifetime
        && id_token_ttl > abs
    {
        return Err(doc.err(
            "spec.idTokenTTL",
            "must not exceed the refresh tokens' absolute lifetime",
        ));
    }

    let signing = match &spec.signing {
        None => SigningSettings {
            algorithm: SigningAlgorithm::Rs256,
            rotation_period: 6 * 3600,
        },
        Some(s) => SigningSettings {
            algorithm: match s.algorithm.as_deref() {
                None | Some("RS256") => SigningAlgorithm::Rs256,
                Some("ES256") => SigningAlgorithm::Es256,
                Some(other) => {
                    return Err(doc.err("spec.signing.algorithm", format!("{other:?} is not supported: use RS256 or ES256 (kube-apiserver needs --oidc-signing-algs=ES256 for the latter)")));
                }
            },
            rotation_period: positive_seconds(
                doc,
                "spec.signing.rotationPeriod",
                s.rotation_period.as_deref(),
                6 * 3600,
            )?,
        },
    };

    let storage = match spec.storage {
        None => StorageConfig::Sqlite {
            path: PathBuf::from("keygate.db"),
        },
        Some(s) => match s.kind.as_str() {
            "memory" => StorageConfig::Memory,
            "sqlite" => StorageConfig::Sqlite {
                path: PathBuf::from(s.path.ok_or_else(|| {
                    doc.err("spec.storage.path", "is required for sqlite storage")
                })?),
            },
            "postgres" => {
                let url = secret::resolve(
                    "url",
                    s.url.as_deref(),
                    s.url_from_env.as_deref(),
                    s.url_file.as_deref(),
                )
                .map_err(|e| e.within("spec.storage.").at(&doc.at))?
                .ok_or_else(|| doc.err("spec.storage.url", "is required for postgres storage"))?;
                StorageConfig::Postgres { url }
            }
            other => {
                return Err(doc.err(
                    "spec.storage.type",
                    format!("{other:?} is not a storage type: use memory, sqlite or postgres"),
                ));
            }
        },
    };

    let tls = spec.tls.map(|t| TlsFiles {
        cert_file: t.cert_file.into(),
        key_file: t.key_file.into(),
    });
    if tls.is_none() && issuer.starts_with("https://") {
        warnings.push("the issuer is https but no spec.tls is set: Keygate must then sit behind a TLS-terminating proxy".into());
    }

    if let Some(k) = &spec.kubeconfig_generator {
        kubeconfig_generator = kubeconfig_clusters(doc, "spec.kubeconfigGenerator", k)?;
    }

    let logging = logging(doc, spec.logging)?;

    let frontend = frontend(spec.frontend);

    if let Some(p) = &spec.password_policy
        && let Some(l) = password_policy(doc, "spec.passwordPolicy", p, warnings)?
    {
        lockout = Some(l);
    }
    let brute_force = match &spec.brute_force {
        None => BruteForce::default(),
        Some(b) => brute_force(doc, b)?,
    };

    let separate_access_token = match spec.access_token_format.as_deref() {
        None | Some("IDToken") => false,
        Some("JWT") => true,
        Some(other) => {
            return Err(doc.err(
                "spec.accessTokenFormat",
                format!("{other:?}: use IDToken (the default) or JWT"),
            ));
        }
    };

    for (field, value) in [
        ("spec.listen", &spec.listen),
        ("spec.metricsListen", &spec.metrics_listen),
    ] {
        if let Some(v) = value {
            crate::net::host_port(v).map_err(|e| doc.err(field, e))?;
        }
    }
    Ok(ProviderSettings {
        issuer,
        listen: spec.listen.unwrap_or_else(|| "127.0.0.1:5556".into()),
        metrics_listen: spec.metrics_listen,
        tls,
        storage,
        id_token_ttl,
        separate_access_token,
        auth_request_ttl,
        auth_code_ttl,
        refresh,
        signing,
        kubeconfig_generator,
        high_availability: spec.high_availability.unwrap_or(high_availability),
        logging,
        frontend,
        demo: spec.demo.is_some_and(|d| d.enabled),
        brute_force,
        lockout,
    })
}

fn brute_force(doc: &Document, b: &BruteForceSpec) -> Result<BruteForce, ConfigError> {
    let d = BruteForce::default();
    let attempts = |field: &str, v: Option<u32>, default: u32| match v {
        Some(0) => Err(doc.err(field, "must be at least 1")),
        Some(n) => Ok(n),
        None => Ok(default),
    };
    let per_ip = b.per_ip.as_ref();
    let mut trusted_proxies = Vec::new();
    for (i, p) in b.trusted_proxies.iter().enumerate() {
        trusted_proxies.push(
            crate::IpNet::parse(p)
                .map_err(|e| doc.err(&format!("spec.bruteForce.trustedProxies[{i}]"), e))?,
        );
    }
    Ok(BruteForce {
        attempts: attempts("spec.bruteForce.attempts", b.attempts, d.attempts)?,
        refill_every: positive_seconds(
            doc,
            "spec.bruteForce.refillEvery",
            b.refill_every.as_deref(),
            d.refill_every,
        )?,
        per_ip_attempts: attempts(
            "spec.bruteForce.perIP.attempts",
            per_ip.and_then(|p| p.attempts),
            d.per_ip_attempts,
        )?,
        per_ip_refill_every: positive_seconds(
            doc,
            "spec.bruteForce.perIP.refillEvery",
            per_ip.and_then(|p| p.refill_every.as_deref()),
            d.per_ip_refill_every,
        )?,
        trusted_proxies,
    })
}

fn password_policy(
    doc: &Document,
    field: &str,
    p: &PasswordPolicySpec,
    warnings: &mut Vec<String>,
) -> Result<Option<Lockout>, ConfigError> {
    if p.complexity_level.is_some() || p.password_history_limit.is_some() || p.rotation.is_some() {
        warnings.push(format!(
            "{}: {field}: only lockout applies (passwords come as hashes from User manifests, so complexity, history and rotation have nothing to check)",
            doc.at
        ));
    }
    let Some(l) = &p.lockout else {
        return Ok(None);
    };
    if l.max_attempts == 0 {
        return Err(doc.err(
            &format!("{field}.lockout.maxAttempts"),
            "must be at least 1",
        ));
    }
    let lock_duration = parse_duration(&l.lock_duration, true)
        .map_err(|e| doc.err(&format!("{field}.lockout.lockDuration"), e))?
        .as_secs() as i64;
    if lock_duration < 1 {
        return Err(doc.err(
            &format!("{field}.lockout.lockDuration"),
            "must be at least 1s",
        ));
    }
    Ok(Some(Lockout {
        max_attempts: l.max_attempts,
        lock_duration,
    }))
}

/// `spec.logging`: level (a `tracing` filter) and format (text or json).
pub(crate) fn logging(doc: &Document, spec: Option<LoggingSpec>) -> Result<Logging, ConfigError> {
    let Some(l) = spec else {
        return Ok(Logging {
            level: "info".into(),
            json: false,
        });
    };
    Ok(Logging {
        level: l.level.unwrap_or_else(|| "info".into()),
        json: match l.format.as_deref() {
            None | Some("text") => false,
            Some("json") => true,
            Some(other) => {
                return Err(doc.err(
                    "spec.logging.format",
                    format!("{other:?}: use text or json"),
                ));
            }
        },
    })
}

/// "0" or "never" disables a lifetime.
fn optional_lifetime(doc: &Document, field: &str, value: &str) -> Result<Option<i64>, ConfigError> {
    if value == "never" {
        return Ok(None);
    }
    let s = seconds(doc, field, Some(value), 0)?;
    Ok(if s == 0 { None } else { Some(s) })
}

fn validate_issuer(
    doc: &Document,
    issuer: &str,
    warnings: &mut Vec<String>,
) -> Result<String, ConfigError> {
    let url =
        url::Url::parse(issuer).map_err(|e| doc.err("spec.issuer", format!("not a URL: {e}")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(doc.err("spec.issuer", "must be an http or https URL"));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(doc.err("spec.issuer", "must not have a query or a fragment"));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(doc.err("spec.issuer", "must name a host"));
    }
    if url.scheme() == "http"
        && !matches!(url.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"))
    {
        warnings.push("the issuer is plain http: kube-apiserver only accepts https issuers".into());
    }
    Ok(issuer.to_owned())
}

fn kubeconfig_clusters(
    doc: &Document,
    field: &str,
    specs: &[KubeconfigClusterSpec],
) -> Result<Vec<KubeconfigCluster>, ConfigError> {
    let mut out = Vec::new();
    for (i, k) in specs.iter().enumerate() {
        let valid_id = !k.id.is_empty()
            && k.id
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "@.:_-".contains(c));
        if !valid_id {
            return Err(doc.err(
                &format!("{field}[{i}].id"),
                "use lower-case letters, digits and @.:_-",
            ));
        }
        url::Url::parse(&k.master_uri).map_err(|e| {
            doc.err(
                &format!("{field}[{i}].masterURI"),
                format!("not a URL: {e}"),
            )
        })?;
        out.push(KubeconfigCluster {
            id: k.id.clone(),
            master_uri: k.master_uri.clone(),
            master_ca: k.master_ca.clone(),
            description: k.description.clone(),
        });
    }
    Ok(out)
}

fn user<'a>(
    doc: &'a Document,
    warnings: &mut Vec<String>,
) -> Result<(&'a Document, StaticUser), ConfigError> {
    let name = doc.name()?;
    let spec: UserSpec = doc.spec()?;
    let status: UserStatus = match &doc.status {
        Some(s) => typed(s.clone(), "status", &doc.at)?,
        None => UserStatus::default(),
    };
    let email = spec.email.trim().to_lowercase();
    if email.is_empty() {
        return Err(doc.err("spec.email", "is required"));
    }
    if email.starts_with("system:") {
        return Err(doc.err("spec.email", "must not start with the \"system:\" prefix"));
    }
    let password = PasswordHash::parse(&spec.password).map_err(|e| doc.err("spec.password", e))?;
    let ttl = match &spec.ttl {
        Some(ttl) => Some(
            parse_duration(ttl, false)
                .map_err(|e| doc.err("spec.ttl", e))?
                .as_secs() as i64,
        ),
        None => None,
    };
    // Deckhouse sets status.expireAt once, when it first sees a user with a ttl. Exported
    // manifests carry it (or at least creationTimestamp); otherwise Keygate records when it first
    // saw the user, in storage, and counts from there.
    let expires_at = match (&status.expire_at, ttl, &doc.metadata.creation_timestamp) {
        (Some(at), _, _) => Some(
            parse_rfc3339(at).ok_or_else(|| doc.err("status.expireAt", "not an RFC 3339 time"))?,
        ),
        (None, Some(ttl), Some(created)) => Some(
            parse_rfc3339(created)
                .ok_or_else(|| doc.err("metadata.creationTimestamp", "not an RFC 3339 time"))?
                + ttl,
        ),
        _ => None,
    };
    if spec.user_id.is_some() {
        warnings.push(format!(
            "{}: spec.userID is deprecated and ignored: the user id is metadata.name",
            doc.at
        ));
    }
    if spec.groups.as_ref().is_some_and(|g| !g.is_empty()) {
        warnings.push(format!(
            "{}: spec.groups is deprecated and ignored (Deckhouse writes computed groups there): declare membership with Group",
            doc.at
        ));
    }
    Ok((
        doc,
        StaticUser {
            name,
            email,
            password,
            groups: Vec::new(),
            expires_at,
            ttl: ttl.filter(|_| expires_at.is_none()),
        },
    ))
}

fn group(doc: &Document) -> Result<(&Document, GroupDef), ConfigError> {
    doc.name()?;
    let spec: GroupSpec = doc.spec()?;
    if spec.name.trim().is_empty() {
        return Err(doc.err("spec.name", "is required"));
    }
    if spec.name.starts_with("system:") {
        return Err(doc.err(
            "spec.name",
            "must not start with the \"system:\" prefix (kube-apiserver reserves it)",
        ));
    }
    let members = spec.members.into_iter().map(|m| (m.kind, m.name)).collect();
    Ok((
        doc,
        GroupDef {
            name: spec.name,
            members,
        },
    ))
}

const KUBE_ACCESS_ANNOTATIONS: [&str; 2] = [
    "dexclient.deckhouse.io/allow-access-to-kubernetes",
    "keygate.io/allow-access-to-kubernetes",
];

fn client(doc: &Document) -> Result<(&Document, ClientSpec), ConfigError> {
    let name = doc.name()?;
    let namespace = doc
        .metadata
        .namespace
        .clone()
        .unwrap_or_else(|| "default".into());
    let spec: DexClientSpec = doc
        .spec
        .is_null()
        .then(DexClientSpec::default)
        .map_or_else(|| doc.spec(), Ok)?;
    let secret = secret::resolve(
        "secret",
        spec.secret.as_deref(),
        spec.secret_from_env.as_deref(),
        spec.secret_file.as_deref(),
    )
    .map_err(|e| e.within("spec.").at(&doc.at))?;
    if spec.public && secret.is_some() {
        return Err(doc.err(
            "spec.public",
            "a public client has no secret: remove spec.secret or spec.public",
        ));
    }
    for (i, uri) in spec.redirect_uris.iter().enumerate() {
        validate_redirect_uri(uri).map_err(|e| doc.err(&format!("spec.redirectURIs[{i}]"), e))?;
    }
    let id = format!("dex-client-{name}@{namespace}");
    // Deckhouse honours its annotation by presence alone; ours may also say "false".
    let annotations = &doc.metadata.annotations;
    let allow = annotations.contains_key(KUBE_ACCESS_ANNOTATIONS[0])
        || annotations
            .get(KUBE_ACCESS_ANNOTATIONS[1])
            .is_some_and(|v| v != "false");
    Ok((
        doc,
        ClientSpec {
            display_name: spec.name.unwrap_or_else(|| id.clone()),
            legacy_id: Some(format!("dex-client-{name}:{namespace}")),
            id,
            secret,
            public: spec.public,
            redirect_uris: spec.redirect_uris,
            trusted_peers: spec.trusted_peers,
            allowed_groups: spec.allowed_groups,
            allowed_emails: spec
                .allowed_emails
                .into_iter()
                .map(|e| e.to_lowercase())
                .collect(),
            allow_access_to_kubernetes: allow,
        },
    ))
}

pub(crate) fn validate_redirect_uri(uri: &str) -> Result<(), String> {
    if uri == "urn:ietf:wg:oauth:2.0:oob" || uri == "/device/callback" {
        return Ok(());
    }
    let url = url::Url::parse(uri).map_err(|e| format!("not an absolute URL: {e}"))?;
    if url.fragment().is_some() {
        return Err("must not have a fragment".into());
    }
    if url.cannot_be_a_base() {
        return Err("not a hierarchical URL".into());
    }
    Ok(())
}

/// Parses `2006-01-02T15:04:05Z`, with optional fraction and numeric offset, to unix seconds.
pub(crate) fn parse_rfc3339(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = s.split_once(['T', 't', ' '])?;
    let mut d = date.split('-');
    let (y, m, day): (i64, i64, i64) = (
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
        d.next()?.parse().ok()?,
    );
    let (time, offset) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else {
        let idx = rest.rfind(['+', '-'])?;
        let (t, off) = rest.split_at(idx);
        let sign = if off.starts_with('-') { -1 } else { 1 };
        let (oh, om) = off[1..].split_once(':')?;
        (
            t,
            sign * (oh.parse::<i64>().ok()? * 3600 + om.parse::<i64>().ok()? * 60),
        )
    };
    let time = time.split('.').next()?;
    let mut t = time.split(':');
    let (hh, mm, ss): (i64, i64, i64) = (
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
        t.next()?.parse().ok()?,
    );
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86400 + hh * 3600 + mm * 60 + ss - offset)
}

/// Formats unix seconds as `2006-01-02T15:04:05Z` (the inverse of [`parse_rfc3339`]).
pub fn format_rfc3339(ts: i64) -> String {
    // Civil date from days (Howard Hinnant's algorithm).
    let (days, secs) = (ts.div_euclid(86_400), ts.rem_euclid(86_400));
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// `spec.frontend` of a KeygateConfig or an AuthenticatorConfig.
pub(crate) fn frontend(spec: Option<crate::manifests::FrontendSpec>) -> Frontend {
    spec.map(|f| Frontend {
        product_name: f.product_name,
        logo_url: f.logo_url,
        extra_css_url: f.extra_css_url,
        templates_dir: f.templates_dir.map(PathBuf::from),
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::{format_rfc3339, parse_rfc3339};

    #[test]
    fn format_round_trips() {
        for ts in [0, 1_796_040_000, 951_782_400, -86_400] {
            assert_eq!(parse_rfc3339(&format_rfc3339(ts)), Some(ts));
        }
        assert_eq!(format_rfc3339(1_796_040_000), "2026-11-30T12:00:00Z");
    }

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(parse_rfc3339("2026-11-30T12:00:00Z"), Some(1_796_040_000));
        assert_eq!(
            parse_rfc3339("2026-11-30T14:00:00.123+02:00"),
            Some(1_796_040_000)
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }
}
