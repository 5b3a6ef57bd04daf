//! In-process fakes of the SaaS identity providers that cannot run here (GitHub, GitLab, Bitbucket
//! Cloud, Atlassian Crowd), written from their public API documentation: the same paths, parameters,
//! payload shapes, pagination and error answers (including GitHub's "200 with `error`" token
//! errors). Each is a small axum server on 127.0.0.1 (port 0) whose state the test reads and
//! changes (who is signed in at the provider, group memberships, an outage), with a log of the
//! requests it served. The "browser" at the provider consents at once: the authorize page redirects
//! straight back to the registered callback with a code and the same `state`.
//!
//! - GitHub (Enterprise layout: web at `<url>`, REST API at `<url>/api/v3`): `/login/oauth/authorize`,
//!   `/login/oauth/access_token` (client credentials as parameters, as documented), `/user`,
//!   `/user/emails`, `/user/orgs`, `/user/teams`, paginated with `per_page`/`page` (max 100) and
//!   `Link: <...>; rel="next"`.
//! - GitLab: `/oauth/authorize`, `/oauth/token` (authorization_code and refresh_token; refresh
//!   tokens rotate: the old one is revoked), `/api/v4/user`, `/oauth/userinfo` (with `groups`).
//! - Bitbucket Cloud (web at `<url>`, API at `<url>/2.0` and `<url>/1.0`): `/site/oauth2/authorize`,
//!   `/site/oauth2/access_token` (HTTP Basic), `/2.0/user`, `/2.0/user/emails`,
//!   `/2.0/user/permissions/workspaces` (`{values, next, pagelen}` pages), `/1.0/groups/{workspace}`
//!   (all groups for a workspace admin, the caller's own groups otherwise; members are identified by
//!   `uuid`/`account_id`/`nickname`: usernames left the API in 2019).
//! - Crowd (context path `/crowd`): `/rest/usermanagement/1/authentication`, `/user`,
//!   `/user/group/nested`, behind the application's HTTP Basic credentials.

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde_json::{Value, json};

// ---------------------------------------------------------------------------------------------
// The common part: a server with a switchable outage and a request log.

/// What every fake shares: its own URL, the registered callback, the log and the outage switch.
#[derive(Default)]
pub struct Base {
    pub url: String,
    /// The redirect URL registered with the OAuth application (Keygate's `<issuer>callback`).
    pub callback: Option<String>,
    /// `METHOD /path?query` of every request served, in order (token calls add the grant).
    pub log: Vec<String>,
    /// When set, every request whose path starts with the prefix is answered with this
    /// (prefix, status, content type, body).
    pub outage: Option<(String, u16, &'static str, String)>,
}

pub struct Shared<S> {
    pub base: Mutex<Base>,
    pub data: Mutex<S>,
}

type St<S> = State<Arc<Shared<S>>>;

pub struct Fake<S> {
    pub url: String,
    shared: Arc<Shared<S>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

async fn gate<S: Send + 'static>(State(s): St<S>, req: Request, next: Next) -> Response {
    let line = format!(
        "{} {}",
        req.method(),
        req.uri()
            .path_and_query()
            .map_or_else(|| req.uri().path().to_owned(), |p| p.as_str().to_owned())
    );
    let outage = {
        let mut base = s.base.lock().unwrap();
        base.log.push(line);
        base.outage
            .clone()
            .filter(|(prefix, ..)| req.uri().path().starts_with(prefix.as_str()))
    };
    if let Some((_, status, content_type, body)) = outage {
        return (
            StatusCode::from_u16(status).unwrap(),
            [(header::CONTENT_TYPE, content_type)],
            body,
        )
            .into_response();
    }
    next.run(req).await
}

impl<S: Send + 'static> Fake<S> {
    async fn start(data: S, routes: Router<Arc<Shared<S>>>) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let shared = Arc::new(Shared {
            base: Mutex::new(Base {
                url: url.clone(),
                ..Base::default()
            }),
            data: Mutex::new(data),
        });
        let app = routes
            .layer(middleware::from_fn_with_state(shared.clone(), gate::<S>))
            .with_state(shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            axum::serve(listener, app)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        Fake {
            url,
            shared,
            stop: Some(tx),
            task: Some(task),
        }
    }

    /// The fake's data, to read or change between steps.
    pub fn data(&self) -> MutexGuard<'_, S> {
        self.shared.data.lock().unwrap()
    }

    /// Registers Keygate's `<issuer>callback` as the application's redirect URL.
    pub fn set_callback(&self, url: &str) {
        self.shared.base.lock().unwrap().callback = Some(url.to_owned());
    }

    /// From now on every request gets this answer (an outage that still answers HTTP).
    pub fn fail_with(&self, status: u16, content_type: &'static str, body: &str) {
        self.fail_under("/", status, content_type, body);
    }

    /// Only the paths under `prefix` fail.
    pub fn fail_under(&self, prefix: &str, status: u16, content_type: &'static str, body: &str) {
        self.shared.base.lock().unwrap().outage =
            Some((prefix.to_owned(), status, content_type, body.to_owned()));
    }

    pub fn recover(&self) {
        self.shared.base.lock().unwrap().outage = None;
    }

    pub fn log(&self) -> Vec<String> {
        self.shared.base.lock().unwrap().log.clone()
    }

    pub fn clear_log(&self) {
        self.shared.base.lock().unwrap().log.clear();
    }

    /// Stops listening and closes every connection: the provider is down (connection refused).
    pub async fn stop(&mut self) {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl<S> Drop for Fake<S> {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// A random token of `len` characters from `[0-9a-zA-Z]`, after `prefix`.
pub fn random_token(prefix: &str, len: usize) -> String {
    const ALPHABET: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
    let mut out = String::from(prefix);
    let state = RandomState::new();
    let mut i = 0u64;
    while out.len() < prefix.len() + len {
        let mut n = state.hash_one(i);
        i += 1;
        for _ in 0..8 {
            out.push(ALPHABET[(n % 62) as usize] as char);
            n /= 62;
        }
    }
    out.truncate(prefix.len() + len);
    out
}

fn random_hex(len: usize) -> String {
    let state = RandomState::new();
    let mut out = String::new();
    let mut i = 0u64;
    while out.len() < len {
        out.push_str(&format!("{:016x}", state.hash_one(i)));
        i += 1;
    }
    out.truncate(len);
    out
}

/// Query string and form body, merged (a provider reading "parameters" reads both).
fn params(query: Option<&str>, body: &[u8]) -> HashMap<String, String> {
    let mut out: HashMap<String, String> = url::form_urlencoded::parse(body).into_owned().collect();
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or("").as_bytes()).into_owned() {
        out.entry(k).or_insert(v);
    }
    out
}

fn query_map(query: Option<&str>) -> HashMap<String, String> {
    params(query, b"")
}

fn basic_auth(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, b64) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64.trim())
        .ok()?;
    let raw = String::from_utf8(raw).ok()?;
    let (id, secret) = raw.split_once(':')?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={s}").as_bytes())
            .next()
            .map_or_else(|| s.to_owned(), |(_, v)| v.into_owned())
    };
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Basic.
    Some((decode(id), decode(secret)))
}

/// The token of `Authorization: Bearer <t>` (or GitHub's `token <t>`).
fn bearer(headers: &HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token"))
        .then(|| token.trim().to_owned())
}

fn found(location: &str) -> Response {
    (StatusCode::FOUND, [(header::LOCATION, location.to_owned())]).into_response()
}

fn with_query(url: &str, pairs: &[(&str, &str)]) -> String {
    let mut u = url::Url::parse(url).unwrap();
    {
        let mut q = u.query_pairs_mut();
        for (k, v) in pairs {
            q.append_pair(k, v);
        }
    }
    u.to_string()
}

fn json_response(
    status: StatusCode,
    headers: Vec<(&'static str, String)>,
    body: Value,
) -> Response {
    let mut resp = (status, axum::Json(body)).into_response();
    for (name, value) in headers {
        resp.headers_mut()
            .append(name, HeaderValue::from_str(&value).unwrap());
    }
    resp
}

fn html(status: StatusCode, body: &str) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        body.to_owned(),
    )
        .into_response()
}

/// A code handed to the browser at the authorize page, for the token exchange.
#[derive(Clone, Debug)]
pub struct Grant {
    pub user: String,
    pub redirect_uri: Option<String>,
    pub scopes: Vec<String>,
}

// ---------------------------------------------------------------------------------------------
// GitHub

pub mod github {
    use super::*;

    pub const CLIENT_ID: &str = "Iv1.8a61f9b3a7aba766";
    pub const CLIENT_SECRET: &str = "1f2e3d4c5b6a79881f2e3d4c5b6a79881f2e3d4c";

    #[derive(Clone, Debug)]
    pub struct Email {
        pub email: String,
        pub primary: bool,
        pub verified: bool,
        pub visibility: Option<&'static str>,
    }

    #[derive(Clone, Debug)]
    pub struct Team {
        pub id: u64,
        pub org: String,
        pub name: String,
        pub slug: String,
    }

    #[derive(Clone, Debug)]
    pub struct User {
        pub id: u64,
        pub login: String,
        pub name: Option<String>,
        /// The public profile email (`null` when the user keeps it private).
        pub public_email: Option<String>,
        pub emails: Vec<Email>,
        pub orgs: Vec<String>,
        pub teams: Vec<Team>,
    }

    impl User {
        /// A user with a private primary verified email and a verified secondary one.
        pub fn new(id: u64, login: &str, name: &str, email: &str) -> User {
            User {
                id,
                login: login.into(),
                name: Some(name.into()),
                public_email: None,
                emails: vec![
                    Email {
                        email: format!("{login}@old-employer.example"),
                        primary: false,
                        verified: true,
                        visibility: None,
                    },
                    Email {
                        email: email.into(),
                        primary: true,
                        verified: true,
                        visibility: Some("private"),
                    },
                    Email {
                        email: format!("{id}+{login}@users.noreply.github.com"),
                        primary: false,
                        verified: true,
                        visibility: None,
                    },
                ],
                orgs: Vec::new(),
                teams: Vec::new(),
            }
        }

        pub fn team(mut self, org: &str, name: &str, slug: &str) -> User {
            let id = 1_000 + self.teams.len() as u64 + 100 * self.id;
            if !self.orgs.iter().any(|o| o == org) {
                self.orgs.push(org.into());
            }
            self.teams.push(Team {
                id,
                org: org.into(),
                name: name.into(),
                slug: slug.into(),
            });
            self
        }
    }

    #[derive(Default)]
    pub struct Data {
        pub users: HashMap<String, User>,
        /// Who is signed in at github.com in the browser; `None`: the user clicks "Cancel".
        pub signed_in: Option<String>,
        pub codes: HashMap<String, Grant>,
        pub tokens: HashMap<String, Grant>,
    }

    pub type Github = Fake<Data>;

    pub async fn start() -> Github {
        let routes = Router::new()
            .route("/login/oauth/authorize", get(authorize))
            .route("/login/oauth/access_token", post(access_token))
            .route("/api/v3/user", get(user))
            .route("/api/v3/user/emails", get(emails))
            .route("/api/v3/user/orgs", get(orgs))
            .route("/api/v3/user/teams", get(teams));
        Fake::start(Data::default(), routes).await
    }

    impl Fake<Data> {
        pub fn add_user(&self, user: User) {
            self.data().users.insert(user.login.clone(), user);
        }

        pub fn sign_in(&self, login: Option<&str>) {
            self.data().signed_in = login.map(str::to_owned);
        }

        /// A `DexProvider` of type Github for this fake (GitHub Enterprise layout, `baseURL`).
        pub fn dex_provider(&self, name: &str, extra: &str) -> String {
            format!(
                r#"
---
apiVersion: deckhouse.io/v1
kind: DexProvider
metadata: {{name: {name}}}
spec:
  type: Github
  displayName: GitHub {name}
  github:
    clientID: {CLIENT_ID}
    clientSecret: {CLIENT_SECRET}
    baseURL: {url}
{extra}"#,
                url = self.url
            )
        }
    }

    const DOCS: &str = "https://docs.github.com/apps/managing-oauth-apps";

    /// The redirect URL's host and port must match the callback's, and its path be under it.
    fn redirect_ok(callback: &str, redirect: &str) -> bool {
        let (Ok(c), Ok(r)) = (url::Url::parse(callback), url::Url::parse(redirect)) else {
            return false;
        };
        c.host_str() == r.host_str()
            && c.port_or_known_default() == r.port_or_known_default()
            && r.path().starts_with(c.path())
    }

    async fn authorize(State(s): St<Data>, RawQuery(q): RawQuery) -> Response {
        let q = query_map(q.as_deref());
        let callback = s.base.lock().unwrap().callback.clone().unwrap();
        let mut d = s.data.lock().unwrap();
        if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
            return html(
                StatusCode::NOT_FOUND,
                "<html><body><h1>404</h1><p>This is not the web page you are looking for.</p></body></html>",
            );
        }
        let state = q.get("state").cloned().unwrap_or_default();
        let redirect = q.get("redirect_uri").cloned().unwrap_or(callback.clone());
        if !redirect_ok(&callback, &redirect) {
            return found(&with_query(
                &callback,
                &[
                    ("error", "redirect_uri_mismatch"),
                    (
                        "error_description",
                        "The redirect_uri MUST match the registered callback URL for this application.",
                    ),
                    (
                        "error_uri",
                        &format!(
                            "{DOCS}/troubleshooting-authorization-request-errors/#redirect-uri-mismatch"
                        ),
                    ),
                    ("state", &state),
                ],
            ));
        }
        let Some(login) = d.signed_in.clone() else {
            return found(&with_query(
                &redirect,
                &[
                    ("error", "access_denied"),
                    (
                        "error_description",
                        "The user has denied your application access.",
                    ),
                    (
                        "error_uri",
                        &format!(
                            "{DOCS}/troubleshooting-authorization-request-errors/#access-denied"
                        ),
                    ),
                    ("state", &state),
                ],
            ));
        };
        // Scopes are space-separated in the request; unknown scopes are dropped.
        let scopes: Vec<String> = q
            .get("scope")
            .map(|s| {
                s.split([' ', ','])
                    .filter(|s| !s.is_empty())
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        let code = random_hex(20);
        d.codes.insert(
            code.clone(),
            Grant {
                user: login,
                redirect_uri: q.get("redirect_uri").cloned(),
                scopes,
            },
        );
        found(&with_query(
            &redirect,
            &[("code", &code), ("state", &state)],
        ))
    }

    /// Token errors are 200 with `error`, `error_description` and `error_uri`.
    fn token_error(json: bool, error: &str, description: &str, anchor: &str) -> Response {
        let uri = format!("{DOCS}/troubleshooting-oauth-app-access-token-request-errors/#{anchor}");
        reply(
            json,
            &[
                ("error", error),
                ("error_description", description),
                ("error_uri", &uri),
            ],
        )
    }

    /// JSON when asked with `Accept: application/json`, otherwise GitHub's form encoding.
    fn reply(json: bool, pairs: &[(&str, &str)]) -> Response {
        if json {
            let map: serde_json::Map<String, Value> = pairs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), Value::from(*v)))
                .collect();
            axum::Json(Value::Object(map)).into_response()
        } else {
            let mut ser = url::form_urlencoded::Serializer::new(String::new());
            for (k, v) in pairs {
                ser.append_pair(k, v);
            }
            (
                [(
                    header::CONTENT_TYPE,
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                ser.finish(),
            )
                .into_response()
        }
    }

    async fn access_token(
        State(s): St<Data>,
        headers: HeaderMap,
        RawQuery(q): RawQuery,
        body: Bytes,
    ) -> Response {
        let p = params(q.as_deref(), &body);
        s.base.lock().unwrap().log.push(format!(
            "token grant={}",
            p.get("grant_type")
                .map_or("authorization_code", String::as_str)
        ));
        let json = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        let mut d = s.data.lock().unwrap();
        // Documented: client_id and client_secret are required parameters.
        if p.get("client_id").map(String::as_str) != Some(CLIENT_ID)
            || p.get("client_secret").map(String::as_str) != Some(CLIENT_SECRET)
        {
            return token_error(
                json,
                "incorrect_client_credentials",
                "The client_id and/or client_secret passed are incorrect.",
                "incorrect-client-credentials",
            );
        }
        let Some(grant) = p.get("code").and_then(|c| d.codes.remove(c)) else {
            return token_error(
                json,
                "bad_verification_code",
                "The code passed is incorrect or expired.",
                "bad-verification-code",
            );
        };
        if let (Some(asked), Some(sent)) = (&grant.redirect_uri, p.get("redirect_uri"))
            && asked != sent
        {
            return token_error(
                json,
                "redirect_uri_mismatch",
                "The redirect_uri MUST match the registered callback URL for this application.",
                "redirect-uri-mismatch",
            );
        }
        let token = random_token("gho_", 36);
        let mut scopes = grant.scopes.clone();
        scopes.sort();
        d.tokens.insert(token.clone(), grant);
        reply(
            json,
            &[
                ("access_token", &token),
                ("scope", &scopes.join(",")),
                ("token_type", "bearer"),
            ],
        )
    }

    /// The user and the token's scopes, or GitHub's 401.
    fn authenticate(
        s: &Shared<Data>,
        headers: &HeaderMap,
    ) -> Result<(User, Vec<String>, String), Box<Response>> {
        let base = s.base.lock().unwrap().url.clone();
        let d = s.data.lock().unwrap();
        let grant = bearer(headers).and_then(|t| d.tokens.get(&t).cloned());
        match grant.and_then(|g| d.users.get(&g.user).map(|u| (u.clone(), g.scopes))) {
            Some((u, scopes)) => Ok((u, scopes, base)),
            None => Err(Box::new(json_response(
                StatusCode::UNAUTHORIZED,
                vec![],
                json!({
                    "message": "Bad credentials",
                    "documentation_url": "https://docs.github.com/rest",
                    "status": "401"
                }),
            ))),
        }
    }

    fn api_headers(scopes: &[String], accepted: &str) -> Vec<(&'static str, String)> {
        let mut sorted = scopes.to_vec();
        sorted.sort();
        vec![
            ("x-oauth-scopes", sorted.join(", ")),
            ("x-accepted-oauth-scopes", accepted.to_owned()),
            ("x-github-media-type", "github.v3; format=json".into()),
            ("x-github-api-version-selected", "2022-11-28".into()),
            ("x-ratelimit-limit", "5000".into()),
            ("x-ratelimit-remaining", "4987".into()),
            ("x-ratelimit-used", "13".into()),
            ("x-ratelimit-resource", "core".into()),
        ]
    }

    /// `per_page` (default 30, max 100) and `page` (from 1), with the `Link` header.
    fn paginate(
        items: Vec<Value>,
        q: &HashMap<String, String>,
        base: &str,
        path: &str,
        mut headers: Vec<(&'static str, String)>,
    ) -> Response {
        let per_page = q
            .get("per_page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(30)
            .clamp(1, 100);
        let page = q
            .get("page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let last = items.len().div_ceil(per_page).max(1);
        let link = |p: usize, rel: &str| {
            format!("<{base}/api/v3{path}?per_page={per_page}&page={p}>; rel=\"{rel}\"")
        };
        let mut links = Vec::new();
        if page > 1 {
            links.push(link(page - 1, "prev"));
        }
        if page < last {
            links.push(link(page + 1, "next"));
            links.push(link(last, "last"));
        }
        if page > 1 {
            links.push(link(1, "first"));
        }
        if !links.is_empty() {
            headers.push(("link", links.join(", ")));
        }
        let slice: Vec<Value> = items
            .into_iter()
            .skip((page - 1) * per_page)
            .take(per_page)
            .collect();
        json_response(StatusCode::OK, headers, Value::Array(slice))
    }

    fn org_json(base: &str, login: &str) -> Value {
        let id = 9_000 + login.bytes().map(u64::from).sum::<u64>();
        json!({
            "login": login,
            "id": id,
            "node_id": format!("O_kgDOB{id}"),
            "url": format!("{base}/api/v3/orgs/{login}"),
            "repos_url": format!("{base}/api/v3/orgs/{login}/repos"),
            "events_url": format!("{base}/api/v3/orgs/{login}/events"),
            "hooks_url": format!("{base}/api/v3/orgs/{login}/hooks"),
            "issues_url": format!("{base}/api/v3/orgs/{login}/issues"),
            "members_url": format!("{base}/api/v3/orgs/{login}/members{{/member}}"),
            "public_members_url": format!("{base}/api/v3/orgs/{login}/public_members{{/member}}"),
            "avatar_url": format!("{base}/avatars/u/{id}?"),
            "description": format!("The {login} organization")
        })
    }

    async fn user(State(s): St<Data>, headers: HeaderMap) -> Response {
        let (u, scopes, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let login = &u.login;
        let mut body = json!({
                "login": login,
                "id": u.id,
                "node_id": format!("MDQ6VXNlcj{}", u.id),
                "avatar_url": format!("{base}/avatars/u/{}?v=4", u.id),
                "gravatar_id": "",
                "url": format!("{base}/api/v3/users/{login}"),
                "html_url": format!("{base}/{login}"),
                "followers_url": format!("{base}/api/v3/users/{login}/followers"),
                "following_url": format!("{base}/api/v3/users/{login}/following{{/other_user}}"),
                "gists_url": format!("{base}/api/v3/users/{login}/gists{{/gist_id}}"),
                "starred_url": format!("{base}/api/v3/users/{login}/starred{{/owner}}{{/repo}}"),
                "subscriptions_url": format!("{base}/api/v3/users/{login}/subscriptions"),
                "organizations_url": format!("{base}/api/v3/users/{login}/orgs"),
                "repos_url": format!("{base}/api/v3/users/{login}/repos"),
                "events_url": format!("{base}/api/v3/users/{login}/events{{/privacy}}"),
                "received_events_url": format!("{base}/api/v3/users/{login}/received_events"),
                "type": "User"
        });
        let more = json!({
                "user_view_type": "private",
                "site_admin": false,
                "name": u.name,
                "company": "@acme",
                "blog": "",
                "location": "Lisbon",
                "email": u.public_email,
                "hireable": null,
                "bio": null,
                "twitter_username": null,
                "notification_email": u.public_email,
                "public_repos": 8,
                "public_gists": 1,
                "followers": 20,
                "following": 0,
                "created_at": "2012-03-06T18:23:44Z",
                "updated_at": "2025-01-12T09:10:11Z",
                "private_gists": 0,
                "total_private_repos": 3,
                "owned_private_repos": 3,
                "disk_usage": 10_240,
                "collaborators": 0,
                "two_factor_authentication": true,
                "plan": {"name": "pro", "space": 976_562_499, "collaborators": 0, "private_repos": 9999}
        });
        body.as_object_mut()
            .unwrap()
            .extend(more.as_object().unwrap().clone());
        json_response(StatusCode::OK, api_headers(&scopes, ""), body)
    }

    async fn emails(State(s): St<Data>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
        let (u, scopes, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        if !scopes.iter().any(|s| s == "user:email" || s == "user") {
            return json_response(
                StatusCode::NOT_FOUND,
                api_headers(&scopes, "user, user:email"),
                json!({
                    "message": "Not Found",
                    "documentation_url": "https://docs.github.com/rest/users/emails#list-email-addresses-for-the-authenticated-user",
                    "status": "404"
                }),
            );
        }
        let items = u
            .emails
            .iter()
            .map(|e| {
                json!({
                    "email": e.email,
                    "primary": e.primary,
                    "verified": e.verified,
                    "visibility": e.visibility
                })
            })
            .collect();
        paginate(
            items,
            &query_map(q.as_deref()),
            &base,
            "/user/emails",
            api_headers(&scopes, "user, user:email"),
        )
    }

    async fn orgs(State(s): St<Data>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
        let (u, scopes, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        // Memberships are private: without read:org (or user) the list is empty.
        let items = if scopes
            .iter()
            .any(|s| s == "read:org" || s == "user" || s == "admin:org")
        {
            u.orgs.iter().map(|o| org_json(&base, o)).collect()
        } else {
            Vec::new()
        };
        paginate(
            items,
            &query_map(q.as_deref()),
            &base,
            "/user/orgs",
            api_headers(&scopes, "admin:org, read:org, repo, user, write:org"),
        )
    }

    async fn teams(State(s): St<Data>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
        let (u, scopes, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        if !scopes
            .iter()
            .any(|s| s == "read:org" || s == "user" || s == "repo")
        {
            return json_response(
                StatusCode::FORBIDDEN,
                api_headers(&scopes, "read:org, repo, user"),
                json!({
                    "message": "You need at least read:org scope or user scope to list your teams.",
                    "documentation_url": "https://docs.github.com/rest/teams/teams#list-teams-for-the-authenticated-user",
                    "status": "403"
                }),
            );
        }
        let items = u
            .teams
            .iter()
            .map(|t| {
                json!({
                    "id": t.id,
                    "node_id": format!("T_kwDOB{}", t.id),
                    "url": format!("{base}/api/v3/teams/{}", t.id),
                    "html_url": format!("{base}/orgs/{}/teams/{}", t.org, t.slug),
                    "name": t.name,
                    "slug": t.slug,
                    "description": format!("{} of {}", t.name, t.org),
                    "privacy": "closed",
                    "notification_setting": "notifications_enabled",
                    "permission": "pull",
                    "members_url": format!("{base}/api/v3/teams/{}/members{{/member}}", t.id),
                    "repositories_url": format!("{base}/api/v3/teams/{}/repos", t.id),
                    "parent": null,
                    "members_count": 3,
                    "repos_count": 10,
                    "created_at": "2017-07-14T16:53:42Z",
                    "updated_at": "2024-08-17T12:37:15Z",
                    "organization": org_json(&base, &t.org)
                })
            })
            .collect();
        paginate(
            items,
            &query_map(q.as_deref()),
            &base,
            "/user/teams",
            api_headers(&scopes, "read:org, repo, user"),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// GitLab

pub mod gitlab {
    use super::*;

    pub const CLIENT_ID: &str = "5b8e1f0c3a7d49e6b2c4f8a1d3e5c7b9a0f2e4d6c8b1a3f5e7d9c0b2a4f6e8d1";
    pub const CLIENT_SECRET: &str =
        "gloas-0a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f9";
    /// The scopes the application is registered with.
    const APP_SCOPES: &[&str] = &["read_user", "openid", "profile", "email"];

    #[derive(Clone, Debug)]
    pub struct User {
        pub id: u64,
        pub username: String,
        pub name: String,
        pub email: String,
        /// Full paths of the groups the user belongs to (`platform`, `platform/k8s`).
        pub groups: Vec<String>,
    }

    #[derive(Default)]
    pub struct Data {
        pub users: HashMap<String, User>,
        pub signed_in: Option<String>,
        pub codes: HashMap<String, Grant>,
        pub access_tokens: HashMap<String, Grant>,
        pub refresh_tokens: HashMap<String, Grant>,
        /// Refresh tokens used (and so revoked), in order.
        pub used_refresh_tokens: Vec<String>,
        /// PKCE challenges (S256) of the codes issued with one.
        pub challenges: HashMap<String, String>,
    }

    pub type Gitlab = Fake<Data>;

    pub async fn start() -> Gitlab {
        let routes = Router::new()
            .route("/oauth/authorize", get(authorize))
            .route("/oauth/token", post(token))
            .route("/oauth/userinfo", get(userinfo).post(userinfo))
            .route("/api/v4/user", get(user));
        Fake::start(Data::default(), routes).await
    }

    impl Fake<Data> {
        pub fn add_user(&self, user: User) {
            self.data().users.insert(user.username.clone(), user);
        }

        pub fn sign_in(&self, username: Option<&str>) {
            self.data().signed_in = username.map(str::to_owned);
        }

        pub fn set_groups(&self, username: &str, groups: &[&str]) {
            self.data().users.get_mut(username).unwrap().groups =
                groups.iter().map(|g| (*g).to_owned()).collect();
        }

        pub fn dex_provider(&self, name: &str, extra: &str) -> String {
            format!(
                r#"
---
apiVersion: deckhouse.io/v1
kind: DexProvider
metadata: {{name: {name}}}
spec:
  type: Gitlab
  displayName: GitLab {name}
  gitlab:
    clientID: {CLIENT_ID}
    clientSecret: {CLIENT_SECRET}
    baseURL: {url}
{extra}"#,
                url = self.url
            )
        }
    }

    fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
        json_response(
            status,
            vec![("cache-control", "no-store".into())],
            json!({"error": error, "error_description": description}),
        )
    }

    async fn authorize(State(s): St<Data>, RawQuery(q): RawQuery) -> Response {
        let q = query_map(q.as_deref());
        let callback = s.base.lock().unwrap().callback.clone().unwrap();
        let mut d = s.data.lock().unwrap();
        // Doorkeeper shows these on its own page: no redirect to an unverified URI.
        if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
            return html(
                StatusCode::UNAUTHORIZED,
                "<h1>An error has occurred</h1><p>Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.</p>",
            );
        }
        if q.get("redirect_uri") != Some(&callback) {
            return html(
                StatusCode::BAD_REQUEST,
                "<h1>An error has occurred</h1><p>The redirect URI included is not valid.</p>",
            );
        }
        let state = q.get("state").cloned().unwrap_or_default();
        let error = |e: &str, desc: &str| {
            found(&with_query(
                &callback,
                &[("error", e), ("error_description", desc), ("state", &state)],
            ))
        };
        if q.get("response_type").map(String::as_str) != Some("code") {
            return error(
                "unsupported_response_type",
                "The authorization server does not support this response type.",
            );
        }
        let scopes: Vec<String> = q
            .get("scope")
            .map_or("read_user", String::as_str)
            .split(' ')
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .collect();
        if scopes.iter().any(|s| !APP_SCOPES.contains(&s.as_str())) {
            return error(
                "invalid_scope",
                "The requested scope is invalid, unknown, or malformed.",
            );
        }
        let Some(user) = d.signed_in.clone() else {
            return error(
                "access_denied",
                "The resource owner or authorization server denied the request.",
            );
        };
        let code = random_hex(64);
        // Doorkeeper's PKCE: S256 or plain; the challenge is checked at the code exchange.
        if let Some(challenge) = q.get("code_challenge") {
            if q.get("code_challenge_method").map(String::as_str) != Some("S256") {
                return error("invalid_request", "Code challenge method must be S256.");
            }
            d.challenges.insert(code.clone(), challenge.clone());
        }
        d.codes.insert(
            code.clone(),
            Grant {
                user,
                redirect_uri: Some(callback.clone()),
                scopes,
            },
        );
        found(&with_query(
            &callback,
            &[("code", &code), ("state", &state)],
        ))
    }

    async fn token(
        State(s): St<Data>,
        headers: HeaderMap,
        RawQuery(q): RawQuery,
        body: Bytes,
    ) -> Response {
        let p = params(q.as_deref(), &body);
        let grant_type = p.get("grant_type").cloned().unwrap_or_default();
        s.base
            .lock()
            .unwrap()
            .log
            .push(format!("token grant={grant_type}"));
        let mut d = s.data.lock().unwrap();
        // Doorkeeper takes the client from HTTP Basic or from the parameters.
        let client = basic_auth(&headers)
            .or_else(|| Some((p.get("client_id")?.clone(), p.get("client_secret")?.clone())));
        if client != Some((CLIENT_ID.into(), CLIENT_SECRET.into())) {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Client authentication failed due to unknown client, no client authentication included, or unsupported authentication method.",
            );
        }
        let invalid_grant = || {
            oauth_error(
                StatusCode::BAD_REQUEST,
                "invalid_grant",
                "The provided authorization grant is invalid, expired, revoked, does not match the redirection URI used in the authorization request, or was issued to another client.",
            )
        };
        let grant = match grant_type.as_str() {
            "authorization_code" => {
                let Some(g) = p.get("code").and_then(|c| d.codes.remove(c)) else {
                    return invalid_grant();
                };
                if p.get("redirect_uri") != g.redirect_uri.as_ref() {
                    return invalid_grant();
                }
                let challenge = p.get("code").and_then(|c| d.challenges.remove(c));
                if let Some(challenge) = challenge
                    && p.get("code_verifier").map(|v| keygate_oidc::pkce_s256(v)) != Some(challenge)
                {
                    return invalid_grant();
                }
                g
            }
            "refresh_token" => {
                let Some(rt) = p.get("refresh_token") else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_request",
                        "Missing required parameter: refresh_token.",
                    );
                };
                // Rotation: the refresh token works once; its access tokens are revoked too.
                let Some(g) = d.refresh_tokens.remove(rt) else {
                    return invalid_grant();
                };
                d.used_refresh_tokens.push(rt.clone());
                let user = g.user.clone();
                d.access_tokens.retain(|_, a| a.user != user);
                g
            }
            _ => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    "The authorization grant type is not supported by the authorization server.",
                );
            }
        };
        let access = random_hex(64);
        let refresh = random_hex(64);
        d.access_tokens.insert(access.clone(), grant.clone());
        d.refresh_tokens.insert(refresh.clone(), grant.clone());
        let created_at = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let mut body = json!({
            "access_token": access,
            "token_type": "Bearer",
            "expires_in": 7200,
            "refresh_token": refresh,
            "scope": grant.scopes.join(" "),
            "created_at": created_at
        });
        if grant.scopes.iter().any(|s| s == "openid") {
            // Opaque to Keygate, which reads the user from the API; shaped like GitLab's.
            let b64 =
                |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
            let header = json!({"typ": "JWT", "kid": "fake-gitlab-key", "alg": "RS256"});
            let claims = json!({"iss": s.base.lock().unwrap().url.clone(), "sub": grant.user, "aud": CLIENT_ID, "exp": created_at + 120, "iat": created_at});
            body["id_token"] =
                Value::from(format!("{}.{}.c2lnbmF0dXJl", b64(&header), b64(&claims)));
        }
        json_response(
            StatusCode::OK,
            vec![("cache-control", "no-store".into())],
            body,
        )
    }

    fn authenticate(
        s: &Shared<Data>,
        headers: &HeaderMap,
    ) -> Result<(User, Vec<String>, String), Box<Response>> {
        let base = s.base.lock().unwrap().url.clone();
        let d = s.data.lock().unwrap();
        let grant = bearer(headers).and_then(|t| d.access_tokens.get(&t).cloned());
        match grant.and_then(|g| d.users.get(&g.user).map(|u| (u.clone(), g.scopes))) {
            Some((u, scopes)) => Ok((u, scopes, base)),
            None => Err(Box::new(json_response(
                StatusCode::UNAUTHORIZED,
                vec![(
                    "www-authenticate",
                    "Bearer realm=\"Protected by OAuth 2.0\", error=\"invalid_token\", error_description=\"Token is expired. You can either do re-authorization or token refresh.\"".into(),
                )],
                json!({"message": "401 Unauthorized"}),
            ))),
        }
    }

    fn insufficient_scope(needed: &str) -> Response {
        json_response(
            StatusCode::FORBIDDEN,
            vec![],
            json!({
                "error": "insufficient_scope",
                "error_description": "The request requires higher privileges than provided by the access token.",
                "scope": needed
            }),
        )
    }

    async fn user(State(s): St<Data>, headers: HeaderMap) -> Response {
        let (u, scopes, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        if !scopes.iter().any(|s| s == "read_user" || s == "api") {
            return insufficient_scope("api read_user");
        }
        json_response(
            StatusCode::OK,
            vec![],
            json!({
                "id": u.id,
                "username": u.username,
                "name": u.name,
                "state": "active",
                "locked": false,
                "avatar_url": format!("{base}/uploads/-/system/user/avatar/{}/avatar.png", u.id),
                "web_url": format!("{base}/{}", u.username),
                "created_at": "2019-03-11T10:21:09.554Z",
                "bio": "",
                "location": "",
                "public_email": null,
                "skype": "",
                "linkedin": "",
                "twitter": "",
                "discord": "",
                "website_url": "",
                "organization": "Acme",
                "job_title": "Platform engineer",
                "pronouns": null,
                "bot": false,
                "work_information": null,
                "local_time": null,
                "last_sign_in_at": "2025-01-10T08:00:12.101Z",
                "confirmed_at": "2019-03-11T10:21:09.401Z",
                "last_activity_on": "2025-01-12",
                "email": u.email,
                "theme_id": 1,
                "color_scheme_id": 1,
                "projects_limit": 100_000,
                "current_sign_in_at": "2025-01-12T07:59:58.210Z",
                "identities": [],
                "can_create_group": true,
                "can_create_project": true,
                "two_factor_enabled": true,
                "external": false,
                "private_profile": false,
                "commit_email": u.email,
                "shared_runners_minutes_limit": null,
                "extra_shared_runners_minutes_limit": null,
                "scim_identities": []
            }),
        )
    }

    async fn userinfo(State(s): St<Data>, headers: HeaderMap) -> Response {
        let (u, scopes, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        if !scopes.iter().any(|s| s == "openid") {
            return insufficient_scope("openid");
        }
        json_response(
            StatusCode::OK,
            vec![],
            json!({
                "sub": u.id.to_string(),
                "sub_legacy": format!("{:064x}", u.id),
                "name": u.name,
                "nickname": u.username,
                "preferred_username": u.username,
                "email": u.email,
                "email_verified": true,
                "website": "",
                "profile": format!("{base}/{}", u.username),
                "picture": format!("{base}/uploads/-/system/user/avatar/{}/avatar.png", u.id),
                "groups": u.groups,
                "https://gitlab.org/claims/groups/owner": [],
                "https://gitlab.org/claims/groups/maintainer": u.groups.first().cloned().into_iter().collect::<Vec<_>>(),
                "https://gitlab.org/claims/groups/developer": u.groups.iter().skip(1).cloned().collect::<Vec<_>>()
            }),
        )
    }
}

// ---------------------------------------------------------------------------------------------
// Bitbucket Cloud

pub mod bitbucket {
    use super::*;

    pub const CLIENT_ID: &str = "Zq8wXkPr3mT7vB2nJd";
    pub const CLIENT_SECRET: &str = "h4Fv9sLq2Xc7Rb1Wm6Kt3Ny8Pz5Gd0Ja";

    #[derive(Clone, Debug)]
    pub struct User {
        pub uuid: String,
        pub account_id: String,
        pub username: String,
        pub nickname: String,
        pub display_name: String,
        /// `(email, is_primary, is_confirmed)`.
        pub emails: Vec<(String, bool, bool)>,
    }

    impl User {
        pub fn new(n: u32, username: &str, display_name: &str, email: &str) -> User {
            User {
                uuid: format!("{{{n:08x}-8f3c-4bd5-9a2e-6f1d0c4b7e21}}"),
                account_id: format!("557058:{n:08x}-1b2c-4d5e-8f90-a1b2c3d4e5f6"),
                username: username.into(),
                nickname: username.into(),
                display_name: display_name.into(),
                emails: vec![
                    (format!("{username}@personal.example"), false, true),
                    (email.into(), true, true),
                    (format!("{username}@typo.example"), false, false),
                ],
            }
        }
    }

    #[derive(Clone, Debug)]
    pub struct Group {
        pub name: String,
        pub slug: String,
        pub permission: &'static str,
        /// Usernames of the members.
        pub members: Vec<String>,
    }

    #[derive(Clone, Debug)]
    pub struct Workspace {
        pub slug: String,
        pub name: String,
        pub uuid: String,
        /// username → `owner`, `collaborator` or `member`.
        pub members: BTreeMap<String, &'static str>,
        pub groups: Vec<Group>,
    }

    pub struct Data {
        pub users: HashMap<String, User>,
        pub workspaces: Vec<Workspace>,
        pub signed_in: Option<String>,
        pub codes: HashMap<String, Grant>,
        pub access_tokens: HashMap<String, Grant>,
        pub refresh_tokens: HashMap<String, Grant>,
        /// The most a page holds, whatever `pagelen` asks (Bitbucket caps it per endpoint;
        /// clients must follow `next`).
        pub max_pagelen: usize,
    }

    pub type Bitbucket = Fake<Data>;

    pub async fn start() -> Bitbucket {
        let routes = Router::new()
            .route("/site/oauth2/authorize", get(authorize))
            .route("/site/oauth2/access_token", post(access_token))
            .route("/2.0/user", get(user))
            .route("/2.0/user/emails", get(emails))
            .route("/2.0/user/permissions/workspaces", get(workspaces))
            .route("/1.0/groups/{workspace}", get(groups));
        let data = Data {
            users: HashMap::new(),
            workspaces: Vec::new(),
            signed_in: None,
            codes: HashMap::new(),
            access_tokens: HashMap::new(),
            refresh_tokens: HashMap::new(),
            max_pagelen: 100,
        };
        Fake::start(data, routes).await
    }

    impl Fake<Data> {
        pub fn add_user(&self, user: User) {
            self.data().users.insert(user.username.clone(), user);
        }

        pub fn sign_in(&self, username: Option<&str>) {
            self.data().signed_in = username.map(str::to_owned);
        }

        pub fn add_workspace(&self, slug: &str, name: &str, members: &[(&str, &'static str)]) {
            let n = self.data().workspaces.len();
            self.data().workspaces.push(Workspace {
                slug: slug.into(),
                name: name.into(),
                uuid: format!("{{a1b2c3d4-0000-4000-8000-{n:012x}}}"),
                members: members.iter().map(|(u, p)| ((*u).to_owned(), *p)).collect(),
                groups: Vec::new(),
            });
        }

        pub fn add_group(
            &self,
            workspace: &str,
            name: &str,
            slug: &str,
            permission: &'static str,
            members: &[&str],
        ) {
            let mut d = self.data();
            let w = d
                .workspaces
                .iter_mut()
                .find(|w| w.slug == workspace)
                .unwrap();
            w.groups.push(Group {
                name: name.into(),
                slug: slug.into(),
                permission,
                members: members.iter().map(|m| (*m).to_owned()).collect(),
            });
        }

        pub fn dex_provider(&self, name: &str, extra: &str) -> String {
            format!(
                r#"
---
apiVersion: deckhouse.io/v1
kind: DexProvider
metadata: {{name: {name}}}
spec:
  type: BitbucketCloud
  displayName: Bitbucket {name}
  bitbucketCloud:
    clientID: {CLIENT_ID}
    clientSecret: {CLIENT_SECRET}
    baseURL: {url}
    apiURL: {url}/2.0
{extra}"#,
                url = self.url
            )
        }
    }

    /// Bitbucket's error body: `{"type": "error", "error": {"message": ...}}`.
    fn api_error(status: StatusCode, message: &str) -> Response {
        json_response(
            status,
            vec![],
            json!({"type": "error", "error": {"message": message}}),
        )
    }

    fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
        json_response(
            status,
            vec![],
            json!({"error_description": description, "error": error}),
        )
    }

    async fn authorize(State(s): St<Data>, RawQuery(q): RawQuery) -> Response {
        let q = query_map(q.as_deref());
        let callback = s.base.lock().unwrap().callback.clone().unwrap();
        let mut d = s.data.lock().unwrap();
        if q.get("client_id").map(String::as_str) != Some(CLIENT_ID) {
            return html(
                StatusCode::BAD_REQUEST,
                "<h1>Invalid client_id</h1><p>The OAuth consumer was not found.</p>",
            );
        }
        // The consumer's callback URL; a redirect_uri, when given, must be under it.
        let redirect = q.get("redirect_uri").cloned().unwrap_or(callback.clone());
        if !redirect.starts_with(&callback) {
            return html(
                StatusCode::BAD_REQUEST,
                "<h1>Invalid redirect_uri</h1><p>This redirect URI does not match the consumer's callback URL.</p>",
            );
        }
        let state = q.get("state").cloned().unwrap_or_default();
        if q.get("response_type").map(String::as_str) != Some("code") {
            return found(&with_query(
                &redirect,
                &[
                    ("error", "unsupported_response_type"),
                    ("error_description", "Unsupported response type"),
                    ("state", &state),
                ],
            ));
        }
        let Some(user) = d.signed_in.clone() else {
            return found(&with_query(
                &redirect,
                &[
                    ("error", "access_denied"),
                    ("error_description", "The user denied access"),
                    ("state", &state),
                ],
            ));
        };
        let code = random_token("", 18);
        // Scopes come from the consumer's permissions, not from the request.
        d.codes.insert(
            code.clone(),
            Grant {
                user,
                redirect_uri: q.get("redirect_uri").cloned(),
                scopes: vec!["account".into(), "email".into(), "team".into()],
            },
        );
        found(&with_query(
            &redirect,
            &[("code", &code), ("state", &state)],
        ))
    }

    async fn access_token(
        State(s): St<Data>,
        headers: HeaderMap,
        RawQuery(q): RawQuery,
        body: Bytes,
    ) -> Response {
        let p = params(q.as_deref(), &body);
        let grant_type = p.get("grant_type").cloned().unwrap_or_default();
        s.base
            .lock()
            .unwrap()
            .log
            .push(format!("token grant={grant_type}"));
        let mut d = s.data.lock().unwrap();
        if basic_auth(&headers) != Some((CLIENT_ID.into(), CLIENT_SECRET.into())) {
            return oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "Invalid OAuth client credentials",
            );
        }
        let (grant, state) = match grant_type.as_str() {
            "authorization_code" => {
                let Some(g) = p.get("code").and_then(|c| d.codes.remove(c)) else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "The specified code is not valid.",
                    );
                };
                if g.redirect_uri.is_some() && p.get("redirect_uri") != g.redirect_uri.as_ref() {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Redirect URI mismatch.",
                    );
                }
                (g, "authorization_code")
            }
            "refresh_token" => {
                let Some(g) = p
                    .get("refresh_token")
                    .and_then(|t| d.refresh_tokens.get(t).cloned())
                else {
                    return oauth_error(
                        StatusCode::BAD_REQUEST,
                        "invalid_grant",
                        "Invalid refresh_token",
                    );
                };
                (g, "refresh_token")
            }
            other => {
                return oauth_error(
                    StatusCode::BAD_REQUEST,
                    "unsupported_grant_type",
                    &format!("Unsupported grant type: {other}"),
                );
            }
        };
        let access = random_token("", 120);
        d.access_tokens.insert(access.clone(), grant.clone());
        // Bitbucket's refresh tokens do not rotate.
        let refresh = match grant_type.as_str() {
            "refresh_token" => p.get("refresh_token").cloned().unwrap(),
            _ => {
                let r = random_token("", 24);
                d.refresh_tokens.insert(r.clone(), grant.clone());
                r
            }
        };
        json_response(
            StatusCode::OK,
            vec![],
            json!({
                "access_token": access,
                "scopes": grant.scopes.join(" "),
                "token_type": "bearer",
                "expires_in": 7200,
                "state": state,
                "refresh_token": refresh
            }),
        )
    }

    fn authenticate(
        s: &Shared<Data>,
        headers: &HeaderMap,
    ) -> Result<(User, String), Box<Response>> {
        let base = s.base.lock().unwrap().url.clone();
        let d = s.data.lock().unwrap();
        let grant = bearer(headers).and_then(|t| d.access_tokens.get(&t).cloned());
        match grant.and_then(|g| d.users.get(&g.user).cloned()) {
            Some(u) => Ok((u, base)),
            None => Err(Box::new(api_error(
                StatusCode::UNAUTHORIZED,
                "Access token expired or invalid.",
            ))),
        }
    }

    fn user_summary(base: &str, u: &User) -> Value {
        json!({
            "display_name": u.display_name,
            "links": {
                "self": {"href": format!("{base}/2.0/users/{}", enc(&u.uuid))},
                "avatar": {"href": format!("{base}/account/{}/avatar", u.account_id)},
                "html": {"href": format!("{base}/{}/", enc(&u.uuid))}
            },
            "type": "user",
            "uuid": u.uuid,
            "account_id": u.account_id,
            "nickname": u.nickname
        })
    }

    fn enc(s: &str) -> String {
        url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
    }

    /// A `{pagelen, values, page, size, next}` page of `items`.
    fn page(
        items: Vec<Value>,
        q: &HashMap<String, String>,
        base: &str,
        path: &str,
        max: usize,
    ) -> Response {
        let pagelen = q
            .get("pagelen")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(10)
            .clamp(1, max);
        let page = q
            .get("page")
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(1)
            .max(1);
        let size = items.len();
        let values: Vec<Value> = items
            .into_iter()
            .skip((page - 1) * pagelen)
            .take(pagelen)
            .collect();
        let mut body = json!({"pagelen": pagelen, "values": values, "page": page, "size": size});
        if page * pagelen < size {
            body["next"] = Value::from(format!(
                "{base}/2.0{path}?pagelen={pagelen}&page={}",
                page + 1
            ));
        }
        if page > 1 {
            body["previous"] = Value::from(format!(
                "{base}/2.0{path}?pagelen={pagelen}&page={}",
                page - 1
            ));
        }
        json_response(StatusCode::OK, vec![], body)
    }

    async fn user(State(s): St<Data>, headers: HeaderMap) -> Response {
        let (u, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let mut body = user_summary(&base, &u);
        let o = body.as_object_mut().unwrap();
        o.insert(
            "created_on".into(),
            Value::from("2016-02-03T09:44:01.123456+00:00"),
        );
        o.insert("has_2fa_enabled".into(), Value::Null);
        o.insert("username".into(), Value::from(u.username.clone()));
        o.insert("is_staff".into(), Value::from(false));
        o.insert("account_status".into(), Value::from("active"));
        o.insert("location".into(), Value::Null);
        json_response(StatusCode::OK, vec![], body)
    }

    async fn emails(State(s): St<Data>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
        let (u, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let items = u
            .emails
            .iter()
            .map(|(email, primary, confirmed)| {
                json!({
                    "is_primary": primary,
                    "is_confirmed": confirmed,
                    "type": "email",
                    "email": email,
                    "links": {"self": {"href": format!("{base}/2.0/user/emails/{}", enc(email))}}
                })
            })
            .collect();
        let max = s.data.lock().unwrap().max_pagelen;
        page(items, &query_map(q.as_deref()), &base, "/user/emails", max)
    }

    fn workspace_json(base: &str, w: &Workspace) -> Value {
        json!({
            "type": "workspace",
            "uuid": w.uuid,
            "name": w.name,
            "slug": w.slug,
            "links": {
                "avatar": {"href": format!("{base}/workspaces/{}/avatar/?ts=1700000000", w.slug)},
                "html": {"href": format!("{base}/{}/", w.slug)},
                "self": {"href": format!("{base}/2.0/workspaces/{}", w.slug)}
            }
        })
    }

    async fn workspaces(State(s): St<Data>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
        let (u, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let d = s.data.lock().unwrap();
        let items = d
            .workspaces
            .iter()
            .filter_map(|w| {
                let permission = w.members.get(&u.username)?;
                Some(json!({
                    "type": "workspace_membership",
                    "permission": permission,
                    "last_accessed": "2025-01-10T11:32:05.112923+00:00",
                    "added_on": "2021-05-06T08:14:37.407512+00:00",
                    "user": user_summary(&base, &u),
                    "workspace": workspace_json(&base, w)
                }))
            })
            .collect();
        page(
            items,
            &query_map(q.as_deref()),
            &base,
            "/user/permissions/workspaces",
            d.max_pagelen,
        )
    }

    /// `/1.0/groups/{workspace}`: a plain array. A workspace admin sees every group, a member
    /// only the groups they belong to.
    async fn groups(
        State(s): St<Data>,
        headers: HeaderMap,
        Path(workspace): Path<String>,
    ) -> Response {
        let (u, base) = match authenticate(&s, &headers) {
            Ok(v) => v,
            Err(r) => return *r,
        };
        let d = s.data.lock().unwrap();
        let Some(w) = d.workspaces.iter().find(|w| w.slug == workspace) else {
            return api_error(
                StatusCode::NOT_FOUND,
                &format!("Workspace {workspace} not found"),
            );
        };
        let Some(permission) = w.members.get(&u.username) else {
            return api_error(
                StatusCode::FORBIDDEN,
                "You must be a member of this workspace.",
            );
        };
        let owner = d
            .users
            .values()
            .find(|o| w.members.get(&o.username) == Some(&"owner"))
            .cloned()
            .unwrap_or_else(|| u.clone());
        let profile = |m: &User| {
            json!({
                "display_name": m.display_name,
                "account_id": m.account_id,
                "is_team": false,
                "is_staff": false,
                "avatar": format!("{base}/account/{}/avatar/32", m.account_id),
                "resource_uri": format!("/1.0/users/{}", enc(&m.uuid)),
                "nickname": m.nickname,
                "uuid": m.uuid
            })
        };
        let list: Vec<Value> = w
            .groups
            .iter()
            .filter(|g| *permission == "owner" || g.members.contains(&u.username))
            .map(|g| {
                let members: Vec<Value> = g
                    .members
                    .iter()
                    .filter_map(|m| d.users.get(m))
                    .map(profile)
                    .collect();
                json!({
                    "name": g.name,
                    "permission": g.permission,
                    "email_forwarding_disabled": false,
                    "auto_add": false,
                    "members": members,
                    "owner": profile(&owner),
                    "slug": g.slug
                })
            })
            .collect();
        json_response(StatusCode::OK, vec![], Value::Array(list))
    }
}

// ---------------------------------------------------------------------------------------------
// Atlassian Crowd

pub mod crowd {
    use super::*;

    pub const APP_NAME: &str = "keygate";
    pub const APP_PASSWORD: &str = "crowd-app-password";
    const CONTEXT: &str = "/crowd";

    #[derive(Clone, Debug)]
    pub struct User {
        pub name: String,
        pub key: String,
        pub first_name: String,
        pub last_name: String,
        pub email: String,
        pub password: String,
        pub active: bool,
        /// Direct group memberships.
        pub groups: Vec<String>,
    }

    #[derive(Default)]
    pub struct Data {
        /// Keyed by lower-case name: Crowd names are case-insensitive.
        pub users: HashMap<String, User>,
        /// group → the groups it is a member of (nesting).
        pub parents: HashMap<String, Vec<String>>,
        /// The application's allowed remote addresses exclude us: Crowd answers 403.
        pub refuse_address: bool,
    }

    pub type Crowd = Fake<Data>;

    pub async fn start() -> Crowd {
        let api = Router::new()
            .route("/authentication", post(authentication))
            .route("/user", get(user))
            .route("/user/group/nested", get(nested_groups));
        let routes = Router::new().nest(&format!("{CONTEXT}/rest/usermanagement/1"), api);
        Fake::start(Data::default(), routes).await
    }

    impl Fake<Data> {
        pub fn add_user(&self, user: User) {
            self.data().users.insert(user.name.to_lowercase(), user);
        }

        pub fn nest(&self, group: &str, parent: &str) {
            self.data()
                .parents
                .entry(group.into())
                .or_default()
                .push(parent.into());
        }

        pub fn base_url(&self) -> String {
            format!("{}{CONTEXT}", self.url)
        }

        pub fn dex_provider(&self, name: &str, app_password: &str, extra: &str) -> String {
            format!(
                r#"
---
apiVersion: deckhouse.io/v1
kind: DexProvider
metadata: {{name: {name}}}
spec:
  type: Crowd
  displayName: Crowd {name}
  crowd:
    baseURL: {base}
    clientID: {APP_NAME}
    clientSecret: {app_password}
{extra}"#,
                base = self.base_url()
            )
        }
    }

    fn rest_base(s: &Shared<Data>) -> String {
        format!(
            "{}{CONTEXT}/rest/usermanagement/1",
            s.base.lock().unwrap().url
        )
    }

    /// The application's credentials and address, then content negotiation (JSON only when
    /// asked for: Crowd answers XML by default).
    fn check_app(s: &Shared<Data>, headers: &HeaderMap) -> Result<(), Box<Response>> {
        if s.data.lock().unwrap().refuse_address {
            return Err(Box::new(html(
                StatusCode::FORBIDDEN,
                "<html><head><title>Apache Tomcat - Error report</title></head><body><h1>HTTP Status 403 - Client with address &quot;127.0.0.1&quot; is forbidden from making requests to the application, keygate.</h1><p><b>description</b> <u>Access to the specified resource has been forbidden.</u></p><p>The server understood the request but refuses to authorize it.</p></body></html>",
            )));
        }
        if basic_auth(headers) != Some((APP_NAME.into(), APP_PASSWORD.into())) {
            return Err(Box::new(
                (
                    StatusCode::UNAUTHORIZED,
                    [
                        (
                            header::WWW_AUTHENTICATE,
                            "BASIC realm=\"Crowd REST Service\"",
                        ),
                        (header::CONTENT_TYPE, "text/plain;charset=UTF-8"),
                    ],
                    "Application failed to authenticate",
                )
                    .into_response(),
            ));
        }
        let json = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.contains("application/json"));
        if !json {
            return Err(Box::new((
                StatusCode::OK,
                [(header::CONTENT_TYPE, "application/xml")],
                "<?xml version=\"1.0\" encoding=\"UTF-8\" standalone=\"yes\"?><error><reason>UNSUPPORTED_MEDIA_TYPE</reason></error>",
            )
                .into_response()));
        }
        Ok(())
    }

    fn error(status: StatusCode, reason: &str, message: &str) -> Response {
        json_response(
            status,
            vec![],
            json!({"reason": reason, "message": message}),
        )
    }

    fn user_json(rest: &str, u: &User) -> Value {
        json!({
            "expand": "attributes",
            "link": {"href": format!("{rest}/user?username={}", u.name), "rel": "self"},
            "name": u.name,
            "password": {"link": {"href": format!("{rest}/user/password?username={}", u.name), "rel": "edit"}},
            "key": u.key,
            "active": u.active,
            "attributes": {"attributes": [], "link": {"href": format!("{rest}/user/attribute?username={}", u.name), "rel": "self"}},
            "first-name": u.first_name,
            "last-name": u.last_name,
            "display-name": format!("{} {}", u.first_name, u.last_name),
            "email": u.email
        })
    }

    fn username(q: Option<&str>) -> String {
        query_map(q).get("username").cloned().unwrap_or_default()
    }

    async fn authentication(
        State(s): St<Data>,
        headers: HeaderMap,
        RawQuery(q): RawQuery,
        body: Bytes,
    ) -> Response {
        if let Err(r) = check_app(&s, &headers) {
            return *r;
        }
        let json_body = headers
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("application/json"));
        if !json_body {
            return (StatusCode::UNSUPPORTED_MEDIA_TYPE, "Unsupported Media Type").into_response();
        }
        let Ok(password) = serde_json::from_slice::<Value>(&body) else {
            return error(
                StatusCode::BAD_REQUEST,
                "ILLEGAL_ARGUMENT",
                "Invalid request body",
            );
        };
        let password = password["value"].as_str().unwrap_or_default().to_owned();
        let name = username(q.as_deref());
        let rest = rest_base(&s);
        let d = s.data.lock().unwrap();
        let Some(u) = d.users.get(&name.to_lowercase()) else {
            return error(
                StatusCode::BAD_REQUEST,
                "USER_NOT_FOUND",
                &format!("User <{name}> does not exist"),
            );
        };
        if !u.active {
            return error(
                StatusCode::BAD_REQUEST,
                "INACTIVE_ACCOUNT",
                &format!("Account with name <{}> is inactive", u.name),
            );
        }
        if u.password != password {
            return error(
                StatusCode::BAD_REQUEST,
                "INVALID_USER_AUTHENTICATION",
                "Failed to authenticate principal, password was invalid",
            );
        }
        json_response(StatusCode::OK, vec![], user_json(&rest, u))
    }

    async fn user(State(s): St<Data>, headers: HeaderMap, RawQuery(q): RawQuery) -> Response {
        if let Err(r) = check_app(&s, &headers) {
            return *r;
        }
        let name = username(q.as_deref());
        let rest = rest_base(&s);
        let d = s.data.lock().unwrap();
        match d.users.get(&name.to_lowercase()) {
            Some(u) => json_response(StatusCode::OK, vec![], user_json(&rest, u)),
            None => error(
                StatusCode::NOT_FOUND,
                "USER_NOT_FOUND",
                &format!("User <{name}> does not exist"),
            ),
        }
    }

    async fn nested_groups(
        State(s): St<Data>,
        headers: HeaderMap,
        RawQuery(q): RawQuery,
    ) -> Response {
        if let Err(r) = check_app(&s, &headers) {
            return *r;
        }
        let name = username(q.as_deref());
        let rest = rest_base(&s);
        let d = s.data.lock().unwrap();
        let Some(u) = d.users.get(&name.to_lowercase()) else {
            return error(
                StatusCode::NOT_FOUND,
                "USER_NOT_FOUND",
                &format!("User <{name}> does not exist"),
            );
        };
        // Direct memberships, then the groups those groups belong to, and so on.
        let mut all: Vec<String> = Vec::new();
        let mut todo = u.groups.clone();
        while let Some(g) = todo.pop() {
            if all.contains(&g) {
                continue;
            }
            todo.extend(d.parents.get(&g).cloned().unwrap_or_default());
            all.push(g);
        }
        all.sort();
        let groups: Vec<Value> = all
            .iter()
            .map(|g| {
                json!({
                    "link": {"href": format!("{rest}/group?groupname={}", url::form_urlencoded::byte_serialize(g.as_bytes()).collect::<String>()), "rel": "self"},
                    "name": g
                })
            })
            .collect();
        json_response(
            StatusCode::OK,
            vec![],
            json!({"expand": "group", "groups": groups}),
        )
    }
}
