//! Brute-force protection and account safety, in-process with a controlled clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

fn app_query() -> String {
    format!(
        "client_id={}&redirect_uri={}&response_type=code&scope=openid%20offline_access&state=s",
        enc(APP),
        enc(APP_REDIRECT)
    )
}

async fn attempt(
    web: &Http,
    form_url: &str,
    login: &str,
    password: &str,
    xff: Option<&str>,
) -> reqwest::Response {
    let mut req = web
        .http
        .post(form_url)
        .form(&[("login", login), ("password", password)]);
    if let Some(ip) = xff {
        req = req.header("x-forwarded-for", ip);
    }
    req.send().await.unwrap()
}

fn retry_after(r: &reqwest::Response) -> i64 {
    r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap()
}

async fn twenty_then_one_every_six_seconds(login: &str) {
    let app = spawn_app("").await;
    let form = app.login_page(&app_query()).await;
    for i in 0..20 {
        let r = attempt(&app, &form, login, "wrong", None).await;
        assert_eq!(
            r.status(),
            401,
            "attempt {} is checked and refused as wrong",
            i + 1
        );
    }
    // The 21st, even with the right password, is refused before the password is checked.
    let r = attempt(&app, &form, login, "password", None).await;
    assert_eq!(r.status(), 429);
    let wait = retry_after(&r);
    assert!((1..=6).contains(&wait), "Retry-After {wait}");
    assert!(r.text().await.unwrap().contains("Try again in 6 seconds"));
    app.clock.advance(5);
    let r = attempt(&app, &form, login, "password", None).await;
    assert_eq!((r.status().as_u16(), retry_after(&r)), (429, 1));
    // 6 s after the limit was hit: exactly one more attempt.
    app.clock.advance(1);
    assert_eq!(
        attempt(&app, &form, login, "wrong", None).await.status(),
        401
    );
    assert_eq!(
        attempt(&app, &form, login, "password", None).await.status(),
        429
    );
    app.clock.advance(6);
    let r = attempt(&app, &form, login, "password", None).await;
    let expected = if login == "jane@example.com" {
        303
    } else {
        401
    };
    assert_eq!(
        r.status(),
        expected,
        "after 6 s more, one attempt gets through"
    );
    let metrics = app
        .http
        .get(app.url("metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("keygate_login_attempts_total{result=\"rate_limited_user\"} 3"),
        "{metrics}"
    );
    // Request durations by route template, never by raw path (the connector id is a label value
    // of nobody's choosing).
    let logins: u64 = metrics
        .lines()
        .find_map(|l| {
            l.strip_prefix(
                "keygate_http_request_duration_seconds_count{route=\"/auth/{connector}/login\"} ",
            )
        })
        .unwrap_or_else(|| panic!("{metrics}"))
        .parse()
        .unwrap();
    assert!(logins >= 23, "{logins} login requests timed");
    assert!(
        !metrics.contains("route=\"/auth/local/login\""),
        "{metrics}"
    );
}

#[tokio::test]
async fn twenty_attempts_then_one_every_six_seconds() {
    twenty_then_one_every_six_seconds("jane@example.com").await;
}

#[tokio::test]
async fn unknown_usernames_are_limited_exactly_like_known_ones() {
    twenty_then_one_every_six_seconds("nobody@example.com").await;
}

#[tokio::test]
async fn buckets_are_per_username_and_normalized() {
    let app = spawn_app("  bruteForce: {attempts: 2, refillEvery: 6s}\n").await;
    let form = app.login_page(&app_query()).await;
    assert_eq!(
        attempt(&app, &form, "Jane@Example.com", "x", None)
            .await
            .status(),
        401
    );
    assert_eq!(
        attempt(&app, &form, " jane@example.com", "x", None)
            .await
            .status(),
        401
    );
    assert_eq!(
        attempt(&app, &form, "JANE@EXAMPLE.COM", "password", None)
            .await
            .status(),
        429,
        "one bucket per normalized name"
    );
    assert_eq!(
        attempt(&app, &form, "john@example.com", "x", None)
            .await
            .status(),
        401,
        "john has his own bucket"
    );
}

#[tokio::test]
async fn per_address_limit_believes_only_trusted_proxies() {
    let spec = "  bruteForce: {attempts: 100, perIP: {attempts: 3, refillEvery: 10s}, trustedProxies: [127.0.0.1/32]}\n";
    let app = spawn_app(spec).await;
    let form = app.login_page(&app_query()).await;
    for user in ["a@example.com", "b@example.com", "c@example.com"] {
        assert_eq!(
            attempt(&app, &form, user, "x", Some("1.1.1.1"))
                .await
                .status(),
            401
        );
    }
    let r = attempt(&app, &form, "jane@example.com", "password", Some("1.1.1.1")).await;
    assert_eq!(
        (r.status().as_u16(), retry_after(&r)),
        (429, 10),
        "the address is over its limit, whatever the user"
    );
    assert_eq!(
        attempt(&app, &form, "jane@example.com", "password", Some("2.2.2.2"))
            .await
            .status(),
        303,
        "another address is not"
    );

    // Failed token requests count too, and get 429 with Retry-After as JSON.
    for _ in 0..3 {
        let r = app
            .http
            .post(app.url("token"))
            .header("x-forwarded-for", "3.3.3.3")
            .basic_auth(APP, Some("bad"))
            .form(&[("grant_type", "refresh_token"), ("refresh_token", "x.y")])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401);
    }
    let r = app
        .http
        .post(app.url("token"))
        .header("x-forwarded-for", "3.3.3.3")
        .basic_auth(APP, Some("app-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x.y")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "temporarily_unavailable"
    );
    app.clock.advance(10);
    let r = app
        .http
        .post(app.url("token"))
        .header("x-forwarded-for", "3.3.3.3")
        .basic_auth(APP, Some("app-secret"))
        .form(&[("grant_type", "refresh_token"), ("refresh_token", "x.y")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "one more after the refill");

    // Without trusted proxies, forwarded headers are ignored: every request is 127.0.0.1.
    let app =
        spawn_app("  bruteForce: {attempts: 100, perIP: {attempts: 2, refillEvery: 10s}}\n").await;
    let form = app.login_page(&app_query()).await;
    assert_eq!(
        attempt(&app, &form, "a@example.com", "x", Some("1.1.1.1"))
            .await
            .status(),
        401
    );
    assert_eq!(
        attempt(&app, &form, "b@example.com", "x", Some("2.2.2.2"))
            .await
            .status(),
        401
    );
    assert_eq!(
        attempt(&app, &form, "jane@example.com", "password", Some("4.4.4.4"))
            .await
            .status(),
        429
    );
}

#[tokio::test]
async fn lockout_policy_locks_logins_and_refreshes_then_expires() {
    let app = spawn_app("  passwordPolicy: {lockout: {maxAttempts: 3, lockDuration: 10m}}\n").await;
    let tokens = app.app_tokens("openid email offline_access").await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let form = app.login_page(&app_query()).await;
    for _ in 0..3 {
        assert_eq!(
            attempt(&app, &form, "jane@example.com", "wrong", None)
                .await
                .status(),
            401
        );
    }
    let r = attempt(&app, &form, "jane@example.com", "password", None).await;
    assert_eq!(
        r.status(),
        401,
        "locked: the right password is refused, and the answer does not say so"
    );
    assert!(
        r.text()
            .await
            .unwrap()
            .contains("Invalid email address or password")
    );
    app.clock.advance(599);
    let (s, body) = app
        .token(
            Some((APP, "app-secret")),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(
        s, 200,
        "a lockout from failed logins does not end existing sessions (it would let anyone log a user out): {body}"
    );
    app.clock.advance(1);
    let form = app.login_page(&app_query()).await;
    assert_eq!(
        attempt(&app, &form, "jane@example.com", "password", None)
            .await
            .status(),
        303,
        "the lock expired"
    );
    // A success resets the streak: two more failures do not lock.
    let form = app.login_page(&app_query()).await;
    for _ in 0..2 {
        assert_eq!(
            attempt(&app, &form, "jane@example.com", "wrong", None)
                .await
                .status(),
            401
        );
    }
    assert_eq!(
        attempt(&app, &form, "jane@example.com", "password", None)
            .await
            .status(),
        303
    );
}

#[tokio::test]
async fn administrator_lock_and_unlock() {
    use keygate_oidc::accounts;
    use keygate_store::model::UserState;
    let app = spawn_app("").await;
    let refresh = app.app_tokens("openid email offline_access").await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    let id = UserState::id_for("local", "jane");
    accounts::lock(app.store(), &id, app.clock_now(), None)
        .await
        .unwrap();
    app.clock.advance(600);
    let (s, _) = app
        .token(
            Some((APP, "app-secret")),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(
        s, 400,
        "an administrator's lock ends sessions at their next refresh"
    );
    let form = app.login_page(&app_query()).await;
    assert_eq!(
        attempt(&app, &form, "jane@example.com", "password", None)
            .await
            .status(),
        401
    );
    app.clock.advance(365 * 86400);
    let form = app.login_page(&app_query()).await;
    assert_eq!(
        attempt(&app, &form, "jane@example.com", "password", None)
            .await
            .status(),
        401,
        "until unlocked"
    );
    accounts::unlock(app.store(), &id, app.clock_now())
        .await
        .unwrap();
    let form = app.login_page(&app_query()).await;
    assert_eq!(
        attempt(&app, &form, "jane@example.com", "password", None)
            .await
            .status(),
        303
    );
}

#[tokio::test]
async fn user_ttl_counts_from_the_first_sighting() {
    let dir = temp_dir("ttl");
    let spec = format!(
        "  storage: {{type: sqlite, path: {}}}\n",
        dir.join("k.db").display()
    );
    let manifests = format!(
        "{}---\napiVersion: deckhouse.io/v1\nkind: User\nmetadata: {{name: temp}}\nspec: {{email: temp@example.com, password: \"{PASSWORD_HASH}\", ttl: 1h}}\n",
        fixture_manifests()
    );
    let app = spawn_app_with(&spec, &manifests, None).await;
    let query = app_query();
    let back = app.login(&query, "temp@example.com", "password").await;
    let code = TestApp::query_param(&back, "code").unwrap();
    let (_, tokens) = app
        .token(
            Some((APP, "app-secret")),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", APP_REDIRECT),
            ],
        )
        .await;
    let port = app.stop().await;

    // A restart an hour later does not restart the TTL.
    let app = spawn_app_with(&spec, &manifests, Some(port)).await;
    app.clock.advance(3600);
    let form = app.login_page(&query).await;
    assert_eq!(
        attempt(&app, &form, "temp@example.com", "password", None)
            .await
            .status(),
        401,
        "expired"
    );
    let (s, _) = app
        .token(
            Some((APP, "app-secret")),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!(s, 400, "an expired user cannot refresh");
}
