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
    let (cert, key, ca) = make_certificate(&dir);
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

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it (rustls refuses a
/// self-signed CA certificate used as the server's own).
fn make_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is needed to make test certificates");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ec = [
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
    ];
    run(&[
        &["req", "-x509"][..],
        &ec,
        &[
            "-days",
            "1",
            "-subj",
            "/CN=keygate test CA",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
        ],
    ]
    .concat());
    run(&[
        &["req"][..],
        &ec,
        &[
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "tls.key",
            "-out",
            "tls.csr",
        ],
    ]
    .concat());
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n",
    )
    .unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "tls.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
        "-out",
        "tls.crt",
    ]);
    (dir.join("tls.crt"), dir.join("tls.key"), dir.join("ca.crt"))
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
    assert!(!text.contains("app-secret"), "secrets are never printed");
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
