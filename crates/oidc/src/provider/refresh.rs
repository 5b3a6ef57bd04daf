//! Refresh tokens: issuance (with an optional cap per user and client), the refresh grant with
//! rotation and Flant's "obsolete tokens" reuse window, revocation (RFC 7009) and session listing.
//!
//! A family is one stored [`RefreshToken`]: `token` is the current secret, `obsolete_token` the one
//! it replaced. The refresh grant rotates with ONE compare-and-swap; only the caller that wins it
//! refreshes the user upstream. Everyone else presenting the old or the new secret inside the reuse
//! window gets the same current token and a fresh ID token from the stored claims.

use super::*;

/// A refresh token as an administrator sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SessionInfo {
    pub id: String,
    pub client_id: String,
    pub connector_id: String,
    pub user_id: String,
    pub email: String,
    pub created_at: i64,
    pub last_used: i64,
    /// `None`: never expires.
    pub expires_at: Option<i64>,
}

impl From<&RefreshToken> for SessionInfo {
    fn from(t: &RefreshToken) -> Self {
        Self {
            id: t.id.clone(),
            client_id: t.client_id.clone(),
            connector_id: t.connector_id.clone(),
            user_id: t.identity.user_id.clone(),
            email: t.identity.email.clone(),
            created_at: t.created_at,
            last_used: t.last_used,
            expires_at: (t.expires_at != i64::MAX).then_some(t.expires_at),
        }
    }
}

/// Does this session belong to `user` (an email, case-insensitive, or a user id)?
pub fn session_matches_user(t: &RefreshToken, user: &str) -> bool {
    t.identity.email.eq_ignore_ascii_case(user) || t.identity.user_id == user
}

/// The value handed to clients: `<family id>.<secret>`.
fn wire(t: &RefreshToken) -> String {
    format!("{}.{}", t.id, t.token)
}

fn secret_eq(stored: &str, presented: &str) -> bool {
    keygate_config::Secret::new(stored.to_owned()).matches(presented)
}

impl Provider {
    /// Creates a new family for a code being redeemed.
    pub(super) async fn create_refresh_token(
        &self,
        code: &AuthCode,
        now: i64,
    ) -> Result<RefreshToken, OAuthError> {
        let mut token = RefreshToken {
            id: random_id(16),
            token: random_id(32),
            obsolete_token: None,
            client_id: code.client_id.clone(),
            connector_id: code.connector_id.clone(),
            scopes: code.scopes.clone(),
            nonce: code.nonce.clone(),
            identity: code.identity.clone(),
            connector_data: code.connector_data.clone(),
            created_at: now,
            last_used: now,
            expires_at: 0,
        };
        token.expires_at = self.refresh_expiry(&token);
        self.store.create(&token).await?;
        Ok(token)
    }

    /// With `maxSessionsPerClient`, drops the user's oldest families for this client beyond the
    /// cap, so a new kubeconfig never fails for lack of room. Runs once the code is redeemed.
    pub(super) async fn enforce_session_cap(&self, token: &RefreshToken) -> Result<(), OAuthError> {
        let Some(cap) = self.settings.refresh.max_sessions_per_client else {
            return Ok(());
        };
        let owner =
            keygate_store::model::refresh_owner(&token.connector_id, &token.identity.user_id);
        let mut others: Vec<RefreshToken> = self
            .store
            .list_owned::<RefreshToken>(&owner)
            .await?
            .into_iter()
            .filter(|t| t.client_id == token.client_id && t.id != token.id)
            .collect();
        others.sort_by_key(|t| (t.created_at, t.id.clone()));
        let excess = (others.len() + 1).saturating_sub(cap as usize);
        for old in others.iter().take(excess) {
            self.store.delete::<RefreshToken>(&old.id).await?;
            tracing::info!(user = %old.identity.email, client = %old.client_id, session = %old.id, "dropped the oldest session (maxSessionsPerClient)");
        }
        Ok(())
    }

    /// The earliest moment the family stops being valid (idle or absolute), `i64::MAX` if never.
    pub(super) fn refresh_expiry(&self, t: &RefreshToken) -> i64 {
        let p = self.settings.refresh;
        let idle = p
            .valid_if_not_used_for
            .map_or(i64::MAX, |d| t.last_used.saturating_add(d));
        let absolute = p
            .absolute_lifetime
            .map_or(i64::MAX, |d| t.created_at.saturating_add(d));
        idle.min(absolute)
    }

    pub(super) async fn refresh(
        &self,
        client: &Client,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let invalid = || {
            OAuthError::invalid_grant(
                "Refresh token is invalid or has already been claimed by another client.",
            )
        };
        let presented = req
            .refresh_token
            .as_deref()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("No refresh token is found in request."))?;
        if presented.len() > MAX_TOKEN {
            return Err(invalid());
        }
        let (id, secret) = presented.split_once('.').ok_or_else(invalid)?;
        let policy = self.settings.refresh;

        loop {
            let now = self.now();
            let (stored, version) = self
                .store
                .get_versioned::<RefreshToken>(id)
                .await?
                .ok_or_else(invalid)?;
            if stored.client_id != client.id {
                return Err(invalid());
            }
            if now >= self.refresh_expiry(&stored) {
                return Err(OAuthError::invalid_grant("Refresh token expired."));
            }
            let is_current = secret_eq(&stored.token, secret);
            let is_obsolete = stored
                .obsolete_token
                .as_deref()
                .is_some_and(|o| secret_eq(o, secret));
            let in_window = now < stored.last_used.saturating_add(policy.reuse_interval);
            let scopes = self.refresh_scopes(&stored, req.scope.as_deref())?;

            if in_window && (is_current || is_obsolete) {
                // A concurrent or repeated refresh: the same current token, a fresh ID token from
                // the stored claims, no upstream call, no write.
                self.metrics.refresh_reused.inc();
                return self.issue(
                    client,
                    &stored.identity,
                    &stored.connector_id,
                    &scopes,
                    stored.nonce.clone(),
                    Some(wire(&stored)),
                    None,
                    now,
                );
            }
            if !is_current {
                if is_obsolete && policy.revoke_on_reuse {
                    // Replay detection: an old secret outside the window means it leaked, or the
                    // legitimate client lost a rotation. Either way the family cannot be trusted.
                    self.store.delete::<RefreshToken>(&stored.id).await?;
                    self.metrics.refresh_families_revoked.inc();
                    tracing::warn!(user = %stored.identity.email, client = %stored.client_id, session = %stored.id, "refresh token reused outside the reuse window; session revoked (revokeOnReuse)");
                }
                return Err(invalid());
            }

            // Rotate first. Exactly one caller wins this compare-and-swap, across all replicas;
            // losers re-read and find their secret obsolete and inside the window.
            let mut next = stored.clone();
            if !policy.disable_rotation {
                next.obsolete_token = Some(stored.token.clone());
                next.token = random_id(32);
            }
            next.last_used = now;
            next.expires_at = self.refresh_expiry(&next);
            if !self.store.compare_and_swap(version, &next).await? {
                continue;
            }

            // The winner, and only it, refreshes the user upstream.
            self.metrics.refresh_rotations.inc();
            self.metrics.upstream_refreshes.inc();
            let (identity, data) = match self.refreshed_identity(client, &next, now).await {
                Ok(v) => v,
                Err(e) if e.code == ErrorCode::InvalidGrant => {
                    self.store.delete::<RefreshToken>(&next.id).await?;
                    tracing::info!(user = %next.identity.email, client = %next.client_id, reason = %e.description, "refresh refused; session revoked");
                    return Err(e);
                }
                // The upstream provider is unreachable: undo our rotation so the token the client
                // holds stays current and it can simply retry. If the family moved on meanwhile,
                // the newer state wins.
                Err(e) => {
                    let _ = self.store.compare_and_swap(version + 1, &stored).await;
                    return Err(e);
                }
            };
            if identity != next.identity || data != next.connector_data {
                // Store the refreshed claims for the callers that reuse this rotation; if the
                // family rotated again meanwhile, that newer rotation has them already.
                let current = next.token.clone();
                let fresh = identity.clone();
                let updated = self
                    .store
                    .update::<RefreshToken, (), _>(&next.id, |mut t| {
                        if t.token != current {
                            return Err(());
                        }
                        t.identity = fresh.clone();
                        t.connector_data = data.clone();
                        Ok(t)
                    })
                    .await;
                if let Err(keygate_store::UpdateError::Store(e)) = updated {
                    return Err(e.into());
                }
            }
            return self.issue(
                client,
                &identity,
                &next.connector_id,
                &scopes,
                next.nonce.clone(),
                Some(wire(&next)),
                None,
                now,
            );
        }
    }

    pub(super) fn refresh_scopes(
        &self,
        stored: &RefreshToken,
        requested: Option<&str>,
    ) -> Result<Scopes, OAuthError> {
        let original = Scopes::from_list(stored.scopes.clone());
        let Some(requested) = requested.filter(|s| !s.trim().is_empty()) else {
            return Ok(original);
        };
        let asked = Scopes::parse(requested)?;
        if let Some(extra) = asked.list.iter().find(|s| !original.has(s)) {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("Requested scope {extra:?} was not granted originally."),
            ));
        }
        Ok(asked)
    }

    /// The upstream refresh: re-checks the user at the connector. Deleted or expired users are
    /// refused; group changes and the client's filters apply to the new tokens.
    pub(super) async fn refreshed_identity(
        &self,
        client: &Client,
        stored: &RefreshToken,
        now: i64,
    ) -> Result<crate::Upstream, OAuthError> {
        let gone = || OAuthError::invalid_grant("The user no longer exists or has expired.");
        let (mut identity, data) = match stored.connector_id.as_str() {
            crate::LOCAL_CONNECTOR => (
                self.users
                    .current(&stored.identity.user_id, now)
                    .ok_or_else(gone)?,
                None,
            ),
            other => {
                let connector = self.connector(other).ok_or_else(|| {
                    OAuthError::invalid_grant(
                        "The sign-in method of this session no longer exists.",
                    )
                })?;
                connector
                    .refresh(&stored.identity, stored.connector_data.as_deref())
                    .await
                    .map_err(|e| match e {
                        crate::ConnectorError::Refused(reason) => OAuthError::invalid_grant(
                            format!("{} refused the refresh: {reason}", connector.display_name()),
                        ),
                        crate::ConnectorError::Unavailable(reason) => {
                            tracing::warn!(connector = other, reason, "upstream refresh failed");
                            OAuthError::new(
                                ErrorCode::TemporarilyUnavailable,
                                format!(
                                    "{} cannot be reached right now.",
                                    connector.display_name()
                                ),
                            )
                        }
                    })?
            }
        };
        let state_id =
            keygate_store::model::UserState::id_for(&stored.connector_id, &identity.user_id);
        // An administrator's lock ends sessions; a lockout from failed logins does not (anyone who
        // knows an email could otherwise end that user's sessions).
        let admin_locked = self
            .store
            .get::<keygate_store::model::UserState>(&state_id)
            .await?
            .is_some_and(|s| {
                s.locked_at(now) && s.lock_reason.as_deref() == Some(crate::accounts::ADMIN_REASON)
            });
        if admin_locked {
            return Err(OAuthError::invalid_grant("The user is locked."));
        }
        identity.groups = client
            .filter_user(&identity.email, &identity.groups)
            .ok_or_else(|| {
                OAuthError::invalid_grant("The user is no longer allowed to use this client.")
            })?;
        Ok((identity, data))
    }

    /// RFC 7009: revokes the whole family of a refresh token presented by its own client. Unknown
    /// or foreign tokens, and access tokens (stateless JWTs), are answered the same way: success.
    pub async fn revoke(&self, auth: &ClientAuth, token: &str) -> Result<(), OAuthError> {
        let client = self.clients.authenticate(auth)?;
        if token.is_empty() {
            return Err(OAuthError::invalid_request("No token provided."));
        }
        let Some((id, secret)) = token.split_once('.').filter(|_| token.len() <= MAX_TOKEN) else {
            return Ok(());
        };
        if let Some(t) = self.store.get::<RefreshToken>(id).await? {
            let ours = t.client_id == client.id
                && (secret_eq(&t.token, secret)
                    || t.obsolete_token
                        .as_deref()
                        .is_some_and(|o| secret_eq(o, secret)));
            if ours && self.store.delete::<RefreshToken>(id).await? {
                self.metrics.refresh_families_revoked.inc();
                tracing::info!(user = %t.identity.email, client = %t.client_id, session = %t.id, "session revoked by its client");
            }
        }
        Ok(())
    }
}

/// Administrative access to sessions, straight on the store (`keygate sessions ...`).
pub mod sessions {
    use super::*;

    /// All live sessions, optionally of one user (email or user id), oldest first.
    pub async fn list(
        store: &Store,
        user: Option<&str>,
        now: i64,
    ) -> Result<Vec<SessionInfo>, keygate_store::StoreError> {
        let mut all: Vec<RefreshToken> = store
            .list::<RefreshToken>()
            .await?
            .into_iter()
            .filter(|t| t.expires_at > now && user.is_none_or(|u| session_matches_user(t, u)))
            .collect();
        all.sort_by_key(|t| (t.created_at, t.id.clone()));
        Ok(all.iter().map(SessionInfo::from).collect())
    }

    /// Revokes one session by id; returns whether it existed.
    pub async fn revoke_id(store: &Store, id: &str) -> Result<bool, keygate_store::StoreError> {
        store.delete::<RefreshToken>(id).await
    }

    /// Revokes every session of a user (email or user id); returns how many went.
    pub async fn revoke_user(
        store: &Store,
        user: &str,
    ) -> Result<usize, keygate_store::StoreError> {
        let mut n = 0;
        for t in store.list::<RefreshToken>().await? {
            if session_matches_user(&t, user) && store.delete::<RefreshToken>(&t.id).await? {
                n += 1;
            }
        }
        Ok(n)
    }
}
