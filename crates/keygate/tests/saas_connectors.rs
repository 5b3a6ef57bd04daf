//! The GitHub, GitLab, Bitbucket Cloud and Atlassian Crowd connectors over HTTP, against fakes of
//! those services written from their public API documentation (`common::fakes`): the redirect to
//! the provider and back to `/callback` (or Crowd's password form), the ID token's `sub`, `email`,
//! `name`, `preferred_username` and `groups`, the allow lists (orgs and teams, groups,
//! workspaces), pagination, refreshes that go back to the provider (GitLab's rotating refresh
//! token), refusals as clear 403 pages (a wrong Crowd password: the form again, 401), and outages as 503 pages while the
//! other sign-in methods keep working.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use base64::Engine;
use common::fakes::{bitbucket, crowd, github, gitlab};
use common::*;
use serde_json::Value;

const SCOPES: &str = "openid email profile groups offline_access";
/// The default `refreshTokens.reuseInterval` (120 s), plus one.
const PAST_REUSE_WINDOW: i64 = 121;
const INVALID: &str = "Invalid username or password.";

/// A Keygate with the fixture's users and clients plus `providers` (DexProvider manifests).
async fn keygate(providers: &str) -> TestApp {
    spawn_app_with(
        "  storage: {type: memory}\n",
        &format!("{}{providers}", fixture_manifests()),
        None,
    )
    .await
}

fn auth_query() -> String {
    Http::auth_query(APP, APP_REDIRECT, SCOPES, "")
}

/// Dex's `sub`: base64url (no padding) of the protobuf `{1: user_id, 2: connector_id}`.
fn dex_subject(user_id: &str, connector: &str) -> String {
    let mut buf = Vec::new();
    for (field, value) in [(1u8, user_id), (2u8, connector)] {
        buf.push((field << 3) | 2);
        buf.push(u8::try_from(value.len()).unwrap());
        buf.extend_from_slice(value.as_bytes());
    }
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    body: String,
}

async fn answer(r: reqwest::Response) -> Answer {
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_owned());
    Answer {
        status: r.status().as_u16(),
        location,
        body: r.text().await.unwrap(),
    }
}

async fn get(app: &TestApp, url: &str) -> Answer {
    answer(app.http.get(url).send().await.unwrap()).await
}

/// `/auth/{connector}` for a new request: Keygate's 302 to the provider's authorize page.
async fn to_provider(app: &TestApp, connector: &str) -> String {
    let a = get(app, &app.url(&format!("auth/{connector}?{}", auth_query()))).await;
    assert_eq!(a.status, 302, "/auth/{connector}: {}", a.body);
    a.location.unwrap()
}

/// The provider's authorize page: the user consents, the provider sends the browser back to
/// Keygate's `/callback` with a code and the state.
async fn at_provider(app: &TestApp, authorize_url: &str) -> String {
    let a = get(app, authorize_url).await;
    assert_eq!(a.status, 302, "the provider redirects back: {}", a.body);
    let back = a.location.unwrap();
    assert!(back.starts_with(&app.url("callback?")), "{back}");
    back
}

/// The whole browser round trip; Keygate's answer at `/callback`.
async fn redirect_login(app: &TestApp, connector: &str) -> Answer {
    let authorize = to_provider(app, connector).await;
    let back = at_provider(app, &authorize).await;
    get(app, &back).await
}

/// Keygate's redirect to the application: the code.
fn code_of(a: &Answer) -> String {
    assert_eq!(a.status, 303, "sign-in completes: {}", a.body);
    let back = a.location.clone().unwrap();
    assert!(back.starts_with(APP_REDIRECT), "{back}");
    Http::code_in(&back)
}

async fn tokens(app: &TestApp, code: &str) -> Value {
    app.app_code_tokens(code).await
}

async fn sign_in(app: &TestApp, connector: &str) -> Value {
    let a = redirect_login(app, connector).await;
    let code = code_of(&a);
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
        .expect("a groups claim")
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    g.sort();
    g
}

fn strings(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// A refusal at `/callback`: a 403 page naming the provider and the reason, never a 500.
fn assert_refused_page(a: &Answer, provider: &str, reason: &str) {
    assert_eq!(a.status, 403, "{}", a.body);
    assert!(a.location.is_none());
    assert!(a.body.contains("Sign-in refused"), "{}", a.body);
    assert!(a.body.contains(provider), "{}", a.body);
    assert!(a.body.contains(reason), "{reason:?} in {}", a.body);
}

/// An outage: a 503 page saying the provider cannot be reached, never a 500.
fn assert_unavailable_page(a: &Answer, provider: &str) {
    assert_eq!(a.status, 503, "{}", a.body);
    assert!(a.body.contains("Temporarily unavailable"), "{}", a.body);
    assert!(
        a.body
            .contains(&format!("{provider} cannot be reached right now")),
        "{}",
        a.body
    );
}

/// The static users' password form still signs jane in (another method keeps working).
async fn local_login_works(app: &TestApp) {
    let a = get(app, &app.url(&format!("auth/local?{}", auth_query()))).await;
    assert_eq!(a.status, 302, "{}", a.body);
    let form = a.location.unwrap();
    let a = submit(app, &form, "jane@example.com", "password").await;
    let t = tokens(app, &code_of(&a)).await;
    assert_eq!(id_claims(&t)["email"], "jane@example.com");
}

async fn submit(app: &TestApp, form: &str, login: &str, password: &str) -> Answer {
    answer(
        app.http
            .post(form)
            .form(&[("login", login), ("password", password)])
            .send()
            .await
            .unwrap(),
    )
    .await
}

fn logged(log: &[String], prefix: &str) -> bool {
    log.iter().any(|l| l.starts_with(prefix))
}

// ---------------------------------------------------------------------------------------------
// GitHub

const ALLOWED_TEAMS: &str =
    "    teamNameField: Slug\n    orgs:\n    - name: acme\n      teams: [devs]\n";

/// mona: 110 teams in megacorp, then acme's "Developers" (slug devs, on page 2 of /user/teams)
/// and "Site Reliability" (sre), and the org "hobby" without teams.
fn mona() -> github::User {
    let mut u = github::User::new(583_231, "mona", "Mona Lisa Octocat", "mona@acme.example");
    u.public_email = Some("mona@octo.example".into());
    for i in 1..=110 {
        u = u.team(
            "megacorp",
            &format!("Guild {i:03}"),
            &format!("guild-{i:03}"),
        );
    }
    let mut u = u
        .team("acme", "Developers", "devs")
        .team("acme", "Site Reliability", "sre");
    u.orgs.push("hobby".into());
    u
}

async fn github_setup() -> (github::Github, TestApp) {
    let gh = github::start().await;
    gh.add_user(mona());
    gh.add_user(
        github::User::new(100, "hubot", "Hubot", "hubot@acme.example").team(
            "acme",
            "Site Reliability",
            "sre",
        ),
    );
    gh.add_user(github::User::new(
        101,
        "drifter",
        "Drifter",
        "drifter@example.net",
    ));
    let providers = format!(
        "{}{}",
        gh.dex_provider("github", ALLOWED_TEAMS),
        gh.dex_provider(
            "github-login",
            &format!("{ALLOWED_TEAMS}    useLoginAsID: true\n")
        )
    );
    let app = keygate(&providers).await;
    gh.set_callback(&app.url("callback"));
    (gh, app)
}

#[tokio::test]
async fn github_sign_in_with_orgs_teams_slugs_and_login_as_id() {
    let (gh, app) = github_setup().await;
    gh.sign_in(Some("mona"));

    // The chooser offers both GitHub methods and the static users.
    let chooser = get(&app, &app.url(&format!("auth?{}", auth_query()))).await;
    assert_eq!(chooser.status, 200);
    assert!(
        chooser.body.contains("GitHub github-login"),
        "{}",
        chooser.body
    );

    let authorize = to_provider(&app, "github").await;
    assert!(
        authorize.starts_with(&format!("{}/login/oauth/authorize?", gh.url)),
        "{authorize}"
    );
    assert_eq!(
        TestApp::query_param(&authorize, "client_id").as_deref(),
        Some(github::CLIENT_ID)
    );
    assert_eq!(
        TestApp::query_param(&authorize, "redirect_uri"),
        Some(app.url("callback"))
    );
    assert_eq!(
        TestApp::query_param(&authorize, "scope").as_deref(),
        Some("user:email read:org")
    );
    let back = at_provider(&app, &authorize).await;
    let t = tokens(&app, &code_of(&get(&app, &back).await)).await;
    let c = id_claims(&t);
    assert_eq!(c["sub"], dex_subject("583231", "github"));
    // The primary verified address, not the public profile one nor the other verified ones.
    assert_eq!(c["email"], "mona@acme.example");
    assert_eq!(c["email_verified"], true);
    assert_eq!(c["name"], "Mona Lisa Octocat");
    assert_eq!(c["preferred_username"], "mona");
    // Only the allowed team, by slug; not sre, not megacorp's teams, not the orgs themselves.
    assert_eq!(groups(&c), strings(&["acme:devs"]));

    let log = gh.log();
    assert!(logged(&log, "token grant=authorization_code"), "{log:?}");
    assert!(logged(&log, "GET /api/v3/user/emails"), "{log:?}");
    assert!(logged(&log, "GET /api/v3/user/orgs"), "{log:?}");
    assert!(
        logged(&log, "GET /api/v3/user/teams?per_page=100&page=2"),
        "the second page of teams (Link rel=next) is read: {log:?}"
    );

    // useLoginAsID: the same GitHub user, `sub` from the login instead of the numeric id.
    let t2 = sign_in(&app, "github-login").await;
    let c2 = id_claims(&t2);
    assert_eq!(c2["sub"], dex_subject("mona", "github-login"));
    assert_ne!(c2["sub"], c["sub"]);
    assert_eq!(c2["email"], "mona@acme.example");
    assert_eq!(c2["name"], "Mona Lisa Octocat");
    assert_eq!(groups(&c2), strings(&["acme:devs"]));

    // A refresh re-reads GitHub with the kept token: still allowed, then no longer.
    gh.clear_log();
    app.clock.advance(PAST_REUSE_WINDOW);
    let (status, r) = refresh(&app, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(groups(&id_claims(&r)), strings(&["acme:devs"]));
    assert_eq!(id_claims(&r)["sub"], c["sub"]);
    assert!(
        logged(&gh.log(), "GET /api/v3/user/teams"),
        "{:?}",
        gh.log()
    );
    gh.data()
        .users
        .get_mut("mona")
        .unwrap()
        .teams
        .retain(|t| t.slug != "devs");
    app.clock.advance(PAST_REUSE_WINDOW);
    let (status, r) = refresh(&app, r["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{r}");
    assert_eq!(r["error"], "invalid_grant");
}

#[tokio::test]
async fn github_refusals_are_clear_403_pages() {
    let (gh, app) = github_setup().await;

    // In acme, but not in an allowed team.
    gh.sign_in(Some("hubot"));
    let a = redirect_login(&app, "github").await;
    assert_refused_page(&a, "GitHub github", "none of the allowed organizations");

    // In no organization at all.
    gh.sign_in(Some("drifter"));
    let a = redirect_login(&app, "github").await;
    assert_refused_page(&a, "GitHub github", "none of the allowed organizations");

    // The user clicks "Cancel" at GitHub.
    gh.sign_in(None);
    let a = redirect_login(&app, "github").await;
    assert_refused_page(&a, "GitHub github", "access_denied");

    // GitHub refuses the code (200 with `error`): the code was already used.
    gh.sign_in(Some("mona"));
    let authorize = to_provider(&app, "github").await;
    let back = at_provider(&app, &authorize).await;
    let code = TestApp::query_param(&back, "code").unwrap();
    let spent = app
        .http
        .post(format!("{}/login/oauth/access_token", gh.url))
        .header("Accept", "application/json")
        .form(&[
            ("client_id", github::CLIENT_ID),
            ("client_secret", github::CLIENT_SECRET),
            ("code", code.as_str()),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(spent.status(), 200);
    let a = get(&app, &back).await;
    assert_refused_page(&a, "GitHub github", "bad_verification_code");

    // None of this broke the method for an allowed user.
    let t = sign_in(&app, "github").await;
    assert_eq!(id_claims(&t)["email"], "mona@acme.example");
}

#[tokio::test]
async fn github_outage_is_a_503_and_local_users_still_sign_in() {
    let (mut gh, app) = github_setup().await;
    gh.sign_in(Some("mona"));

    // GitHub answers 500 (its unicorn page) after the user consented.
    let authorize = to_provider(&app, "github").await;
    let back = at_provider(&app, &authorize).await;
    gh.fail_with(
        500,
        "text/html; charset=utf-8",
        "<html><body><h1>Unicorn!</h1><p>This page is taking too long to load.</p></body></html>",
    );
    assert_unavailable_page(&get(&app, &back).await, "GitHub github");
    local_login_works(&app).await;

    // The API alone fails: the token exchange works, /user/teams answers 502 (a proxy).
    gh.recover();
    let t = sign_in(&app, "github").await;
    let authorize = to_provider(&app, "github").await;
    let back = at_provider(&app, &authorize).await;
    gh.fail_under(
        "/api/v3/user/teams",
        502,
        "text/html",
        "<html><body>502 Bad Gateway</body></html>",
    );
    assert_unavailable_page(&get(&app, &back).await, "GitHub github");
    assert!(logged(&gh.log(), "token grant=authorization_code"));

    // A refresh during the outage: temporarily_unavailable, and the session survives it.
    app.clock.advance(PAST_REUSE_WINDOW);
    let rt = t["refresh_token"].as_str().unwrap();
    let (status, r) = refresh(&app, rt).await;
    assert_eq!(status, 503, "{r}");
    assert_eq!(r["error"], "temporarily_unavailable");
    gh.recover();
    let (status, r) = refresh(&app, rt).await;
    assert_eq!(
        status, 200,
        "the same refresh token works once GitHub is back: {r}"
    );

    // GitHub is down (connection refused).
    let authorize = to_provider(&app, "github").await;
    let back = at_provider(&app, &authorize).await;
    gh.stop().await;
    assert_unavailable_page(&get(&app, &back).await, "GitHub github");
    local_login_works(&app).await;
}

// ---------------------------------------------------------------------------------------------
// GitLab

async fn gitlab_setup() -> (gitlab::Gitlab, TestApp) {
    let gl = gitlab::start().await;
    gl.add_user(gitlab::User {
        id: 4242,
        username: "jane.doe".into(),
        name: "Jane Doe".into(),
        email: "jane.doe@acme.example".into(),
        groups: strings(&["platform", "platform/k8s", "marketing"]),
    });
    gl.add_user(gitlab::User {
        id: 4343,
        username: "bob".into(),
        name: "Bob Builder".into(),
        email: "bob@acme.example".into(),
        groups: strings(&["marketing", "platform/k8s"]),
    });
    let app = keygate(&gl.dex_provider("gitlab", "    groups: [platform, sre]\n")).await;
    gl.set_callback(&app.url("callback"));
    (gl, app)
}

#[tokio::test]
async fn gitlab_groups_allow_list_and_refresh_through_gitlab() {
    let (gl, app) = gitlab_setup().await;
    gl.sign_in(Some("jane.doe"));

    let authorize = to_provider(&app, "gitlab").await;
    assert!(
        authorize.starts_with(&format!("{}/oauth/authorize?", gl.url)),
        "{authorize}"
    );
    // PKCE (S256), which GitLab documents: a challenge swapped on the way (a code stolen from
    // another sign-in) does not pass the code exchange.
    assert_eq!(
        TestApp::query_param(&authorize, "code_challenge_method").as_deref(),
        Some("S256")
    );
    let challenge = TestApp::query_param(&authorize, "code_challenge").unwrap();
    // From the sign-in's stored secret: not computable from the state and the client secret.
    let state = TestApp::query_param(&authorize, "state").unwrap();
    let from_public = keygate_oidc::pkce_s256(&keygate_oidc::pkce_s256(&format!(
        "keygate-pkce\n{}\n{state}",
        gitlab::CLIENT_SECRET
    )));
    assert_ne!(challenge, from_public);
    let swapped = authorize.replace(&challenge, &keygate_oidc::pkce_s256("another verifier"));
    let refused = get(&app, &at_provider(&app, &swapped).await).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("invalid_grant"), "{}", refused.body);
    let back = at_provider(&app, &authorize).await;
    let t = tokens(&app, &code_of(&get(&app, &back).await)).await;
    let c = id_claims(&t);
    assert_eq!(c["sub"], dex_subject("4242", "gitlab"));
    assert_eq!(c["email"], "jane.doe@acme.example");
    assert_eq!(c["name"], "Jane Doe");
    assert_eq!(c["preferred_username"], "jane.doe");
    // Deckhouse: with `groups`, the token holds the user's groups that are in the list.
    assert_eq!(groups(&c), strings(&["platform"]));
    let log = gl.log();
    assert!(logged(&log, "token grant=authorization_code"), "{log:?}");
    assert!(logged(&log, "GET /api/v4/user"), "{log:?}");
    assert!(logged(&log, "GET /oauth/userinfo"), "{log:?}");

    // Inside the reuse window: the stored claims, no call to GitLab.
    gl.clear_log();
    gl.set_groups("jane.doe", &["platform", "sre", "marketing"]);
    let rt = t["refresh_token"].as_str().unwrap();
    let (status, r) = refresh(&app, rt).await;
    assert_eq!(status, 200, "{r}");
    assert!(gl.log().is_empty(), "{:?}", gl.log());

    // Past it: GitLab's refresh grant, and the new groups in the new ID token.
    app.clock.advance(PAST_REUSE_WINDOW);
    let (status, r) = refresh(&app, rt).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(groups(&id_claims(&r)), strings(&["platform", "sre"]));
    assert!(
        logged(&gl.log(), "token grant=refresh_token"),
        "{:?}",
        gl.log()
    );
    assert_eq!(gl.data().used_refresh_tokens.len(), 1);

    // Again: GitLab rotated its refresh token, and Keygate kept the new one (the old one is
    // revoked at GitLab, which would answer invalid_grant).
    app.clock.advance(PAST_REUSE_WINDOW);
    gl.set_groups("jane.doe", &["sre"]);
    let (status, r) = refresh(&app, r["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(groups(&id_claims(&r)), strings(&["sre"]));
    let used = gl.data().used_refresh_tokens.clone();
    assert_eq!(used.len(), 2);
    assert_ne!(used[0], used[1]);

    // GitLab in maintenance (503 with an OAuth error body): not a refusal, the session lives.
    app.clock.advance(PAST_REUSE_WINDOW);
    gl.fail_with(
        503,
        "application/json",
        r#"{"error":"temporarily_unavailable","error_description":"The authorization server is currently unable to handle the request due to a temporary overloading or maintenance of the server."}"#,
    );
    let rt = r["refresh_token"].as_str().unwrap();
    let (status, e) = refresh(&app, rt).await;
    assert_eq!(status, 503, "{e}");
    assert_eq!(e["error"], "temporarily_unavailable");
    gl.recover();
    let (status, r) = refresh(&app, rt).await;
    assert_eq!(status, 200, "{r}");

    // Out of every allowed group: the refresh is refused and the session ends.
    app.clock.advance(PAST_REUSE_WINDOW);
    gl.set_groups("jane.doe", &["marketing"]);
    let rt = r["refresh_token"].as_str().unwrap();
    let (status, e) = refresh(&app, rt).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"], "invalid_grant");
    gl.set_groups("jane.doe", &["platform"]);
    app.clock.advance(PAST_REUSE_WINDOW);
    let (status, e) = refresh(&app, rt).await;
    assert_eq!(status, 400, "the session is gone: {e}");
}

#[tokio::test]
async fn gitlab_refusals_and_outages() {
    let (mut gl, app) = gitlab_setup().await;

    // bob is in none of the allowed groups (platform/k8s is not platform).
    gl.sign_in(Some("bob"));
    let a = redirect_login(&app, "gitlab").await;
    assert_refused_page(&a, "GitLab gitlab", "none of the allowed GitLab groups");

    // GitLab answers 500 (its HTML error page) after the user consented.
    gl.sign_in(Some("jane.doe"));
    let authorize = to_provider(&app, "gitlab").await;
    let back = at_provider(&app, &authorize).await;
    gl.fail_with(
        500,
        "text/html; charset=utf-8",
        "<!DOCTYPE html><html><head><title>Something went wrong (500)</title></head><body><h1>500</h1><h3>We're sorry. Something went wrong on our end.</h3></body></html>",
    );
    assert_unavailable_page(&get(&app, &back).await, "GitLab gitlab");
    local_login_works(&app).await;
    gl.recover();

    // GitLab is down.
    let authorize = to_provider(&app, "gitlab").await;
    let back = at_provider(&app, &authorize).await;
    gl.stop().await;
    assert_unavailable_page(&get(&app, &back).await, "GitLab gitlab");
    local_login_works(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Bitbucket Cloud

async fn bitbucket_setup() -> (bitbucket::Bitbucket, TestApp) {
    let bb = bitbucket::start().await;
    bb.add_user(bitbucket::User::new(
        1,
        "jdoe",
        "Jane Doe",
        "jane.doe@acme.example",
    ));
    bb.add_user(bitbucket::User::new(
        2,
        "bob",
        "Bob Builder",
        "bob@acme.example",
    ));
    bb.add_user(bitbucket::User::new(
        3,
        "eve",
        "Eve",
        "eve@elsewhere.example",
    ));
    bb.add_workspace("acme", "Acme", &[("jdoe", "owner"), ("bob", "member")]);
    bb.add_workspace(
        "widgets",
        "Widgets Inc",
        &[("jdoe", "member"), ("bob", "owner")],
    );
    bb.add_workspace("jdoe-personal", "Jane's", &[("jdoe", "owner")]);
    bb.add_workspace("elsewhere", "Elsewhere", &[("eve", "owner")]);
    bb.add_group(
        "acme",
        "Administrators",
        "administrators",
        "admin",
        &["jdoe"],
    );
    bb.add_group(
        "acme",
        "Developers",
        "developers",
        "write",
        &["jdoe", "bob"],
    );
    bb.add_group("acme", "QA Team", "qa-team", "read", &["bob"]);
    bb.add_group("widgets", "Frontend", "frontend", "write", &["jdoe"]);
    bb.add_group("widgets", "Backend", "backend", "write", &["bob"]);
    bb.add_group("jdoe-personal", "Friends", "friends", "read", &["jdoe"]);
    // Small pages, so that following `next` matters.
    bb.data().max_pagelen = 2;
    let app = keygate(&bb.dex_provider(
        "bitbucket",
        "    teams: [acme, widgets]\n    includeTeamGroups: true\n",
    ))
    .await;
    bb.set_callback(&app.url("callback"));
    (bb, app)
}

#[tokio::test]
async fn bitbucket_workspaces_and_team_groups() {
    let (bb, app) = bitbucket_setup().await;
    bb.sign_in(Some("jdoe"));

    let authorize = to_provider(&app, "bitbucket").await;
    assert!(
        authorize.starts_with(&format!("{}/site/oauth2/authorize?", bb.url)),
        "{authorize}"
    );
    let back = at_provider(&app, &authorize).await;
    let t = tokens(&app, &code_of(&get(&app, &back).await)).await;
    let c = id_claims(&t);
    let jane_uuid = bb.data().users["jdoe"].uuid.clone();
    assert_eq!(c["sub"], dex_subject(&jane_uuid, "bitbucket"));
    assert_eq!(c["email"], "jane.doe@acme.example");
    assert_eq!(c["name"], "Jane Doe");
    assert_eq!(c["preferred_username"], "jdoe");
    // The allowed workspaces, and in them the groups jane is a member of: as an owner of acme
    // she sees every acme group, qa-team included, but is not in it.
    assert_eq!(
        groups(&c),
        strings(&[
            "acme",
            "acme/administrators",
            "acme/developers",
            "widgets",
            "widgets/frontend"
        ])
    );
    let log = bb.log();
    assert!(logged(&log, "token grant=authorization_code"), "{log:?}");
    assert!(
        logged(
            &log,
            "GET /2.0/user/permissions/workspaces?pagelen=2&page=2"
        ),
        "the next page of workspaces is read: {log:?}"
    );
    assert!(
        logged(&log, "GET /2.0/user/emails?pagelen=2&page=2"),
        "{log:?}"
    );
    assert!(logged(&log, "GET /1.0/groups/acme"), "{log:?}");
    assert!(logged(&log, "GET /1.0/groups/widgets"), "{log:?}");
    assert!(!logged(&log, "GET /1.0/groups/jdoe-personal"), "{log:?}");

    // bob: a member of acme (sees only his own groups there), owner of widgets.
    bb.sign_in(Some("bob"));
    let c = id_claims(&sign_in(&app, "bitbucket").await);
    assert_eq!(c["email"], "bob@acme.example");
    assert_eq!(c["name"], "Bob Builder");
    assert_eq!(
        groups(&c),
        strings(&[
            "acme",
            "acme/developers",
            "acme/qa-team",
            "widgets",
            "widgets/backend"
        ])
    );

    // A refresh goes back to Bitbucket (its refresh grant) and picks up a new group.
    bb.add_group(
        "widgets",
        "Release Managers",
        "release-managers",
        "admin",
        &["jdoe"],
    );
    app.clock.advance(PAST_REUSE_WINDOW);
    bb.clear_log();
    let (status, r) = refresh(&app, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{r}");
    assert!(
        logged(&bb.log(), "token grant=refresh_token"),
        "{:?}",
        bb.log()
    );
    assert!(
        groups(&id_claims(&r)).contains(&"widgets/release-managers".to_owned()),
        "{r}"
    );
}

#[tokio::test]
async fn bitbucket_refusals_and_outages() {
    let (mut bb, app) = bitbucket_setup().await;

    // eve is in none of the allowed workspaces.
    bb.sign_in(Some("eve"));
    let a = redirect_login(&app, "bitbucket").await;
    assert_refused_page(
        &a,
        "Bitbucket bitbucket",
        "none of the allowed Bitbucket workspaces",
    );

    // The API answers 500 (Bitbucket's JSON error) after the user consented.
    bb.sign_in(Some("jdoe"));
    let authorize = to_provider(&app, "bitbucket").await;
    let back = at_provider(&app, &authorize).await;
    bb.fail_with(
        500,
        "application/json",
        r#"{"type": "error", "error": {"message": "Something went wrong", "id": "5f1c8e0b4c8a4e0a9d7f2b3c1a6e9d42"}}"#,
    );
    assert_unavailable_page(&get(&app, &back).await, "Bitbucket bitbucket");
    local_login_works(&app).await;
    bb.recover();

    // Bitbucket is down.
    let authorize = to_provider(&app, "bitbucket").await;
    let back = at_provider(&app, &authorize).await;
    bb.stop().await;
    assert_unavailable_page(&get(&app, &back).await, "Bitbucket bitbucket");
    local_login_works(&app).await;
}

// ---------------------------------------------------------------------------------------------
// Atlassian Crowd

fn crowd_user(name: &str, first: &str, last: &str, password: &str, groups: &[&str]) -> crowd::User {
    crowd::User {
        name: name.into(),
        key: format!("32769:{name}-3de3a33c-0d5e-4c5b-9c1e-2b7f9a1d0e55"),
        first_name: first.into(),
        last_name: last.into(),
        email: format!("{name}@corp.example"),
        password: password.into(),
        active: true,
        groups: strings(groups),
    }
}

async fn crowd_setup(providers: impl Fn(&crowd::Crowd) -> String) -> (crowd::Crowd, TestApp) {
    let cr = crowd::start().await;
    cr.add_user(crowd_user(
        "jane",
        "Jane",
        "Doe",
        "jane-crowd-pw",
        &["engineering", "confluence-users"],
    ));
    cr.add_user(crowd_user(
        "bob",
        "Bob",
        "Builder",
        "bob-crowd-pw",
        &["jira-users"],
    ));
    let mut carl = crowd_user("carl", "Carl", "Gone", "carl-crowd-pw", &["k8s-users"]);
    carl.active = false;
    cr.add_user(carl);
    // engineering ⊂ k8s-users ⊂ staff: jane is in k8s-users through nesting only.
    cr.nest("engineering", "k8s-users");
    cr.nest("k8s-users", "staff");
    let app = keygate(&providers(&cr)).await;
    (cr, app)
}

const CROWD_GROUPS: &str = "    groups: [k8s-users, k8s-admins]\n";

async fn crowd_form(app: &TestApp, connector: &str) -> String {
    let a = get(app, &app.url(&format!("auth/{connector}?{}", auth_query()))).await;
    assert_eq!(a.status, 302, "{}", a.body);
    let form = a.location.unwrap();
    assert!(
        form.contains(&format!("/auth/{connector}/login?state=")),
        "{form}"
    );
    form
}

async fn crowd_login(app: &TestApp, connector: &str, login: &str, password: &str) -> Answer {
    let form = crowd_form(app, connector).await;
    submit(app, &form, login, password).await
}

fn assert_invalid_form(a: &Answer, what: &str) {
    assert_eq!(a.status, 401, "{what}: {}", a.body);
    assert!(a.body.contains(INVALID), "{what}: {}", a.body);
    assert!(a.location.is_none(), "{what}");
}

#[tokio::test]
async fn crowd_password_logins_groups_and_refresh() {
    let (cr, app) =
        crowd_setup(|cr| cr.dex_provider("crowd", crowd::APP_PASSWORD, CROWD_GROUPS)).await;

    let form = crowd_form(&app, "crowd").await;
    let page = get(&app, &form).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("Crowd username"), "{}", page.body);

    let a = submit(&app, &form, "jane", "jane-crowd-pw").await;
    let t = tokens(&app, &code_of(&a)).await;
    let c = id_claims(&t);
    let key = cr.data().users["jane"].key.clone();
    assert_eq!(c["sub"], dex_subject(&key, "crowd"));
    assert_eq!(c["email"], "jane@corp.example");
    assert_eq!(c["name"], "Jane Doe");
    assert_eq!(c["preferred_username"], "jane");
    // Deckhouse: with `groups`, the token holds the user's (nested) groups that are in the list.
    assert_eq!(groups(&c), strings(&["k8s-users"]));
    let log = cr.log();
    assert!(
        logged(
            &log,
            "POST /crowd/rest/usermanagement/1/authentication?username=jane"
        ),
        "{log:?}"
    );
    assert!(
        logged(
            &log,
            "GET /crowd/rest/usermanagement/1/user/group/nested?username=jane"
        ),
        "{log:?}"
    );

    // Crowd names are case-insensitive; the canonical name comes back.
    let a = crowd_login(&app, "crowd", "JANE", "jane-crowd-pw").await;
    let c2 = id_claims(&tokens(&app, &code_of(&a)).await);
    assert_eq!(c2["preferred_username"], "jane");
    assert_eq!(c2["sub"], c["sub"]);

    // Refusals all look the same: the form again, 401.
    assert_invalid_form(
        &crowd_login(&app, "crowd", "jane", "wrong").await,
        "wrong password",
    );
    assert_invalid_form(
        &crowd_login(&app, "crowd", "nobody", "whatever").await,
        "unknown user",
    );
    assert_invalid_form(
        &crowd_login(&app, "crowd", "carl", "carl-crowd-pw").await,
        "inactive user",
    );
    // The right password but none of the allowed groups: say so (403), as Dex's error page does.
    assert_refused_page(
        &crowd_login(&app, "crowd", "bob", "bob-crowd-pw").await,
        "Crowd",
        "the user is in none of the allowed Crowd groups",
    );

    // A refresh re-reads the user and the groups at Crowd.
    cr.data()
        .users
        .get_mut("jane")
        .unwrap()
        .groups
        .push("k8s-admins".into());
    app.clock.advance(PAST_REUSE_WINDOW);
    cr.clear_log();
    let (status, r) = refresh(&app, t["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(
        groups(&id_claims(&r)),
        strings(&["k8s-admins", "k8s-users"])
    );
    assert!(
        logged(
            &cr.log(),
            "GET /crowd/rest/usermanagement/1/user?username=jane"
        ),
        "{:?}",
        cr.log()
    );

    // Deactivated at Crowd: the refresh is refused.
    cr.data().users.get_mut("jane").unwrap().active = false;
    app.clock.advance(PAST_REUSE_WINDOW);
    let (status, e) = refresh(&app, r["refresh_token"].as_str().unwrap()).await;
    assert_eq!(status, 400, "{e}");
    assert_eq!(e["error"], "invalid_grant");
}

#[tokio::test]
async fn crowd_application_refused_or_down_is_a_503() {
    let (mut cr, app) = crowd_setup(|cr| {
        format!(
            "{}{}",
            cr.dex_provider("crowd", crowd::APP_PASSWORD, CROWD_GROUPS),
            cr.dex_provider("crowd-misconfigured", "not-the-app-password", CROWD_GROUPS)
        )
    })
    .await;

    // Crowd refuses the application's password (401): an outage for users, not their fault.
    let a = crowd_login(&app, "crowd-misconfigured", "jane", "jane-crowd-pw").await;
    assert_unavailable_page(&a, "Crowd crowd-misconfigured");
    assert!(logged(
        &cr.log(),
        "POST /crowd/rest/usermanagement/1/authentication"
    ));

    // Crowd refuses the application from this address (403).
    cr.data().refuse_address = true;
    let a = crowd_login(&app, "crowd", "jane", "jane-crowd-pw").await;
    assert_unavailable_page(&a, "Crowd crowd");
    cr.data().refuse_address = false;

    // Crowd answers 500.
    cr.fail_with(
        500,
        "text/html",
        "<html><body><h1>HTTP Status 500 - Internal Server Error</h1></body></html>",
    );
    let a = crowd_login(&app, "crowd", "jane", "jane-crowd-pw").await;
    assert_unavailable_page(&a, "Crowd crowd");
    local_login_works(&app).await;
    cr.recover();
    let a = crowd_login(&app, "crowd", "jane", "jane-crowd-pw").await;
    assert_eq!(a.status, 303, "{}", a.body);

    // Crowd is down.
    cr.stop().await;
    let a = crowd_login(&app, "crowd", "jane", "jane-crowd-pw").await;
    assert_unavailable_page(&a, "Crowd crowd");
    local_login_works(&app).await;
}
