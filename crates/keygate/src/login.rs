//! `keygate login`: the kubectl exec credential plugin (client.authentication.k8s.io/v1).
//!
//! Tokens are cached per issuer, client and scopes in a 0600 file; a lock on a sibling file makes
//! parallel kubectl calls refresh once. Without a usable token it refreshes, and without a
//! refresh token it logs in: in the browser through a loopback redirect (PKCE), or with the
//! device flow (RFC 8628) when there is no browser.

use std::io::Write;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use base64::Engine;
use keygate_oidc::{pkce_s256, random_id};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A cached ID token is used until this many seconds before it expires.
const EXPIRY_MARGIN: i64 = 10;

pub struct LoginArgs {
    pub issuer: String,
    pub client_id: String,
    pub client_secret: Option<String>,
    pub scopes: String,
    pub ca_file: Option<PathBuf>,
    pub cache_dir: Option<PathBuf>,
    pub device: bool,
    pub no_browser: bool,
    pub port: u16,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Cache {
    id_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
    expiry: i64,
}

#[derive(Debug, Deserialize)]
struct Discovery {
    authorization_endpoint: String,
    token_endpoint: String,
    #[serde(default)]
    device_authorization_endpoint: Option<String>,
}

#[derive(Debug, Deserialize)]
struct TokenAnswer {
    id_token: String,
    #[serde(default)]
    refresh_token: Option<String>,
}

fn now() -> i64 {
    use keygate_oidc::Clock;
    keygate_oidc::SystemClock.now()
}

/// `exp` of a JWT, read without verification (kube-apiserver verifies; we only schedule).
fn jwt_exp(token: &str) -> Option<i64> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .ok()?,
    )
    .ok()?;
    claims.get("exp")?.as_i64()
}

fn credential(cache: &Cache) -> String {
    json!({
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": { "token": cache.id_token, "expirationTimestamp": keygate_config::format_rfc3339(cache.expiry) },
    })
    .to_string()
}

/// kubectl says in KUBERNETES_EXEC_INFO whether a human is at the terminal.
fn interactive() -> bool {
    std::env::var("KUBERNETES_EXEC_INFO")
        .ok()
        .and_then(|v| serde_json::from_str::<Value>(&v).ok())
        .and_then(|v| v.pointer("/spec/interactive").and_then(Value::as_bool))
        .unwrap_or(true)
}

fn cache_dir(args: &LoginArgs) -> Result<PathBuf> {
    if let Some(d) = &args.cache_dir {
        return Ok(d.clone());
    }
    let home =
        std::env::var_os("HOME").ok_or_else(|| anyhow!("HOME is not set; pass --cache-dir"))?;
    Ok(PathBuf::from(home)
        .join(".kube")
        .join("cache")
        .join("keygate"))
}

fn private_dir(dir: &std::path::Path) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

fn write_private(path: &std::path::Path, data: &[u8]) -> Result<()> {
    let tmp = path.with_extension("tmp");
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut f = options
        .open(&tmp)
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    f.write_all(data)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path)?;
    Ok(())
}

pub async fn run(args: LoginArgs) -> Result<()> {
    let dir = cache_dir(&args)?;
    private_dir(&dir)?;
    let key = pkce_s256(&format!(
        "{}\n{}\n{}",
        args.issuer, args.client_id, args.scopes
    ));
    let cache_path = dir.join(format!("{key}.json"));
    // One plugin at a time per token: the others wait, then find the fresh token in the cache.
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(dir.join(format!("{key}.lock")))?;
    tokio::task::block_in_place(|| lock.lock()).context("cannot lock the token cache")?;

    let cached: Option<Cache> = std::fs::read(&cache_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if let Some(c) = &cached
        && c.expiry - EXPIRY_MARGIN > now()
    {
        out!("{}", credential(c));
        return Ok(());
    }

    let http = http_client(&args)?;
    let discovery: Discovery = http
        .get(format!(
            "{}/.well-known/openid-configuration",
            args.issuer.trim_end_matches('/')
        ))
        .send()
        .await
        .context("cannot reach the issuer")?
        .error_for_status()?
        .json()
        .await
        .context("the issuer's discovery document is invalid")?;

    let mut answer = None;
    if let Some(refresh_token) = cached.as_ref().and_then(|c| c.refresh_token.clone()) {
        match token_call(
            &http,
            &args,
            &discovery.token_endpoint,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", &refresh_token),
            ],
        )
        .await
        {
            Ok(mut a) => {
                a.refresh_token = a.refresh_token.or(Some(refresh_token));
                answer = Some(a);
            }
            Err(e) => eprintln!("keygate login: the refresh failed ({e}); signing in again"),
        }
    }
    let answer = match answer {
        Some(a) => a,
        None => {
            // The device flow needs no input, only that someone reads stderr: allowed without a terminal.
            if !interactive() && !args.device {
                bail!(
                    "not logged in, and kubectl runs without a terminal: run `kubectl` once in a terminal to sign in"
                );
            }
            let use_device = args.device
                || (args.no_browser && discovery.device_authorization_endpoint.is_some())
                || (!has_browser() && discovery.device_authorization_endpoint.is_some());
            if use_device {
                device_login(&http, &args, &discovery).await?
            } else {
                browser_login(&http, &args, &discovery).await?
            }
        }
    };
    let cache = Cache {
        expiry: jwt_exp(&answer.id_token).unwrap_or_else(|| now() + 60),
        id_token: answer.id_token,
        refresh_token: answer.refresh_token,
    };
    write_private(&cache_path, &serde_json::to_vec(&cache)?)?;
    out!("{}", credential(&cache));
    Ok(())
}

fn http_client(args: &LoginArgs) -> Result<reqwest::Client> {
    let mut b = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none());
    if let Some(ca) = &args.ca_file {
        let pem = std::fs::read(ca).with_context(|| format!("cannot read {}", ca.display()))?;
        b = b.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
    }
    Ok(b.build()?)
}

async fn token_call(
    http: &reqwest::Client,
    args: &LoginArgs,
    endpoint: &str,
    form: &[(&str, &str)],
) -> Result<TokenAnswer, String> {
    let mut fields: Vec<(&str, &str)> = form.to_vec();
    let mut req = http.post(endpoint);
    match &args.client_secret {
        Some(secret) => {
            let esc =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            req = req.basic_auth(esc(&args.client_id), Some(esc(secret)));
        }
        None => fields.push(("client_id", &args.client_id)),
    }
    let resp = req.form(&fields).send().await.map_err(|e| e.to_string())?;
    let status = resp.status();
    let body: Value = resp.json().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(body
            .get("error")
            .and_then(Value::as_str)
            .unwrap_or("error")
            .to_owned());
    }
    serde_json::from_value(body).map_err(|e| e.to_string())
}

fn has_browser() -> bool {
    std::env::var_os("BROWSER").is_some()
        || std::env::var_os("DISPLAY").is_some()
        || std::env::var_os("WAYLAND_DISPLAY").is_some()
        || cfg!(target_os = "macos")
}

fn open_browser(url: &str) {
    let candidates: Vec<String> = std::env::var("BROWSER")
        .ok()
        .into_iter()
        .chain(["xdg-open".to_owned(), "open".to_owned()])
        .collect();
    for cmd in candidates {
        let spawned = std::process::Command::new(&cmd)
            .arg(url)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn();
        if spawned.is_ok() {
            return;
        }
    }
}

async fn browser_login(
    http: &reqwest::Client,
    args: &LoginArgs,
    d: &Discovery,
) -> Result<TokenAnswer> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port))
        .await
        .context("cannot listen on a loopback port for the sign-in")?;
    let redirect_uri = format!(
        "http://127.0.0.1:{}/callback",
        listener.local_addr()?.port()
    );
    let (state, verifier, nonce) = (random_id(16), random_id(32), random_id(16));
    let query = url::form_urlencoded::Serializer::new(String::new())
        .append_pair("client_id", &args.client_id)
        .append_pair("redirect_uri", &redirect_uri)
        .append_pair("response_type", "code")
        .append_pair("scope", &args.scopes)
        .append_pair("state", &state)
        .append_pair("nonce", &nonce)
        .append_pair("code_challenge", &pkce_s256(&verifier))
        .append_pair("code_challenge_method", "S256")
        .finish();
    let url = format!("{}?{query}", d.authorization_endpoint);
    eprintln!("keygate login: sign in at\n  {url}");
    if !args.no_browser {
        open_browser(&url);
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(300);
    loop {
        let (mut conn, _) = tokio::time::timeout_at(deadline, listener.accept())
            .await
            .context("no sign-in within 5 minutes")??;
        let mut buf = vec![0u8; 8192];
        let n = conn.read(&mut buf).await.unwrap_or(0);
        let head = String::from_utf8_lossy(&buf[..n]).into_owned();
        let target = head.split_whitespace().nth(1).unwrap_or("/").to_owned();
        let Some(q) = target.strip_prefix("/callback?") else {
            let _ = conn
                .write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                )
                .await;
            continue;
        };
        let params: std::collections::HashMap<String, String> =
            url::form_urlencoded::parse(q.as_bytes())
                .into_owned()
                .collect();
        let (ok, message) = match (params.get("state"), params.get("code"), params.get("error")) {
            (Some(s), Some(_), None) if *s == state => (
                true,
                "Signed in. You can close this tab and return to the terminal.",
            ),
            (_, _, Some(_)) => (false, "The sign-in was refused. Return to the terminal."),
            _ => (false, "This answer does not match the sign-in in progress."),
        };
        let page = format!(
            "<!DOCTYPE html><meta charset=utf-8><title>keygate login</title><p style=\"font-family:system-ui;margin:3rem\">{message}</p>"
        );
        let _ = conn
            .write_all(format!("HTTP/1.1 200 OK\r\nContent-Type: text/html; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len()).as_bytes())
            .await;
        if !ok {
            bail!(
                "sign-in failed: {}",
                params.get("error").map_or("state mismatch", String::as_str)
            );
        }
        let code = params.get("code").cloned().unwrap_or_default();
        let answer = token_call(
            http,
            args,
            &d.token_endpoint,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", &redirect_uri),
                ("code_verifier", &verifier),
            ],
        )
        .await
        .map_err(|e| anyhow!("the code exchange failed: {e}"))?;
        return Ok(answer);
    }
}

async fn device_login(
    http: &reqwest::Client,
    args: &LoginArgs,
    d: &Discovery,
) -> Result<TokenAnswer> {
    let endpoint = d
        .device_authorization_endpoint
        .as_deref()
        .ok_or_else(|| anyhow!("the issuer offers no device flow"))?;
    let mut req = http.post(endpoint);
    let mut fields = vec![("scope", args.scopes.as_str())];
    match &args.client_secret {
        Some(secret) => {
            let esc =
                |v: &str| url::form_urlencoded::byte_serialize(v.as_bytes()).collect::<String>();
            req = req.basic_auth(esc(&args.client_id), Some(esc(secret)))
        }
        None => fields.push(("client_id", &args.client_id)),
    }
    let grant: Value = req
        .form(&fields)
        .send()
        .await?
        .error_for_status()
        .context("the device authorization was refused")?
        .json()
        .await?;
    let field = |k: &str| {
        grant
            .get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    let device_code = field("device_code");
    eprintln!(
        "keygate login: to sign in, open {} and enter the code {}\n  (or open {})",
        field("verification_uri"),
        field("user_code"),
        field("verification_uri_complete")
    );
    let mut interval = grant.get("interval").and_then(Value::as_u64).unwrap_or(5);
    let deadline = std::time::Instant::now()
        + Duration::from_secs(
            grant
                .get("expires_in")
                .and_then(Value::as_u64)
                .unwrap_or(300),
        );
    while std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_secs(interval)).await;
        match token_call(
            http,
            args,
            &d.token_endpoint,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", &device_code),
            ],
        )
        .await
        {
            Ok(answer) => return Ok(answer),
            Err(e) if e == "authorization_pending" => {}
            Err(e) if e == "slow_down" => interval += 5,
            Err(e) => bail!("the device sign-in failed: {e}"),
        }
    }
    bail!("the device code expired before the sign-in was approved")
}
