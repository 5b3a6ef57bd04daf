//! Authorization requests and the password login that completes them.

use std::net::IpAddr;

use keygate_store::model::UserState;

use super::*;

impl Provider {
    /// Validates an authorization request without storing anything.
    pub fn validate_authorize(
        &self,
        p: &AuthorizeParams,
    ) -> Result<(Arc<Client>, Scopes), AuthorizeError> {
        let page = |d: &str| AuthorizeError::Page(OAuthError::invalid_request(d));
        for v in [
            &p.client_id,
            &p.redirect_uri,
            &p.response_type,
            &p.scope,
            &p.state,
            &p.nonce,
            &p.code_challenge,
            &p.code_challenge_method,
        ] {
            if too_long(v, MAX_PARAM) {
                return Err(page("A parameter of the request is too long."));
            }
        }
        let client_id = p
            .client_id
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| page("The request names no client_id."))?;
        let client = self
            .clients
            .get(client_id)
            .ok_or_else(|| page("The client is not registered with this provider."))?;
        let redirect_uri = p
            .redirect_uri
            .as_deref()
            .filter(|s| !s.is_empty())
            .ok_or_else(|| page("The request has no redirect_uri."))?;
        // The device flow's browser half comes back to our own callback (Dex's `/device/callback`).
        let device = redirect_uri == self.device_callback()
            && client.redirect_uri_allowed("/device/callback");
        if !device && !client.redirect_uri_allowed(redirect_uri) {
            return Err(page("The redirect_uri is not registered for this client."));
        }
        let state = p.state.as_deref().unwrap_or("");
        let back = |error: OAuthError| AuthorizeError::Redirect {
            url: append_query(
                redirect_uri,
                &[
                    ("error", error.code.as_str()),
                    ("error_description", &error.description),
                    ("state", state),
                ],
            ),
            error,
        };
        match p.response_type.as_deref() {
            Some("code") => {}
            None | Some("") => {
                return Err(back(OAuthError::invalid_request(
                    "No response_type provided.",
                )));
            }
            Some(_) => {
                return Err(back(OAuthError::new(
                    ErrorCode::UnsupportedResponseType,
                    "Only response_type=code is supported.",
                )));
            }
        }
        let scopes = Scopes::parse(p.scope.as_deref().unwrap_or("")).map_err(back)?;
        for peer in scopes.audiences() {
            if peer == client.id {
                continue;
            }
            let trusted = self.peer_trusts(peer, &client.id);
            if !trusted {
                return Err(back(OAuthError::new(
                    ErrorCode::InvalidScope,
                    format!("Client can't request scope(s) [\"audience:server:client_id:{peer}\"]"),
                )));
            }
        }
        match (&p.code_challenge, p.code_challenge_method.as_deref()) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(back(OAuthError::invalid_request(
                    "code_challenge_method without code_challenge.",
                )));
            }
            (Some(c), method) => {
                if !matches!(method, None | Some("S256" | "plain")) {
                    return Err(back(OAuthError::invalid_request(
                        "Unsupported PKCE challenge method; use S256.",
                    )));
                }
                if !valid_pkce_value(c) {
                    return Err(back(OAuthError::invalid_request("Invalid code_challenge.")));
                }
            }
        }
        Ok((client, scopes))
    }

    /// Whether `peer` lists `client_id` in its trustedPeers (cross-client audience).
    pub(super) fn peer_trusts(&self, peer: &str, client_id: &str) -> bool {
        self.clients
            .get(peer)
            .is_some_and(|c| c.trusted_peers.iter().any(|t| t == client_id))
    }

    /// Validates and stores an authorization request for a connector.
    pub async fn authorize(
        &self,
        p: &AuthorizeParams,
        connector_id: &str,
    ) -> Result<AuthRequest, AuthorizeError> {
        let (client, scopes) = self.validate_authorize(p)?;
        let request = AuthRequest {
            id: random_id(16),
            client_id: client.id.clone(),
            redirect_uri: p.redirect_uri.clone().unwrap_or_default(),
            scopes: scopes.list,
            state: p.state.clone().unwrap_or_default(),
            nonce: p.nonce.clone().filter(|n| !n.is_empty()),
            code_challenge: p.code_challenge.clone(),
            code_challenge_method: p.code_challenge.as_ref().map(|_| {
                p.code_challenge_method
                    .clone()
                    .unwrap_or_else(|| "plain".into())
            }),
            connector_id: connector_id.to_owned(),
            expires_at: self.now() + self.settings.auth_request_ttl,
            upstream_secret: random_id(32),
        };
        self.store
            .create(&request)
            .await
            .map_err(|e| AuthorizeError::Page(e.into()))?;
        Ok(request)
    }

    /// A pending authorization request, if it exists and has not expired.
    pub async fn auth_request(&self, id: &str) -> Result<Option<AuthRequest>, OAuthError> {
        if id.is_empty() || id.len() > 64 {
            return Ok(None);
        }
        let now = self.now();
        Ok(self
            .store
            .get::<AuthRequest>(id)
            .await?
            .filter(|r| r.expires_at > now))
    }

    /// Checks a local password login for a pending request and, on success, issues the code.
    /// In order: the address limit, the user's bucket (shared by all replicas; refused BEFORE the
    /// password is checked, so a limited attempt learns nothing), the password (same time for
    /// unknown users), the account lock. A successful login gives its bucket token back.
    pub async fn login_password(
        &self,
        request_id: &str,
        login: &str,
        password: &str,
        client_ip: Option<IpAddr>,
    ) -> Result<LoginOutcome, OAuthError> {
        let expired = || {
            OAuthError::invalid_request(
                "This sign-in has expired. Go back to the application and start again.",
            )
        };
        let request = self.auth_request(request_id).await?.ok_or_else(expired)?;
        let connector = request.connector_id.clone();
        let raw_login = login;
        let login: String = login.trim().to_lowercase().chars().take(256).collect();
        let now = self.now();
        let audit = |result: &str| {
            tracing::info!(target: "keygate::audit", event = "login", user = ?login, connector = %connector, client = %request.client_id, ip = %client_ip.map_or_else(|| "-".to_string(), |ip| ip.to_string()), result);
        };

        if let Some(retry_after) = client_ip.and_then(|ip| self.ip_limiter.blocked(ip, now)) {
            audit("rate_limited_ip");
            self.metrics.logins_limited_ip.inc();
            return Ok(LoginOutcome::RateLimited { retry_after });
        }
        let bf = &self.settings.brute_force;
        let bucket = format!("login:{connector}:{login}");
        let take = self
            .store
            .take(&bucket, now, bf.refill_every, i64::from(bf.attempts))
            .await?;
        if !take.allowed {
            audit("rate_limited_user");
            self.metrics.logins_limited_user.inc();
            return Ok(LoginOutcome::RateLimited {
                retry_after: take.retry_after,
            });
        }

        let local = connector == crate::LOCAL_CONNECTOR;
        let state_id = if local {
            self.users
                .lookup(&login)
                .map(|u| UserState::id_for(&connector, &u.name))
        } else {
            None
        };
        let locked = match &state_id {
            Some(id) => self
                .store
                .get::<UserState>(id)
                .await?
                .is_some_and(|s| s.locked_at(now)),
            None => false,
        };
        let checked: Option<crate::Upstream> = if password.len() > 1024 {
            None
        } else if local {
            match self.users.check_password(&login, password, now).await {
                LoginResult::Ok(identity) => Some((identity, None)),
                LoginResult::Invalid => None,
                LoginResult::Unavailable => {
                    // A server fault: the attempt does not count, and it is no wrong password.
                    self.store.give_back(&bucket, now, bf.refill_every).await?;
                    tracing::error!("no password hashing thread answered");
                    audit("unavailable");
                    return Err(OAuthError::new(
                        ErrorCode::TemporarilyUnavailable,
                        "Sign-in is unavailable right now. Try again in a moment.",
                    ));
                }
            }
        } else {
            let upstream = self.connector(&connector).ok_or_else(|| {
                OAuthError::invalid_request("This sign-in method no longer exists.")
            })?;
            match upstream.login_password(raw_login.trim(), password).await {
                Ok(result) => result,
                Err(e @ crate::ConnectorError::Refused(_)) => {
                    // Connectors refuse only after the password checked out (wrong passwords are
                    // `Ok(None)`): say why, as for redirect connectors, and do not count a failure.
                    self.store.give_back(&bucket, now, bf.refill_every).await?;
                    audit("refused");
                    return Err(super::upstream::upstream_error(upstream.display_name(), e));
                }
                Err(crate::ConnectorError::Unavailable(reason)) => {
                    // Not the user's fault: the attempt does not count.
                    self.store.give_back(&bucket, now, bf.refill_every).await?;
                    tracing::warn!(connector = %connector, reason, "password connector unavailable");
                    audit("unavailable");
                    return Err(OAuthError::new(
                        ErrorCode::TemporarilyUnavailable,
                        format!(
                            "{} cannot be reached right now. Try again in a moment.",
                            upstream.display_name()
                        ),
                    ));
                }
            }
        };
        match checked {
            Some((identity, data)) if !locked => {
                self.store.give_back(&bucket, now, bf.refill_every).await?;
                if let Some(id) = &state_id {
                    crate::accounts::record_success(&self.store, id).await?;
                }
                audit("ok");
                self.metrics.logins_ok.inc();
                self.finish_login(request, identity, data).await
            }
            Some(_) => {
                // Same answer as a wrong password: the lock must not confirm the password.
                audit("locked");
                self.metrics.logins_locked.inc();
                Ok(LoginOutcome::InvalidCredentials)
            }
            None => {
                if let Some(ip) = client_ip {
                    self.ip_limiter.record_failure(ip, now);
                }
                if let Some(id) = &state_id {
                    let state = crate::accounts::record_failure(
                        &self.store,
                        id,
                        now,
                        self.settings.lockout,
                    )
                    .await?;
                    if state.lock_reason.as_deref() == Some(crate::accounts::LOCKOUT_REASON)
                        && state.locked_until.is_some_and(|u| u > now)
                        && !locked
                    {
                        tracing::warn!(target: "keygate::audit", event = "lockout", user = ?login, until = state.locked_until.unwrap_or_default(), "user locked after too many failed logins");
                    }
                }
                audit(if locked { "locked" } else { "invalid" });
                if locked {
                    self.metrics.logins_locked.inc()
                } else {
                    self.metrics.logins_invalid.inc()
                }
                Ok(LoginOutcome::InvalidCredentials)
            }
        }
    }

    /// Completes a request for an authenticated identity: applies the client's filters, consumes
    /// the request and redirects with a code (or `access_denied`).
    pub(super) async fn finish_login(
        &self,
        request: AuthRequest,
        mut identity: Identity,
        connector_data: Option<String>,
    ) -> Result<LoginOutcome, OAuthError> {
        let client = self
            .clients
            .get(&request.client_id)
            .ok_or_else(|| OAuthError::invalid_request("The client is no longer registered."))?;
        // The request is single-use: whoever deletes it completes it.
        if !self.store.delete::<AuthRequest>(&request.id).await? {
            return Err(OAuthError::invalid_request(
                "This sign-in was already completed.",
            ));
        }
        let Some(groups) = client.filter_user(&identity.email, &identity.groups) else {
            tracing::info!(user = %identity.email, client = %client.id, "login refused by the client's allowedEmails/allowedGroups");
            return Ok(LoginOutcome::Redirect(append_query(
                &request.redirect_uri,
                &[
                    ("error", "access_denied"),
                    (
                        "error_description",
                        "You are not allowed to use this application.",
                    ),
                    ("state", &request.state),
                ],
            )));
        };
        identity.groups = groups;
        let now = self.now();
        let code = AuthCode {
            id: random_id(32),
            client_id: request.client_id,
            redirect_uri: request.redirect_uri.clone(),
            scopes: request.scopes,
            nonce: request.nonce,
            code_challenge: request.code_challenge,
            code_challenge_method: request.code_challenge_method,
            connector_id: request.connector_id,
            identity,
            connector_data,
            auth_time: now,
            expires_at: now + self.settings.auth_code_ttl,
            redeemed: false,
            refresh_token_id: None,
        };
        self.store.create(&code).await?;
        tracing::info!(user = %code.identity.email, client = %code.client_id, "login succeeded");
        Ok(LoginOutcome::Redirect(append_query(
            &request.redirect_uri,
            &[("code", &code.id), ("state", &request.state)],
        )))
    }
}
