//! RFC 8628 device flow, in-process with a controlled clock.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

async fn poll(app: &TestApp, device_code: &str) -> (u16, Value) {
    app.token(
        None,
        &[
            ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
            ("device_code", device_code),
            ("client_id", CLI),
        ],
    )
    .await
}

#[tokio::test]
async fn device_flow_end_to_end() {
    let app = spawn_app("").await;
    let d: Value = app
        .http
        .post(app.url("device/code"))
        .form(&[
            ("client_id", CLI),
            ("scope", "openid email groups offline_access"),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_code = d["user_code"].as_str().unwrap().to_owned();
    let device_code = d["device_code"].as_str().unwrap().to_owned();
    assert_eq!(user_code.len(), 9);
    assert_eq!(&user_code[4..5], "-");
    assert_eq!(d["verification_uri"], app.url("device"));
    assert_eq!(d["interval"], 5);

    let (s, r) = poll(&app, &device_code).await;
    assert_eq!(
        (s, r["error"].as_str()),
        (400, Some("authorization_pending"))
    );
    let (s, r) = poll(&app, &device_code).await;
    assert_eq!(
        (s, r["error"].as_str()),
        (400, Some("slow_down")),
        "polled too fast"
    );

    // The user approves in a browser, typing the code sloppily.
    let page = app
        .http
        .get(app.url(&format!("device?user_code={user_code}")))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains(&user_code));
    let typed = user_code.replace('-', "").to_lowercase();
    let r = app
        .http
        .post(app.url("device"))
        .form(&[("user_code", typed.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let form = TestApp::location(&r);
    let r = app
        .http
        .post(&form)
        .form(&[("login", "jane@example.com"), ("password", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let callback = TestApp::location(&r);
    assert!(
        callback.starts_with(&app.url("device/callback")),
        "{callback}"
    );
    let done = app.http.get(&callback).send().await.unwrap();
    assert_eq!(done.status(), 200);
    assert!(
        done.text()
            .await
            .unwrap()
            .contains("Your device is signed in")
    );

    app.clock.advance(10);
    let (s, tokens) = poll(&app, &device_code).await;
    assert_eq!(s, 200, "{tokens}");
    assert_eq!(
        claims(tokens["id_token"].as_str().unwrap())["email"],
        "jane@example.com"
    );
    assert!(tokens["refresh_token"].is_string());
    let (s, r) = poll(&app, &device_code).await;
    assert_eq!(
        (s, r["error"].as_str()),
        (400, Some("expired_token")),
        "the device code is single-use"
    );
    // The refresh token works for the device's client.
    app.clock.advance(600);
    let (s, _) = app
        .token(
            None,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", CLI),
            ],
        )
        .await;
    assert_eq!(s, 200);
}

#[tokio::test]
async fn device_codes_expire_and_bad_codes_are_refused() {
    let app = spawn_app("").await;
    let d: Value = app
        .http
        .post(app.url("device/code"))
        .form(&[("client_id", CLI), ("scope", "openid")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = app
        .http
        .post(app.url("device"))
        .form(&[("user_code", "BCDF-GHJK")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert!(r.text().await.unwrap().contains("unknown or has expired"));
    app.clock.advance(300);
    let (s, r) = poll(&app, d["device_code"].as_str().unwrap()).await;
    assert_eq!((s, r["error"].as_str()), (400, Some("expired_token")));
    let r = app
        .http
        .post(app.url("device"))
        .form(&[("user_code", d["user_code"].as_str().unwrap())])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400, "an expired user code is refused");
    // A confidential client that lists redirect URIs without /device/callback may not use it.
    let r = app
        .http
        .post(app.url("device/code"))
        .basic_auth(APP, Some("app-secret"))
        .form(&[("scope", "openid")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    assert_eq!(
        r.json::<Value>().await.unwrap()["error"],
        "unauthorized_client"
    );
    let (s, r) = poll(&app, "nope").await;
    assert_eq!((s, r["error"].as_str()), (400, Some("expired_token")));
}

#[tokio::test]
async fn a_refused_sign_in_is_reported_to_the_device() {
    let app = spawn_app("").await;
    let d: Value = app
        .http
        .post(app.url("device/code"))
        .form(&[("client_id", CLI), ("scope", "openid")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_code = d["user_code"].as_str().unwrap();
    let r = app
        .http
        .get(app.url(&format!(
            "device/callback?error=access_denied&state={user_code}"
        )))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let (s, r) = poll(&app, d["device_code"].as_str().unwrap()).await;
    assert_eq!((s, r["error"].as_str()), (400, Some("access_denied")));
}

/// The client's allowedGroups refuse the user who signs in for the device: the browser says so
/// and the device's next poll gets `access_denied` (RFC 8628 §3.5), not an endless
/// `authorization_pending`.
#[tokio::test]
async fn a_client_filter_refusal_reaches_the_device() {
    const OPS_CLI: &str = "dex-client-ops-cli@tools";
    let manifests = format!(
        "{}---\napiVersion: deckhouse.io/v1\nkind: DexClient\nmetadata: {{name: ops-cli, namespace: tools}}\nspec: {{public: true, allowedGroups: [ops]}}\n",
        fixture_manifests()
    );
    let app = spawn_app_with("  storage: {type: memory}\n", &manifests, None).await;
    let d: Value = app
        .http
        .post(app.url("device/code"))
        .form(&[("client_id", OPS_CLI), ("scope", "openid groups")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let user_code = d["user_code"].as_str().unwrap();
    let device_code = d["device_code"].as_str().unwrap();
    let r = app
        .http
        .post(app.url("device"))
        .form(&[("user_code", user_code)])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 302);
    let form = TestApp::location(&r);
    // jane is in devs and everyone, not ops.
    let r = app
        .http
        .post(&form)
        .form(&[("login", "jane@example.com"), ("password", "password")])
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 303);
    let callback = TestApp::location(&r);
    assert!(callback.contains("error=access_denied"), "{callback}");
    let page = app.http.get(&callback).send().await.unwrap();
    assert_eq!(page.status(), 403);
    assert!(
        page.text()
            .await
            .unwrap()
            .contains("You are not allowed to use this application."),
    );
    let (s, r) = app
        .token(
            None,
            &[
                ("grant_type", "urn:ietf:params:oauth:grant-type:device_code"),
                ("device_code", device_code),
                ("client_id", OPS_CLI),
            ],
        )
        .await;
    assert_eq!(
        (s, r["error"].as_str()),
        (400, Some("access_denied")),
        "{r}"
    );
}
