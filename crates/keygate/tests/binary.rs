//! The real `keygate` binary: CLI contracts, restarts on SQLite, TLS.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;
use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_keygate");

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Server {
    child: std::process::Child,
    log: PathBuf,
}

impl Server {
    fn stop(mut self) {
        // SIGTERM: graceful shutdown.
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                assert!(
                    status.success(),
                    "keygate exited with {status} after SIGTERM"
                );
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        panic!("keygate did not stop within 10 s of SIGTERM");
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

async fn start(config: &Path, health_url: &str, client: &reqwest::Client) -> Server {
    let log = config.with_extension("log");
    let child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server { child, log };
    for _ in 0..200 {
        if let Ok(r) = client.get(health_url).send().await
            && r.status() == 200
        {
            return server;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!(
        "keygate did not become healthy: {}",
        std::fs::read_to_string(&server.log).unwrap_or_default()
    );
}

fn config(dir: &Path, port: u16, scheme: &str, extra: &str) -> PathBuf {
    let path = dir.join("keygate.yaml");
    let yaml = format!(
        "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: {scheme}://127.0.0.1:{port}/\n  listen: 127.0.0.1:{port}\n  storage: {{type: sqlite, path: {}}}\n{extra}{}",
        dir.join("keygate.db").display(),
        fixture_manifests()
    );
    std::fs::write(&path, yaml).unwrap();
    path
}

#[tokio::test]
async fn restart_on_the_same_sqlite_file_keeps_tokens_and_keys() {
    let dir = temp_dir("restart");
    let port = free_port();
    let cfg = config(&dir, port, "http", "");
    let web = Http {
        issuer: format!("http://127.0.0.1:{port}/"),
        http: http_client(),
    };
    let server = start(&cfg, &web.url("healthz"), &web.http).await;
    let tokens = web.app_tokens("openid email groups offline_access").await;
    let keys_before: Value = web
        .http
        .get(web.url("keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains("Keygate") && log.contains(&web.issuer),
        "the start-up banner names the issuer"
    );
    server.stop();

    let server = start(&cfg, &web.url("healthz"), &web.http).await;
    let keys_after: Value = web
        .http
        .get(web.url("keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys_before, keys_after,
        "the signing key survives a restart"
    );
    let (status, body) = web
        .token(
            Some((APP, "app-secret")),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(status, 200, "the refresh token survives a restart: {body}");
    let id = claims(body["id_token"].as_str().unwrap());
    assert_eq!(id["email"], "jane@example.com");
    // The old ID token's kid is still published.
    let kid = |jwt: &str| -> Value {
        use base64::Engine;
        serde_json::from_slice::<Value>(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(jwt.split('.').next().unwrap())
                .unwrap(),
        )
        .unwrap()["kid"]
            .clone()
    };
    assert_eq!(
        kid(tokens["id_token"].as_str().unwrap()),
        keys_after["keys"][0]["kid"]
    );
    server.stop();
}

#[tokio::test]
async fn serves_tls_from_certificate_files() {
    let dir = temp_dir("tls");
    let (cert, key, ca) = common::services::make_certificate(&dir);
    let port = free_port();
    let cfg = config(
        &dir,
        port,
        "https",
        &format!(
            "  tls: {{certFile: {}, keyFile: {}}}\n",
            cert.display(),
            key.display()
        ),
    );
    let ca = reqwest::Certificate::from_pem(&std::fs::read(&ca).unwrap()).unwrap();
    let http = reqwest::Client::builder()
        .add_root_certificate(ca)
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let web = Http {
        issuer: format!("https://127.0.0.1:{port}/"),
        http,
    };
    let server = start(&cfg, &web.url("healthz"), &web.http).await;
    let d: Value = web
        .http
        .get(web.url(".well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], web.issuer);
    let tokens = web.app_tokens("openid email").await;
    assert_eq!(
        claims(tokens["id_token"].as_str().unwrap())["iss"],
        web.issuer
    );
    server.stop();
}

#[test]
fn check_config_names_file_document_and_field() {
    let dir = temp_dir("check");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n---\napiVersion: deckhouse.io/v1\nkind: User\nmetadata: {name: x}\nspec: {email: x@example.com, pasword: nope}\n").unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.yaml, document 2 (User \"x\"): spec.pasword: unknown field `pasword`"),
        "{err}"
    );

    let good = config(&dir, 5556, "http", "");
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("jane <jane@example.com> groups: [devs, everyone]"),
        "{text}"
    );
    assert!(
        text.contains("built-in       keygate-login, kubernetes"),
        "{text}"
    );
    assert!(!text.contains("app-secret"), "secrets are never printed");

    // A `keygate authenticator` configuration is checked too.
    let authn = |domain: &str| {
        format!(
            "apiVersion: deckhouse.io/v1\nkind: DexAuthenticator\nmetadata: {{name: grafana, namespace: monitoring}}\nspec: {{applicationDomain: \"{domain}\", secret: s}}\n---\napiVersion: keygate.io/v1alpha1\nkind: AuthenticatorConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n  metricsListen: 127.0.0.1:9102\n  cookieSecret: \"0123456789abcdef0123456789abcdef\"\n  sessionStore: {{type: redis, url: \"redis://:redis-pw@127.0.0.1:6379/0\"}}\n"
        )
    };
    let path = dir.join("authn.yaml");
    std::fs::write(&path, authn("grafana.example.com")).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(text.contains("authenticator configuration OK"), "{text}");
    assert!(
        text.contains("metrics        http://127.0.0.1:9102/metrics"),
        "{text}"
    );
    assert!(
        text.contains("client         grafana-monitoring-dex-authenticator"),
        "{text}"
    );
    assert!(
        !text.contains("redis-pw") && !text.contains("0123456789abcdef"),
        "secrets are never printed: {text}"
    );
    std::fs::write(&path, authn("bad host")).unwrap();
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("document 1 (DexAuthenticator \"grafana\"): spec.applicationDomain"),
        "{err}"
    );
}

/// `spec.metricsListen`: `/metrics` on a second address only, not on the public one.
#[tokio::test]
async fn metrics_listen_serves_metrics_on_its_own_address_only() {
    let dir = temp_dir("metrics-listen");
    let (port, metrics_port) = (free_port(), free_port());
    let cfg = config(
        &dir,
        port,
        "http",
        &format!("  metricsListen: 127.0.0.1:{metrics_port}\n"),
    );
    let web = Http {
        issuer: format!("http://127.0.0.1:{port}/"),
        http: http_client(),
    };
    let server = start(&cfg, &web.url("healthz"), &web.http).await;
    let public = web.http.get(web.url("metrics")).send().await.unwrap();
    assert_eq!(public.status(), 404);
    let own = web
        .http
        .get(format!("http://127.0.0.1:{metrics_port}/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 200);
    let text = own.text().await.unwrap();
    assert!(text.contains("keygate_login_attempts_total"), "{text}");
    let log = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        log.contains(&format!(
            "metrics     http://127.0.0.1:{metrics_port}/metrics"
        )),
        "the banner names the metrics address: {log}"
    );
    server.stop();
}

/// A bad certificate stops `serve` before it reports itself running, also with a metrics
/// address (which must not be left answering alone).
#[test]
fn serve_with_a_bad_certificate_exits_before_the_banner() {
    let dir = temp_dir("bad-cert");
    std::fs::write(dir.join("tls.crt"), "not a certificate").unwrap();
    std::fs::write(dir.join("tls.key"), "not a key").unwrap();
    let (port, metrics_port) = (free_port(), free_port());
    let cfg = config(
        &dir,
        port,
        "https",
        &format!(
            "  metricsListen: 127.0.0.1:{metrics_port}\n  tls: {{certFile: {0}/tls.crt, keyFile: {0}/tls.key}}\n",
            dir.display()
        ),
    );
    let mut child = Command::new(BIN)
        .args(["serve", "--config"])
        .arg(&cfg)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > std::time::Duration::from_secs(20) {
            child.kill().unwrap();
            panic!("serve kept running with a bad certificate");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert_eq!(status.code(), Some(1), "{err}");
    assert!(
        err.contains("spec.tls:") && err.contains("tls.crt"),
        "{err}"
    );
    assert!(
        !err.contains("is running"),
        "no banner before the failure: {err}"
    );
    assert!(!dir.join("keygate.db").exists(), "stopped before storage");
}

/// What `serve` reads only at start is read by check-config too: the TLS files, the templates,
/// the database's place (and for the authenticator, its CA files).
#[test]
fn check_config_reads_tls_templates_and_database_path() {
    let dir = temp_dir("check-files");
    let check = |name: &str, yaml: String| {
        let path = dir.join(name);
        std::fs::write(&path, yaml).unwrap();
        let out = Command::new(BIN)
            .args(["check-config", "--config"])
            .arg(&path)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let provider = |spec: &str| {
        format!(
            "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: https://id.example.com/\n{spec}"
        )
    };
    let missing = dir.join("missing");
    let (code, _, err) = check(
        "db.yaml",
        provider(&format!(
            "  storage: {{type: sqlite, path: {}}}\n",
            missing.join("keygate.db").display()
        )),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("spec.storage.path: the directory") && err.contains("does not exist"),
        "{err}"
    );
    assert!(!missing.exists(), "check-config creates nothing");

    let (code, out, err) = check(
        "db-ok.yaml",
        provider(&format!(
            "  storage: {{type: sqlite, path: {}}}\n",
            dir.join("keygate.db").display()
        )),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(out.contains("(created at the first start)"), "{out}");
    assert!(
        !dir.join("keygate.db").exists(),
        "check-config creates nothing"
    );

    std::fs::write(dir.join("notes.db"), "not a database").unwrap();
    let (code, _, err) = check(
        "db-garbage.yaml",
        provider(&format!(
            "  storage: {{type: sqlite, path: {}}}\n",
            dir.join("notes.db").display()
        )),
    );
    assert_eq!(code, Some(1));
    assert!(err.contains("notes.db is not a SQLite database"), "{err}");

    let (code, _, err) = check(
        "metrics-same.yaml",
        provider(
            "  listen: 127.0.0.1:5556\n  metricsListen: 127.0.0.1:5556\n  storage: {type: memory}\n",
        ),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("spec.metricsListen is the listen address"),
        "{err}"
    );
    let (code, _, err) = check(
        "metrics-port-only.yaml",
        provider("  metricsListen: \"5558\"\n  storage: {type: memory}\n"),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains(
            "document 1 (KeygateConfig): spec.metricsListen: \"5558\": expected host:port"
        ),
        "{err}"
    );

    let (code, _, err) = check(
        "tls.yaml",
        provider(&format!(
            "  storage: {{type: memory}}\n  tls: {{certFile: {0}/none.crt, keyFile: {0}/none.key}}\n",
            dir.display()
        )),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("spec.tls: cannot read") && err.contains("none.crt"),
        "{err}"
    );

    let templates = dir.join("templates");
    std::fs::create_dir_all(&templates).unwrap();
    std::fs::write(templates.join("login.html"), "{% if %}").unwrap();
    let (code, _, err) = check(
        "templates.yaml",
        provider(&format!(
            "  storage: {{type: memory}}\n  frontend: {{templatesDir: {}}}\n",
            templates.display()
        )),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("cannot load the page templates: template login.html: syntax error"),
        "{err}"
    );

    // A misspelt template is named; the DexProviders are listed.
    let misspelt = dir.join("misspelt");
    std::fs::create_dir_all(&misspelt).unwrap();
    std::fs::write(misspelt.join("loginn.html"), "<p>hi</p>").unwrap();
    let (code, out, err) = check(
        "misspelt.yaml",
        provider(&format!(
            "  storage: {{type: memory}}\n  frontend: {{templatesDir: {}}}\n---\napiVersion: deckhouse.io/v1\nkind: DexProvider\nmetadata: {{name: corp}}\nspec:\n  type: OIDC\n  displayName: Corp SSO\n  oidc: {{issuer: https://sso.example.com, clientID: k, clientSecret: s, sendNonce: false}}\n",
            misspelt.display()
        )),
    );
    assert_eq!(code, Some(0), "{err}");
    assert!(
        out.contains(
            "warning: spec.frontend.templatesDir: loginn.html is not one of Keygate's templates"
        ),
        "{out}"
    );
    assert!(
        out.contains("corp (OIDC https://sso.example.com, sendNonce false) \"Corp SSO\""),
        "{out}"
    );

    let (code, _, err) = check(
        "authn.yaml",
        format!(
            "apiVersion: deckhouse.io/v1\nkind: DexAuthenticator\nmetadata: {{name: grafana, namespace: monitoring}}\nspec: {{applicationDomain: grafana.example.com, secret: s}}\n---\napiVersion: keygate.io/v1alpha1\nkind: AuthenticatorConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n  cookieSecret: \"0123456789abcdef0123456789abcdef\"\n  sessionStore: {{type: redis, url: \"rediss://127.0.0.1:6379/0\", caFile: {}/none.pem}}\n",
            dir.display()
        ),
    );
    assert_eq!(code, Some(1));
    assert!(
        err.contains("spec.sessionStore.caFile") && err.contains("none.pem"),
        "{err}"
    );
}

#[test]
fn output_into_a_closed_pipe_stops_quietly() {
    // `keygate check-config | head -1`: the reader is gone before the command writes.
    let dir = temp_dir("pipe");
    let good = config(&dir, 5556, "http", "");
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["check-config", "--config"])
        .arg(&good)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn hash_password_round_trip_and_usage_errors() {
    use std::io::Write;
    let mut child = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"s3cret pass\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success());
    let hash = String::from_utf8(out.stdout).unwrap();
    assert!(hash.starts_with("$2b$10$"), "{hash}");
    assert!(keygate_config::PasswordHash::parse(hash.trim()).is_ok());

    let empty = Command::new(BIN)
        .arg("hash-password")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(empty.status.code(), Some(1));
    assert_eq!(
        Command::new(BIN)
            .arg("serve")
            .output()
            .unwrap()
            .status
            .code(),
        Some(2),
        "missing --config is a usage error"
    );
    assert_eq!(
        Command::new(BIN)
            .arg("frobnicate")
            .output()
            .unwrap()
            .status
            .code(),
        Some(2)
    );
    let help = Command::new(BIN)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    assert!(help.status.success());
    assert!(String::from_utf8_lossy(&help.stdout).contains("KEYGATE_CONFIG"));
}

fn metric(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
        .unwrap_or_else(|| panic!("no metric {name} in {text}"))
}

/// The acceptance storm: 64 concurrent refreshes of one token, split across two `keygate serve`
/// processes on one SQLite file: all succeed with the same new token after one rotation, and the
/// processes made one upstream refresh between them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_across_two_processes_rotate_once() {
    let dir = temp_dir("storm2");
    let db = dir.join("keygate.db");
    let mut webs = Vec::new();
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let port = free_port();
        let path = sub.join("keygate.yaml");
        // The real binaries read the system clock: a 2 s reuse window lets the test wait it out.
        std::fs::write(
            &path,
            format!(
                "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:{port}/\n  listen: 127.0.0.1:{port}\n  storage: {{type: sqlite, path: {}}}\n  refreshTokens: {{reuseInterval: 2s}}\n{}",
                db.display(),
                fixture_manifests()
            ),
        )
        .unwrap();
        let web = Http {
            issuer: format!("http://127.0.0.1:{port}/"),
            http: http_client(),
        };
        servers.push(start(&path, &web.url("healthz"), &web.http).await);
        webs.push(web);
    }
    let original = webs[0]
        .app_tokens("openid email groups offline_access")
        .await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let upstream = |web: &Http| {
        let url = web.url("metrics");
        let http = web.http.clone();
        async move {
            metric(
                &http.get(url).send().await.unwrap().text().await.unwrap(),
                "keygate_upstream_refreshes_total",
            )
        }
    };
    let before = upstream(&webs[0]).await + upstream(&webs[1]).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let mut tasks = Vec::new();
    for i in 0..64 {
        let web = Http {
            issuer: webs[i % 2].issuer.clone(),
            http: webs[i % 2].http.clone(),
        };
        let token = original.clone();
        tasks.push(tokio::spawn(async move {
            web.token(
                Some((APP, "app-secret")),
                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
            )
            .await
        }));
    }
    let mut issued = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        issued.insert(body["refresh_token"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        issued.len(),
        1,
        "all 64 callers got the same new refresh token: {issued:?}"
    );
    let new = issued.into_iter().next().unwrap();
    assert_ne!(new, original);
    let after = upstream(&webs[0]).await + upstream(&webs[1]).await;
    assert_eq!(
        after - before,
        1,
        "one upstream refresh across both processes"
    );

    for s in servers {
        s.stop();
    }
    let store = keygate_store::Store::new(std::sync::Arc::new(
        keygate_store::SqliteBackend::open(db.to_str().unwrap())
            .await
            .unwrap(),
    ));
    let (id, secret) = original.split_once('.').unwrap();
    let stored: keygate_store::model::RefreshToken = store.get(id).await.unwrap().unwrap();
    assert_eq!(
        format!("{}.{}", stored.id, stored.token),
        new,
        "storage shows the one rotation"
    );
    assert_eq!(stored.obsolete_token.as_deref(), Some(secret));
}

#[tokio::test]
async fn sessions_cli_lists_and_revokes() {
    let dir = temp_dir("sessions");
    let port = free_port();
    let cfg = config(&dir, port, "http", "");
    let web = Http {
        issuer: format!("http://127.0.0.1:{port}/"),
        http: http_client(),
    };
    let server = start(&cfg, &web.url("healthz"), &web.http).await;
    let first = web.app_tokens("openid email offline_access").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let second = web.app_tokens("openid email offline_access").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();

    let cli = |args: &[&str]| {
        Command::new(BIN)
            .args(["sessions"])
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = cli(&["list", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(listed.len(), 2);
    assert!(
        listed
            .iter()
            .all(|s| s["email"] == "jane@example.com" && s["client_id"] == APP)
    );
    let table =
        String::from_utf8_lossy(&cli(&["list", "--user", "john@example.com"]).stdout).into_owned();
    assert!(table.contains("0 session(s)"), "{table}");

    let id = first.split('.').next().unwrap();
    let out = cli(&["revoke", "--id", id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let refresh = |t: String| {
        let web = &web;
        async move {
            web.token(
                Some((APP, "app-secret")),
                &[("grant_type", "refresh_token"), ("refresh_token", &t)],
            )
            .await
            .0
        }
    };
    assert_eq!(refresh(first).await, 400, "revoked by id");
    assert_eq!(
        refresh(second.clone()).await,
        200,
        "the other session lives"
    );
    let out = cli(&["revoke", "--user", "jane@example.com"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("revoked 1 session(s)"));
    assert_eq!(refresh(second).await, 400, "revoked by user");
    assert_eq!(
        cli(&["revoke"]).status.code(),
        Some(2),
        "--id or --user is required"
    );
    assert_eq!(cli(&["revoke", "--id", "nope"]).status.code(), Some(1));
    server.stop();
}

async fn form_url(web: &Http) -> String {
    web.login_page(&format!(
        "client_id={}&redirect_uri={}&response_type=code&scope=openid&state=s",
        enc(APP),
        enc(APP_REDIRECT)
    ))
    .await
}

async fn post_login(web: &Http, form: &str, login: &str, password: &str) -> reqwest::Response {
    web.http
        .post(form)
        .form(&[("login", login), ("password", password)])
        .send()
        .await
        .unwrap()
}

/// The promise to users, against the real binary: 20 attempts, then one every 6 s. The binary
/// reads the system clock, so the last step waits out the Retry-After it was given.
#[tokio::test]
async fn brute_force_limit_against_the_real_binary() {
    let dir = temp_dir("bruteforce");
    let port = free_port();
    let cfg = config(&dir, port, "http", "");
    let web = Http {
        issuer: format!("http://127.0.0.1:{port}/"),
        http: http_client(),
    };
    let server = start(&cfg, &web.url("healthz"), &web.http).await;
    let form = form_url(&web).await;
    for i in 0..20 {
        assert_eq!(
            post_login(&web, &form, "jane@example.com", "wrong-pass")
                .await
                .status(),
            401,
            "attempt {}",
            i + 1
        );
    }
    let r = post_login(&web, &form, "jane@example.com", "password").await;
    assert_eq!(
        r.status(),
        429,
        "the 21st attempt, with the correct password, is refused"
    );
    let wait: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=6).contains(&wait), "Retry-After {wait}");
    tokio::time::sleep(Duration::from_secs(wait)).await;
    assert_eq!(
        post_login(&web, &form, "jane@example.com", "wrong-pass")
            .await
            .status(),
        401,
        "one more attempt after Retry-After"
    );
    assert_eq!(
        post_login(&web, &form, "jane@example.com", "password")
            .await
            .status(),
        429,
        "and only one"
    );

    // One audit line per attempt, never the password.
    let log = std::fs::read_to_string(&server.log).unwrap();
    let audit: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("event=\"login\"") || l.contains("event=login"))
        .collect();
    assert_eq!(audit.len(), 23, "{log}");
    assert!(audit.iter().any(|l| l.contains("rate_limited_user")
        && l.contains("jane@example.com")
        && l.contains("127.0.0.1")));
    assert!(!log.contains("wrong-pass"), "passwords never reach the log");
    server.stop();
}

/// Two processes on one store count together: 10 failures on each, then both refuse.
#[tokio::test]
async fn two_processes_share_the_user_bucket() {
    let dir = temp_dir("shared-bucket");
    let db = dir.join("keygate.db");
    let mut webs = Vec::new();
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let port = free_port();
        let path = sub.join("keygate.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:{port}/\n  listen: 127.0.0.1:{port}\n  storage: {{type: sqlite, path: {}}}\n{}",
                db.display(),
                fixture_manifests()
            ),
        )
        .unwrap();
        let web = Http {
            issuer: format!("http://127.0.0.1:{port}/"),
            http: http_client(),
        };
        servers.push(start(&path, &web.url("healthz"), &web.http).await);
        webs.push(web);
    }
    let forms = [form_url(&webs[0]).await, form_url(&webs[1]).await];
    for _ in 0..10 {
        for (web, form) in webs.iter().zip(&forms) {
            assert_eq!(
                post_login(web, form, "jane@example.com", "wrong")
                    .await
                    .status(),
                401
            );
        }
    }
    for (web, form) in webs.iter().zip(&forms) {
        assert_eq!(
            post_login(web, form, "jane@example.com", "password")
                .await
                .status(),
            429
        );
    }
    for s in servers {
        s.stop();
    }
}

#[tokio::test]
async fn users_cli_locks_and_unlocks() {
    let dir = temp_dir("users-cli");
    let port = free_port();
    let cfg = config(&dir, port, "http", "");
    let web = Http {
        issuer: format!("http://127.0.0.1:{port}/"),
        http: http_client(),
    };
    let server = start(&cfg, &web.url("healthz"), &web.http).await;
    let cli = |args: &[&str]| {
        Command::new(BIN)
            .arg("users")
            .args(args)
            .arg("--config")
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = cli(&["lock", "jane@example.com", "--for", "1h"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let form = form_url(&web).await;
    assert_eq!(
        post_login(&web, &form, "jane@example.com", "password")
            .await
            .status(),
        401
    );
    let list = String::from_utf8_lossy(&cli(&["list"]).stdout).into_owned();
    assert!(list.contains("locked (LockedByAdministrator)"), "{list}");
    assert!(
        cli(&["unlock", "jane"]).status.success(),
        "by name works too"
    );
    assert_eq!(
        post_login(&web, &form, "jane@example.com", "password")
            .await
            .status(),
        303
    );
    assert_eq!(cli(&["lock", "nobody@example.com"]).status.code(), Some(1));
    server.stop();
}

/// A DexClient without a secret gets one generated at the first start, kept in storage, shown by
/// `keygate clients secret`, and it works at the token endpoint; `--listen` overrides spec.listen.
#[tokio::test]
async fn generated_client_secret_is_shown_and_works() {
    let dir = temp_dir("gensecret");
    let port = free_port();
    let cfg = config(&dir, 1, "http", "");
    // Issuer on `port`, spec.listen on port 1: --listen must win.
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("127.0.0.1:1/", &format!("127.0.0.1:{port}/"))
        + "---\napiVersion: deckhouse.io/v1\nkind: DexClient\nmetadata: {name: nosecret, namespace: web}\nspec: {redirectURIs: [\"https://n.example.com/cb\"]}\n";
    std::fs::write(&cfg, text).unwrap();
    let web = Http {
        issuer: format!("http://127.0.0.1:{port}/"),
        http: http_client(),
    };
    let log = dir.join("serve.log");
    let child = Command::new(BIN)
        .args([
            "serve",
            "--listen",
            &format!("127.0.0.1:{port}"),
            "--config",
        ])
        .arg(&cfg)
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .unwrap();
    let server = Server { child, log };
    for _ in 0..200 {
        if web
            .http
            .get(web.url("healthz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let banner = std::fs::read_to_string(&server.log).unwrap();
    assert!(
        banner.contains("generated a secret for client dex-client-nosecret@web"),
        "{banner}"
    );
    let out = Command::new(BIN)
        .args(["clients", "secret", "dex-client-nosecret@web", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let secret = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(secret.len() >= 20);
    let code = web
        .code_for(
            "dex-client-nosecret@web",
            "https://n.example.com/cb",
            "openid",
            "",
        )
        .await;
    let (status, body) = web
        .token(
            Some(("dex-client-nosecret@web", &secret)),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://n.example.com/cb"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let listed = Command::new(BIN)
        .args(["clients", "list", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("dex-client-nosecret@web"), "{listed}");
    // The clients Keygate adds itself are listed too.
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with("keygate-login ") && l.contains("built-in")),
        "{listed}"
    );
    server.stop();
}

/// Two replicas on one PostgreSQL: a session made on one refreshes on the other, login limits
/// are shared, and when one replica is SIGKILLed the other carries on with every session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_postgresql() {
    let pg = keygate_store::testing::Postgres::start();
    let dir = temp_dir("pg-replicas");
    let mut webs = Vec::new();
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let port = free_port();
        let path = sub.join("keygate.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:{port}/\n  listen: 127.0.0.1:{port}\n  storage: {{type: postgres, url: \"{}\"}}\n  refreshTokens: {{reuseInterval: 0s}}\n  bruteForce: {{attempts: 4}}\n{}",
                pg.url("postgres"),
                fixture_manifests()
            ),
        )
        .unwrap();
        let web = Http {
            issuer: format!("http://127.0.0.1:{port}/"),
            http: http_client(),
        };
        servers.push(start(&path, &web.url("healthz"), &web.http).await);
        webs.push(web);
    }
    assert_eq!(
        webs[1]
            .http
            .get(webs[1].url("readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Both replicas publish the same keys (one created them, the other loaded them).
    let keys = |w: &Http| {
        let (http, url) = (w.http.clone(), w.url("keys"));
        async move { http.get(url).send().await.unwrap().text().await.unwrap() }
    };
    assert_eq!(keys(&webs[0]).await, keys(&webs[1]).await);

    let mut tokens = Vec::new();
    for _ in 0..5 {
        tokens.push(
            webs[0].app_tokens("openid email offline_access").await["refresh_token"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    let refresh = |w: &Http, t: &str| {
        let (w, t) = (
            Http {
                issuer: w.issuer.clone(),
                http: w.http.clone(),
            },
            t.to_owned(),
        );
        async move {
            w.token(
                Some((APP, "app-secret")),
                &[("grant_type", "refresh_token"), ("refresh_token", &t)],
            )
            .await
        }
    };
    for t in tokens.iter_mut() {
        let (s, body) = refresh(&webs[1], t).await;
        assert_eq!(
            s, 200,
            "a session from replica a refreshes on replica b: {body}"
        );
        *t = body["refresh_token"].as_str().unwrap().to_owned();
    }
    // Login limits are counted together: 2 failures on each, then both refuse.
    let forms = [form_url(&webs[0]).await, form_url(&webs[1]).await];
    for _ in 0..2 {
        for (w, f) in webs.iter().zip(&forms) {
            assert_eq!(
                post_login(w, f, "john@example.com", "wrong").await.status(),
                401
            );
        }
    }
    for (w, f) in webs.iter().zip(&forms) {
        assert_eq!(
            post_login(w, f, "john@example.com", "password")
                .await
                .status(),
            429
        );
    }
    // The database goes away: clean 503s (never a 500), and service comes back on its own.
    pg.stop();
    let (s, body) = refresh(&webs[1], &tokens[0]).await;
    assert_eq!(
        (s, body["error"].as_str()),
        (503, Some("temporarily_unavailable")),
        "{body}"
    );
    assert_eq!(
        webs[1]
            .http
            .get(webs[1].url("readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        503
    );
    assert_eq!(
        webs[1]
            .http
            .get(webs[1].url("healthz"))
            .send()
            .await
            .unwrap()
            .status(),
        200,
        "liveness does not depend on the database"
    );
    pg.restart();
    let mut back = false;
    for _ in 0..50 {
        if webs[1]
            .http
            .get(webs[1].url("readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            back = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        back,
        "ready again after the database restarts, without restarting keygate"
    );
    let (s, body) = refresh(&webs[1], &tokens[0]).await;
    assert_eq!(s, 200, "{body}");
    tokens[0] = body["refresh_token"].as_str().unwrap().to_owned();

    // Replica a dies hard; b serves every session.
    let mut a = servers.remove(0);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    for t in &tokens {
        let (s, body) = refresh(&webs[1], t).await;
        assert_eq!(s, 200, "{body}");
    }
    for s in servers {
        s.stop();
    }
}

/// Issue 8's fault run: 200 users on two replicas sharing one PostgreSQL, a round-robin client,
/// and one replica SIGKILLed in the middle of the refresh traffic. Requests that hit the dead
/// replica fail (they are retried on the other, as a load balancer would); every user's session
/// works afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_hundred_users_survive_a_replica_killed_mid_run() {
    let pg = keygate_store::testing::Postgres::start();
    let dir = temp_dir("pg-fault");
    let users: String = (0..200)
        .map(|i| format!("---\napiVersion: deckhouse.io/v1\nkind: User\nmetadata: {{name: u{i}}}\nspec: {{email: u{i}@example.com, password: \"{PASSWORD_HASH}\"}}\n"))
        .collect();
    let mut webs = Vec::new();
    let mut servers = Vec::new();
    for name in ["a", "b"] {
        let sub = dir.join(name);
        std::fs::create_dir_all(&sub).unwrap();
        let port = free_port();
        let path = sub.join("keygate.yaml");
        std::fs::write(
            &path,
            format!(
                "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:{port}/\n  listen: 127.0.0.1:{port}\n  storage: {{type: postgres, url: \"{}\"}}\n  refreshTokens: {{reuseInterval: 1s}}\n{}{users}",
                pg.url("postgres"),
                fixture_manifests()
            ),
        )
        .unwrap();
        let web = Http {
            issuer: format!("http://127.0.0.1:{port}/"),
            http: http_client(),
        };
        servers.push(start(&path, &web.url("healthz"), &web.http).await);
        webs.push(web);
    }
    let webs = std::sync::Arc::new(webs);

    // Every user logs in (alternating replicas) and gets a refresh token.
    let mut tasks = Vec::new();
    for i in 0..200usize {
        let webs = webs.clone();
        tasks.push(tokio::spawn(async move {
            let web = &webs[i % 2];
            let query = format!("client_id={}&redirect_uri={}&response_type=code&scope=openid%20email%20offline_access&state=s", enc(APP), enc(APP_REDIRECT));
            let back = web.login(&query, &format!("u{i}@example.com"), "password").await;
            let code = Http::query_param(&back, "code").unwrap();
            let (s, t) = web.token(Some((APP, "app-secret")), &[("grant_type", "authorization_code"), ("code", &code), ("redirect_uri", APP_REDIRECT)]).await;
            assert_eq!(s, 200, "{t}");
            t["refresh_token"].as_str().unwrap().to_owned()
        }));
    }
    let mut tokens = Vec::new();
    for t in tasks {
        tokens.push(t.await.unwrap());
    }

    // Refresh traffic, round-robin; replica a is killed while it runs.
    let dead_hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for (i, token) in tokens.into_iter().enumerate() {
        let (webs, dead_hits) = (webs.clone(), dead_hits.clone());
        tasks.push(tokio::spawn(async move {
            let mut token = token;
            for round in 0..3usize {
                // Rounds 1.1 s apart: each refresh is outside the 1 s reuse window of the last, so
                // it rotates; a retry on the survivor right after a dead replica rotated lands
                // inside the window and gets the same new token (what the window is for).
                tokio::time::sleep(Duration::from_millis(if round == 0 {
                    (i % 20) as u64 * 5
                } else {
                    1100
                }))
                .await;
                let form = |t: &str| {
                    vec![
                        ("grant_type".to_string(), "refresh_token".to_string()),
                        ("refresh_token".to_string(), t.to_string()),
                    ]
                };
                let first = &webs[(i + round) % 2];
                let sent = first
                    .http
                    .post(first.url("token"))
                    .basic_auth(APP, Some("app-secret"))
                    .form(&form(&token))
                    .send()
                    .await;
                let body: serde_json::Value = match sent {
                    Ok(r) if r.status() == 200 => r.json().await.unwrap(),
                    Ok(r) => panic!(
                        "user {i} round {round}: {} {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    ),
                    Err(_) => {
                        // The dead replica: a load balancer would send it to the other one.
                        dead_hits.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        let other = &webs[(i + round + 1) % 2];
                        let (s, b) = other
                            .token(
                                Some((APP, "app-secret")),
                                &[("grant_type", "refresh_token"), ("refresh_token", &token)],
                            )
                            .await;
                        assert_eq!(s, 200, "user {i} round {round} on the survivor: {b}");
                        b
                    }
                };
                token = body["refresh_token"].as_str().unwrap().to_owned();
            }
            token
        }));
    }
    tokio::time::sleep(Duration::from_millis(1300)).await;
    let mut a = servers.remove(0);
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let mut finals = Vec::new();
    for t in tasks {
        finals.push(t.await.unwrap());
    }
    assert!(
        dead_hits.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the kill happened during the traffic"
    );

    // Afterwards every family works on the survivor.
    for (i, token) in finals.iter().enumerate() {
        let (s, b) = webs[1]
            .token(
                Some((APP, "app-secret")),
                &[("grant_type", "refresh_token"), ("refresh_token", token)],
            )
            .await;
        assert_eq!(s, 200, "user {i} after the run: {b}");
    }
    for s in servers {
        s.stop();
    }
}
