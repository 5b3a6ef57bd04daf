//! The LDAP connector against a real OpenLDAP (slapd over StartTLS or LDAPS, a throwaway CA given
//! as `rootCAData`): the chooser and the form, logins with nested groups, refusals that all look
//! the same, filter injection, an unreachable directory, the per-username brute-force bucket, and
//! refreshes that go back to the directory. Each test has its own slapd and its own Keygate.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::ldap::*;
use common::*;
use serde_json::Value;

const LDAP: &str = "corp-ldap";
const SCOPES: &str = "openid email profile groups offline_access";
/// The default `refreshTokens.reuseInterval` (120 s), plus one.
const PAST_REUSE_WINDOW: i64 = 121;
const INVALID: &str = "Invalid username or password.";

/// A slapd and a Keygate whose configuration has the fixture's local users and clients, and the
/// `corp-ldap` DexProvider ("Corporate LDAP") for that slapd, reached with `tls`.
async fn setup(extra_spec: &str, tls: Transport) -> (Slapd, TestApp) {
    let slapd = Slapd::start(&temp_dir("ldap"));
    let manifests = format!(
        "{}{}",
        fixture_manifests(),
        slapd.dex_provider(LDAP, "Corporate LDAP", tls)
    );
    let app = spawn_app_with(
        &format!("  storage: {{type: memory}}\n{extra_spec}"),
        &manifests,
        None,
    )
    .await;
    (slapd, app)
}

fn auth_query() -> String {
    Http::auth_query(APP, APP_REDIRECT, SCOPES, "")
}

/// `/auth/{connector}` for a new request: the login form's URL.
async fn form_url(app: &TestApp, connector: &str) -> String {
    let r = app
        .http
        .get(app.url(&format!("auth/{connector}?{}", auth_query())))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302, "/auth/{connector} redirects to its form");
    let form = TestApp::location(&r);
    assert!(
        form.contains(&format!("/auth/{connector}/login?state=")),
        "{form}"
    );
    form
}

struct Answer {
    status: u16,
    location: Option<String>,
    retry_after: Option<String>,
    body: String,
}

async fn submit(app: &TestApp, form: &str, login: &str, password: &str) -> Answer {
    let r = app
        .http
        .post(form)
        .form(&[("login", login), ("password", password)])
        .send()
        .await
        .unwrap();
    let header = |name: &str| {
        r.headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    };
    let (location, retry_after) = (header("location"), header("retry-after"));
    Answer {
        status: r.status().as_u16(),
        location,
        retry_after,
        body: r.text().await.unwrap(),
    }
}

/// A refusal as the user sees it: the form again, 401, the one message for every refusal.
fn assert_refused(a: &Answer, what: &str) {
    assert_eq!(a.status, 401, "{what}: {}", a.body);
    assert!(a.body.contains(INVALID), "{what}: {}", a.body);
    assert!(a.location.is_none(), "{what}");
}

/// Signs in through `connector`'s form; returns the code the application gets.
async fn code(app: &TestApp, connector: &str, login: &str, password: &str) -> String {
    let form = form_url(app, connector).await;
    let a = submit(app, &form, login, password).await;
    assert_eq!(a.status, 303, "{login} signs in: {}", a.body);
    let back = a.location.unwrap();
    assert!(back.starts_with(APP_REDIRECT), "{back}");
    Http::code_in(&back)
}

async fn tokens(app: &TestApp, code: &str) -> Value {
    app.app_code_tokens(code).await
}

async fn sign_in(app: &TestApp, connector: &str, login: &str, password: &str) -> Value {
    let code = code(app, connector, login, password).await;
    tokens(app, &code).await
}

async fn refresh(app: &TestApp, token: &str) -> (u16, Value) {
    app.token(
        Some((APP, "app-secret")),
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

fn id_claims(tokens: &Value) -> Value {
    claims(tokens["id_token"].as_str().expect("an ID token"))
}

fn groups(claims: &Value) -> Vec<String> {
    let mut g: Vec<String> = claims["groups"]
        .as_array()
        .map(|a| a.iter().map(|v| v.as_str().unwrap().to_owned()).collect())
        .unwrap_or_default();
    g.sort();
    g
}

/// minijinja's HTML escaping, undone (for links read from a page).
fn unescape(s: &str) -> String {
    s.replace("&#x2f;", "/")
        .replace("&#x27;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

#[tokio::test]
async fn chooser_lists_the_directory_and_its_form_asks_for_the_corporate_login() {
    let (_slapd, app) = setup("", Transport::StartTls).await;
    let r = app
        .http
        .get(app.url(&format!("auth?{}", auth_query())))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        200,
        "local users and an LDAP provider: a chooser"
    );
    let page = r.text().await.unwrap();
    assert!(page.contains("Log in with Corporate LDAP"), "{page}");
    assert!(page.contains("Log in with Email"), "{page}");
    let link = page
        .split("href=\"")
        .skip(1)
        .map(|s| unescape(&s[..s.find('"').unwrap()]))
        .find(|h| h.contains("/auth/corp-ldap?"))
        .expect("a link to /auth/corp-ldap");
    assert!(link.contains(&format!("client_id={}", enc(APP))), "{link}");

    let r = app.http.get(&link).send().await.unwrap();
    assert_eq!(r.status(), 302, "the LDAP connector redirects to our form");
    let form = TestApp::location(&r);
    assert!(form.contains("/auth/corp-ldap/login?state="), "{form}");
    let r = app.http.get(&form).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let page = r.text().await.unwrap();
    assert!(
        page.contains(">Corporate login</label>"),
        "the form's label is the usernamePrompt: {page}"
    );
    assert!(page.contains("Corporate LDAP"), "{page}");
}

#[tokio::test]
async fn users_sign_in_with_their_directory_password_and_get_nested_groups() {
    let (slapd, app) = setup("", Transport::StartTls).await;

    let t = sign_in(&app, LDAP, "jane", JANE_PW).await;
    let c = id_claims(&t);
    assert_eq!(c["email"], JANE_MAIL, "{c}");
    assert_eq!(c["email_verified"], true, "{c}");
    assert_eq!(c["name"], JANE_CN, "{c}");
    assert_eq!(c["preferred_username"], "jane", "{c}");
    assert_eq!(c["aud"], APP, "{c}");
    assert_eq!(c["nonce"], "n0nce", "{c}");
    assert_eq!(
        groups(&c),
        ["devs", "engineering"],
        "devs directly, engineering through devs: {c}"
    );
    assert!(
        t["refresh_token"].is_string(),
        "offline_access gives a refresh token: {t}"
    );
    let local = id_claims(&sign_in(&app, "local", "jane@example.com", "password").await);
    assert_ne!(
        c["sub"], local["sub"],
        "the LDAP jane is not the local jane"
    );

    let c = id_claims(&sign_in(&app, LDAP, "john", JOHN_PW).await);
    assert_eq!(c["email"], JOHN_MAIL, "{c}");
    assert_eq!(c["name"], "John Roe", "{c}");
    assert_eq!(groups(&c), ["devs", "engineering", "ops"], "{c}");

    // A legitimate uid made of filter metacharacters is matched exactly, and its DN (escaped in
    // the group filter) finds its group.
    let c = id_claims(&sign_in(&app, LDAP, STAR_UID, STAR_PW).await);
    assert_eq!(c["email"], STAR_MAIL, "{c}");
    assert_eq!(c["preferred_username"], STAR_UID, "{c}");
    assert_eq!(groups(&c), ["engineering"], "{c}");

    // The password was checked by the directory, as the user, over TLS (the server refuses
    // plaintext operations).
    assert!(slapd.binds_as(JANE_DN) >= 1, "{}", slapd.log());
    assert!(slapd.binds_as(STAR_DN) >= 1, "{}", slapd.log());
    assert!(slapd.log().contains("STARTTLS"), "{}", slapd.log());
}

#[tokio::test]
async fn wrong_password_unknown_user_and_empty_password_get_the_same_refusal() {
    let (slapd, app) = setup("", Transport::StartTls).await;
    let form = form_url(&app, LDAP).await;

    let wrong = submit(&app, &form, "jane", "not-her-password").await;
    assert_refused(&wrong, "wrong password");
    assert_eq!(slapd.binds_as(JANE_DN), 1, "{}", slapd.log());
    assert!(
        slapd.wait_log("RESULT tag=97 err=49").await,
        "the directory refused the bind: {}",
        slapd.log()
    );

    let unknown = submit(&app, &form, "nobody", "not-her-password").await;
    assert_refused(&unknown, "unknown user");
    assert_eq!(
        wrong.body.replace("value=\"jane\"", "value=\"?\""),
        unknown.body.replace("value=\"nobody\"", "value=\"?\""),
        "an unknown user and a wrong password look the same"
    );

    // An empty password would be an anonymous bind, which directories accept: it never reaches
    // the directory at all.
    let (connections, binds) = (slapd.connections(), slapd.binds_as(JANE_DN));
    let empty = submit(&app, &form, "jane", "").await;
    assert_refused(&empty, "empty password");
    assert_eq!(
        empty.body.replace("value=\"jane\"", "value=\"?\""),
        unknown.body.replace("value=\"nobody\"", "value=\"?\""),
    );
    assert_eq!(slapd.connections(), connections, "{}", slapd.log());
    assert_eq!(slapd.binds_as(JANE_DN), binds, "{}", slapd.log());

    // The request survives refusals: the right password on the same form completes it.
    let ok = submit(&app, &form, "jane", JANE_PW).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
    assert!(ok.location.unwrap().contains("code="));
}

#[tokio::test]
async fn filter_injection_in_the_username_never_signs_anyone_in() {
    let (slapd, app) = setup("", Transport::StartTls).await;
    let form = form_url(&app, LDAP).await;
    let user_binds = slapd.user_binds();
    // Unescaped, some of these would match every user, or exactly jane or exactly star (whose
    // uid is "(*star*)"), or break the filter.
    let attempts = [
        "*",
        "*)(uid=*",
        "jane)(|(uid=*",
        "*)(|(uid=jane",
        "ja*",
        "j*e",
        "*star*",
        "(*star*",
        "*(*star*)*",
        "jane\\",
        "jane\u{0}",
        "\\2a",
    ];
    for login in attempts {
        for password in [JANE_PW, STAR_PW] {
            let a = submit(&app, &form, login, password).await;
            assert_refused(&a, &format!("login {login:?}"));
        }
    }
    assert_eq!(
        slapd.user_binds(),
        user_binds,
        "no search matched a user, so no password was ever tried: {}",
        slapd.log()
    );
    assert!(
        slapd.log().contains("(uid=\\2A\\29\\28uid=\\2A)"),
        "the directory received the escaped filter: {}",
        slapd.log()
    );

    // The form still works for the real users afterwards.
    let ok = submit(&app, &form, STAR_UID, STAR_PW).await;
    assert_eq!(ok.status, 303, "{}", ok.body);
}

#[tokio::test]
async fn an_unreachable_directory_is_a_clear_page_and_local_users_still_sign_in() {
    let (mut slapd, app) = setup("", Transport::StartTls).await;
    let before = sign_in(&app, LDAP, "jane", JANE_PW).await;
    let refresh_token = before["refresh_token"].as_str().unwrap().to_owned();

    slapd.stop();
    let form = form_url(&app, LDAP).await;
    let a = submit(&app, &form, "jane", JANE_PW).await;
    assert!(
        a.status == 502 || a.status == 503,
        "an outage is not a 500 nor a refusal: {} {}",
        a.status,
        a.body
    );
    assert!(
        a.body.contains("Corporate LDAP cannot be reached"),
        "{}",
        a.body
    );
    assert!(!a.body.contains(INVALID), "{}", a.body);

    // The refresh cannot check the user now: a temporary error, not the end of the session.
    app.clock.advance(PAST_REUSE_WINDOW);
    let (status, body) = refresh(&app, &refresh_token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");

    // Local users do not depend on the directory.
    let local = id_claims(&sign_in(&app, "local", "jane@example.com", "password").await);
    assert_eq!(local["email"], "jane@example.com", "{local}");

    // Back up: the same form completes the sign-in.
    slapd.launch();
    let a = submit(&app, &form, "jane", JANE_PW).await;
    assert_eq!(a.status, 303, "{}", a.body);
    let c = id_claims(
        &tokens(
            &app,
            &TestApp::query_param(&a.location.unwrap(), "code").unwrap(),
        )
        .await,
    );
    assert_eq!(groups(&c), ["devs", "engineering"], "{c}");
}

/// The refresh grant answers `temporarily_unavailable` while the directory is down and says the
/// session stays; the client keeps the refresh token it has and retries later, outside the reuse
/// window, once the directory is back.
#[tokio::test]
async fn a_refresh_refused_during_an_outage_can_be_retried_later() {
    let (mut slapd, app) = setup("", Transport::StartTls).await;
    let t = sign_in(&app, LDAP, "jane", JANE_PW).await;
    let token = t["refresh_token"].as_str().unwrap().to_owned();

    slapd.stop();
    app.clock.advance(PAST_REUSE_WINDOW);
    let (status, body) = refresh(&app, &token).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["error"], "temporarily_unavailable", "{body}");

    slapd.launch();
    app.clock.advance(PAST_REUSE_WINDOW);
    let searches = slapd.log().matches(" SRCH base=").count();
    let (status, body) = refresh(&app, &token).await;
    assert_eq!(status, 200, "the session survived the outage: {body}");
    assert!(slapd.log().matches(" SRCH base=").count() > searches);
    assert_eq!(groups(&id_claims(&body)), ["devs", "engineering"], "{body}");
}

#[tokio::test]
async fn the_brute_force_limit_applies_per_directory_username() {
    let (slapd, app) = setup("  bruteForce: {attempts: 3}\n", Transport::StartTls).await;
    let form = form_url(&app, LDAP).await;
    for i in 1..=3 {
        let a = submit(&app, &form, "jane", &format!("guess-{i}")).await;
        assert_refused(&a, &format!("guess {i}"));
    }
    let connections = slapd.connections();
    let a = submit(&app, &form, "jane", JANE_PW).await;
    assert_eq!(a.status, 429, "the 4th attempt is limited: {}", a.body);
    assert!(a.body.contains("Too many sign-in attempts"), "{}", a.body);
    assert!(a.retry_after.is_some());
    let a = submit(&app, &form, "  JANE ", JANE_PW).await;
    assert_eq!(a.status, 429, "the same bucket, whatever the case");
    assert_eq!(
        slapd.connections(),
        connections,
        "a limited attempt never reaches the directory: {}",
        slapd.log()
    );

    // Another username has its own bucket.
    let ok = submit(&app, &form, "john", JOHN_PW).await;
    assert_eq!(ok.status, 303, "{}", ok.body);

    // One attempt comes back after refillEvery (6 s by default).
    app.clock.advance(6);
    let c = id_claims(&sign_in(&app, LDAP, "jane", JANE_PW).await);
    assert_eq!(c["email"], JANE_MAIL, "{c}");
}

#[tokio::test]
async fn refreshes_go_back_to_the_directory() {
    let (slapd, app) = setup("", Transport::StartTls).await;
    let t = sign_in(&app, LDAP, "jane", JANE_PW).await;
    assert_eq!(groups(&id_claims(&t)), ["devs", "engineering"]);
    let mut token = t["refresh_token"].as_str().unwrap().to_owned();

    slapd.modify(&format!(
        "dn: {DEVS_DN}\nchangetype: modify\ndelete: member\nmember: {JANE_DN}\n"
    ));
    slapd.modify(&format!(
        "dn: cn=ops,ou=groups,{BASE_DN}\nchangetype: modify\nadd: member\nmember: {JANE_DN}\n"
    ));
    app.clock.advance(PAST_REUSE_WINDOW);
    let searches = slapd.log().matches(" SRCH base=").count();
    let (status, body) = refresh(&app, &token).await;
    assert_eq!(status, 200, "{body}");
    assert!(
        slapd.log().matches(" SRCH base=").count() > searches,
        "the refresh searched the directory"
    );
    let c = id_claims(&body);
    assert_eq!(
        groups(&c),
        ["ops"],
        "out of devs (and so of engineering), into ops: {c}"
    );
    assert_eq!(c["email"], JANE_MAIL, "{c}");
    assert_eq!(c["name"], JANE_CN, "{c}");
    token = body["refresh_token"].as_str().unwrap().to_owned();

    slapd.modify(&format!("dn: {JANE_DN}\nchangetype: delete\n"));
    app.clock.advance(PAST_REUSE_WINDOW);
    let (status, body) = refresh(&app, &token).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
    let (status, body) = refresh(&app, &token).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the session is gone: {body}"
    );
    let form = form_url(&app, LDAP).await;
    assert_refused(&submit(&app, &form, "jane", JANE_PW).await, "deleted user");
}

#[tokio::test]
async fn ldaps_with_the_root_ca_works_and_unverified_or_plaintext_connections_do_not() {
    let slapd = Slapd::start(&temp_dir("ldap"));
    let manifests = format!(
        "{}{}{}{}",
        fixture_manifests(),
        slapd.dex_provider("corp-ldaps", "Corporate LDAPS", Transport::Ldaps),
        slapd.dex_provider("no-ca", "Unknown CA", Transport::LdapsWithoutCa),
        slapd.dex_provider("plain", "Plaintext LDAP", Transport::Plain),
    );
    let app = spawn_app_with("  storage: {type: memory}\n", &manifests, None).await;

    let c = id_claims(&sign_in(&app, "corp-ldaps", "jane", JANE_PW).await);
    assert_eq!(c["email"], JANE_MAIL, "{c}");
    assert_eq!(groups(&c), ["devs", "engineering"], "{c}");

    for (id, name) in [("no-ca", "Unknown CA"), ("plain", "Plaintext LDAP")] {
        let form = form_url(&app, id).await;
        let a = submit(&app, &form, "jane", JANE_PW).await;
        assert!(
            matches!(a.status, 502 | 503),
            "{id}: {} {}",
            a.status,
            a.body
        );
        assert!(
            a.body.contains(&format!("{name} cannot be reached")),
            "{id}: {}",
            a.body
        );
    }
    assert!(
        slapd.wait_log("RESULT tag=97 err=13").await,
        "the plaintext bind was refused for confidentiality: {}",
        slapd.log()
    );
}
