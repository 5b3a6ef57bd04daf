//! `DexProvider` manifests: upstream identity providers, with Deckhouse's fields per type.

use serde::Deserialize;
use serde_json::Value;

use crate::load::Document;
use crate::{ConfigError, Secret, secret};

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct DexProviderSpec {
    #[serde(rename = "type")]
    kind: String,
    display_name: String,
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default)]
    ldap: Option<LdapSpec>,
    #[serde(default)]
    oidc: Option<OidcSpec>,
    #[serde(default)]
    github: Option<GithubSpec>,
    #[serde(default)]
    gitlab: Option<GitlabSpec>,
    #[serde(default)]
    bitbucket_cloud: Option<BitbucketSpec>,
    #[serde(default)]
    crowd: Option<CrowdSpec>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GithubSpec {
    #[serde(rename = "clientID")]
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_from_env: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
    #[serde(default)]
    team_name_field: Option<String>,
    #[serde(default, rename = "useLoginAsID")]
    use_login_as_id: bool,
    #[serde(default)]
    orgs: Vec<GithubOrg>,
    /// Keygate extension: GitHub Enterprise (`https://github.example.com`); default github.com.
    #[serde(default, rename = "baseURL")]
    base_url: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GithubOrg {
    name: String,
    #[serde(default)]
    teams: Vec<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct GitlabSpec {
    #[serde(rename = "clientID")]
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_from_env: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
    #[serde(default, rename = "baseURL")]
    base_url: Option<String>,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default, rename = "useLoginAsID")]
    use_login_as_id: bool,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct BitbucketSpec {
    #[serde(rename = "clientID")]
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_from_env: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
    #[serde(default)]
    teams: Vec<String>,
    #[serde(default)]
    include_team_groups: bool,
    /// Keygate extension, for tests and proxies: defaults to https://bitbucket.org and
    /// https://api.bitbucket.org.
    #[serde(default, rename = "baseURL")]
    base_url: Option<String>,
    #[serde(default, rename = "apiURL")]
    api_url: Option<String>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct CrowdSpec {
    #[serde(rename = "clientID")]
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_from_env: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
    #[serde(rename = "baseURL")]
    base_url: String,
    #[serde(default)]
    groups: Vec<String>,
    #[serde(default)]
    username_prompt: Option<String>,
    #[serde(default)]
    enable_basic_auth: Option<bool>,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LdapSpec {
    host: String,
    #[serde(default, rename = "insecureNoSSL")]
    insecure_no_ssl: bool,
    #[serde(default, rename = "startTLS")]
    start_tls: bool,
    #[serde(default, rename = "rootCAData")]
    root_ca_data: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default, rename = "bindDN")]
    bind_dn: Option<String>,
    #[serde(default, rename = "bindPW")]
    bind_pw: Option<String>,
    #[serde(default, rename = "bindPWFromEnv")]
    bind_pw_from_env: Option<String>,
    #[serde(default, rename = "bindPWFile")]
    bind_pw_file: Option<String>,
    #[serde(default)]
    username_prompt: Option<String>,
    #[serde(default)]
    enable_basic_auth: Option<bool>,
    user_search: LdapUserSearch,
    #[serde(default)]
    group_search: Option<LdapGroupSearch>,
    #[serde(default)]
    kerberos: Option<Value>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LdapUserSearch {
    #[serde(rename = "baseDN")]
    base_dn: String,
    username: String,
    id_attr: String,
    email_attr: String,
    #[serde(default)]
    filter: Option<String>,
    #[serde(default)]
    name_attr: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LdapGroupSearch {
    #[serde(rename = "baseDN")]
    base_dn: String,
    name_attr: String,
    user_matchers: Vec<LdapUserMatcher>,
    #[serde(default)]
    filter: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct LdapUserMatcher {
    user_attr: String,
    group_attr: String,
}

#[allow(dead_code)]
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct OidcSpec {
    issuer: String,
    #[serde(rename = "clientID")]
    client_id: String,
    #[serde(default)]
    client_secret: Option<String>,
    #[serde(default)]
    client_secret_from_env: Option<String>,
    #[serde(default)]
    client_secret_file: Option<String>,
    #[serde(default)]
    insecure_skip_email_verified: bool,
    #[serde(default)]
    basic_auth_unsupported: bool,
    #[serde(default)]
    get_user_info: bool,
    #[serde(default, rename = "userIDKey")]
    user_id_key: Option<String>,
    #[serde(default)]
    user_name_key: Option<String>,
    #[serde(default)]
    claim_mapping: Option<ClaimMapping>,
    #[serde(default)]
    claim_mapping_override: Option<bool>,
    #[serde(default)]
    scopes: Option<Vec<String>>,
    #[serde(default)]
    allowed_groups: Vec<String>,
    #[serde(default)]
    prompt_type: Option<String>,
    #[serde(default, rename = "rootCAData")]
    root_ca_data: Option<String>,
    #[serde(default)]
    insecure_skip_verify: bool,
    #[serde(default)]
    enable_basic_auth: Option<bool>,
    /// Keygate extension: false for an upstream that leaves the `nonce` out of its ID tokens.
    #[serde(default)]
    send_nonce: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClaimMapping {
    #[serde(default)]
    email: Option<String>,
    #[serde(default)]
    groups: Option<String>,
    #[serde(default)]
    preferred_username: Option<String>,
}

/// An LDAP directory, checked with the password the user types into our form.
#[derive(Debug, Clone)]
pub struct LdapConnector {
    /// `host:port`; the scheme follows `insecure_no_ssl`/`start_tls` (ldaps by default, as Dex).
    pub host: String,
    pub insecure_no_ssl: bool,
    pub start_tls: bool,
    /// PEM certificates to trust (Dex's `rootCAData`, base64 of PEM).
    pub root_ca_pem: Option<Vec<u8>>,
    pub insecure_skip_verify: bool,
    pub bind_dn: Option<String>,
    pub bind_pw: Option<Secret>,
    pub username_prompt: String,
    pub user_base_dn: String,
    pub user_filter: Option<String>,
    pub username_attr: String,
    pub id_attr: String,
    pub email_attr: String,
    pub name_attr: Option<String>,
    pub group_search: Option<LdapGroups>,
}

#[derive(Debug, Clone)]
pub struct LdapGroups {
    pub base_dn: String,
    pub filter: Option<String>,
    pub name_attr: String,
    /// `(user attribute, group attribute)` pairs; `DN` names the user's DN.
    pub user_matchers: Vec<(String, String)>,
}

/// An upstream OpenID Connect provider (Keycloak, Okta, Google...).
#[derive(Debug, Clone)]
pub struct OidcConnector {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub scopes: Vec<String>,
    pub get_user_info: bool,
    pub user_id_key: String,
    pub user_name_key: String,
    pub email_claim: String,
    pub groups_claim: String,
    pub preferred_username_claim: String,
    pub insecure_skip_email_verified: bool,
    pub allowed_groups: Vec<String>,
    pub prompt: Option<String>,
    pub root_ca_pem: Option<Vec<u8>>,
    pub basic_auth_unsupported: bool,
    /// Send a `nonce` upstream and require it in the ID token at sign-in (default). False: send
    /// none and check none, as Dex does, for upstreams that drop it.
    pub send_nonce: bool,
}

#[derive(Debug, Clone)]
pub enum ConnectorKind {
    Ldap(LdapConnector),
    Oidc(OidcConnector),
    Github(GithubConnector),
    Gitlab(GitlabConnector),
    Bitbucket(BitbucketConnector),
    Crowd(CrowdConnector),
}

/// A `DexProvider`: the connector id is `metadata.name`.
#[derive(Debug, Clone)]
pub struct ConnectorSpec {
    pub id: String,
    pub display_name: String,
    pub kind: ConnectorKind,
}

fn root_ca(
    doc: &Document,
    field: &str,
    value: &Option<String>,
) -> Result<Option<Vec<u8>>, ConfigError> {
    use base64::Engine;
    match value {
        None => Ok(None),
        // Dex takes base64 of PEM; accept plain PEM too.
        Some(v) if v.trim_start().starts_with("-----BEGIN") => Ok(Some(v.as_bytes().to_vec())),
        Some(v) => base64::engine::general_purpose::STANDARD
            .decode(v.trim())
            .map(Some)
            .map_err(|_| doc.err(field, "not base64 of PEM certificates (nor PEM)")),
    }
}

/// GitHub (or GitHub Enterprise) with organization and team membership as groups.
#[derive(Debug, Clone)]
pub struct GithubConnector {
    pub client_id: String,
    pub client_secret: Secret,
    /// `Name`, `Slug` or `Both` (as `org:name` and `org:slug`).
    pub team_name_field: String,
    pub use_login_as_id: bool,
    /// `(org, teams)`: users outside every org are refused; with teams, only those teams count.
    pub orgs: Vec<(String, Vec<String>)>,
    /// Where the OAuth pages live (`https://github.com`) and the API (`https://api.github.com`).
    pub web_url: String,
    pub api_url: String,
}

/// GitLab (gitlab.com or self-hosted): groups from the OIDC userinfo of GitLab.
#[derive(Debug, Clone)]
pub struct GitlabConnector {
    pub client_id: String,
    pub client_secret: Secret,
    pub base_url: String,
    /// Users in none of these groups are refused (empty: all users).
    pub groups: Vec<String>,
    pub use_login_as_id: bool,
}

/// Bitbucket Cloud, with workspaces as teams and, with `includeTeamGroups`, the workspace
/// permission groups as `team/group` (Flant's groups extension).
#[derive(Debug, Clone)]
pub struct BitbucketConnector {
    pub client_id: String,
    pub client_secret: Secret,
    pub teams: Vec<String>,
    pub include_team_groups: bool,
    pub web_url: String,
    pub api_url: String,
}

/// Atlassian Crowd: a password connector (the application name and password authenticate us).
#[derive(Debug, Clone)]
pub struct CrowdConnector {
    pub app_name: String,
    pub app_password: Secret,
    pub base_url: String,
    pub groups: Vec<String>,
    pub username_prompt: String,
}

fn client_secret(
    doc: &Document,
    block: &str,
    inline: &Option<String>,
    env: &Option<String>,
    file: &Option<String>,
) -> Result<Secret, ConfigError> {
    secret::resolve(
        "clientSecret",
        inline.as_deref(),
        env.as_deref(),
        file.as_deref(),
    )
    .map_err(|e| e.within(&format!("spec.{block}.")).at(&doc.at))?
    .ok_or_else(|| doc.err(&format!("spec.{block}.clientSecret"), "is required"))
}

/// `None` when the provider is disabled.
pub(crate) fn dex_provider(
    doc: &Document,
    warnings: &mut Vec<String>,
) -> Result<Option<ConnectorSpec>, ConfigError> {
    let id = doc.name()?;
    if id == crate::LOCAL_CONNECTOR_ID {
        return Err(doc.err(
            "metadata.name",
            "\"local\" names the static users' connector; choose another name",
        ));
    }
    let spec: DexProviderSpec = doc.spec()?;
    if spec.enabled == Some(false) {
        warnings.push(format!("{}: disabled (spec.enabled: false)", doc.at));
        return Ok(None);
    }
    let kind = match spec.kind.as_str() {
        "LDAP" => {
            let l = spec
                .ldap
                .ok_or_else(|| doc.err("spec.ldap", "is required for type LDAP"))?;
            let bind_pw = secret::resolve(
                "bindPW",
                l.bind_pw.as_deref(),
                l.bind_pw_from_env.as_deref(),
                l.bind_pw_file.as_deref(),
            )
            .map_err(|e| e.within("spec.ldap.").at(&doc.at))?;
            if l.kerberos.is_some() {
                warnings.push(format!(
                    "{}: spec.ldap.kerberos is not supported; password logins only",
                    doc.at
                ));
            }
            ConnectorKind::Ldap(LdapConnector {
                root_ca_pem: root_ca(doc, "spec.ldap.rootCAData", &l.root_ca_data)?,
                host: l.host,
                insecure_no_ssl: l.insecure_no_ssl,
                start_tls: l.start_tls,
                insecure_skip_verify: l.insecure_skip_verify,
                bind_dn: l.bind_dn,
                bind_pw,
                username_prompt: l.username_prompt.unwrap_or_else(|| "LDAP username".into()),
                user_base_dn: l.user_search.base_dn,
                user_filter: l.user_search.filter,
                username_attr: l.user_search.username,
                id_attr: l.user_search.id_attr,
                email_attr: l.user_search.email_attr,
                name_attr: l.user_search.name_attr,
                group_search: l.group_search.map(|g| LdapGroups {
                    base_dn: g.base_dn,
                    filter: g.filter,
                    name_attr: g.name_attr,
                    user_matchers: g
                        .user_matchers
                        .into_iter()
                        .map(|m| (m.user_attr, m.group_attr))
                        .collect(),
                }),
            })
        }
        "OIDC" => {
            let o = spec
                .oidc
                .ok_or_else(|| doc.err("spec.oidc", "is required for type OIDC"))?;
            url::Url::parse(&o.issuer)
                .map_err(|e| doc.err("spec.oidc.issuer", format!("not a URL: {e}")))?;
            let client_secret = secret::resolve(
                "clientSecret",
                o.client_secret.as_deref(),
                o.client_secret_from_env.as_deref(),
                o.client_secret_file.as_deref(),
            )
            .map_err(|e| e.within("spec.oidc.").at(&doc.at))?
            .ok_or_else(|| doc.err("spec.oidc.clientSecret", "is required"))?;
            let mapping = o.claim_mapping.unwrap_or_default();
            ConnectorKind::Oidc(OidcConnector {
                root_ca_pem: root_ca(doc, "spec.oidc.rootCAData", &o.root_ca_data)?,
                issuer: o.issuer,
                client_id: o.client_id,
                client_secret,
                scopes: o.scopes.unwrap_or_else(|| {
                    ["openid", "profile", "email", "groups", "offline_access"]
                        .map(String::from)
                        .to_vec()
                }),
                get_user_info: o.get_user_info,
                user_id_key: o.user_id_key.unwrap_or_else(|| "sub".into()),
                user_name_key: o.user_name_key.unwrap_or_else(|| "name".into()),
                email_claim: mapping.email.unwrap_or_else(|| "email".into()),
                groups_claim: mapping.groups.unwrap_or_else(|| "groups".into()),
                preferred_username_claim: mapping
                    .preferred_username
                    .unwrap_or_else(|| "preferred_username".into()),
                insecure_skip_email_verified: o.insecure_skip_email_verified,
                allowed_groups: o.allowed_groups,
                prompt: Some(o.prompt_type.unwrap_or_else(|| "consent".into()))
                    .filter(|p| !p.is_empty() && p != "none"),
                basic_auth_unsupported: o.basic_auth_unsupported,
                send_nonce: o.send_nonce.unwrap_or(true),
            })
        }
        "Github" => {
            let g = spec
                .github
                .ok_or_else(|| doc.err("spec.github", "is required for type Github"))?;
            let client_secret = client_secret(
                doc,
                "github",
                &g.client_secret,
                &g.client_secret_from_env,
                &g.client_secret_file,
            )?;
            let web = g
                .base_url
                .clone()
                .unwrap_or_else(|| "https://github.com".into());
            let api = match &g.base_url {
                Some(b) => format!("{}/api/v3", b.trim_end_matches('/')),
                None => "https://api.github.com".into(),
            };
            let field = g.team_name_field.unwrap_or_else(|| "Name".into());
            if !matches!(
                field.to_ascii_lowercase().as_str(),
                "name" | "slug" | "both"
            ) {
                return Err(doc.err("spec.github.teamNameField", "use Name, Slug or Both"));
            }
            ConnectorKind::Github(GithubConnector {
                client_id: g.client_id,
                client_secret,
                team_name_field: field.to_ascii_lowercase(),
                use_login_as_id: g.use_login_as_id,
                orgs: g.orgs.into_iter().map(|o| (o.name, o.teams)).collect(),
                web_url: web.trim_end_matches('/').to_owned(),
                api_url: api,
            })
        }
        "Gitlab" => {
            let g = spec
                .gitlab
                .ok_or_else(|| doc.err("spec.gitlab", "is required for type Gitlab"))?;
            let client_secret = client_secret(
                doc,
                "gitlab",
                &g.client_secret,
                &g.client_secret_from_env,
                &g.client_secret_file,
            )?;
            ConnectorKind::Gitlab(GitlabConnector {
                client_id: g.client_id,
                client_secret,
                base_url: g
                    .base_url
                    .unwrap_or_else(|| "https://gitlab.com".into())
                    .trim_end_matches('/')
                    .to_owned(),
                groups: g.groups,
                use_login_as_id: g.use_login_as_id,
            })
        }
        "BitbucketCloud" => {
            let b = spec.bitbucket_cloud.ok_or_else(|| {
                doc.err("spec.bitbucketCloud", "is required for type BitbucketCloud")
            })?;
            let client_secret = client_secret(
                doc,
                "bitbucketCloud",
                &b.client_secret,
                &b.client_secret_from_env,
                &b.client_secret_file,
            )?;
            ConnectorKind::Bitbucket(BitbucketConnector {
                client_id: b.client_id,
                client_secret,
                teams: b.teams,
                include_team_groups: b.include_team_groups,
                web_url: b
                    .base_url
                    .unwrap_or_else(|| "https://bitbucket.org".into())
                    .trim_end_matches('/')
                    .to_owned(),
                api_url: b
                    .api_url
                    .unwrap_or_else(|| "https://api.bitbucket.org/2.0".into())
                    .trim_end_matches('/')
                    .to_owned(),
            })
        }
        "Crowd" => {
            let c = spec
                .crowd
                .ok_or_else(|| doc.err("spec.crowd", "is required for type Crowd"))?;
            let app_password = client_secret(
                doc,
                "crowd",
                &c.client_secret,
                &c.client_secret_from_env,
                &c.client_secret_file,
            )?;
            url::Url::parse(&c.base_url)
                .map_err(|e| doc.err("spec.crowd.baseURL", format!("not a URL: {e}")))?;
            ConnectorKind::Crowd(CrowdConnector {
                app_name: c.client_id,
                app_password,
                base_url: c.base_url.trim_end_matches('/').to_owned(),
                groups: c.groups,
                username_prompt: c.username_prompt.unwrap_or_else(|| "Crowd username".into()),
            })
        }
        other => {
            return Err(doc.err(
                "spec.type",
                format!("{other:?}: use Github, Gitlab, BitbucketCloud, Crowd, OIDC or LDAP"),
            ));
        }
    };
    Ok(Some(ConnectorSpec {
        id,
        display_name: spec.display_name,
        kind,
    }))
}
