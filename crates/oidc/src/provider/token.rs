//! The token endpoint: code exchange, refresh, and the tokens issued.

use super::*;

impl Provider {
    /// The token endpoint. Failures that suggest guessing (bad client credentials, bad codes or
    /// refresh tokens) count against the caller's address; over the limit it gets 429.
    pub async fn token(
        &self,
        auth: &ClientAuth,
        req: &TokenRequest,
        client_ip: Option<std::net::IpAddr>,
    ) -> Result<TokenResponse, OAuthError> {
        self.guarded(client_ip, self.grant(auth, req))
            .await
            .inspect_err(|_| self.metrics.token_errors.inc())
    }

    /// Runs a client-authenticated call under the per-address limit: refused with 429 when the
    /// address is over it; failures that suggest guessing (bad client credentials, bad codes or
    /// refresh tokens) count against it. Used by /token, /token/introspect and /token/revoke.
    pub async fn guarded<T>(
        &self,
        client_ip: Option<std::net::IpAddr>,
        call: impl std::future::Future<Output = Result<T, OAuthError>>,
    ) -> Result<T, OAuthError> {
        let now = self.now();
        if let Some(retry_after) = client_ip.and_then(|ip| self.ip_limiter.blocked(ip, now)) {
            self.metrics.token_requests_limited_ip.inc();
            return Err(OAuthError::rate_limited(retry_after));
        }
        let result = call.await;
        if let (Err(e), Some(ip)) = (&result, client_ip)
            && matches!(e.code, ErrorCode::InvalidClient | ErrorCode::InvalidGrant)
        {
            self.ip_limiter.record_failure(ip, now);
        }
        result
    }

    async fn grant(
        &self,
        auth: &ClientAuth,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        for v in [
            &req.grant_type,
            &req.code,
            &req.redirect_uri,
            &req.code_verifier,
            &req.refresh_token,
            &req.scope,
        ] {
            if too_long(v, MAX_PARAM) {
                return Err(OAuthError::invalid_request(
                    "A parameter of the request is too long.",
                ));
            }
        }
        let client = self.clients.authenticate(auth)?;
        match req.grant_type.as_deref() {
            Some("authorization_code") => self.exchange_code(&client, req).await,
            Some("refresh_token") => self.refresh(&client, req).await,
            Some("urn:ietf:params:oauth:grant-type:device_code") => {
                self.device_token(&client, req).await
            }
            None | Some("") => Err(OAuthError::invalid_request("No grant_type provided.")),
            Some(_) => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "Supported grant types: authorization_code, refresh_token, urn:ietf:params:oauth:grant-type:device_code.",
            )),
        }
    }

    pub(super) async fn exchange_code(
        &self,
        client: &Client,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let invalid = || OAuthError::invalid_grant("Invalid or expired code parameter.");
        let code_id = req
            .code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("No code provided."))?;
        if code_id.len() > MAX_TOKEN {
            return Err(invalid());
        }
        let now = self.now();
        let (code, version) = self
            .store
            .get_versioned::<AuthCode>(code_id)
            .await?
            .ok_or_else(invalid)?;
        if code.expires_at <= now || code.client_id != client.id {
            return Err(invalid());
        }
        if code.redeemed {
            self.revoke_replayed_code(&code).await;
            return Err(invalid());
        }
        if req.redirect_uri.as_deref() != Some(code.redirect_uri.as_str()) {
            return Err(OAuthError::invalid_grant(
                "redirect_uri did not match URI from initial request.",
            ));
        }
        match (&code.code_challenge, req.code_verifier.as_deref()) {
            (None, None) => {}
            (None, Some(_)) => {
                return Err(OAuthError::invalid_request(
                    "No PKCE flow started. Cannot check code_verifier.",
                ));
            }
            (Some(_), None) => {
                return Err(OAuthError::invalid_grant(
                    "Expecting parameter code_verifier in PKCE flow.",
                ));
            }
            (Some(challenge), Some(verifier)) => {
                let computed = match code.code_challenge_method.as_deref() {
                    Some("S256") => s256(verifier),
                    _ => verifier.to_owned(),
                };
                let ok = valid_pkce_value(verifier)
                    && keygate_config::Secret::new(computed).matches(challenge);
                if !ok {
                    return Err(OAuthError::invalid_grant("Invalid code_verifier."));
                }
            }
        }

        let scopes = Scopes::from_list(code.scopes.clone());
        let refresh = if scopes.has("offline_access") {
            Some(self.create_refresh_token(&code, now).await?)
        } else {
            None
        };
        let mut redeemed = code.clone();
        redeemed.redeemed = true;
        redeemed.refresh_token_id = refresh.as_ref().map(|r| r.id.clone());
        if !self.store.compare_and_swap(version, &redeemed).await? {
            // Someone redeemed it between our read and our write: a replay. Nothing we issued
            // may survive, nor what they got.
            if let Some(r) = &refresh {
                self.store.delete::<RefreshToken>(&r.id).await?;
            }
            if let Some(current) = self.store.get::<AuthCode>(code_id).await? {
                self.revoke_replayed_code(&current).await;
            }
            return Err(invalid());
        }
        if let Some(r) = &refresh {
            self.enforce_session_cap(r).await?;
        }
        self.metrics.codes_exchanged.inc();
        let refresh_value = refresh.as_ref().map(|r| format!("{}.{}", r.id, r.token));
        self.issue(
            client,
            &code.identity,
            &code.connector_id,
            &scopes,
            code.nonce.clone(),
            refresh_value,
            Some(code_id),
            now,
        )
    }

    /// RFC 6749 §4.1.2: a code used twice revokes the tokens issued from it.
    pub(super) async fn revoke_replayed_code(&self, code: &AuthCode) {
        self.metrics.codes_replayed.inc();
        tracing::warn!(client = %code.client_id, user = %code.identity.email, "authorization code replayed; revoking the tokens issued from it");
        if let Some(id) = &code.refresh_token_id
            && let Err(e) = self.store.delete::<RefreshToken>(id).await
        {
            tracing::error!(error = %e, "could not revoke a refresh token after a code replay");
        }
    }

    #[allow(clippy::too_many_arguments)]
    pub(super) fn issue(
        &self,
        client: &Client,
        identity: &Identity,
        connector_id: &str,
        scopes: &Scopes,
        nonce: Option<String>,
        refresh_token: Option<String>,
        code: Option<&str>,
        now: i64,
    ) -> Result<TokenResponse, OAuthError> {
        let mut claims = self.claims(client, identity, connector_id, scopes, now)?;
        // By default one signature per answer: the access token is the ID token. Dex signs a
        // second JWT with the same claims as its access token; resource servers that verify our
        // access tokens against /keys see the same claims, and signing dominates the cost of a
        // refresh. `at_hash` is then left out (optional in the code flow, OIDC Core 3.1.3.6).
        // `accessTokenFormat: JWT` restores Dex's two tokens, for clients that require at_hash.
        let separate = self
            .settings
            .separate_access_token
            .then(|| self.sign(&claims))
            .transpose()?;
        claims.nonce = nonce;
        claims.c_hash = code.map(half_hash);
        claims.at_hash = separate.as_deref().map(half_hash);
        let id_token = self.sign(&claims)?;
        Ok(TokenResponse {
            access_token: separate.unwrap_or_else(|| id_token.clone()),
            token_type: "bearer".into(),
            expires_in: self.settings.id_token_ttl,
            refresh_token,
            id_token,
        })
    }

    pub(super) fn sign(&self, claims: &IdTokenClaims) -> Result<String, OAuthError> {
        let payload =
            serde_json::to_vec(claims).map_err(|e| ProviderError::Crypto(e.to_string()))?;
        Ok(self.keys.sign(&payload)?)
    }

    pub(super) fn claims(
        &self,
        client: &Client,
        identity: &Identity,
        connector_id: &str,
        scopes: &Scopes,
        now: i64,
    ) -> Result<IdTokenClaims, OAuthError> {
        let mut peers: Vec<String> = Vec::new();
        for peer in scopes.audiences() {
            if peer == client.id {
                continue;
            }
            let trusted = self.peer_trusts(peer, &client.id);
            if !trusted {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    format!("Client can't request audience {peer:?}"),
                ));
            }
            if !peers.iter().any(|p| p == peer) {
                peers.push(peer.to_owned());
            }
        }
        let (aud, azp) = if peers.is_empty() {
            (Audience::One(client.id.clone()), None)
        } else {
            peers.push(client.id.clone());
            (Audience::Many(peers), Some(client.id.clone()))
        };
        let profile = scopes.has("profile");
        Ok(IdTokenClaims {
            iss: self.settings.issuer.clone(),
            sub: dex_subject(&identity.user_id, connector_id),
            aud,
            exp: now + self.settings.id_token_ttl,
            iat: now,
            azp,
            nonce: None,
            at_hash: None,
            c_hash: None,
            email: scopes.has("email").then(|| identity.email.clone()),
            email_verified: scopes.has("email").then_some(identity.email_verified),
            groups: scopes.has("groups").then(|| identity.groups.clone()),
            name: profile.then(|| identity.username.clone()),
            preferred_username: profile
                .then(|| identity.preferred_username.clone())
                .filter(|p| !p.is_empty()),
            federated_claims: scopes.has("federated:id").then(|| FederatedClaims {
                connector_id: connector_id.to_owned(),
                user_id: identity.user_id.clone(),
            }),
        })
    }

    /// Verifies one of our tokens (signature, issuer, expiry) and returns its claims.
    pub fn verify_token(&self, token: &str) -> Option<IdTokenClaims> {
        let payload = self.keys.verify(token)?;
        let claims: IdTokenClaims = serde_json::from_slice(&payload).ok()?;
        (claims.iss == self.settings.issuer && claims.exp > self.now()).then_some(claims)
    }
}
