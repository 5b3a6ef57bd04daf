//! The provider over HTTP, in-process, with a controlled clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

const SCOPES: &str = "openid email profile groups offline_access";

#[tokio::test]
async fn discovery_and_keys() {
    let app = spawn_app("").await;
    let d: Value = app
        .http
        .get(app.url(".well-known/openid-configuration"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["issuer"], app.issuer);
    assert_eq!(d["token_endpoint"], app.url("token"));
    assert_eq!(d["jwks_uri"], app.url("keys"));
    assert_eq!(
        d["id_token_signing_alg_values_supported"],
        serde_json::json!(["RS256"])
    );
    let keys: Value = app
        .http
        .get(app.url("keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let key = &keys["keys"][0];
    assert_eq!(key["kty"], "RSA");
    assert_eq!(key["alg"], "RS256");
    assert!(key["n"].as_str().unwrap().len() > 300, "a 2048-bit modulus");
    let health = app.http.get(app.url("healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        app.http
            .get(app.url("readyz"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
}

/// `accessTokenFormat: JWT`: Dex's two tokens, for clients that check `at_hash` (go-oidc's
/// `VerifyAccessToken` requires it).
#[tokio::test]
async fn a_separate_access_token_on_request() {
    let app = spawn_app("  accessTokenFormat: JWT\n").await;
    let tokens = app.app_tokens(SCOPES).await;
    let (access, id_token) = (
        tokens["access_token"].as_str().unwrap(),
        tokens["id_token"].as_str().unwrap(),
    );
    assert_ne!(access, id_token);
    let id = claims(id_token);
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, access.as_bytes());
    let half = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        &digest.as_ref()[..16],
    );
    assert_eq!(id["at_hash"], half, "at_hash is the access token's");
    let at = claims(access);
    assert_eq!(at["sub"], id["sub"]);
    assert!(at.get("nonce").is_none() && at.get("at_hash").is_none());
    assert!(app.provider.verify_token(access).is_some());
    // A misspelt format is a configuration error naming the field.
    let dir = temp_dir("format");
    let path = dir.join("keygate.yaml");
    std::fs::write(
        &path,
        "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:5556/\n  accessTokenFormat: opaque\n",
    )
    .unwrap();
    let err = keygate_config::load(&path).unwrap_err();
    assert_eq!(
        err.field.as_deref(),
        Some("spec.accessTokenFormat"),
        "{err}"
    );
}

#[tokio::test]
async fn code_flow_claims_userinfo_and_introspection() {
    let app = spawn_app("").await;
    let tokens = app
        .app_tokens(&format!("{SCOPES} audience:server:client_id:kubernetes"))
        .await;
    assert_eq!(tokens["token_type"], "bearer");
    assert_eq!(tokens["expires_in"], 600);
    let id = claims(tokens["id_token"].as_str().unwrap());
    assert_eq!(id["iss"], app.issuer);
    assert_eq!(id["aud"], serde_json::json!(["kubernetes", APP]));
    assert_eq!(id["azp"], APP);
    assert_eq!(id["email"], "jane@example.com");
    assert_eq!(id["email_verified"], true);
    assert_eq!(id["groups"], serde_json::json!(["devs", "everyone"]));
    assert_eq!(id["name"], "jane");
    assert_eq!(id["nonce"], "n0nce");
    assert_eq!(id["iat"], START);
    assert_eq!(id["exp"], START + 600);
    assert!(id["c_hash"].is_string());
    // One signature per answer: the access token is the ID token, so no `at_hash`.
    assert!(id.get("at_hash").is_none());
    assert_eq!(tokens["access_token"], tokens["id_token"]);
    // Dex's subject encoding for user "jane" on connector "local".
    assert_eq!(id["sub"], "CgRqYW5lEgVsb2NhbA");
    assert!(
        app.provider
            .verify_token(tokens["id_token"].as_str().unwrap())
            .is_some()
    );

    let access = tokens["access_token"].as_str().unwrap();
    let info: Value = app
        .http
        .get(app.url("userinfo"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(info["email"], "jane@example.com");
    assert_eq!(info["groups"], serde_json::json!(["devs", "everyone"]));
    let bad = app
        .http
        .get(app.url("userinfo"))
        .bearer_auth("garbage")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 401);
    assert!(
        bad.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("invalid_token")
    );

    let introspect = |token: String, who: (&'static str, &'static str)| {
        let app = &app;
        async move {
            let r = app
                .http
                .post(app.url("token/introspect"))
                .basic_auth(who.0, Some(who.1))
                .form(&[("token", token)])
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (s, v) = introspect(access.to_owned(), (APP, "app-secret")).await;
    assert_eq!(
        (s, v["active"].clone(), v["token_use"].clone()),
        (200, Value::Bool(true), "access_token".into())
    );
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let (_, v) = introspect(refresh.clone(), (APP, "app-secret")).await;
    assert_eq!(v["active"], true);
    assert_eq!(v["token_use"], "refresh_token");
    let (_, v) = introspect(refresh, (OPS, "ops-secret")).await;
    assert_eq!(
        v["active"], false,
        "another client may not introspect this refresh token"
    );
    let (s, _) = introspect(access.to_owned(), (APP, "wrong")).await;
    assert_eq!(s, 401);
    app.clock.advance(601);
    let (_, v) = introspect(access.to_owned(), (APP, "app-secret")).await;
    assert_eq!(v["active"], false, "expired access token");
}

#[tokio::test]
async fn pkce_s256_and_plain() {
    let app = spawn_app("").await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let redirect = "http://127.0.0.1:18000/cb";
    for (method, sent) in [("S256", challenge), ("plain", verifier)] {
        let code = app
            .code_for(
                CLI,
                redirect,
                "openid",
                &format!("&code_challenge={sent}&code_challenge_method={method}"),
            )
            .await;
        let form = [
            ("grant_type", "authorization_code"),
            ("code", &code),
            ("redirect_uri", redirect),
            ("client_id", CLI),
            ("code_verifier", verifier),
        ];
        let (status, body) = app.token(None, &form).await;
        assert_eq!(status, 200, "{method}: {body}");
        assert!(
            body.get("refresh_token").is_none(),
            "no offline_access, no refresh token"
        );
    }
}

/// Every case must give the RFC 6749 error and leave storage exactly as it was.
#[tokio::test]
async fn bad_token_requests_change_nothing() {
    let app = spawn_app("").await;
    let verifier = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    let challenge = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";
    let code = app
        .code_for(
            APP,
            APP_REDIRECT,
            SCOPES,
            &format!("&code_challenge={challenge}&code_challenge_method=S256"),
        )
        .await;
    let good = |extra: &[(&'static str, &'static str)]| {
        let mut f: Vec<(&str, String)> = vec![
            ("grant_type", "authorization_code".into()),
            ("code", code.clone()),
            ("redirect_uri", APP_REDIRECT.into()),
            ("code_verifier", verifier.into()),
        ];
        for (k, v) in extra {
            f.retain(|(key, _)| key != k);
            if !v.is_empty() {
                f.push((k, (*v).to_owned()));
            }
        }
        f
    };
    let long = "x".repeat(5000);
    /// (name, Basic credentials, form, expected status, expected error)
    type Case<'a> = (
        &'a str,
        Option<(&'a str, &'a str)>,
        Vec<(&'a str, String)>,
        u16,
        &'a str,
    );
    let cases: Vec<Case> = vec![
        (
            "unknown client",
            Some(("nobody", "x")),
            good(&[]),
            401,
            "invalid_client",
        ),
        (
            "wrong secret",
            Some((APP, "app-secret2")),
            good(&[]),
            401,
            "invalid_client",
        ),
        ("no client auth", None, good(&[]), 401, "invalid_client"),
        (
            "redirect mismatch",
            Some((APP, "app-secret")),
            good(&[("redirect_uri", "https://app.example.com/callback/")]),
            400,
            "invalid_grant",
        ),
        (
            "wrong verifier",
            Some((APP, "app-secret")),
            good(&[(
                "code_verifier",
                "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXX",
            )]),
            400,
            "invalid_grant",
        ),
        (
            "missing verifier",
            Some((APP, "app-secret")),
            good(&[("code_verifier", "")]),
            400,
            "invalid_grant",
        ),
        (
            "unknown code",
            Some((APP, "app-secret")),
            good(&[("code", "AAAA")]),
            400,
            "invalid_grant",
        ),
        (
            "no code",
            Some((APP, "app-secret")),
            good(&[("code", "")]),
            400,
            "invalid_request",
        ),
        (
            "other client's code",
            Some((OPS, "ops-secret")),
            good(&[]),
            400,
            "invalid_grant",
        ),
        (
            "unsupported grant",
            Some((APP, "app-secret")),
            good(&[("grant_type", "password")]),
            400,
            "unsupported_grant_type",
        ),
        (
            "no grant",
            Some((APP, "app-secret")),
            good(&[("grant_type", "")]),
            400,
            "invalid_request",
        ),
        (
            "oversized parameter",
            Some((APP, "app-secret")),
            good(&[("code", Box::leak(long.clone().into_boxed_str()))]),
            400,
            "invalid_request",
        ),
        (
            "garbage refresh token",
            Some((APP, "app-secret")),
            vec![
                ("grant_type", "refresh_token".into()),
                ("refresh_token", "\u{0}\u{ff}garbage".into()),
            ],
            400,
            "invalid_grant",
        ),
    ];
    let before = app.snapshot().await;
    for (name, basic, form, status, error) in cases {
        let mut req = app.http.post(app.url("token")).form(&form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{name}");
        assert_eq!(r.headers()["cache-control"], "no-store", "{name}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"], error, "{name}: {body}");
        assert!(body["error_description"].is_string(), "{name}");
        assert_eq!(app.snapshot().await, before, "{name} changed storage");
    }

    // Malformed requests: wrong content type, repeated parameters, junk bytes, huge bodies.
    let raw = |ct: &'static str, body: Vec<u8>| {
        app.http
            .post(app.url("token"))
            .header("content-type", ct)
            .basic_auth(APP, Some("app-secret"))
            .body(body)
            .send()
    };
    let r = raw(
        "application/json",
        br#"{"grant_type":"authorization_code"}"#.to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap()["error"].clone()
        ),
        (400, "invalid_request".into())
    );
    let r = raw(
        "application/x-www-form-urlencoded",
        b"grant_type=authorization_code&code=a&code=b".to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        (
            r.status().as_u16(),
            r.json::<Value>().await.unwrap()["error"].clone()
        ),
        (400, "invalid_request".into())
    );
    let r = raw(
        "application/x-www-form-urlencoded",
        vec![0xff, 0xfe, b'=', 0x00, b'&', b'%'],
    )
    .await
    .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let r = raw("application/x-www-form-urlencoded", vec![b'a'; 200_000])
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    let r = app
        .http
        .post(app.url("token"))
        .header("authorization", "Basic %%%")
        .form(&[("grant_type", "x")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(
        app.snapshot().await,
        before,
        "malformed requests changed storage"
    );

    // The code still works after all that.
    let (status, body) = app
        .token(
            Some((APP, "app-secret")),
            &good(&[])
                .iter()
                .map(|(k, v)| (*k, v.as_str()))
                .collect::<Vec<_>>(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn reused_code_revokes_its_tokens() {
    let app = spawn_app("").await;
    let code = app.code_for(APP, APP_REDIRECT, SCOPES, "").await;
    let form = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", APP_REDIRECT),
    ];
    let (status, tokens) = app.token(Some((APP, "app-secret")), &form).await;
    assert_eq!(status, 200);
    let (status, body) = app.token(Some((APP, "app-secret")), &form).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    let refresh = tokens["refresh_token"].as_str().unwrap();
    let (status, body) = app
        .token(
            Some((APP, "app-secret")),
            &[("grant_type", "refresh_token"), ("refresh_token", refresh)],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant")),
        "the refresh token from a replayed code is revoked"
    );
}

#[tokio::test]
async fn expired_code_and_expired_login_request() {
    let app = spawn_app("").await;
    let code = app.code_for(APP, APP_REDIRECT, "openid", "").await;
    app.clock.advance(300); // authCodeTTL default 5m: expired at exactly 300 s
    let before = app.snapshot().await;
    let (status, body) = app
        .token(
            Some((APP, "app-secret")),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", APP_REDIRECT),
            ],
        )
        .await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_grant"))
    );
    assert_eq!(app.snapshot().await, before);

    let form_url = app
        .login_page(&format!(
            "client_id={}&redirect_uri={}&response_type=code&scope=openid&state=s",
            enc(APP),
            enc(APP_REDIRECT)
        ))
        .await;
    app.clock.advance(601); // authRequestTTL default 10m
    let r = app
        .http
        .post(&form_url)
        .form(&[("login", "jane@example.com"), ("password", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("expired"));
}

#[tokio::test]
async fn refresh_rotation_and_reuse_window() {
    let app = spawn_app("").await;
    let tokens = app.app_tokens(SCOPES).await;
    let first = tokens["refresh_token"].as_str().unwrap().to_owned();
    let refresh = |t: String| {
        let app = &app;
        async move {
            app.token(
                Some((APP, "app-secret")),
                &[("grant_type", "refresh_token"), ("refresh_token", &t)],
            )
            .await
        }
    };
    // Inside the reuse window after issuance: same refresh token, fresh ID token.
    app.clock.advance(60);
    let (s, r) = refresh(first.clone()).await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(r["refresh_token"], first.as_str());
    assert_eq!(claims(r["id_token"].as_str().unwrap())["iat"], START + 60);

    // Outside the window: rotation.
    app.clock.advance(3600);
    let (s, r) = refresh(first.clone()).await;
    assert_eq!(s, 200, "{r}");
    let second = r["refresh_token"].as_str().unwrap().to_owned();
    assert_ne!(second, first);
    let rotated_at = START + 3660;
    // A concurrent caller with the obsolete token at reuseInterval - 1 s: the same new token.
    app.clock.set(rotated_at + 119);
    let (s, r) = refresh(first.clone()).await;
    assert_eq!(
        (s, r["refresh_token"].as_str()),
        (200, Some(second.as_str()))
    );
    // At reuseInterval + 1 s: refused.
    app.clock.set(rotated_at + 121);
    let (s, r) = refresh(first.clone()).await;
    assert_eq!((s, r["error"].as_str()), (400, Some("invalid_grant")));
    // The current token still works and rotates again.
    let (s, r) = refresh(second.clone()).await;
    assert_eq!(s, 200);
    assert_ne!(r["refresh_token"], second.as_str());
    // Another client cannot use it.
    let (s, r) = app
        .token(
            Some((OPS, "ops-secret")),
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", r["refresh_token"].as_str().unwrap()),
            ],
        )
        .await;
    assert_eq!((s, r["error"].as_str()), (400, Some("invalid_grant")));
}

#[tokio::test]
async fn refresh_lifetimes_hold_to_the_second() {
    let app = spawn_app(
        "  refreshTokens: {reuseInterval: 0s, validIfNotUsedFor: 1h, absoluteLifetime: 3h}\n",
    )
    .await;
    let refresh = |t: String| {
        let app = &app;
        async move {
            app.token(
                Some((APP, "app-secret")),
                &[("grant_type", "refresh_token"), ("refresh_token", &t)],
            )
            .await
        }
    };
    // Absolute lifetime: kept alive by use every 3599 s, the family still dies at created + 3 h.
    let mut token = app.app_tokens(SCOPES).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    for _ in 0..3 {
        app.clock.advance(3599);
        let (s, r) = refresh(token).await;
        assert_eq!(s, 200, "{r}");
        token = r["refresh_token"].as_str().unwrap().to_owned();
    }
    app.clock.set(START + 3 * 3600 - 1);
    let (s, r) = refresh(token).await;
    assert_eq!(s, 200, "1 s before the absolute lifetime");
    app.clock.set(START + 3 * 3600);
    let (s, r) = refresh(r["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(
        (s, r["error"].as_str()),
        (400, Some("invalid_grant")),
        "at the absolute lifetime"
    );

    // Idle expiry, far from the absolute lifetime.
    let token = app.app_tokens(SCOPES).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_owned();
    app.clock.advance(3599);
    let (s, r) = refresh(token).await;
    assert_eq!(s, 200, "idle 1 s less than validIfNotUsedFor");
    app.clock.advance(3600);
    let (s, r) = refresh(r["refresh_token"].as_str().unwrap().to_owned()).await;
    assert_eq!(
        (s, r["error"].as_str()),
        (400, Some("invalid_grant")),
        "idle for exactly validIfNotUsedFor"
    );
}

#[tokio::test]
async fn client_filters_at_login() {
    let app = spawn_app("").await;
    // jane is in devs/everyone: ops-only allows ops and admins only.
    let query = format!(
        "client_id={}&redirect_uri={}&response_type=code&scope=openid%20groups&state=s",
        enc(OPS),
        enc("https://ops.example.com/cb")
    );
    let back = app.login(&query, "jane@example.com", "password").await;
    assert_eq!(
        TestApp::query_param(&back, "error").as_deref(),
        Some("access_denied")
    );
    assert!(back.starts_with("https://ops.example.com/cb?"));
    // john is in ops: allowed, and groups are intersected with allowedGroups.
    let back = app.login(&query, "john@example.com", "password").await;
    let code = TestApp::query_param(&back, "code").unwrap();
    let (s, t) = app
        .token(
            Some((OPS, "ops-secret")),
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", "https://ops.example.com/cb"),
            ],
        )
        .await;
    assert_eq!(s, 200);
    assert_eq!(
        claims(t["id_token"].as_str().unwrap())["groups"],
        serde_json::json!(["ops"])
    );
}

#[tokio::test]
async fn authorization_request_errors() {
    let app = spawn_app("").await;
    let get = |q: String| {
        let app = &app;
        async move {
            app.http
                .get(app.url(&format!("auth?{q}")))
                .send()
                .await
                .unwrap()
        }
    };
    // Untrusted client or redirect URI: an error page, never a redirect.
    for q in [
        format!(
            "client_id=nobody&redirect_uri={}&response_type=code&scope=openid",
            enc(APP_REDIRECT)
        ),
        format!(
            "client_id={}&redirect_uri={}&response_type=code&scope=openid",
            enc(APP),
            enc("https://evil.example.com/cb")
        ),
        format!("client_id={}&response_type=code&scope=openid", enc(APP)),
        format!(
            "client_id={}&redirect_uri={}&response_type=code&scope=openid",
            enc(CLI),
            enc("https://localhost/cb")
        ),
        format!(
            "client_id={}&client_id=x&redirect_uri={}",
            enc(APP),
            enc(APP_REDIRECT)
        ),
        format!(
            "client_id={}&redirect_uri={}&state={}",
            enc(APP),
            enc(APP_REDIRECT),
            "s".repeat(3000)
        ),
    ] {
        let r = get(q.clone()).await;
        assert_eq!(r.status(), 400, "{q}");
        assert!(r.headers().get("location").is_none());
        assert!(
            r.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/html")
        );
    }
    // Trusted redirect URI, bad request: back to the client with the error and state.
    for (q, error) in [
        (
            "response_type=token&scope=openid",
            "unsupported_response_type",
        ),
        ("response_type=code&scope=email", "invalid_scope"),
        ("response_type=code&scope=openid%20admin", "invalid_scope"),
        (
            "response_type=code&scope=openid%20audience:server:client_id:dex-client-ops-only@web",
            "invalid_scope",
        ),
        (
            "response_type=code&scope=openid&code_challenge=short&code_challenge_method=S256",
            "invalid_request",
        ),
        (
            "response_type=code&scope=openid&code_challenge=dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk&code_challenge_method=S512",
            "invalid_request",
        ),
    ] {
        let r = get(format!(
            "client_id={}&redirect_uri={}&state=xyz&{q}",
            enc(APP),
            enc(APP_REDIRECT)
        ))
        .await;
        assert_eq!(r.status(), 303, "{q}");
        let back = TestApp::location(&r);
        assert!(back.starts_with(APP_REDIRECT), "{back}");
        assert_eq!(
            TestApp::query_param(&back, "error").as_deref(),
            Some(error),
            "{q}"
        );
        assert_eq!(TestApp::query_param(&back, "state").as_deref(), Some("xyz"));
    }
    assert!(
        app.snapshot().await[0].1.is_empty(),
        "no authorization request was stored"
    );
}

#[tokio::test]
async fn login_form_failures() {
    let app = spawn_app("").await;
    let query = format!(
        "client_id={}&redirect_uri={}&response_type=code&scope=openid&state=s",
        enc(APP),
        enc(APP_REDIRECT)
    );
    let form_url = app.login_page(&query).await;
    let page = app.http.get(&form_url).send().await.unwrap();
    assert_eq!(page.headers()["x-frame-options"], "DENY");
    let html = page.text().await.unwrap();
    assert!(
        html.contains(r#"name="login""#)
            && html.contains(r#"name="password""#)
            && html.contains(r#"method="post""#)
    );
    for (login, password) in [
        ("jane@example.com", "wrong"),
        ("nobody@example.com", "password"),
        ("jane@example.com", ""),
        ("", ""),
    ] {
        let r = app
            .http
            .post(&form_url)
            .form(&[("login", login), ("password", password)])
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{login}/{password}");
        assert!(
            r.text()
                .await
                .unwrap()
                .contains("Invalid email address or password")
        );
    }
    // Form posts from other origins are refused (login CSRF); same-origin browser posts pass.
    let wrong = [("login", "jane@example.com"), ("password", "wrong")];
    for (header, value, status) in [
        ("origin", "https://evil.example.com", 403),
        ("sec-fetch-site", "cross-site", 403),
        ("sec-fetch-site", "same-site", 403),
        ("sec-fetch-site", "same-origin", 401),
        ("origin", "null", 401),
    ] {
        let r = app
            .http
            .post(&form_url)
            .header(header, value)
            .form(&wrong)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{header}: {value}");
    }
    // Login is case-insensitive on the email; the request is single-use.
    let r = app
        .http
        .post(&form_url)
        .header("origin", app.issuer.trim_end_matches('/'))
        .form(&[("login", "Jane@Example.com"), ("password", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let r = app
        .http
        .post(&form_url)
        .form(&[("login", "jane@example.com"), ("password", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "a completed request cannot be replayed");
}

#[tokio::test]
async fn es256_signing() {
    let app = spawn_app("  signing: {algorithm: ES256}\n").await;
    let keys: Value = app
        .http
        .get(app.url("keys"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(keys["keys"][0]["kty"], "EC");
    assert_eq!(keys["keys"][0]["crv"], "P-256");
    let tokens = app.app_tokens("openid email").await;
    let header: Value = {
        use base64::Engine;
        let h = tokens["id_token"]
            .as_str()
            .unwrap()
            .split('.')
            .next()
            .unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["alg"], "ES256");
    assert_eq!(header["kid"], keys["keys"][0]["kid"]);
    assert!(
        app.provider
            .verify_token(tokens["id_token"].as_str().unwrap())
            .is_some()
    );
}

/// A refresh re-checks the user against the current configuration: group changes reach the new
/// ID token, the client's filters apply, and deleted users are refused.
#[tokio::test]
async fn refresh_rechecks_the_user_after_a_configuration_change() {
    let dir = temp_dir("recheck");
    let spec = format!(
        "  storage: {{type: sqlite, path: {}}}\n  refreshTokens: {{reuseInterval: 0s}}\n",
        dir.join("k.db").display()
    );
    let app = spawn_app_with(&spec, &fixture_manifests(), None).await;
    let tokens = app.app_tokens(SCOPES).await;
    let refresh = tokens["refresh_token"].as_str().unwrap().to_owned();
    let port = app.stop().await;

    // jane moves from devs to ops.
    let moved = fixture_manifests()
        .replace(
            "spec: {name: devs, members: [{kind: User, name: jane}]}",
            "spec: {name: devs, members: []}",
        )
        .replace(
            "spec: {name: ops, members: [{kind: User, name: john}]}",
            "spec: {name: ops, members: [{kind: User, name: john}, {kind: User, name: jane}]}",
        );
    let app = spawn_app_with(&spec, &moved, Some(port)).await;
    let (s, r) = app
        .token(
            Some((APP, "app-secret")),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        claims(r["id_token"].as_str().unwrap())["groups"],
        serde_json::json!(["ops"])
    );
    let refresh = r["refresh_token"].as_str().unwrap().to_owned();
    let port = app.stop().await;

    // jane is deleted.
    let deleted = fixture_manifests().replace(
        "metadata: {name: jane}\nspec: {email: jane@example.com",
        "metadata: {name: janet}\nspec: {email: janet@example.com",
    );
    let app = spawn_app_with(&spec, &deleted, Some(port)).await;
    let (s, r) = app
        .token(
            Some((APP, "app-secret")),
            &[("grant_type", "refresh_token"), ("refresh_token", &refresh)],
        )
        .await;
    assert_eq!(
        (s, r["error"].as_str()),
        (400, Some("invalid_grant")),
        "{r}"
    );
}
