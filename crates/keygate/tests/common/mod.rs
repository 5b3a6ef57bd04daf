//! The test harness: a real Keygate server on 127.0.0.1, port chosen by the OS, with a clock the
//! test moves, and an HTTP client that does not follow redirects (zero2prod's spawn_app).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use base64::Engine;
use keygate_oidc::{ManualClock, Provider};
use keygate_server::{AppState, Pages, build_provider, router};
use keygate_store::{Kind, Store};
use serde_json::Value;

/// "password" at bcrypt cost 10 (Dex's example hash).
pub const PASSWORD_HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";
pub const START: i64 = 1_800_000_000;

/// An HTTP view of a running provider: enough to drive every flow.
pub struct Http {
    pub issuer: String,
    pub http: reqwest::Client,
}

pub struct TestApp {
    pub web: Http,
    pub clock: ManualClock,
    pub provider: Arc<Provider>,
    pub dir: std::path::PathBuf,
    pub server: tokio::task::JoinHandle<()>,
}

/// Users jane (groups devs, everyone) and john (group ops); a confidential client `app` trusted by
/// `kubernetes`; a public client `cli`; a client `ops-only` restricted to group ops.
pub fn fixture_manifests() -> String {
    format!(
        r#"
---
apiVersion: deckhouse.io/v1
kind: User
metadata: {{name: jane}}
spec: {{email: jane@example.com, password: "{PASSWORD_HASH}"}}
---
apiVersion: deckhouse.io/v1
kind: User
metadata: {{name: john}}
spec: {{email: john@example.com, password: "{PASSWORD_HASH}"}}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {{name: devs}}
spec: {{name: devs, members: [{{kind: User, name: jane}}]}}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {{name: everyone}}
spec: {{name: everyone, members: [{{kind: Group, name: devs}}]}}
---
apiVersion: deckhouse.io/v1alpha1
kind: Group
metadata: {{name: ops}}
spec: {{name: ops, members: [{{kind: User, name: john}}]}}
---
apiVersion: deckhouse.io/v1
kind: DexClient
metadata:
  name: app
  namespace: web
  annotations: {{keygate.io/allow-access-to-kubernetes: "true"}}
spec: {{redirectURIs: ["https://app.example.com/callback"], secret: app-secret}}
---
apiVersion: deckhouse.io/v1
kind: DexClient
metadata: {{name: cli, namespace: tools}}
spec: {{public: true}}
---
apiVersion: deckhouse.io/v1
kind: DexClient
metadata: {{name: ops-only, namespace: web}}
spec: {{redirectURIs: ["https://ops.example.com/cb"], secret: ops-secret, allowedGroups: [ops, admins]}}
"#
    )
}

pub const APP: &str = "dex-client-app@web";
pub const APP_REDIRECT: &str = "https://app.example.com/callback";
pub const CLI: &str = "dex-client-cli@tools";
pub const OPS: &str = "dex-client-ops-only@web";

static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

pub fn temp_dir(tag: &str) -> std::path::PathBuf {
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    let dir = std::env::temp_dir().join(format!("keygate-test-{}-{tag}-{n}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

/// Starts a server with `extra_spec` lines appended to the KeygateConfig spec.
pub async fn spawn_app(extra_spec: &str) -> TestApp {
    spawn_app_with(
        &format!("  storage: {{type: memory}}\n{extra_spec}"),
        &fixture_manifests(),
        None,
    )
    .await
}

/// Starts a server from a spec fragment and manifests; `port` reuses an issuer (a "restart").
pub async fn spawn_app_with(spec: &str, manifests: &str, port: Option<u16>) -> TestApp {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.unwrap_or(0)))
        .await
        .unwrap();
    let port = listener.local_addr().unwrap().port();
    let issuer = format!("http://127.0.0.1:{port}/");
    let dir = temp_dir("app");
    let yaml = format!(
        "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: {issuer}\n  listen: 127.0.0.1:{port}\n{spec}{manifests}"
    );
    let path = dir.join("keygate.yaml");
    std::fs::write(&path, yaml).unwrap();
    let config = keygate_config::load(&path).unwrap();
    let clock = ManualClock::new(START);
    let built = build_provider(&config, Arc::new(clock.clone()))
        .await
        .unwrap();
    let provider = Arc::new(built.provider);
    let pages = Pages::new(
        &config.provider.frontend,
        &issuer,
        provider.endpoint("static/"),
    )
    .unwrap();
    let app = router(AppState::new(provider.clone(), Arc::new(pages)));
    let server = tokio::spawn(async move {
        axum_serve(listener, app).await;
    });
    TestApp {
        web: Http {
            issuer,
            http: http_client(),
        },
        clock,
        provider,
        dir,
        server,
    }
}

async fn axum_serve(listener: tokio::net::TcpListener, app: keygate_server::Router) {
    keygate_server::serve(listener, app, None, std::future::pending())
        .await
        .unwrap();
}

impl std::ops::Deref for TestApp {
    type Target = Http;
    fn deref(&self) -> &Http {
        &self.web
    }
}

impl TestApp {
    /// Stops serving and returns the port, so a new instance can take over the issuer.
    pub async fn stop(self) -> u16 {
        let port = url::Url::parse(&self.web.issuer).unwrap().port().unwrap();
        self.server.abort();
        let _ = self.server.await;
        port
    }

    pub fn store(&self) -> &Store {
        self.provider.store()
    }

    pub fn clock_now(&self) -> i64 {
        use keygate_oidc::Clock;
        self.clock.now()
    }

    /// Everything in storage, for "changed nothing" assertions.
    pub async fn snapshot(&self) -> Vec<(Kind, Vec<keygate_store::Versioned>)> {
        let mut out = Vec::new();
        for kind in [
            Kind::AuthRequest,
            Kind::AuthCode,
            Kind::RefreshToken,
            Kind::SigningKeys,
            Kind::Client,
        ] {
            out.push((kind, self.store().backend().list(kind, None).await.unwrap()));
        }
        out
    }

    pub fn location(resp: &reqwest::Response) -> String {
        Http::location(resp)
    }

    pub fn query_param(url: &str, name: &str) -> Option<String> {
        Http::query_param(url, name)
    }
}

impl Http {
    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.issuer, path.trim_start_matches('/'))
    }

    pub fn location(resp: &reqwest::Response) -> String {
        resp.headers()
            .get("location")
            .expect("a Location header")
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// Runs `/auth` with `query` up to the login form; returns the form's URL.
    pub async fn login_page(&self, query: &str) -> String {
        let r = self
            .http
            .get(self.url(&format!("auth?{query}")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "/auth must redirect to the only connector");
        let r = self.http.get(Self::location(&r)).send().await.unwrap();
        assert_eq!(r.status(), 302, "/auth/local must redirect to the form");
        Self::location(&r)
    }

    /// Logs in through the form and returns the final redirect (to the client, with code or error).
    pub async fn login(&self, query: &str, email: &str, password: &str) -> String {
        let form_url = self.login_page(query).await;
        let r = self
            .http
            .post(&form_url)
            .form(&[("login", email), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 303, "a good login redirects to the client");
        Self::location(&r)
    }

    pub fn query_param(url: &str, name: &str) -> Option<String> {
        url::Url::parse(url)
            .unwrap()
            .query_pairs()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.into_owned())
    }

    /// An authorization request's query (state `st4te`, nonce `n0nce`).
    pub fn auth_query(client: &str, redirect: &str, scope: &str, extra: &str) -> String {
        format!(
            "client_id={}&redirect_uri={}&response_type=code&scope={}&state=st4te&nonce=n0nce{extra}",
            enc(client),
            enc(redirect),
            enc(scope)
        )
    }

    /// The code in the redirect back to the application (checked: its state is `st4te`).
    pub fn code_in(back: &str) -> String {
        assert_eq!(Self::query_param(back, "state").as_deref(), Some("st4te"));
        Self::query_param(back, "code").expect("a code")
    }

    /// Logs jane in for `client` and returns the authorization code.
    pub async fn code_for(&self, client: &str, redirect: &str, scope: &str, extra: &str) -> String {
        let query = Self::auth_query(client, redirect, scope, extra);
        let back = self.login(&query, "jane@example.com", "password").await;
        Self::code_in(&back)
    }

    pub async fn token(&self, basic: Option<(&str, &str)>, form: &[(&str, &str)]) -> (u16, Value) {
        let mut req = self.http.post(self.url("token")).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let r = req.send().await.unwrap();
        let status = r.status().as_u16();
        let body = r.text().await.unwrap();
        (
            status,
            serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("token endpoint answered non-JSON: {status} {body}")),
        )
    }

    /// Code flow for jane with the app client: the token response.
    pub async fn app_tokens(&self, scope: &str) -> Value {
        let code = self.code_for(APP, APP_REDIRECT, scope, "").await;
        self.app_code_tokens(&code).await
    }

    /// The app client's code exchange (asserted: 200): the token response.
    pub async fn app_code_tokens(&self, code: &str) -> Value {
        let (status, body) = self
            .token(
                Some((APP, "app-secret")),
                &[
                    ("grant_type", "authorization_code"),
                    ("code", code),
                    ("redirect_uri", APP_REDIRECT),
                ],
            )
            .await;
        assert_eq!(status, 200, "{body}");
        body
    }
}

pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// The claims of a JWT, without verification (the tests verify signatures separately).
pub fn claims(jwt: &str) -> Value {
    let payload = jwt.split('.').nth(1).unwrap();
    serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap()
}
pub mod fakes;
pub mod ldap;
pub mod services;
