//! Refresh-token families: several per user, caps, revocation, replay detection, and concurrent
//! refreshes across replicas on one store (in-process, with a controlled clock).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::*;
use serde_json::Value;

const SCOPES: &str = "openid email groups offline_access";

async fn refresh(web: &Http, token: &str) -> (u16, Value) {
    web.token(
        Some((APP, "app-secret")),
        &[("grant_type", "refresh_token"), ("refresh_token", token)],
    )
    .await
}

async fn revoke(web: &Http, who: (&str, &str), token: &str) -> u16 {
    web.http
        .post(web.url("token/revoke"))
        .basic_auth(who.0, Some(who.1))
        .form(&[("token", token)])
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

fn rt(v: &Value) -> String {
    v["refresh_token"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn several_sessions_per_user_and_client_live_side_by_side() {
    let app = spawn_app("").await;
    let a = rt(&app.app_tokens(SCOPES).await);
    let b = rt(&app.app_tokens(SCOPES).await);
    assert_ne!(
        a, b,
        "a second login (another kubeconfig) gets its own family"
    );
    app.clock.advance(600);
    assert_eq!(refresh(&app, &a).await.0, 200);
    assert_eq!(
        refresh(&app, &b).await.0,
        200,
        "the first kubeconfig does not break the second"
    );
    let list = keygate_oidc::sessions::list(app.store(), Some("jane@example.com"), app.clock_now())
        .await
        .unwrap();
    assert_eq!(list.len(), 2);
}

#[tokio::test]
async fn the_cap_drops_the_oldest_session() {
    let app = spawn_app("  refreshTokens: {maxSessionsPerClient: 2}\n").await;
    let first = rt(&app.app_tokens(SCOPES).await);
    app.clock.advance(1);
    let second = rt(&app.app_tokens(SCOPES).await);
    app.clock.advance(1);
    let third = rt(&app.app_tokens(SCOPES).await);
    app.clock.advance(600);
    assert_eq!(refresh(&app, &first).await.0, 400, "the oldest went");
    assert_eq!(refresh(&app, &second).await.0, 200);
    assert_eq!(refresh(&app, &third).await.0, 200);
}

#[tokio::test]
async fn revocation_kills_the_family() {
    let app = spawn_app("").await;
    let first = rt(&app.app_tokens(SCOPES).await);
    app.clock.advance(600);
    let (_, r) = refresh(&app, &first).await;
    let second = rt(&r);
    // Unknown tokens, access tokens and other clients' tokens: 200, nothing happens.
    assert_eq!(revoke(&app, (APP, "app-secret"), "nope.nope").await, 200);
    assert_eq!(
        revoke(
            &app,
            (APP, "app-secret"),
            r["access_token"].as_str().unwrap()
        )
        .await,
        200
    );
    assert_eq!(revoke(&app, (OPS, "ops-secret"), &second).await, 200);
    assert_eq!(revoke(&app, (APP, "wrong"), &second).await, 401);
    assert_eq!(refresh(&app, &second).await.0, 200, "still alive");
    // The obsolete secret, still inside its window, names the family too.
    assert_eq!(revoke(&app, (APP, "app-secret"), &first).await, 200);
    let (s, r) = refresh(&app, &second).await;
    assert_eq!((s, r["error"].as_str()), (400, Some("invalid_grant")));
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
        metrics.contains("keygate_refresh_sessions_revoked_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn replay_outside_the_window_revokes_with_revoke_on_reuse() {
    for revoke_on_reuse in [false, true] {
        let app = spawn_app(&format!(
            "  refreshTokens: {{revokeOnReuse: {revoke_on_reuse}}}\n"
        ))
        .await;
        let first = rt(&app.app_tokens(SCOPES).await);
        app.clock.advance(600);
        let second = rt(&refresh(&app, &first).await.1);
        app.clock.advance(121);
        assert_eq!(
            refresh(&app, &first).await.0,
            400,
            "replayed outside the window"
        );
        let (s, _) = refresh(&app, &second).await;
        assert_eq!(
            s,
            if revoke_on_reuse { 400 } else { 200 },
            "revokeOnReuse: {revoke_on_reuse}"
        );
    }
}

/// Two replicas (two providers with their own connections) on one SQLite file; 64 concurrent
/// refreshes of one token split between them all succeed with the same new token, after one
/// rotation and one upstream refresh.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_refreshes_across_replicas_rotate_once() {
    let dir = temp_dir("storm");
    let spec = format!(
        "  storage: {{type: sqlite, path: {}}}\n",
        dir.join("k.db").display()
    );
    let a = spawn_app_with(&spec, &fixture_manifests(), None).await;
    let b = spawn_app_with(&spec, &fixture_manifests(), None).await;
    let original = rt(&a.app_tokens(SCOPES).await);
    // Outside the reuse window after issuance, so this storm rotates.
    a.clock.advance(600);
    b.clock.advance(600);

    let mut tasks = Vec::new();
    for i in 0..64 {
        let web = if i % 2 == 0 {
            Http {
                issuer: a.issuer.clone(),
                http: a.http.clone(),
            }
        } else {
            Http {
                issuer: b.issuer.clone(),
                http: b.http.clone(),
            }
        };
        let token = original.clone();
        tasks.push(tokio::spawn(async move { refresh(&web, &token).await }));
    }
    let mut new_tokens = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        new_tokens.insert(rt(&body));
        assert_eq!(
            claims(body["id_token"].as_str().unwrap())["email"],
            "jane@example.com"
        );
    }
    assert_eq!(
        new_tokens.len(),
        1,
        "everyone got the same new refresh token"
    );
    let new = new_tokens.into_iter().next().unwrap();
    assert_ne!(new, original);

    let upstream = a.provider.metrics().upstream_refreshes.get()
        + b.provider.metrics().upstream_refreshes.get();
    assert_eq!(upstream, 1, "one upstream refresh for 64 callers");
    let id = original.split('.').next().unwrap();
    let stored: keygate_store::model::RefreshToken = a.store().get(id).await.unwrap().unwrap();
    assert_eq!(
        format!("{}.{}", stored.id, stored.token),
        new,
        "storage holds the one rotation"
    );
    assert_eq!(stored.obsolete_token.as_deref(), original.split('.').nth(1));
    assert_eq!(stored.last_used, START + 600);
}
