//! A property test of the refresh-token state machine: random sequences of refreshes (with the
//! current, the obsolete, a stale or a forged secret), revocations and clock moves, run against the
//! real provider and against a model of DESIGN.md §3; both must agree on every step.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;

use common::*;
use keygate_oidc::{ClientAuth, ManualClock, Provider, TokenRequest};
use keygate_server::build_provider;
use keygate_store::model::{Identity, RefreshToken};
use proptest::prelude::*;

const REUSE: i64 = 120;
const IDLE: i64 = 900;
const ABSOLUTE: i64 = 3000;

#[derive(Debug, Clone)]
enum Op {
    Advance(i64),
    RefreshCurrent,
    RefreshObsolete,
    /// A secret from further back in the family's history (or the current one if none).
    RefreshStale(usize),
    RefreshForged,
    RevokeCurrent,
    RevokeObsolete,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0i64..400).prop_map(Op::Advance),
        // The boundaries of the reuse window and of the idle lifetime, hit exactly.
        2 => prop_oneof![Just(REUSE - 1), Just(REUSE), Just(REUSE + 1), Just(IDLE - 1), Just(IDLE)].prop_map(Op::Advance),
        4 => Just(Op::RefreshCurrent),
        3 => Just(Op::RefreshObsolete),
        1 => (0usize..8).prop_map(Op::RefreshStale),
        1 => Just(Op::RefreshForged),
        1 => Just(Op::RevokeCurrent),
        1 => Just(Op::RevokeObsolete),
    ]
}

/// What DESIGN.md §3 says the family looks like.
struct Model {
    now: i64,
    created: i64,
    last_used: i64,
    current: String,
    obsolete: Option<String>,
    history: Vec<String>,
    revoked: bool,
    revoke_on_reuse: bool,
}

enum Expect {
    /// Success with this refresh token (`None`: a new one, different from every earlier secret).
    Ok(Option<String>),
    Refused,
}

impl Model {
    fn expired(&self) -> bool {
        self.now >= (self.last_used + IDLE).min(self.created + ABSOLUTE)
    }

    fn refresh(&mut self, secret: &str) -> Expect {
        if self.revoked || self.expired() {
            return Expect::Refused;
        }
        let is_current = secret == self.current;
        let is_obsolete = self.obsolete.as_deref() == Some(secret);
        if self.now < self.last_used + REUSE && (is_current || is_obsolete) {
            return Expect::Ok(Some(self.current.clone()));
        }
        if !is_current {
            if is_obsolete && self.revoke_on_reuse {
                self.revoked = true;
            }
            return Expect::Refused;
        }
        Expect::Ok(None)
    }

    fn rotated(&mut self, new: String) {
        self.history.push(self.current.clone());
        self.obsolete = Some(std::mem::replace(&mut self.current, new));
        self.last_used = self.now;
    }

    fn revoke(&mut self, secret: &str) {
        if secret == self.current || self.obsolete.as_deref() == Some(secret) {
            self.revoked = true;
        }
    }
}

async fn provider(revoke_on_reuse: bool, clock: ManualClock) -> Arc<Provider> {
    let dir = temp_dir("model");
    let path = dir.join("k.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: keygate.io/v1alpha1\nkind: KeygateConfig\nspec:\n  issuer: http://127.0.0.1:1/\n  storage: {{type: memory}}\n  idTokenTTL: 1m\n  signing: {{algorithm: ES256}}\n  refreshTokens: {{reuseInterval: {REUSE}s, validIfNotUsedFor: {IDLE}s, absoluteLifetime: {ABSOLUTE}s, revokeOnReuse: {revoke_on_reuse}}}\n{}",
            fixture_manifests()
        ),
    )
    .unwrap();
    let config = keygate_config::load(&path).unwrap();
    Arc::new(
        build_provider(&config, Arc::new(clock))
            .await
            .unwrap()
            .provider,
    )
}

fn family(now: i64) -> RefreshToken {
    RefreshToken {
        id: "family".into(),
        token: "s0".into(),
        obsolete_token: None,
        client_id: APP.into(),
        connector_id: "local".into(),
        scopes: vec!["openid".into(), "email".into(), "offline_access".into()],
        nonce: None,
        identity: Identity {
            user_id: "jane".into(),
            username: "jane".into(),
            preferred_username: "jane".into(),
            email: "jane@example.com".into(),
            email_verified: true,
            groups: vec!["devs".into(), "everyone".into()],
        },
        connector_data: None,
        created_at: now,
        last_used: now,
        expires_at: now + IDLE,
    }
}

async fn run(revoke_on_reuse: bool, ops: Vec<Op>) {
    let clock = ManualClock::new(START);
    let p = provider(revoke_on_reuse, clock.clone()).await;
    p.store().create(&family(START)).await.unwrap();
    let auth = ClientAuth {
        client_id: APP.into(),
        secret: Some("app-secret".into()),
        basic: true,
    };
    let mut m = Model {
        now: START,
        created: START,
        last_used: START,
        current: "s0".into(),
        obsolete: None,
        history: Vec::new(),
        revoked: false,
        revoke_on_reuse,
    };
    for (step, op) in ops.iter().enumerate() {
        let secret = match op {
            Op::Advance(s) => {
                clock.advance(*s);
                m.now += s;
                continue;
            }
            Op::RefreshCurrent | Op::RevokeCurrent => m.current.clone(),
            Op::RefreshObsolete | Op::RevokeObsolete => {
                m.obsolete.clone().unwrap_or_else(|| "never-issued".into())
            }
            Op::RefreshStale(i) => m
                .history
                .iter()
                .rev()
                .nth(1 + i)
                .cloned()
                .unwrap_or_else(|| m.current.clone()),
            Op::RefreshForged => "forged".into(),
        };
        if matches!(op, Op::RevokeCurrent | Op::RevokeObsolete) {
            p.revoke(&auth, &format!("family.{secret}")).await.unwrap();
            m.revoke(&secret);
            continue;
        }
        let req = TokenRequest {
            grant_type: Some("refresh_token".into()),
            refresh_token: Some(format!("family.{secret}")),
            ..TokenRequest::default()
        };
        let got = p.token(&auth, &req, None).await;
        match (m.refresh(&secret), got) {
            (Expect::Refused, Err(e)) => {
                assert_eq!(e.code.as_str(), "invalid_grant", "step {step} {op:?}")
            }
            (Expect::Ok(Some(same)), Ok(t)) => {
                assert_eq!(
                    t.refresh_token.as_deref(),
                    Some(format!("family.{same}").as_str()),
                    "step {step} {op:?}: reuse returns the current token"
                );
            }
            (Expect::Ok(None), Ok(t)) => {
                let new = t
                    .refresh_token
                    .unwrap()
                    .strip_prefix("family.")
                    .unwrap()
                    .to_owned();
                assert!(
                    new != m.current && !m.history.contains(&new),
                    "step {step}: rotation yields a fresh secret"
                );
                m.rotated(new);
            }
            (Expect::Refused, Ok(t)) => {
                panic!("step {step} {op:?}: the model refuses, the provider answered {t:?}")
            }
            (Expect::Ok(_), Err(e)) => {
                panic!("step {step} {op:?}: the model accepts, the provider refused: {e}")
            }
        }
        // Storage agrees with the model after every step.
        let stored = p.store().get::<RefreshToken>("family").await.unwrap();
        match stored {
            None => assert!(m.revoked, "step {step}: the family vanished"),
            Some(s) => {
                assert!(!m.revoked, "step {step}: a revoked family is still stored");
                assert_eq!(
                    (s.token.as_str(), s.obsolete_token.as_deref(), s.last_used),
                    (m.current.as_str(), m.obsolete.as_deref(), m.last_used),
                    "step {step}"
                );
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn refresh_state_machine_matches_the_model(revoke_on_reuse in any::<bool>(), ops in proptest::collection::vec(op(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(run(revoke_on_reuse, ops));
    }
}
