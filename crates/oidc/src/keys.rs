//! Signing keys: stored and shared by all replicas, rotated by whichever replica sees the deadline
//! first (compare-and-swap, the loser re-reads), parsed once and cached with pre-serialized JWKS.

use std::sync::{Arc, RwLock};

use keygate_config::SigningSettings;
use keygate_store::Store;
use keygate_store::model::{SigningKeys, StoredSigningKey, VerificationKey};
use serde_json::{Value, json};

use crate::jose::{self, Signer};
use crate::{ProviderError, random_id};

struct KeyState {
    /// Identifies the stored key set this cache was built from.
    fingerprint: Vec<String>,
    kid: String,
    signer: Arc<Signer>,
    jwks: Vec<Value>,
    jwks_bytes: Arc<[u8]>,
    /// The algorithms of the published keys, the signing key's first: during a change of
    /// algorithm, tokens of both are valid.
    algorithms: Arc<[String]>,
}

pub struct KeyManager {
    store: Store,
    settings: SigningSettings,
    /// Retired public keys stay published this long (the ID-token lifetime).
    retire_after: i64,
    state: RwLock<Arc<KeyState>>,
}

/// How long after a rotation every replica has surely picked it up (twice the maintenance period).
const RETIRE_SLACK: i64 = 60;

/// The stored keys less the retired ones past their time: every token they signed has expired.
/// They stay stored until the next rotation, but leave JWKS (and discovery's algorithms) now.
fn published(mut keys: SigningKeys, now: i64) -> SigningKeys {
    keys.verification.retain(|v| v.expires_at > now);
    keys
}

fn fingerprint(keys: &SigningKeys) -> Vec<String> {
    let mut f = vec![keys.signing.kid.clone()];
    f.extend(keys.next.iter().map(|n| format!("next:{}", n.kid)));
    f.extend(
        keys.verification
            .iter()
            .map(|v| format!("{}@{}", v.kid, v.expires_at)),
    );
    f
}

async fn generate(settings: SigningSettings, now: i64) -> Result<StoredSigningKey, ProviderError> {
    // RSA key generation takes tens of milliseconds: keep it off the async workers.
    let (signer, pkcs8) = tokio::task::spawn_blocking(move || Signer::generate(settings.algorithm))
        .await
        .map_err(|e| ProviderError::Crypto(e.to_string()))??;
    Ok(StoredSigningKey {
        kid: random_id(12),
        alg: signer.alg().to_owned(),
        private_pkcs8: pkcs8,
        created_at: now,
    })
}

impl KeyManager {
    /// Loads the stored key set, creating or rotating it when needed.
    pub async fn start(
        store: Store,
        settings: SigningSettings,
        id_token_ttl: i64,
        now: i64,
    ) -> Result<Self, ProviderError> {
        let keys = published(
            Self::load_or_rotate(&store, settings, id_token_ttl, now).await?,
            now,
        );
        let state = Self::build_state(&keys, None)?;
        Ok(Self {
            store,
            settings,
            retire_after: id_token_ttl,
            state: RwLock::new(Arc::new(state)),
        })
    }

    async fn load_or_rotate(
        store: &Store,
        settings: SigningSettings,
        retire_after: i64,
        now: i64,
    ) -> Result<SigningKeys, ProviderError> {
        loop {
            match store.get_versioned::<SigningKeys>(SigningKeys::ID).await? {
                None => {
                    let keys = SigningKeys {
                        id: SigningKeys::ID.into(),
                        signing: generate(settings, now).await?,
                        next: Some(generate(settings, now).await?),
                        verification: Vec::new(),
                        next_rotation: now + settings.rotation_period,
                        signing_since: now,
                    };
                    match store.create(&keys).await {
                        Ok(()) => {
                            tracing::info!(kid = %keys.signing.kid, alg = %keys.signing.alg, "created the first signing key");
                            return Ok(keys);
                        }
                        // Another replica created it first: use theirs.
                        Err(keygate_store::StoreError::AlreadyExists) => continue,
                        Err(e) => return Err(e.into()),
                    }
                }
                Some((keys, version)) => {
                    let alg = settings.algorithm.as_str();
                    // A configured algorithm that differs replaces the key at once, unless the
                    // key itself was put in place less than a token lifetime ago: then another
                    // replica just switched it (a rolling update changing `signing.algorithm`),
                    // and switching back would make old and new replicas undo each other every
                    // refresh. The stored key signs meanwhile, whatever this replica's setting.
                    let settled = now >= keys.signing_since + retire_after + RETIRE_SLACK;
                    let wrong_alg = keys.signing.alg != alg && settled;
                    if now < keys.next_rotation && !wrong_alg {
                        return Ok(keys);
                    }
                    // The published next key takes over; a new next key is published.
                    let signing = match keys.next.clone() {
                        Some(next) if next.alg == alg => next,
                        _ => generate(settings, now).await?,
                    };
                    let old = Signer::from_stored(&keys.signing.alg, &keys.signing.private_pkcs8)?;
                    let mut verification: Vec<VerificationKey> = keys
                        .verification
                        .into_iter()
                        .filter(|v| v.expires_at > now)
                        .collect();
                    verification.insert(
                        0,
                        VerificationKey {
                            kid: keys.signing.kid.clone(),
                            jwk: old.public_jwk(&keys.signing.kid),
                            // Replicas pick a rotation up within one refresh period and may sign
                            // with the old key until then: keep it that much longer.
                            expires_at: now + retire_after + RETIRE_SLACK,
                        },
                    );
                    let rotated = SigningKeys {
                        id: SigningKeys::ID.into(),
                        signing,
                        next: Some(generate(settings, now).await?),
                        verification,
                        next_rotation: now + settings.rotation_period,
                        signing_since: now,
                    };
                    if store.compare_and_swap(version, &rotated).await? {
                        tracing::info!(kid = %rotated.signing.kid, retired = %keys.signing.kid, "rotated the signing key");
                        return Ok(rotated);
                    }
                    // Lost the race to another replica: re-read its result.
                }
            }
        }
    }

    fn build_state(
        keys: &SigningKeys,
        previous: Option<&KeyState>,
    ) -> Result<KeyState, ProviderError> {
        let signer = match previous {
            Some(p) if p.kid == keys.signing.kid => p.signer.clone(),
            _ => Arc::new(Signer::from_stored(
                &keys.signing.alg,
                &keys.signing.private_pkcs8,
            )?),
        };
        let mut jwks = vec![signer.public_jwk(&keys.signing.kid)];
        if let Some(next) = &keys.next {
            jwks.push(Signer::from_stored(&next.alg, &next.private_pkcs8)?.public_jwk(&next.kid));
        }
        jwks.extend(keys.verification.iter().map(|v| v.jwk.clone()));
        let jwks_bytes: Arc<[u8]> = serde_json::to_vec_pretty(&json!({ "keys": jwks }))
            .map_err(|e| ProviderError::Crypto(e.to_string()))?
            .into();
        let mut algorithms: Vec<String> = Vec::new();
        for alg in jwks.iter().filter_map(|k| k["alg"].as_str()) {
            if !algorithms.iter().any(|a| a == alg) {
                algorithms.push(alg.to_owned());
            }
        }
        Ok(KeyState {
            algorithms: algorithms.into(),
            fingerprint: fingerprint(keys),
            kid: keys.signing.kid.clone(),
            signer,
            jwks,
            jwks_bytes,
        })
    }

    fn current(&self) -> Arc<KeyState> {
        match self.state.read() {
            Ok(s) => s.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Rotates when due and picks up rotations made by other replicas. Call it periodically.
    pub async fn refresh(&self, now: i64) -> Result<(), ProviderError> {
        let keys = published(
            Self::load_or_rotate(&self.store, self.settings, self.retire_after, now).await?,
            now,
        );
        let current = self.current();
        if current.fingerprint == fingerprint(&keys) {
            return Ok(());
        }
        let next = Arc::new(Self::build_state(&keys, Some(&current))?);
        match self.state.write() {
            Ok(mut s) => *s = next,
            Err(poisoned) => *poisoned.into_inner() = next,
        }
        Ok(())
    }

    /// The JWKS document, serialized once per key change.
    pub fn jwks_bytes(&self) -> Arc<[u8]> {
        self.current().jwks_bytes.clone()
    }

    pub fn algorithm(&self) -> &'static str {
        self.current().signer.alg()
    }

    /// The algorithms of the published keys (discovery's `id_token_signing_alg_values_supported`),
    /// the signing key's first.
    pub fn algorithms(&self) -> Arc<[String]> {
        self.current().algorithms.clone()
    }

    pub(crate) fn sign(&self, payload: &[u8]) -> Result<String, ProviderError> {
        let state = self.current();
        state.signer.sign(&state.kid, payload)
    }

    /// The payload of a token signed by one of our published keys.
    pub(crate) fn verify(&self, token: &str) -> Option<Vec<u8>> {
        jose::verify(token, &self.current().jwks)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc as StdArc;

    use keygate_config::SigningAlgorithm;
    use keygate_store::MemoryBackend;

    use super::*;

    fn settings() -> SigningSettings {
        SigningSettings {
            algorithm: SigningAlgorithm::Es256,
            rotation_period: 3600,
        }
    }

    #[tokio::test]
    async fn rotation_keeps_old_keys_for_the_token_lifetime() {
        let store = Store::new(StdArc::new(MemoryBackend::new()));
        let keys = KeyManager::start(store.clone(), settings(), 600, 1_000)
            .await
            .unwrap();
        let old_token = keys.sign(b"{}").unwrap();
        assert!(keys.verify(&old_token).is_some());
        let kid = |token: &str| token.split('.').next().unwrap().to_owned();

        // Not yet due: nothing changes. JWKS holds the signing key and the published next key.
        keys.refresh(4_599).await.unwrap();
        assert_eq!(keys.current().jwks.len(), 2);
        let next_kid = keys.current().jwks[1]["kid"].clone();

        // Due: the published next key signs, the old one still verifies.
        keys.refresh(4_600).await.unwrap();
        let state = keys.current();
        assert_eq!(state.jwks.len(), 3, "signing, next, retired");
        assert_eq!(
            state.jwks[0]["kid"], next_kid,
            "the key verifiers already knew takes over"
        );
        assert!(keys.verify(&old_token).is_some());
        let new_token = keys.sign(b"{}").unwrap();
        assert_ne!(kid(&new_token), kid(&old_token), "new kid in the header");

        // A second replica on the same store loads the same state without rotating again.
        let replica = KeyManager::start(store.clone(), settings(), 600, 4_601)
            .await
            .unwrap();
        assert_eq!(replica.jwks_bytes(), keys.jwks_bytes());

        // The retired key lives idTokenTTL plus the replicas' slack after the rotation, then
        // leaves JWKS at once, not at the next rotation.
        keys.refresh(4_600 + 600 + RETIRE_SLACK - 1).await.unwrap();
        assert!(keys.verify(&old_token).is_some());
        keys.refresh(4_600 + 600 + RETIRE_SLACK).await.unwrap();
        assert!(keys.verify(&old_token).is_none());
        assert_eq!(keys.current().jwks.len(), 2, "signing and next");
        keys.refresh(4_600 + 3_600).await.unwrap();
        assert!(keys.verify(&old_token).is_none());
        assert!(keys.verify(&new_token).is_some());
        replica.refresh(4_600 + 3_601).await.unwrap();
        assert_eq!(replica.jwks_bytes(), keys.jwks_bytes(), "replicas converge");
    }

    #[tokio::test]
    async fn changing_the_algorithm_replaces_a_settled_key() {
        let store = Store::new(StdArc::new(MemoryBackend::new()));
        let _ = KeyManager::start(store.clone(), settings(), 600, 1_000)
            .await
            .unwrap();
        let rsa = SigningSettings {
            algorithm: SigningAlgorithm::Rs256,
            rotation_period: 3600,
        };
        // A key put in place moments ago (perhaps by another replica) signs on for a while...
        let keys = KeyManager::start(store.clone(), rsa, 600, 1_001)
            .await
            .unwrap();
        assert_eq!(keys.algorithm(), "ES256");
        // ...and a token lifetime (+ 60 s) after it was put in place, the setting applies.
        keys.refresh(1_000 + 600 + RETIRE_SLACK).await.unwrap();
        assert_eq!(keys.algorithm(), "RS256");
        assert_eq!(
            keys.current().jwks[1]["alg"],
            "RS256",
            "the next key follows the new algorithm"
        );
    }

    #[tokio::test]
    async fn a_rolling_update_changing_the_algorithm_switches_once() {
        let store = Store::new(StdArc::new(MemoryBackend::new()));
        let rsa = SigningSettings {
            algorithm: SigningAlgorithm::Rs256,
            rotation_period: 3600,
        };
        // An old replica (ES256) made the keys long ago; a new one (RS256) starts and switches.
        let old = KeyManager::start(store.clone(), settings(), 600, 1_000)
            .await
            .unwrap();
        let new = KeyManager::start(store.clone(), rsa, 600, 3_000)
            .await
            .unwrap();
        assert_eq!(new.algorithm(), "RS256");
        // The old replica refreshes: it takes the new key rather than switching back.
        old.refresh(3_030).await.unwrap();
        assert_eq!(old.algorithm(), "RS256", "no flip-flop during the rollout");
        assert_eq!(old.jwks_bytes(), new.jwks_bytes());
        // Tokens of both algorithms are valid meanwhile, and discovery says so.
        assert_eq!(&*old.algorithms(), ["RS256", "ES256"]);
        assert_eq!(&*new.algorithms(), ["RS256", "ES256"]);
        // Once the last ES256 token has expired, only RS256 is published.
        new.refresh(3_000 + 600 + RETIRE_SLACK).await.unwrap();
        assert_eq!(&*new.algorithms(), ["RS256"]);
        // An old replica still running a token lifetime later does switch (its setting applies).
        old.refresh(3_000 + 600 + RETIRE_SLACK).await.unwrap();
        assert_eq!(old.algorithm(), "ES256");
    }
}
