//! End-to-end tests of `keygate authenticator` (Deckhouse's DexAuthenticator): the real binary
//! behind real nginx configured as ingress-nginx configures `auth-url`/`auth-signin`, real Redis,
//! the real provider binary, and an echo application that shows what reached it.
//!
//! The binaries read the system clock, so the few waits here are real (a 2 s refresh-token reuse
//! window, an ID token that nears expiry after ~6 s); each is explained where it happens.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufReader, Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use common::services::*;
use common::{claims, enc, fixture_manifests, temp_dir};
use serde_json::Value;

const JANE: &str = "jane@example.com";
const PASSWORD: &str = "password";

#[derive(Clone, Copy, PartialEq, Eq)]
enum SessionStore {
    Redis,
    Memory,
    /// Redis over TLS only (`rediss://` with `caFile`).
    RedisTls,
}

struct Options {
    replicas: usize,
    store: SessionStore,
    /// `upstream:` set, no nginx.
    reverse_proxy: bool,
    /// The provider's `idTokenTTL`.
    id_token_ttl: &'static str,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replicas: 1,
            store: SessionStore::Redis,
            reverse_proxy: false,
            id_token_ttl: "10m",
        }
    }
}

/// Provider + Redis (one per replica) + authenticator replicas + nginx + the application.
struct Stack {
    dir: PathBuf,
    /// `127.0.0.1:<port>`: what the browser has in its address bar (nginx, or the authenticator
    /// itself in reverse-proxy mode).
    domain: String,
    ca: PathBuf,
    reverse_proxy: bool,
    nginx: Option<Nginx>,
    auths: Vec<Keygate>,
    auth_yaml: Vec<String>,
    redis: Vec<Redis>,
    provider: Keygate,
    app: EchoApp,
    http: reqwest::Client,
    /// Reverse-proxy mode: the first replica's `metricsListen` port.
    metrics_port: Option<u16>,
}

impl Stack {
    async fn start(opts: Options) -> Stack {
        let dir = temp_dir("authenticator");
        let app = EchoApp::start();
        let auth_ports: Vec<u16> = (0..opts.replicas).map(|_| free_port()).collect();
        let nginx_port = free_port();
        let domain = if opts.reverse_proxy {
            format!("127.0.0.1:{}", auth_ports[0])
        } else {
            format!("127.0.0.1:{nginx_port}")
        };
        let (cert, key, ca) = make_certificate(&dir);
        let manifest = dex_authenticator(&domain, Some(&format!("https://{domain}/bye")), true);
        // The provider registers the DexAuthenticator's client (secret, redirect URI). A 2 s
        // reuse window for refresh tokens, so that a test can step out of it.
        let provider = start_provider(
            &dir,
            &format!(
                "  idTokenTTL: {}\n  refreshTokens: {{reuseInterval: 2s}}\n",
                opts.id_token_ttl
            ),
            &format!("{}{manifest}", fixture_manifests()),
        )
        .await;
        let issuer = provider.url("");
        let mut redis = Vec::new();
        let mut auths = Vec::new();
        let mut auth_yaml = Vec::new();
        let upstream = format!("http://127.0.0.1:{}", app.port);
        let metrics_port = opts.reverse_proxy.then(free_port);
        for port in &auth_ports {
            let store = match opts.store {
                SessionStore::Redis => {
                    // As in Deckhouse: every replica has its own Redis.
                    let r = Redis::start(&dir);
                    let s = format!("{{type: redis, url: \"{}\"}}", r.url());
                    redis.push(r);
                    s
                }
                SessionStore::RedisTls => {
                    let r = Redis::start_tls(&dir, (&cert, &key, &ca));
                    let s = format!(
                        "{{type: redis, url: \"{}\", caFile: \"{}\"}}",
                        r.url(),
                        ca.display()
                    );
                    redis.push(r);
                    s
                }
                SessionStore::Memory => "{type: memory}".to_owned(),
            };
            let yaml = format!(
                "{manifest}{}",
                authenticator_config(
                    *port,
                    &issuer,
                    COOKIE_SECRET,
                    &store,
                    opts.reverse_proxy.then_some(upstream.as_str()),
                )
            );
            let yaml = match metrics_port {
                // The spec block is the last document: one more field of it.
                Some(m) if auths.is_empty() => format!("{yaml}  metricsListen: 127.0.0.1:{m}\n"),
                _ => yaml,
            };
            auths.push(start_authenticator(&dir, *port, &yaml).await);
            auth_yaml.push(yaml);
        }
        let nginx = (!opts.reverse_proxy)
            .then(|| Nginx::start(&dir, nginx_port, (&cert, &key), &auth_ports, app.port));
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap();
        Stack {
            dir,
            domain,
            ca,
            reverse_proxy: opts.reverse_proxy,
            nginx,
            auths,
            auth_yaml,
            redis,
            provider,
            app,
            http,
            metrics_port,
        }
    }

    fn issuer(&self) -> String {
        self.provider.url("")
    }

    /// A URL on the application, as the browser sees it.
    fn url(&self, path: &str) -> String {
        format!("https://{}{path}", self.domain)
    }

    fn browser(&self) -> Browser {
        let mut b = Browser::new(Some(&self.ca));
        if self.reverse_proxy {
            // No TLS in this test: the browser's https URLs reach the authenticator over http,
            // as behind a TLS-terminating load balancer.
            b.plain_http = Some(self.domain.clone());
        }
        b
    }

    /// Anonymous GET of `path` → sign-in redirects → the provider's login form → callback → back
    /// on `path`: the application's answer.
    async fn sign_in(&self, b: &mut Browser, path: &str) -> Resp {
        let start = self.url(path);
        let provider = origin_of(&self.issuer());
        let mut r = b.get(&start).await;
        for _ in 0..4 {
            let Some(next) = r.location() else { break };
            if origin_of(&next) == provider {
                break;
            }
            r = b.get(&next).await;
        }
        let to_provider = r
            .location()
            .unwrap_or_else(|| panic!("no redirect to the provider: {:#?}", b.trace));
        assert_eq!(origin_of(&to_provider), provider, "{:#?}", b.trace);
        let callback = b.login_at_provider(&to_provider, JANE, PASSWORD).await;
        let (r, _) = b.follow(&callback).await;
        assert_eq!(
            r.status, 200,
            "signed in, the application answers: {:#?}",
            b.trace
        );
        assert_eq!(
            r.url, start,
            "back where the user started (rd): {:#?}",
            b.trace
        );
        r
    }

    /// The claims of the ID token in an `Authorization: Bearer` header, after checking its
    /// signature with openssl against the provider's JWKS.
    async fn verified(&self, authorization: &str) -> Value {
        let jwt = authorization
            .strip_prefix("Bearer ")
            .unwrap_or_else(|| panic!("not a Bearer token: {authorization}"));
        let keys = jwks(&self.http, &self.issuer()).await;
        assert!(
            openssl_verifies(jwt, &keys, &self.dir),
            "the ID token's RS256 signature does not verify against {}keys",
            self.issuer()
        );
        claims(jwt)
    }

    /// GET `/dex-authenticator/auth` on replica `i` directly, as nginx's subrequest does.
    async fn auth_check(
        &self,
        i: usize,
        cookie: Option<&str>,
        client_ip: &str,
    ) -> reqwest::Response {
        let mut req = self
            .http
            .get(self.auths[i].url("dex-authenticator/auth"))
            .header("x-forwarded-host", &self.domain)
            .header("x-original-url", self.url("/private"))
            .header("x-forwarded-for", client_ip);
        if let Some(c) = cookie {
            req = req.header("cookie", format!("{SESSION_COOKIE}={c}"));
        }
        req.send().await.unwrap()
    }

    async fn metrics(&self) -> String {
        self.http
            .get(self.provider.url("metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    }

    /// One counter of authenticator `i`'s /metrics (a series as printed, labels included).
    async fn auth_metric(&self, i: usize, series: &str) -> u64 {
        let text = self
            .http
            .get(self.auths[i].url("metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .unwrap_or_else(|| panic!("{series} not in\n{text}"))
            .parse()
            .unwrap()
    }

    /// `keygate sessions list --json` on the provider's database: the authenticator's sessions.
    fn provider_sessions(&self) -> Vec<Value> {
        let out = std::process::Command::new(BIN)
            .args(["sessions", "list", "--json", "--config"])
            .arg(&self.provider.config)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str::<Value>(l).unwrap())
            .filter(|s| s["client_id"] == CLIENT_ID)
            .collect()
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            if std::env::var_os("KEEP_TMP").is_none() {
                let _ = std::fs::remove_dir_all(&self.dir);
            }
        } else {
            let tail = |name: &str, text: String| {
                let lines: Vec<&str> = text.lines().collect();
                let from = lines.len().saturating_sub(60);
                eprintln!(
                    "----- {name} (last 60 lines) -----\n{}",
                    lines[from..].join("\n")
                );
            };
            tail("provider", self.provider.proc.log_text());
            for a in &self.auths {
                tail(&format!("authenticator :{}", a.port), a.proc.log_text());
            }
            if let Some(n) = &self.nginx {
                tail("nginx error.log", n.error_log());
                tail("nginx access.log", n.access_log());
            }
            eprintln!("(files in {})", self.dir.display());
        }
    }
}

/// Every value the application got for header `name`.
fn seen(echo: &Value, name: &str) -> Vec<String> {
    echo["headers"][name]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default()
}

fn one(echo: &Value, name: &str) -> String {
    let v = seen(echo, name);
    assert_eq!(
        v.len(),
        1,
        "exactly one {name} header reached the application: {echo}"
    );
    v[0].clone()
}

fn query_param(url: &str, name: &str) -> Option<String> {
    url::Url::parse(url)
        .unwrap()
        .query_pairs()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.into_owned())
}

fn attrs(set_cookie: &str) -> Vec<String> {
    set_cookie
        .split(';')
        .skip(1)
        .map(|a| a.trim().to_ascii_lowercase())
        .collect()
}

fn is_sign_in_redirect(r: &Resp) -> bool {
    r.status == 302
        && r.location()
            .is_some_and(|l| url::Url::parse(&l).unwrap().path() == "/dex-authenticator/sign_in")
}

/// 1. nginx `auth_request` as ingress-nginx does it: the whole browser flow, what the application
///    gets (identity headers and an ID token that verifies), the whitelist, and sign-out.
#[tokio::test]
async fn nginx_auth_request_login_gives_the_app_identity_and_a_verifiable_id_token() {
    let stack = Stack::start(Options::default()).await;
    let mut b = stack.browser();
    let start = stack.url("/hello?x=1");

    // Anonymous: nginx turns the authenticator's 401 into the sign-in redirect.
    let r = b.get(&start).await;
    assert!(is_sign_in_redirect(&r), "{}", r.summary());
    assert_eq!(
        query_param(&r.location().unwrap(), "rd").as_deref(),
        Some(start.as_str())
    );
    assert_eq!(stack.app.requests().len(), 0, "the application saw nothing");

    // sign_in: to the provider with PKCE S256, state and nonce; a state cookie.
    let r = b.get(&r.location().unwrap()).await;
    assert_eq!(r.status, 302, "{}", r.summary());
    let auth = r.location().unwrap();
    assert!(
        auth.starts_with(&format!("{}auth?", stack.issuer())),
        "{auth}"
    );
    assert_eq!(query_param(&auth, "client_id").as_deref(), Some(CLIENT_ID));
    assert_eq!(
        query_param(&auth, "redirect_uri"),
        Some(stack.url("/dex-authenticator/callback"))
    );
    assert_eq!(query_param(&auth, "response_type").as_deref(), Some("code"));
    assert_eq!(
        query_param(&auth, "code_challenge_method").as_deref(),
        Some("S256")
    );
    assert_eq!(
        query_param(&auth, "code_challenge").map(|c| c.len()),
        Some(43)
    );
    assert!(
        query_param(&auth, "state").is_some_and(|s| s.len() >= 16),
        "{auth}"
    );
    let nonce = query_param(&auth, "nonce").expect("a nonce");
    assert!(nonce.len() >= 16, "{auth}");
    let scope = query_param(&auth, "scope").unwrap();
    assert!(scope.split(' ').any(|s| s == "openid"), "{scope}");
    let state_cookie = r.set_cookie(STATE_COOKIE).expect("a state cookie");
    assert!(
        attrs(&state_cookie).contains(&"path=/dex-authenticator".to_owned()),
        "{state_cookie}"
    );

    // The provider's login form, then its redirect to the callback.
    let callback = b.login_at_provider(&auth, JANE, PASSWORD).await;
    assert!(
        callback.starts_with(&stack.url("/dex-authenticator/callback?")),
        "{callback}"
    );
    let r = b.get(&callback).await;
    assert_eq!(r.status, 302, "{}", r.summary());
    assert_eq!(r.location().as_deref(), Some(start.as_str()), "back to rd");
    let session = r.set_cookie(SESSION_COOKIE).expect("the session cookie");
    let a = attrs(&session);
    for want in ["path=/", "secure", "httponly", "samesite=lax"] {
        assert!(a.contains(&want.to_owned()), "{want} in {session}");
    }
    let cookie = b.cookie(SESSION_COOKIE).unwrap();
    assert!(
        cookie.len() < 4096,
        "a cookie browsers keep: {} bytes",
        cookie.len()
    );
    let decoded = base64::Engine::decode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        cookie.trim_matches('"'),
    )
    .unwrap_or_default();
    assert!(
        !cookie.contains("jane") && !String::from_utf8_lossy(&decoded).contains("jane"),
        "the cookie is encrypted, not merely encoded"
    );

    // The application, with the identity.
    let r = b.get(&start).await;
    assert_eq!(r.status, 200, "{}", r.summary());
    let echo = r.json();
    assert_eq!(echo["target"], "/hello?x=1");
    assert_eq!(one(&echo, "x-auth-request-email"), JANE);
    assert!(!one(&echo, "x-auth-request-user").is_empty());
    let authorization = one(&echo, "authorization");
    let id = stack.verified(&authorization).await;
    assert_eq!(id["iss"], stack.issuer());
    assert_eq!(id["email"], JANE);
    // The groups header is the token's groups claim, comma-separated (the provider keeps only
    // the client's allowedGroups in it, as Flant's Dex does: jane is in devs and everyone).
    let claimed: Vec<&str> = id["groups"]
        .as_array()
        .expect("a groups claim")
        .iter()
        .map(|g| g.as_str().unwrap())
        .collect();
    assert_eq!(one(&echo, "x-auth-request-groups"), claimed.join(","));
    assert_eq!(claimed, ["devs"]);
    assert_eq!(id["nonce"], nonce.as_str(), "the ID token of this login");
    assert!(id["exp"].as_i64().unwrap() > unix_now());
    let aud: Vec<&str> = match &id["aud"] {
        Value::String(s) => vec![s.as_str()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap()).collect(),
        other => panic!("aud {other}"),
    };
    assert!(aud.contains(&CLIENT_ID), "{aud:?}");
    assert!(
        aud.contains(&"kubernetes"),
        "annotated allow-access-to-kubernetes: aud {aud:?}"
    );
    // The verifier is not vacuous: a forged signature fails.
    let jwt = authorization.strip_prefix("Bearer ").unwrap();
    let (signed, sig) = jwt.rsplit_once('.').unwrap();
    let forged = format!(
        "{signed}.{}{}",
        if sig.starts_with('A') { "B" } else { "A" },
        &sig[1..]
    );
    let keys = jwks(&stack.http, &stack.issuer()).await;
    assert!(!openssl_verifies(&forged, &keys, &stack.dir));

    // The auth endpoint itself: identity headers, 401 without a cookie, 403 outside
    // whitelistSourceRanges (the client address from a trusted proxy's X-Forwarded-For).
    let r = stack.auth_check(0, Some(&cookie), "127.0.0.7").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["x-auth-request-email"], JANE);
    assert!(
        r.headers()["authorization"]
            .to_str()
            .unwrap()
            .starts_with("Bearer ey")
    );
    assert_eq!(stack.auth_check(0, None, "127.0.0.7").await.status(), 401);
    assert_eq!(
        stack
            .auth_check(0, Some(&cookie), "203.0.113.9")
            .await
            .status(),
        403,
        "client outside whitelistSourceRanges"
    );

    // A burst of checks for one cookie reads Redis once per second, not once per check.
    let gets = |stack: &Stack| -> u64 {
        let stats = stack.redis[0].cli(&["INFO", "commandstats"]);
        stats
            .lines()
            .find_map(|l| l.strip_prefix("cmdstat_get:calls="))
            .and_then(|l| l.split(',').next()?.parse().ok())
            .unwrap_or(0)
    };
    let before = gets(&stack);
    let started = Instant::now();
    for _ in 0..20 {
        let r = stack.auth_check(0, Some(&cookie), "127.0.0.7").await;
        assert_eq!(r.status(), 200);
    }
    let seconds = started.elapsed().as_secs() + 2;
    let read = gets(&stack) - before;
    assert!(
        read <= seconds,
        "20 checks within {seconds} clock seconds read Redis {read} times"
    );
    // The same, as the authenticator's /metrics tell it.
    let from_memory = stack
        .auth_metric(0, "keygate_authenticator_checks_from_memory_total")
        .await;
    assert!(from_memory >= 20 - seconds, "{from_memory} from memory");
    let allowed = "keygate_authenticator_checks_total{result=\"allowed\"}";
    assert!(stack.auth_metric(0, allowed).await >= 21);
    let forbidden = "keygate_authenticator_checks_total{result=\"forbidden\"}";
    assert_eq!(
        stack.auth_metric(0, forbidden).await,
        1,
        "the whitelist refusal"
    );
    assert_eq!(
        stack
            .auth_metric(0, "keygate_authenticator_sign_ins_total")
            .await,
        1
    );

    // Sign out: cookie cleared, session gone from Redis, refresh token revoked at the provider,
    // back to `rd` on the application (signOutURL is the path routed *to* sign-out, as in Deckhouse).
    assert!(!stack.redis[0].keys("keygate:session:*").is_empty());
    assert_eq!(
        stack.provider_sessions().len(),
        1,
        "one session at the provider"
    );
    let r = b
        .get(&stack.url("/dex-authenticator/sign_out?rd=/bye"))
        .await;
    assert_eq!(r.status, 302, "{}", r.summary());
    assert_eq!(r.location(), Some(stack.url("/bye")));
    let cleared = r
        .set_cookie(SESSION_COOKIE)
        .expect("sign_out clears the cookie");
    assert!(deletes_cookie(&cleared), "{cleared}");
    assert!(b.cookie(SESSION_COOKIE).is_none());
    assert!(
        stack.redis[0].keys("keygate:session:*").is_empty(),
        "the session left Redis"
    );
    assert_eq!(
        stack
            .auth_metric(0, "keygate_authenticator_sign_outs_total")
            .await,
        1
    );
    assert_eq!(
        stack.provider_sessions().len(),
        0,
        "the refresh token was revoked at the provider"
    );
    let r = b.get(&stack.url("/bye")).await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("Signed out"));
    // The next visit asks to sign in again, and a copy of the old cookie is worthless.
    assert!(is_sign_in_redirect(&b.get(&start).await));
    b.put_cookie(SESSION_COOKIE, &cookie, "/");
    let r = b.get(&start).await;
    assert!(
        is_sign_in_redirect(&r),
        "the old cookie after sign-out: {}",
        r.summary()
    );
    assert_eq!(
        stack
            .auth_check(0, Some(&cookie), "127.0.0.7")
            .await
            .status(),
        401
    );
}

/// 2. Redis losing everything, then Redis gone: a refresh with the cookie's refresh token, never
///    a login page; the re-issued cookie carries the rotated refresh token.
#[tokio::test]
async fn redis_flush_and_outage_cost_a_refresh_never_a_login() {
    let mut stack = Stack::start(Options::default()).await;
    let mut b = stack.browser();
    stack.sign_in(&mut b, "/app").await;
    let c1 = b.cookie(SESSION_COOKIE).unwrap();

    // At rest in Redis: under keygate:session:, encrypted.
    let keys = stack.redis[0].keys("keygate:session:*");
    assert_eq!(keys.len(), 1, "{keys:?}");
    let kind = stack.redis[0].cli(&["TYPE", &keys[0]]);
    let stored = match kind.trim() {
        "string" => stack.redis[0].cli(&["GET", &keys[0]]),
        "hash" => stack.redis[0].cli(&["HGETALL", &keys[0]]),
        other => panic!("session stored as a Redis {other}"),
    };
    assert!(
        !stored.contains(JANE) && !stored.contains("eyJ"),
        "the session is encrypted in Redis: {stored}"
    );

    // Out of the provider's 2 s reuse window, so that the next refresh rotates the token.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    stack.redis[0].flushall();
    let r = b.get(&stack.url("/after-flush")).await;
    assert_eq!(
        r.status,
        200,
        "no login page after FLUSHALL: {}",
        r.summary()
    );
    assert_eq!(one(&r.json(), "x-auth-request-email"), JANE);
    let c2 = b.cookie(SESSION_COOKIE).unwrap();
    assert!(
        r.set_cookie(SESSION_COOKIE).is_some() && c2 != c1,
        "the cookie is re-issued after the refresh"
    );
    assert_eq!(
        stack.redis[0].keys("keygate:session:*").len(),
        1,
        "stored again"
    );
    let r = b.get(&stack.url("/again")).await;
    assert_eq!(r.status, 200, "{}", r.summary());

    // The new cookie holds the rotated token: once the old one is outside the reuse window and
    // the session is gone again, the old cookie cannot refresh and the new one can.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    stack.redis[0].flushall();
    let mut old = b.fresh();
    old.put_cookie(SESSION_COOKIE, &c1, "/");
    let r = old.get(&stack.url("/old-cookie")).await;
    assert!(
        is_sign_in_redirect(&r),
        "the refresh token in the first cookie was rotated away: {}",
        r.summary()
    );
    let r = b.get(&stack.url("/new-cookie")).await;
    assert_eq!(r.status, 200, "{}", r.summary());

    // Redis stopped: a valid cookie still gets in. Out of the reuse window and with Redis emptied
    // first, the first request must refresh; the session it gets is then kept in the
    // authenticator's memory, so the next ones cost no refresh at all.
    tokio::time::sleep(Duration::from_millis(2100)).await;
    stack.redis[0].flushall();
    stack.redis[0].stop();
    let grants_before = refresh_grants(&stack.metrics().await);
    for i in 0..3 {
        let t = Instant::now();
        let r = b.get(&stack.url(&format!("/redis-down/{i}"))).await;
        assert_eq!(r.status, 200, "with Redis down: {}", r.summary());
        assert_eq!(one(&r.json(), "x-auth-request-email"), JANE);
        let took = t.elapsed();
        eprintln!("request {i} with Redis down: {took:?}");
        assert!(took < Duration::from_secs(5), "took {took:?}");
    }
    assert_eq!(
        refresh_grants(&stack.metrics().await) - grants_before,
        1,
        "one refresh for three requests while Redis is down"
    );
    // The authenticator's /metrics show the outage and the refreshes it cost.
    assert!(
        stack
            .auth_metric(0, "keygate_authenticator_store_failures_total")
            .await
            >= 1
    );
    let ok = "keygate_authenticator_refreshes_total{result=\"ok\"}";
    assert!(
        stack.auth_metric(0, ok).await >= 3,
        "after two FLUSHALLs and the outage"
    );
    // Still no way in without a cookie.
    let mut anon = b.fresh();
    assert!(is_sign_in_redirect(&anon.get(&stack.url("/")).await));
}

/// Refresh grants the provider answered (rotations and reuses), from its /metrics.
fn refresh_grants(metrics: &str) -> u64 {
    metrics
        .lines()
        .filter(|l| {
            l.starts_with("keygate_refresh_rotations_total")
                || l.starts_with("keygate_refresh_reused_total")
        })
        .filter_map(|l| l.split_whitespace().last()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Redis over TLS (`rediss://`, the CA from `caFile`): sessions land there, encrypted in transit
/// too; losing them costs a refresh as with plain Redis.
#[tokio::test]
async fn redis_over_tls() {
    let stack = Stack::start(Options {
        store: SessionStore::RedisTls,
        ..Options::default()
    })
    .await;
    let mut b = stack.browser();
    stack.sign_in(&mut b, "/tls").await;
    assert_eq!(
        stack.redis[0].keys("keygate:session:*").len(),
        1,
        "the session is in the TLS-only Redis"
    );
    let ready = stack
        .http
        .get(stack.auths[0].url("readyz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ready.contains("session store: ok"), "{ready}");
    assert_eq!(
        stack
            .auth_metric(0, "keygate_authenticator_store_failures_total")
            .await,
        0
    );
    stack.redis[0].flushall();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let r = b.get(&stack.url("/after-flush")).await;
    assert_eq!(r.status, 200, "{}", r.summary());
    assert_eq!(
        stack.redis[0].keys("keygate:session:*").len(),
        1,
        "stored again"
    );

    // Without caFile the system's CAs do not know the test CA: the certificate is refused, so
    // this replica never reaches Redis (its sessions would cost refreshes, never a leak).
    let port = free_port();
    let ca = format!(", caFile: \"{}\"", stack.ca.display());
    let yaml = stack.auth_yaml[0].replace(&ca, "").replace(
        &format!("127.0.0.1:{}\n", stack.auths[0].port),
        &format!("127.0.0.1:{port}\n"),
    );
    assert!(!yaml.contains("caFile"), "{yaml}");
    let untrusting = start_authenticator(&stack.dir, port, &yaml).await;
    let ready = stack
        .http
        .get(untrusting.url("readyz"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(ready.contains("session store: unavailable"), "{ready}");
}

/// 3. Two replicas, each with its own Redis (as in Deckhouse), behind nginx round-robin: one
///    browser session alternates between them past the point where the ID token must be
///    refreshed, then one replica is SIGKILLed and the other carries on.
#[tokio::test]
async fn two_replicas_with_their_own_redis_share_one_browser_session() {
    // idTokenTTL 66 s with refreshBefore 60 s: the ID token needs refreshing 6 s after login.
    let mut stack = Stack::start(Options {
        replicas: 2,
        id_token_ttl: "66s",
        ..Options::default()
    })
    .await;
    let mut b = stack.browser();
    let t0 = unix_now();
    stack.sign_in(&mut b, "/start").await;
    let refreshes_before = stack.metrics().await;

    let mut tokens = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut i = 0;
    while Instant::now() < deadline {
        let r = b.get(&stack.url(&format!("/tick?{i}"))).await;
        assert_eq!(
            r.status,
            200,
            "request {i} ({} s after login): {}\n{:#?}",
            unix_now() - t0,
            r.summary(),
            b.trace
        );
        let echo = r.json();
        assert_eq!(one(&echo, "x-auth-request-email"), JANE);
        let id = claims(one(&echo, "authorization").strip_prefix("Bearer ").unwrap());
        let left = id["exp"].as_i64().unwrap() - unix_now();
        // Never an ID token that expires within refreshBefore (60 s); 3 s of slack for the
        // whole-second clocks.
        assert!(
            left >= 57,
            "request {i}: the application got an ID token expiring in {left} s"
        );
        tokens.push((id["iat"].as_i64().unwrap(), left));
        i += 1;
        tokio::time::sleep(Duration::from_millis(400)).await;
    }
    let last = one(&b.get(&stack.url("/last")).await.json(), "authorization");
    stack.verified(&last).await;
    assert!(
        tokens.iter().any(|(iat, _)| *iat >= t0 + 6),
        "an ID token issued after the refresh point reached the application: {tokens:?}"
    );
    for r in &stack.redis {
        assert!(
            !r.keys("keygate:session:*").is_empty(),
            "both replicas served the session (each stored it in its own Redis)"
        );
    }
    eprintln!(
        "{} requests over two replicas; (iat - login, seconds left): {:?}",
        tokens.len(),
        tokens
            .iter()
            .map(|(iat, left)| (iat - t0, *left))
            .collect::<Vec<_>>()
    );
    let metrics = stack.metrics().await;
    for line in refreshes_before.lines().chain(metrics.lines()) {
        if line.starts_with("keygate_") && line.contains("refresh") {
            eprintln!("provider metric: {line}");
        }
    }

    // One replica dies hard: nginx moves to the other, the user notices nothing.
    stack.auths[0].proc.kill();
    for j in 0..6 {
        let r = b.get(&stack.url(&format!("/after-crash/{j}"))).await;
        assert_eq!(r.status, 200, "after SIGKILL of a replica: {}", r.summary());
        assert_eq!(one(&r.json(), "x-auth-request-email"), JANE);
    }
}

/// 4. Cookies that are not ours, or no longer: 401 from the auth endpoint, the sign-in redirect
///    through nginx, never a 500.
#[tokio::test]
async fn bad_cookies_get_401_and_the_sign_in_redirect_never_500() {
    let mut stack = Stack::start(Options::default()).await;
    let mut b = stack.browser();
    stack.sign_in(&mut b, "/private").await;
    let good = b.cookie(SESSION_COOKIE).unwrap();
    assert_eq!(
        stack.auth_check(0, Some(&good), "127.0.0.1").await.status(),
        200
    );

    let mid = good.len() / 2;
    let flipped = if &good[mid..=mid] == "A" { "B" } else { "A" };
    let variants = [
        (
            "tampered",
            format!("{}{flipped}{}", &good[..mid], &good[mid + 1..]),
        ),
        ("truncated", good[..mid].to_owned()),
        ("oversized", format!("{good}{}", "A".repeat(4200))),
        ("not base64", "!!!not-a-cookie!!!".to_owned()),
        ("empty", String::new()),
        ("huge garbage", "x".repeat(6000)),
    ];
    for (what, value) in &variants {
        let mut other = b.fresh();
        other.put_cookie(SESSION_COOKIE, value, "/");
        let r = other.get(&stack.url("/private?x=1")).await;
        assert!(
            is_sign_in_redirect(&r),
            "{what} cookie through nginx: {}",
            r.summary()
        );
        let direct = stack.auth_check(0, Some(value), "127.0.0.1").await;
        assert_eq!(
            direct.status(),
            401,
            "{what} cookie at /dex-authenticator/auth"
        );
    }

    // Callbacks that do not belong to a sign-in this browser started: refused, not a 500.
    let mut other = b.fresh();
    let r = other
        .get(&stack.url("/dex-authenticator/callback?code=abc&state=xyz"))
        .await;
    assert!(
        (400..500).contains(&r.status),
        "callback without a state cookie: {}",
        r.summary()
    );
    other.put_cookie(STATE_COOKIE, "garbage", "/dex-authenticator");
    let r = other
        .get(&stack.url("/dex-authenticator/callback?code=abc&state=xyz"))
        .await;
    assert!(
        (400..500).contains(&r.status),
        "callback with a forged state cookie: {}",
        r.summary()
    );
    let mut other = b.fresh();
    let r = other
        .get(&stack.url(&format!("/dex-authenticator/sign_in?rd={}", enc("/x"))))
        .await;
    assert_eq!(r.status, 302, "{}", r.summary());
    let r = other
        .get(&stack.url("/dex-authenticator/callback?code=abc&state=not-the-state"))
        .await;
    assert!(
        (400..500).contains(&r.status),
        "callback with another state: {}",
        r.summary()
    );

    // A cookie sealed with the previous cookieSecret (the secret was rotated, the authenticator
    // restarted): 401, not an error.
    stack.auths[0].stop();
    let yaml = stack.auth_yaml[0].replace(
        COOKIE_SECRET,
        "a-brand-new-cookie-secret-rotated-0123456789",
    );
    let port = stack.auths[0].port;
    stack.auths[0] = start_authenticator(&stack.dir, port, &yaml).await;
    let r = stack.auth_check(0, Some(&good), "127.0.0.1").await;
    assert_eq!(r.status(), 401, "a cookie from the old key");
    let r = b.get(&stack.url("/private")).await;
    assert!(
        is_sign_in_redirect(&r),
        "old-key cookie through nginx: {}",
        r.summary()
    );
    // And the restarted authenticator works with its new key.
    let mut fresh = b.fresh();
    stack.sign_in(&mut fresh, "/private").await;

    let errors = stack.nginx.as_ref().unwrap().error_log();
    assert!(
        !errors.contains("auth request unexpected status"),
        "the auth endpoint answered something other than 2xx/401/403: {errors}"
    );
    for a in &stack.auths {
        assert!(
            !a.proc.log_text().contains("panicked"),
            "{}",
            a.proc.log_text()
        );
    }
}

/// 5. Reverse-proxy mode, no nginx: sign-in redirect for browsers, 401 for the rest, identity
///    headers the client cannot forge, bodies streamed, WebSocket upgrades.
#[tokio::test]
async fn reverse_proxy_mode_authenticates_in_line() {
    let stack = Stack::start(Options {
        reverse_proxy: true,
        store: SessionStore::Memory,
        ..Options::default()
    })
    .await;
    let port = stack.auths[0].port;
    let mut b = stack.browser();

    // Anonymous: browsers go to sign in, API clients get 401, the upstream sees nothing.
    let r = b.get(&stack.url("/page?x=1")).await;
    assert!(is_sign_in_redirect(&r), "{}", r.summary());
    let rd = query_param(&r.location().unwrap(), "rd").unwrap();
    let rd = url::Url::parse(&stack.url("/")).unwrap().join(&rd).unwrap();
    assert_eq!(rd.as_str(), stack.url("/page?x=1"));
    let r = b
        .request(
            "GET",
            &stack.url("/api"),
            &[("accept", "application/json")],
            None,
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.summary());
    let r = b
        .request(
            "POST",
            &stack.url("/api"),
            &[("content-type", "application/json")],
            Some(b"{}".to_vec()),
        )
        .await;
    assert_eq!(r.status, 401, "{}", r.summary());
    assert_eq!(
        stack.app.requests().len(),
        0,
        "the upstream saw no anonymous request"
    );

    stack.sign_in(&mut b, "/page?x=1").await;

    // `/metrics` is the application's path here; the authenticator's own are on metricsListen.
    let r = b.get(&stack.url("/metrics")).await;
    assert_eq!(r.status, 200, "{}", r.summary());
    assert!(!r.body.contains("keygate_authenticator"), "{}", r.body);
    assert!(
        stack
            .app
            .requests()
            .iter()
            .any(|q| q.to_string().contains("/metrics"))
    );
    let own = stack
        .http
        .get(format!(
            "http://127.0.0.1:{}/metrics",
            stack.metrics_port.unwrap()
        ))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        own.contains("keygate_authenticator_sign_ins_total 1"),
        "{own}"
    );

    // Client-sent identity headers are replaced, not appended to.
    let r = b
        .request(
            "GET",
            &stack.url("/spoof"),
            &[
                ("x-auth-request-email", "evil@x"),
                ("x-auth-request-user", "evil"),
                ("x-auth-request-groups", "admins"),
                ("authorization", "Bearer evil"),
            ],
            None,
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.summary());
    let echo = r.json();
    assert_eq!(one(&echo, "x-auth-request-email"), JANE);
    assert_ne!(one(&echo, "x-auth-request-user"), "evil");
    assert!(!one(&echo, "x-auth-request-groups").contains("admins"));
    let id = stack.verified(&one(&echo, "authorization")).await;
    // One log line per proxied request: method, path without its query, status.
    let log = stack.auths[0].proc.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("request") && l.contains("/spoof") && l.contains("200")),
        "{log}"
    );
    assert!(!log.contains("x=1"), "no query strings in the log: {log}");
    assert_eq!(id["email"], JANE);

    // A 1 MiB POST body arrives whole.
    let body: Vec<u8> = (0..(1 << 20) + 7).map(|i: u32| (i % 251) as u8).collect();
    let r = b
        .request(
            "POST",
            &stack.url("/upload"),
            &[("content-type", "application/octet-stream")],
            Some(body.clone()),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.summary());
    let echo = r.json();
    assert_eq!(echo["method"], "POST");
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_fnv"], fnv1a(&body).to_string());
    assert_eq!(one(&echo, "x-auth-request-email"), JANE);

    // Streamed: the upstream gets the first half of a chunked upload while the client still
    // holds the second half back.
    let cookie = b.cookie_header(&stack.url("/stream")).unwrap();
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST /stream HTTP/1.1\r\nHost: {}\r\nCookie: {cookie}\r\nContent-Type: application/octet-stream\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        stack.domain
    )
    .unwrap();
    let before = stack
        .app
        .body_bytes
        .load(std::sync::atomic::Ordering::SeqCst);
    let chunks: Vec<&[u8]> = body.chunks(64 * 1024).collect();
    let half = chunks.len() / 2;
    for c in &chunks[..half] {
        write!(s, "{:x}\r\n", c.len()).unwrap();
        s.write_all(c).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.flush().unwrap();
    let wait = Instant::now();
    while stack
        .app
        .body_bytes
        .load(std::sync::atomic::Ordering::SeqCst)
        == before
        && wait.elapsed() < Duration::from_secs(5)
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let streamed = stack
        .app
        .body_bytes
        .load(std::sync::atomic::Ordering::SeqCst)
        - before;
    for c in &chunks[half..] {
        write!(s, "{:x}\r\n", c.len()).unwrap();
        s.write_all(c).unwrap();
        s.write_all(b"\r\n").unwrap();
    }
    s.write_all(b"0\r\n\r\n").unwrap();
    let (status, _, resp) = read_response(s);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&resp));
    let echo: Value = serde_json::from_slice(&resp).unwrap();
    assert_eq!(echo["body_len"], body.len());
    assert_eq!(echo["body_fnv"], fnv1a(&body).to_string());
    assert!(
        streamed > 0,
        "the upstream got no byte of the body before the client finished sending it: the proxy buffers instead of streaming"
    );

    // WebSocket: the upgrade goes through, then bytes flow both ways.
    let ws = |cookie: Option<&str>| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET /ws HTTP/1.1\r\nHost: {}\r\n{}Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            stack.domain,
            cookie.map(|c| format!("Cookie: {c}\r\n")).unwrap_or_default()
        )
        .unwrap();
        s
    };
    let s = ws(None);
    let (status, _, _) = read_response(s);
    assert_eq!(status, 401, "anonymous upgrade");
    let s = ws(Some(&cookie));
    let mut reader = BufReader::new(s);
    let (line, headers) = read_head(&mut reader).unwrap().unwrap();
    assert_eq!(parse_status(&line), 101, "{line} {headers:?}");
    assert!(
        headers
            .iter()
            .any(|(k, v)| k.eq_ignore_ascii_case("sec-websocket-accept")
                && v == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="),
        "{headers:?}"
    );
    // A masked text frame "hello", echoed back byte for byte by the upstream.
    let mask = [0x37u8, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81u8, 0x85];
    frame.extend(mask);
    frame.extend(b"hello".iter().enumerate().map(|(i, c)| c ^ mask[i % 4]));
    reader.get_mut().write_all(&frame).unwrap();
    let mut back = vec![0u8; frame.len()];
    reader.read_exact(&mut back).unwrap();
    assert_eq!(back, frame);
    let upgraded = stack
        .app
        .requests()
        .into_iter()
        .find(|r| r["target"] == "/ws")
        .expect("the upstream got the upgrade");
    assert_eq!(one(&upgraded, "x-auth-request-email"), JANE);
}

/// 6. `rd` must stay on the application's domain: no open redirect.
#[tokio::test]
async fn sign_in_refuses_open_redirects() {
    let stack = Stack::start(Options {
        store: SessionStore::Memory,
        ..Options::default()
    })
    .await;
    let mut b = stack.browser();
    let port = stack.domain.rsplit_once(':').unwrap().1.to_owned();
    let evil = [
        "https://evil.example.com/".to_owned(),
        "//evil.example.com".to_owned(),
        "//evil.example.com/%2F..".to_owned(),
        format!("https://127.0.0.1:{port}.evil.com/"),
        format!("https://127.0.0.1:{port}@evil.example.com/"),
        "/\\evil.example.com".to_owned(),
        "https:evil.example.com".to_owned(),
        "javascript:alert(1)".to_owned(),
        "http://evil.example.com/".to_owned(),
    ];
    for rd in &evil {
        let r = b
            .get(&stack.url(&format!("/dex-authenticator/sign_in?rd={}", enc(rd))))
            .await;
        assert_eq!(r.status, 400, "rd={rd}: {}", r.summary());
        assert!(r.raw_location().is_none(), "rd={rd}: no redirect at all");
    }
    // The refusal is the themed error page (spec.frontend), its stylesheet served alongside.
    let r = b
        .get(&stack.url("/dex-authenticator/sign_in?rd=https://evil.example.com/"))
        .await;
    assert!(
        r.body.contains("Invalid redirect") && r.body.contains("Acme Apps"),
        "{}",
        r.body
    );
    // minijinja escapes `/` in attributes (`&#x2f;`); browsers read it back as `/`.
    let link = r.body.replace("&#x2f;", "/");
    assert!(
        link.contains("href=\"/dex-authenticator/static/keygate.css\""),
        "{}",
        r.body
    );
    let css = b
        .get(&stack.url("/dex-authenticator/static/keygate.css"))
        .await;
    assert_eq!(css.status, 200, "{}", css.summary());
    assert!(css.body.contains(".kg-card"), "the stylesheet itself");
    for rd in ["/ok?x=1".to_owned(), stack.url("/deep/path")] {
        let r = b
            .get(&stack.url(&format!("/dex-authenticator/sign_in?rd={}", enc(&rd))))
            .await;
        assert_eq!(r.status, 302, "rd={rd}: {}", r.summary());
        assert!(
            r.location().unwrap().starts_with(&stack.issuer()),
            "{}",
            r.summary()
        );
    }
}
