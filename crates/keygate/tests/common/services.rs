//! Real servers for the end-to-end tests of `keygate authenticator`: Redis, nginx configured as
//! ingress-nginx configures `auth-url`/`auth-signin`, the provider and authenticator binaries, an
//! echo application; a browser-like client that keeps cookies; ID-token verification that does
//! not trust Keygate's own code (openssl checks the RS256 signature against the provider's JWKS).
//!
//! Every server listens on 127.0.0.1 on a free port, runs as a child of the test and is killed
//! (and reaped) when its guard drops, so a failing test leaves no process behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_keygate");

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

// ---------------------------------------------------------------------------------------------
// Processes
// ---------------------------------------------------------------------------------------------

/// A child process, killed with SIGKILL and reaped when dropped.
pub struct Proc {
    pub name: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &str, cmd: &mut Command, log: PathBuf) -> Proc {
        let out = std::fs::File::create(&log).unwrap();
        let err = out.try_clone().unwrap();
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name}: {e}"));
        Proc {
            name: name.to_owned(),
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// `None` while running; the exit status once it has exited.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// SIGKILL, by PID, and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM by PID, then SIGKILL after `grace`. Returns the exit status when it stopped in time.
    pub fn terminate(&mut self, grace: Duration) -> Option<ExitStatus> {
        let mut c = self.child.take()?;
        let _ = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status();
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = c.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Makes sure `binary` exists, installing `package` with apt-get when it does not (once per test
/// process; tests install what they need).
pub fn ensure_tool(binary: &str, package: &str) -> PathBuf {
    static LOCK: Mutex<()> = Mutex::new(());
    let _guard = LOCK
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let find = || {
        [
            "/usr/sbin",
            "/usr/bin",
            "/usr/local/sbin",
            "/usr/local/bin",
            "/sbin",
            "/bin",
        ]
        .iter()
        .map(|d| Path::new(d).join(binary))
        .find(|p| p.exists())
    };
    if let Some(p) = find() {
        return p;
    }
    let install = || {
        Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", package])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .output()
    };
    if !install().is_ok_and(|o| o.status.success()) {
        let _ = Command::new("apt-get").arg("update").output();
        let _ = install();
    }
    find().unwrap_or_else(|| {
        panic!("{binary} is missing: `apt-get install -y --no-install-recommends {package}`")
    })
}

pub async fn wait_http(url: &str, proc: &mut Proc) {
    let http = reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = proc.exited() {
            panic!(
                "{} exited with {status} during start-up:\n{}",
                proc.name,
                proc.log_text()
            );
        }
        if let Ok(r) = http.get(url).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not answer 200 at {url} within 20 s:\n{}",
            proc.name,
            proc.log_text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn wait_tcp(port: u16, proc: &mut Proc) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = proc.exited() {
            panic!(
                "{} exited with {status} during start-up:\n{}",
                proc.name,
                proc.log_text()
            );
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{} did not listen on {port} within 20 s:\n{}",
            proc.name,
            proc.log_text()
        );
        std::thread::sleep(Duration::from_millis(25));
    }
}

// ---------------------------------------------------------------------------------------------
// Redis
// ---------------------------------------------------------------------------------------------

pub struct Redis {
    pub port: u16,
    pub proc: Proc,
    /// TLS only (`rediss://`): the CA of its certificate.
    pub ca: Option<PathBuf>,
}

impl Redis {
    /// `redis-server` in the foreground (persisting nothing), as RECIPES.md says.
    pub fn start(dir: &Path) -> Redis {
        Self::spawn(dir, None)
    }

    /// The same, TLS only, with `(cert, key, ca)` from [`make_certificate`].
    pub fn start_tls(dir: &Path, tls: (&Path, &Path, &Path)) -> Redis {
        Self::spawn(dir, Some(tls))
    }

    fn spawn(dir: &Path, tls: Option<(&Path, &Path, &Path)>) -> Redis {
        let server = ensure_tool("redis-server", "redis-server");
        ensure_tool("redis-cli", "redis-tools");
        let port = free_port();
        let data = dir.join(format!("redis-{port}"));
        std::fs::create_dir_all(&data).unwrap();
        let mut cmd = Command::new(server);
        cmd.args(["--bind", "127.0.0.1"]);
        match tls {
            None => cmd.args(["--port", &port.to_string()]),
            Some((cert, key, ca)) => cmd
                .args(["--port", "0", "--tls-port", &port.to_string()])
                .arg("--tls-cert-file")
                .arg(cert)
                .arg("--tls-key-file")
                .arg(key)
                .arg("--tls-ca-cert-file")
                .arg(ca)
                .args(["--tls-auth-clients", "no"]),
        };
        cmd.args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .arg("--dir")
            .arg(&data);
        let mut proc = Proc::spawn(
            "redis-server",
            &mut cmd,
            dir.join(format!("redis-{port}.log")),
        );
        wait_tcp(port, &mut proc);
        let redis = Redis {
            port,
            proc,
            ca: tls.map(|(_, _, ca)| ca.to_owned()),
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while redis.cli(&["PING"]).trim() != "PONG" {
            assert!(Instant::now() < deadline, "redis does not answer PING");
            std::thread::sleep(Duration::from_millis(25));
        }
        redis
    }

    pub fn url(&self) -> String {
        let scheme = if self.ca.is_some() { "rediss" } else { "redis" };
        format!("{scheme}://127.0.0.1:{}/0", self.port)
    }

    pub fn cli(&self, args: &[&str]) -> String {
        let mut cmd = Command::new("redis-cli");
        cmd.args(["-h", "127.0.0.1", "-p", &self.port.to_string(), "--raw"]);
        if let Some(ca) = &self.ca {
            cmd.arg("--tls").arg("--cacert").arg(ca);
        }
        let out = cmd.args(args).output().unwrap();
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    pub fn flushall(&self) {
        assert_eq!(self.cli(&["FLUSHALL"]).trim(), "OK");
    }

    pub fn keys(&self, pattern: &str) -> Vec<String> {
        self.cli(&["--scan", "--pattern", pattern])
            .lines()
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect()
    }

    /// "Redis stopped": SIGKILL, no goodbye.
    pub fn stop(&mut self) {
        self.proc.kill();
    }
}

// ---------------------------------------------------------------------------------------------
// Certificates
// ---------------------------------------------------------------------------------------------

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it: (cert, key, ca).
pub fn make_certificate(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
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
        &["-days", "1", "-subj", "/CN=keygate authenticator test CA"],
        &["-keyout", "ca.key", "-out", "ca.crt"],
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

// ---------------------------------------------------------------------------------------------
// nginx as ingress-nginx configures auth-url / auth-signin
// ---------------------------------------------------------------------------------------------

pub struct Nginx {
    pub port: u16,
    pub proc: Proc,
    pub dir: PathBuf,
}

impl Nginx {
    /// TLS on 127.0.0.1:`port`; `location /` protected by `auth_request` against the
    /// authenticators (round-robin when several, as a Service in front of replicas), the
    /// application behind it; `/dex-authenticator/` proxied to the authenticators; `/bye` a
    /// public page (the signOutURL).
    pub fn start(
        dir: &Path,
        port: u16,
        (cert, key): (&Path, &Path),
        authenticators: &[u16],
        app: u16,
    ) -> Nginx {
        let nginx = ensure_tool("nginx", "nginx");
        let dir = dir.join(format!("nginx-{port}"));
        for sub in ["", "tmp"] {
            std::fs::create_dir_all(dir.join(sub)).unwrap();
        }
        // Workers may run as nobody when started as root: let them use the temp folder.
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(dir.join("tmp"), std::fs::Permissions::from_mode(0o777))
                .unwrap();
        }
        let d = dir.display();
        let servers: String = authenticators
            .iter()
            .map(|p| format!("    server 127.0.0.1:{p};\n"))
            .collect();
        let conf = format!(
            r#"# ingress-nginx's auth-url / auth-signin, by hand.
daemon off;
master_process off;
worker_processes 1;
pid {d}/nginx.pid;
error_log {d}/error.log info;
events {{ worker_connections 512; }}
http {{
  default_type text/html;
  log_format kg '$remote_addr "$request" $status upstream=$upstream_addr';
  access_log {d}/access.log kg;
  client_body_temp_path {d}/tmp/body;
  proxy_temp_path {d}/tmp/proxy;
  fastcgi_temp_path {d}/tmp/fastcgi;
  uwsgi_temp_path {d}/tmp/uwsgi;
  scgi_temp_path {d}/tmp/scgi;

  upstream authenticator {{
{servers}  }}

  server {{
    listen 127.0.0.1:{port} ssl;
    server_name _;
    ssl_certificate {cert};
    ssl_certificate_key {key};

    location / {{
      auth_request /_auth;
      auth_request_set $auth_user $upstream_http_x_auth_request_user;
      auth_request_set $auth_email $upstream_http_x_auth_request_email;
      auth_request_set $auth_groups $upstream_http_x_auth_request_groups;
      auth_request_set $auth_authorization $upstream_http_authorization;
      auth_request_set $auth_cookie $upstream_http_set_cookie;
      add_header Set-Cookie $auth_cookie;
      error_page 401 = @signin;

      proxy_set_header X-Auth-Request-User $auth_user;
      proxy_set_header X-Auth-Request-Email $auth_email;
      proxy_set_header X-Auth-Request-Groups $auth_groups;
      proxy_set_header Authorization $auth_authorization;
      proxy_pass http://127.0.0.1:{app};
    }}

    location = /_auth {{
      internal;
      proxy_pass http://authenticator/dex-authenticator/auth;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Original-URL $scheme://$http_host$request_uri;
      proxy_set_header X-Forwarded-Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}

    # ingress-nginx escapes rd with Lua ($escaped_request_uri); plain nginx cannot, so the tests
    # keep query strings to one parameter (no '&' to split the rd value).
    location @signin {{
      return 302 https://$http_host/dex-authenticator/sign_in?rd=$scheme://$http_host$request_uri;
    }}

    location /dex-authenticator/ {{
      proxy_pass http://authenticator;
      proxy_set_header Host $http_host;
      proxy_set_header X-Forwarded-For $remote_addr;
    }}

    location = /bye {{
      return 200 "<!doctype html><title>Signed out</title><h1>Signed out</h1><p>You have signed out of the application.</p>";
    }}
  }}
}}
"#,
            cert = cert.display(),
            key = key.display(),
        );
        let path = dir.join("nginx.conf");
        std::fs::write(&path, conf).unwrap();
        let test = Command::new(&nginx)
            .arg("-t")
            .arg("-p")
            .arg(&dir)
            .arg("-c")
            .arg(&path)
            .arg("-e")
            .arg(dir.join("error.log"))
            .output()
            .unwrap();
        assert!(
            test.status.success(),
            "nginx -t: {}",
            String::from_utf8_lossy(&test.stderr)
        );
        let mut proc = Proc::spawn(
            "nginx",
            Command::new(&nginx)
                .arg("-p")
                .arg(&dir)
                .arg("-c")
                .arg(&path)
                .arg("-e")
                .arg(dir.join("error.log")),
            dir.join("stderr.log"),
        );
        wait_tcp(port, &mut proc);
        Nginx { port, proc, dir }
    }

    pub fn error_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("error.log")).unwrap_or_default()
    }

    pub fn access_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("access.log")).unwrap_or_default()
    }

    pub fn stop(&mut self) {
        // master_process off: one process; SIGTERM is a fast shutdown.
        self.proc.terminate(Duration::from_secs(5));
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        self.stop();
    }
}

// ---------------------------------------------------------------------------------------------
// Keygate binaries
// ---------------------------------------------------------------------------------------------

pub struct Keygate {
    pub port: u16,
    pub proc: Proc,
    pub config: PathBuf,
}

impl Keygate {
    pub fn url(&self, path: &str) -> String {
        format!(
            "http://127.0.0.1:{}/{}",
            self.port,
            path.trim_start_matches('/')
        )
    }

    /// SIGTERM, as Kubernetes does; SIGKILL after 10 s.
    pub fn stop(&mut self) -> Option<ExitStatus> {
        self.proc.terminate(Duration::from_secs(10))
    }
}

/// `keygate serve` with a SQLite file in `dir`; `extra_spec` lines (indented by two spaces) go
/// into the KeygateConfig spec; `manifests` follow it.
pub async fn start_provider(dir: &Path, extra_spec: &str, manifests: &str) -> Keygate {
    let port = free_port();
    let config = dir.join("provider.yaml");
    std::fs::write(
        &config,
        format!(
            "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:{port}/\n  listen: 127.0.0.1:{port}\n  storage: {{type: sqlite, path: {}}}\n{extra_spec}{manifests}",
            dir.join("provider.db").display()
        ),
    )
    .unwrap();
    let mut proc = Proc::spawn(
        "keygate serve",
        Command::new(BIN).arg("serve").arg("--config").arg(&config),
        dir.join("provider.log"),
    );
    wait_http(&format!("http://127.0.0.1:{port}/healthz"), &mut proc).await;
    Keygate { port, proc, config }
}

/// `keygate authenticator --config <file>` listening on `port` (the YAML must say so).
pub async fn start_authenticator(dir: &Path, port: u16, yaml: &str) -> Keygate {
    let config = dir.join(format!("authenticator-{port}.yaml"));
    std::fs::write(&config, yaml).unwrap();
    let mut proc = Proc::spawn(
        "keygate authenticator",
        Command::new(BIN)
            .arg("authenticator")
            .arg("--config")
            .arg(&config),
        dir.join(format!("authenticator-{port}.log")),
    );
    wait_http(&format!("http://127.0.0.1:{port}/healthz"), &mut proc).await;
    Keygate { port, proc, config }
}

/// A `DexAuthenticator` for the application at `domain` (client id `app-web-dex-authenticator`).
pub fn dex_authenticator(domain: &str, sign_out_url: Option<&str>, kubernetes: bool) -> String {
    let annotations = if kubernetes {
        "\n  annotations: {dexauthenticator.deckhouse.io/allow-access-to-kubernetes: \"\"}"
    } else {
        ""
    };
    let sign_out = sign_out_url
        .map(|u| format!("  signOutURL: \"{u}\"\n"))
        .unwrap_or_default();
    format!(
        r#"---
apiVersion: deckhouse.io/v1
kind: DexAuthenticator
metadata:
  name: app
  namespace: web{annotations}
spec:
  applicationDomain: "{domain}"
  sendAuthorizationHeader: true
  keepUsersLoggedInFor: 168h
{sign_out}  allowedGroups: [devs]
  whitelistSourceRanges: [127.0.0.0/8]
  secret: auth-secret
"#
    )
}

pub const CLIENT_ID: &str = "app-web-dex-authenticator";
pub const COOKIE_SECRET: &str = "0123456789abcdef0123456789abcdef";
pub const SESSION_COOKIE: &str = "_keygate_auth";
pub const STATE_COOKIE: &str = "_keygate_auth_state";

/// The `AuthenticatorConfig` document.
pub fn authenticator_config(
    port: u16,
    issuer: &str,
    cookie_secret: &str,
    session_store: &str,
    upstream: Option<&str>,
) -> String {
    let upstream = upstream
        .map(|u| format!("  upstream: {u}\n"))
        .unwrap_or_default();
    format!(
        r#"---
apiVersion: keygate.io/v1alpha1
kind: AuthenticatorConfig
spec:
  listen: 127.0.0.1:{port}
  issuer: {issuer}
  cookieSecret: "{cookie_secret}"
  sessionStore: {session_store}
  trustedProxies: [127.0.0.1/32]
  refreshBefore: 60s
  frontend: {{productName: "Acme Apps"}}
{upstream}"#
    )
}

// ---------------------------------------------------------------------------------------------
// The application: echoes what it got as JSON
// ---------------------------------------------------------------------------------------------

/// A tiny HTTP/1.1 server (std threads) that answers every request with a JSON echo of it:
/// `{method, target, headers: {lower-case name: [values]}, body_len, body_fnv}`. Upgrade
/// requests get `101 Switching Protocols` (RFC 6455 accept key) and then an echo of the bytes.
pub struct EchoApp {
    pub port: u16,
    /// Every request seen, in order.
    pub seen: Arc<Mutex<Vec<Value>>>,
    /// Body bytes received so far, across requests (to observe streaming).
    pub body_bytes: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl EchoApp {
    pub fn start() -> EchoApp {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let body_bytes = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (s, b, st) = (seen.clone(), body_bytes.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if st.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (s, b) = (s.clone(), b.clone());
                std::thread::spawn(move || {
                    let _ = serve_echo(conn, &s, &b);
                });
            }
        });
        EchoApp {
            port,
            seen,
            body_bytes,
            stop,
        }
    }

    pub fn requests(&self) -> Vec<Value> {
        self.seen.lock().unwrap().clone()
    }
}

impl Drop for EchoApp {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

/// FNV-1a, 64 bits: a body fingerprint without extra crates.
pub fn fnv1a(data: &[u8]) -> u64 {
    data.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn serve_echo(
    conn: TcpStream,
    seen: &Mutex<Vec<Value>>,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(60)))?;
    let mut reader = BufReader::new(conn);
    loop {
        let Some((request_line, headers)) = read_head(&mut reader)? else {
            return Ok(());
        };
        let mut parts = request_line.split(' ');
        let method = parts.next().unwrap_or("").to_owned();
        let target = parts.next().unwrap_or("").to_owned();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let mut map = serde_json::Map::new();
        for (k, v) in &headers {
            map.entry(k.to_ascii_lowercase())
                .or_insert_with(|| json!([]))
                .as_array_mut()
                .unwrap()
                .push(json!(v));
        }
        let upgrade = header("upgrade").is_some_and(|u| u.eq_ignore_ascii_case("websocket"));
        let body = if upgrade {
            Vec::new()
        } else {
            read_body(&mut reader, &headers, counter)?
        };
        let echo = json!({
            "method": method,
            "target": target,
            "headers": map,
            "body_len": body.len(),
            "body_fnv": fnv1a(&body).to_string(),
        });
        seen.lock().unwrap().push(echo.clone());
        if upgrade {
            let accept = websocket_accept(&header("sec-websocket-key").unwrap_or_default());
            let out = reader.get_mut();
            write!(
                out,
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: {accept}\r\n\r\n"
            )?;
            out.flush()?;
            // Echo whatever comes, until the peer closes.
            let mut buf = [0u8; 8192];
            loop {
                let n = reader.read(&mut buf)?;
                if n == 0 {
                    return Ok(());
                }
                reader.get_mut().write_all(&buf[..n])?;
                reader.get_mut().flush()?;
            }
        }
        let text = serde_json::to_vec(&echo).unwrap();
        let close = header("connection").is_some_and(|c| c.eq_ignore_ascii_case("close"))
            || request_line.ends_with("HTTP/1.0");
        let out = reader.get_mut();
        write!(
            out,
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{}\r\n",
            text.len(),
            if close { "Connection: close\r\n" } else { "" }
        )?;
        out.write_all(&text)?;
        out.flush()?;
        if close {
            return Ok(());
        }
    }
}

type Head = (String, Vec<(String, String)>);

/// Reads a request or status line and the headers; `None` at a clean EOF.
pub fn read_head<R: BufRead>(reader: &mut R) -> std::io::Result<Option<Head>> {
    let mut first = String::new();
    if reader.read_line(&mut first)? == 0 {
        return Ok(None);
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if line.is_empty() {
            break;
        }
        if let Some((k, v)) = line.split_once(':') {
            headers.push((k.trim().to_owned(), v.trim().to_owned()));
        }
    }
    Ok(Some((first.trim_end().to_owned(), headers)))
}

/// Reads a body framed by Content-Length or chunked encoding, counting bytes as they arrive.
pub fn read_body<R: BufRead>(
    reader: &mut R,
    headers: &[(String, String)],
    counter: &AtomicUsize,
) -> std::io::Result<Vec<u8>> {
    let get = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.clone())
    };
    let mut body = Vec::new();
    let chunk = |reader: &mut R, mut n: usize, body: &mut Vec<u8>| -> std::io::Result<()> {
        let mut buf = [0u8; 16384];
        while n > 0 {
            let got = reader.read(&mut buf[..n.min(16384)])?;
            if got == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            counter.fetch_add(got, Ordering::SeqCst);
            body.extend_from_slice(&buf[..got]);
            n -= got;
        }
        Ok(())
    };
    if get("transfer-encoding").is_some_and(|t| t.to_ascii_lowercase().contains("chunked")) {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size)?;
            let n = usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16)
                .unwrap_or(0);
            if n == 0 {
                // Trailers, up to the empty line.
                loop {
                    let mut l = String::new();
                    if reader.read_line(&mut l)? == 0 || l.trim().is_empty() {
                        break;
                    }
                }
                break;
            }
            chunk(reader, n, &mut body)?;
            let mut crlf = String::new();
            reader.read_line(&mut crlf)?;
        }
    } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
        chunk(reader, n, &mut body)?;
    }
    Ok(body)
}

/// RFC 6455: base64(SHA-1(key + GUID)), SHA-1 by openssl.
fn websocket_accept(key: &str) -> String {
    use std::io::Write as _;
    let mut child = Command::new("openssl")
        .args(["dgst", "-sha1", "-binary"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{key}258EAFA5-E914-47DA-95CA-C5AB0DC85B11").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    STANDARD.encode(out.stdout)
}

// ---------------------------------------------------------------------------------------------
// A browser: cookies and redirects by hand
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone)]
pub struct Cookie {
    pub name: String,
    pub value: String,
    pub path: String,
    pub secure: bool,
    /// The Set-Cookie header it came from.
    pub raw: String,
}

#[derive(Debug)]
pub struct Resp {
    pub method: String,
    pub url: String,
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Resp {
    /// The Location header resolved against the request URL.
    pub fn location(&self) -> Option<String> {
        let l = self.headers.get("location")?.to_str().ok()?;
        Some(url::Url::parse(&self.url).ok()?.join(l).ok()?.to_string())
    }

    pub fn raw_location(&self) -> Option<String> {
        Some(self.headers.get("location")?.to_str().ok()?.to_owned())
    }

    pub fn set_cookies(&self) -> Vec<String> {
        self.headers
            .get_all("set-cookie")
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect()
    }

    /// The Set-Cookie header for `name`, if this response set it.
    pub fn set_cookie(&self, name: &str) -> Option<String> {
        self.set_cookies().into_iter().find(|c| {
            c.split(';')
                .next()
                .and_then(|kv| kv.split_once('='))
                .is_some_and(|(k, _)| k.trim() == name)
        })
    }

    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|_| {
            panic!(
                "{} {} answered {} with non-JSON: {}",
                self.method,
                self.url,
                self.status,
                &self.body[..self.body.len().min(800)]
            )
        })
    }

    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    }

    pub fn summary(&self) -> String {
        format!(
            "{} {} -> {}{}{}",
            self.method,
            self.url,
            self.status,
            self.raw_location()
                .map(|l| format!(" Location: {l}"))
                .unwrap_or_default(),
            if self.status >= 400 {
                format!(" body: {}", &self.body[..self.body.len().min(300)])
            } else {
                String::new()
            }
        )
    }
}

/// Whether a Set-Cookie header deletes its cookie (empty value, Max-Age <= 0, or an Expires in
/// the past).
pub fn deletes_cookie(set_cookie: &str) -> bool {
    let mut parts = set_cookie.split(';');
    let value = parts
        .next()
        .and_then(|kv| kv.split_once('='))
        .map_or("", |(_, v)| v.trim());
    let attrs: Vec<String> = parts.map(|a| a.trim().to_ascii_lowercase()).collect();
    value.is_empty()
        || attrs.iter().any(|a| {
            a.strip_prefix("max-age=")
                .and_then(|v| v.parse::<i64>().ok())
                .is_some_and(|v| v <= 0)
                || a.strip_prefix("expires=").is_some_and(|v| {
                    ["1970", "1969", "1999", "2000"]
                        .iter()
                        .any(|y| v.contains(y))
                })
        })
}

pub struct Browser {
    pub http: reqwest::Client,
    pub cookies: Vec<Cookie>,
    /// `host:port` served over plain http although its URLs say https (TLS terminated in front):
    /// requests to it go over http and its Secure cookies are sent.
    pub plain_http: Option<String>,
    pub trace: Vec<String>,
}

impl Browser {
    pub fn new(ca: Option<&Path>) -> Browser {
        let mut b = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30));
        if let Some(ca) = ca {
            b = b.add_root_certificate(
                reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap(),
            );
        }
        Browser {
            http: b.build().unwrap(),
            cookies: Vec::new(),
            plain_http: None,
            trace: Vec::new(),
        }
    }

    /// Another browser sharing the TLS settings, with no cookies.
    pub fn fresh(&self) -> Browser {
        Browser {
            http: self.http.clone(),
            cookies: Vec::new(),
            plain_http: self.plain_http.clone(),
            trace: Vec::new(),
        }
    }

    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies
            .iter()
            .find(|c| c.name == name)
            .map(|c| c.value.clone())
    }

    /// Puts a cookie in the jar by hand (Path=/, Secure).
    pub fn put_cookie(&mut self, name: &str, value: &str, path: &str) {
        self.cookies.retain(|c| !(c.name == name && c.path == path));
        self.cookies.push(Cookie {
            name: name.to_owned(),
            value: value.to_owned(),
            path: path.to_owned(),
            secure: true,
            raw: String::new(),
        });
    }

    pub fn remove_cookie(&mut self, name: &str) {
        self.cookies.retain(|c| c.name != name);
    }

    fn effective(&self, url: &str) -> (String, bool) {
        let u = url::Url::parse(url).unwrap();
        let host_port = format!(
            "{}:{}",
            u.host_str().unwrap_or(""),
            u.port_or_known_default().unwrap_or(0)
        );
        if u.scheme() == "https" && self.plain_http.as_deref() == Some(host_port.as_str()) {
            let mut plain = u.clone();
            plain.set_scheme("http").unwrap();
            return (plain.to_string(), true);
        }
        if u.scheme() == "http" && self.plain_http.as_deref() == Some(host_port.as_str()) {
            return (url.to_owned(), true);
        }
        (url.to_owned(), u.scheme() == "https")
    }

    /// The Cookie header a browser sends to `url` (host-only cookies, all on 127.0.0.1).
    pub fn cookie_header(&self, url: &str) -> Option<String> {
        let (_, secure) = self.effective(url);
        let path = url::Url::parse(url).unwrap().path().to_owned();
        let pairs: Vec<String> = self
            .cookies
            .iter()
            .filter(|c| (!c.secure || secure) && path_matches(&path, &c.path))
            .map(|c| format!("{}={}", c.name, c.value))
            .collect();
        (!pairs.is_empty()).then(|| pairs.join("; "))
    }

    pub fn store(&mut self, url: &str, set_cookie: &str) {
        let mut parts = set_cookie.split(';');
        let Some((name, value)) = parts.next().and_then(|kv| kv.split_once('=')) else {
            return;
        };
        let mut path = None;
        let mut secure = false;
        for a in parts {
            let a = a.trim();
            let lower = a.to_ascii_lowercase();
            if lower.starts_with("path=") {
                path = Some(a[5..].to_owned());
            } else if lower == "secure" {
                secure = true;
            }
        }
        let path = path.unwrap_or_else(|| {
            let p = url::Url::parse(url).unwrap().path().to_owned();
            match p.rfind('/') {
                Some(0) | None => "/".to_owned(),
                Some(i) => p[..i].to_owned(),
            }
        });
        let name = name.trim().to_owned();
        self.cookies.retain(|c| !(c.name == name && c.path == path));
        if !deletes_cookie(set_cookie) {
            self.cookies.push(Cookie {
                name,
                value: value.trim().to_owned(),
                path,
                secure,
                raw: set_cookie.to_owned(),
            });
        }
    }

    /// One request, no redirect followed; cookies sent and stored.
    pub async fn request(
        &mut self,
        method: &str,
        url: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> Resp {
        let (target, _) = self.effective(url);
        let mut req = self.http.request(
            reqwest::Method::from_bytes(method.as_bytes()).unwrap(),
            &target,
        );
        if !headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("accept"))
        {
            // What a browser sends when it navigates.
            req = req.header(
                "accept",
                "text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8",
            );
        }
        if let Some(c) = self.cookie_header(url) {
            req = req.header("cookie", c);
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        if let Some(b) = body {
            req = req.body(b);
        }
        let r = req
            .send()
            .await
            .unwrap_or_else(|e| panic!("{method} {url}: {e:?}"));
        let status = r.status().as_u16();
        let headers = r.headers().clone();
        let body = r.text().await.unwrap_or_default();
        let resp = Resp {
            method: method.to_owned(),
            url: url.to_owned(),
            status,
            headers,
            body,
        };
        for c in resp.set_cookies() {
            self.store(url, &c);
        }
        self.trace.push(resp.summary());
        resp
    }

    pub async fn get(&mut self, url: &str) -> Resp {
        self.request("GET", url, &[], None).await
    }

    /// GETs `url` and follows redirects (at most 10); the first non-redirect response and every
    /// URL requested on the way.
    pub async fn follow(&mut self, url: &str) -> (Resp, Vec<String>) {
        let mut visited = vec![url.to_owned()];
        let mut r = self.get(url).await;
        for _ in 0..10 {
            if !(300..400).contains(&r.status) {
                return (r, visited);
            }
            let next = r
                .location()
                .unwrap_or_else(|| panic!("a redirect without Location: {}", r.summary()));
            visited.push(next.clone());
            r = self.get(&next).await;
        }
        panic!("too many redirects: {:#?}", self.trace);
    }

    /// At the provider: from `auth_url` (its /auth) through the login form as `login`; returns
    /// the redirect that leaves the provider (to the relying party's callback), not followed.
    pub async fn login_at_provider(
        &mut self,
        auth_url: &str,
        login: &str,
        password: &str,
    ) -> String {
        let origin = origin_of(auth_url);
        let mut r = self.get(auth_url).await;
        let mut posted = false;
        for _ in 0..10 {
            if (300..400).contains(&r.status) {
                let next = r.location().unwrap();
                if origin_of(&next) != origin {
                    assert!(
                        posted,
                        "left the provider before the login form: {:#?}",
                        self.trace
                    );
                    return next;
                }
                r = self.get(&next).await;
                continue;
            }
            assert!(
                r.status == 200 && r.body.contains("name=\"password\""),
                "expected the login form, got {} (trace {:#?})",
                r.summary(),
                self.trace
            );
            assert!(
                !posted,
                "the login form came back after posting: {:#?}",
                self.trace
            );
            let action = form_action(&r.body).unwrap_or_else(|| r.url.clone());
            let action = url::Url::parse(&r.url)
                .unwrap()
                .join(&action)
                .unwrap()
                .to_string();
            let form = format!(
                "login={}&password={}",
                super::enc(login),
                super::enc(password)
            );
            r = self
                .request(
                    "POST",
                    &action,
                    &[("content-type", "application/x-www-form-urlencoded")],
                    Some(form.into_bytes()),
                )
                .await;
            posted = true;
        }
        panic!("login did not finish: {:#?}", self.trace);
    }
}

fn path_matches(request: &str, cookie: &str) -> bool {
    request == cookie
        || (request.starts_with(cookie)
            && (cookie.ends_with('/') || request[cookie.len()..].starts_with('/')))
}

pub fn origin_of(url: &str) -> String {
    url::Url::parse(url).unwrap().origin().ascii_serialization()
}

/// The action of the first POST form, HTML entities decoded.
pub fn form_action(html: &str) -> Option<String> {
    let start = html.find("<form")?;
    let tag = &html[start..start + html[start..].find('>')?];
    let at = tag.find("action=\"")? + 8;
    let raw = &tag[at..at + tag[at..].find('"')?];
    Some(decode_entities(raw))
}

pub fn decode_entities(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(i) = rest.find('&') {
        out.push_str(&rest[..i]);
        rest = &rest[i..];
        let Some(end) = rest.find(';') else { break };
        let entity = &rest[1..end];
        let ch = match entity {
            "amp" => Some('&'),
            "lt" => Some('<'),
            "gt" => Some('>'),
            "quot" => Some('"'),
            "apos" => Some('\''),
            e if e.starts_with("#x") || e.starts_with("#X") => u32::from_str_radix(&e[2..], 16)
                .ok()
                .and_then(char::from_u32),
            e if e.starts_with('#') => e[1..].parse().ok().and_then(char::from_u32),
            _ => None,
        };
        if let Some(c) = ch {
            out.push(c);
            rest = &rest[end + 1..];
        } else {
            out.push('&');
            rest = &rest[1..];
        }
    }
    out.push_str(rest);
    out
}

// ---------------------------------------------------------------------------------------------
// ID tokens, verified without Keygate's code
// ---------------------------------------------------------------------------------------------

fn der_len(n: usize) -> Vec<u8> {
    if n < 0x80 {
        vec![u8::try_from(n).unwrap()]
    } else {
        let bytes: Vec<u8> = n
            .to_be_bytes()
            .into_iter()
            .skip_while(|b| *b == 0)
            .collect();
        let mut out = vec![0x80 | u8::try_from(bytes.len()).unwrap()];
        out.extend(bytes);
        out
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    out.extend(der_len(content.len()));
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::new();
    if trimmed.first().is_none_or(|b| *b & 0x80 != 0) {
        content.push(0);
    }
    content.extend(trimmed);
    der(0x02, &content)
}

/// A PEM SubjectPublicKeyInfo for an RSA JWK (`n`, `e`).
pub fn rsa_jwk_to_pem(jwk: &Value) -> String {
    let n = URL_SAFE_NO_PAD.decode(jwk["n"].as_str().unwrap()).unwrap();
    let e = URL_SAFE_NO_PAD.decode(jwk["e"].as_str().unwrap()).unwrap();
    let rsa_key = der(0x30, &[der_uint(&n), der_uint(&e)].concat());
    // AlgorithmIdentifier { rsaEncryption, NULL }
    let alg: &[u8] = &[
        0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00,
    ];
    let mut bits = vec![0u8];
    bits.extend(rsa_key);
    let spki = der(0x30, &[alg.to_vec(), der(0x03, &bits)].concat());
    let b64 = STANDARD.encode(spki);
    let lines: Vec<&str> = b64
        .as_bytes()
        .chunks(64)
        .map(|c| std::str::from_utf8(c).unwrap())
        .collect();
    format!(
        "-----BEGIN PUBLIC KEY-----\n{}\n-----END PUBLIC KEY-----\n",
        lines.join("\n")
    )
}

static VERIFY_COUNTER: AtomicUsize = AtomicUsize::new(0);

/// Checks a compact JWS with `openssl dgst -verify` against the JWK of its `kid`; true when the
/// signature is valid.
pub fn openssl_verifies(jwt: &str, jwks: &Value, dir: &Path) -> bool {
    let mut parts = jwt.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    let Ok(header) = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| ())
        .and_then(|b| serde_json::from_slice::<Value>(&b).map_err(|_| ()))
    else {
        return false;
    };
    assert_eq!(
        header["alg"], "RS256",
        "Keygate signs with RS256 by default: {header}"
    );
    let Some(jwk) = jwks["keys"]
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kid"] == header["kid"])
    else {
        return false;
    };
    assert_eq!(jwk["kty"], "RSA");
    let Ok(sig) = URL_SAFE_NO_PAD.decode(s) else {
        return false;
    };
    let n = VERIFY_COUNTER.fetch_add(1, Ordering::SeqCst);
    let pem = dir.join(format!("jwk-{n}.pem"));
    let input = dir.join(format!("jws-{n}.input"));
    let sigf = dir.join(format!("jws-{n}.sig"));
    std::fs::write(&pem, rsa_jwk_to_pem(jwk)).unwrap();
    std::fs::write(&input, format!("{h}.{p}")).unwrap();
    std::fs::write(&sigf, sig).unwrap();
    let out = Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&pem)
        .arg("-signature")
        .arg(&sigf)
        .arg(&input)
        .output()
        .unwrap();
    out.status.success() && String::from_utf8_lossy(&out.stdout).contains("Verified OK")
}

/// The provider's JWKS.
pub async fn jwks(http: &reqwest::Client, issuer: &str) -> Value {
    let discovery: Value = http
        .get(format!("{issuer}.well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    http.get(discovery["jwks_uri"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

pub fn unix_now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

// ---------------------------------------------------------------------------------------------
// Raw HTTP/1.1 over TCP (chunked uploads, upgrades)
// ---------------------------------------------------------------------------------------------

/// Reads a response head from a raw stream: (status, headers).
pub fn parse_status(line: &str) -> u16 {
    line.split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

/// Reads a whole response (Content-Length, chunked or until EOF) from a blocking stream.
pub fn read_response(stream: TcpStream) -> (u16, Vec<(String, String)>, Vec<u8>) {
    let mut reader = BufReader::new(stream);
    let (line, headers) = read_head(&mut reader).unwrap().expect("a response");
    let counter = AtomicUsize::new(0);
    let framed = headers.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("content-length")
            || (k.eq_ignore_ascii_case("transfer-encoding") && v.contains("chunked"))
    });
    let body = if framed {
        read_body(&mut reader, &headers, &counter).unwrap()
    } else {
        let mut b = Vec::new();
        let _ = reader.read_to_end(&mut b);
        b
    };
    (parse_status(&line), headers, body)
}
