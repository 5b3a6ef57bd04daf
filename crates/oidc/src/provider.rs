//! The grants: authorization requests, password login, code exchange, refresh, userinfo,
//! introspection.

use std::sync::Arc;

use keygate_config::ProviderSettings;
use keygate_store::Store;
use keygate_store::model::{AuthCode, AuthRequest, Identity, RefreshToken};
use serde::Serialize;
use serde_json::{Value, json};

use crate::claims::{Audience, FederatedClaims, IdTokenClaims, dex_subject};
use crate::clients::{Client, ClientAuth, ClientRegistry};
use crate::jose::{half_hash, s256};
use crate::users::{LoginResult, UserDirectory};
use crate::{
    Clock, ErrorCode, KeyManager, OAuthError, ProviderError, Scopes, discovery, random_id,
};

/// Upper bounds on what we parse, so that garbage cannot cost us memory or CPU.
const MAX_PARAM: usize = 2048;
const MAX_TOKEN: usize = 512;

/// The query of an authorization request.
#[derive(Debug, Clone, Default)]
pub struct AuthorizeParams {
    pub client_id: Option<String>,
    pub redirect_uri: Option<String>,
    pub response_type: Option<String>,
    pub scope: Option<String>,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
}

/// Why an authorization request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthorizeError {
    /// The client or redirect URI cannot be trusted: show the error, never redirect.
    Page(OAuthError),
    /// The redirect URI is valid: send the error back to the client there.
    Redirect { url: String, error: OAuthError },
}

/// The result of a password login attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LoginOutcome {
    /// Redirect the browser here (the client's redirect URI with `code` or `error`).
    Redirect(String),
    /// Wrong login or password: show the form again.
    InvalidCredentials,
}

/// A token endpoint request, already parsed from the form.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    pub grant_type: Option<String>,
    pub code: Option<String>,
    pub redirect_uri: Option<String>,
    pub code_verifier: Option<String>,
    pub refresh_token: Option<String>,
    pub scope: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TokenResponse {
    pub access_token: String,
    pub token_type: &'static str,
    pub expires_in: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    pub id_token: String,
}

pub struct Provider {
    settings: ProviderSettings,
    store: Store,
    keys: KeyManager,
    clients: ClientRegistry,
    users: UserDirectory,
    clock: Arc<dyn Clock>,
    discovery: Arc<[u8]>,
}

fn append_query(uri: &str, params: &[(&str, &str)]) -> String {
    let encoded = serde_urlencoded_pairs(params);
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{encoded}")
}

fn serde_urlencoded_pairs(params: &[(&str, &str)]) -> String {
    url::form_urlencoded::Serializer::new(String::new())
        .extend_pairs(params.iter().filter(|(_, v)| !v.is_empty()))
        .finish()
}

/// RFC 7636: 43 to 128 characters of `[A-Za-z0-9-._~]`.
fn valid_pkce_value(v: &str) -> bool {
    (43..=128).contains(&v.len())
        && v.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~".contains(&b))
}

fn too_long(v: &Option<String>, max: usize) -> bool {
    v.as_ref().is_some_and(|s| s.len() > max)
}

impl Provider {
    pub fn new(
        settings: ProviderSettings,
        store: Store,
        keys: KeyManager,
        clients: ClientRegistry,
        users: UserDirectory,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let discovery = discovery::document(&settings.issuer, keys.algorithm()).into();
        Self {
            settings,
            store,
            keys,
            clients,
            users,
            clock,
            discovery,
        }
    }

    pub fn settings(&self) -> &ProviderSettings {
        &self.settings
    }
    pub fn now(&self) -> i64 {
        self.clock.now()
    }
    pub fn store(&self) -> &Store {
        &self.store
    }
    pub fn client(&self, id: &str) -> Option<Arc<Client>> {
        self.clients.get(id)
    }
    pub fn discovery_bytes(&self) -> Arc<[u8]> {
        self.discovery.clone()
    }
    pub fn jwks_bytes(&self) -> Arc<[u8]> {
        self.keys.jwks_bytes()
    }
    pub fn endpoint(&self, path: &str) -> String {
        discovery::endpoint(&self.settings.issuer, path)
    }
    pub fn has_local_users(&self) -> bool {
        !self.users.is_empty()
    }

    /// Key rotation and garbage collection; the server calls this every few seconds.
    pub async fn maintain(&self) -> Result<u64, ProviderError> {
        let now = self.now();
        self.keys.refresh(now).await?;
        Ok(self.store.collect_garbage(now).await?)
    }

    pub async fn ready(&self) -> bool {
        self.store.ping().await.is_ok()
    }

    // ---- authorization ---------------------------------------------------------------------

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
        if !client.redirect_uri_allowed(redirect_uri) {
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
    fn peer_trusts(&self, peer: &str, client_id: &str) -> bool {
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
    pub async fn login_password(
        &self,
        request_id: &str,
        login: &str,
        password: &str,
    ) -> Result<LoginOutcome, OAuthError> {
        let expired = || {
            OAuthError::invalid_request(
                "This sign-in has expired. Go back to the application and start again.",
            )
        };
        let request = self.auth_request(request_id).await?.ok_or_else(expired)?;
        if login.len() > 256 || password.len() > 1024 {
            return Ok(LoginOutcome::InvalidCredentials);
        }
        let identity = match self.users.check_password(login, password, self.now()).await {
            LoginResult::Ok(identity) => identity,
            LoginResult::Invalid => {
                tracing::info!(login = %login.chars().take(64).collect::<String>(), client = %request.client_id, "login failed: invalid credentials");
                return Ok(LoginOutcome::InvalidCredentials);
            }
        };
        self.finish_login(request, identity).await
    }

    /// Completes a request for an authenticated identity: applies the client's filters, consumes
    /// the request and redirects with a code (or `access_denied`).
    async fn finish_login(
        &self,
        request: AuthRequest,
        mut identity: Identity,
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

    // ---- token endpoint --------------------------------------------------------------------

    pub async fn token(
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
            None | Some("") => Err(OAuthError::invalid_request("No grant_type provided.")),
            Some(_) => Err(OAuthError::new(
                ErrorCode::UnsupportedGrantType,
                "Supported grant types: authorization_code, refresh_token.",
            )),
        }
    }

    async fn exchange_code(
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
            let token = self.new_refresh_token(&code, now);
            self.store.create(&token).await?;
            Some(token)
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
    async fn revoke_replayed_code(&self, code: &AuthCode) {
        tracing::warn!(client = %code.client_id, user = %code.identity.email, "authorization code replayed; revoking the tokens issued from it");
        if let Some(id) = &code.refresh_token_id
            && let Err(e) = self.store.delete::<RefreshToken>(id).await
        {
            tracing::error!(error = %e, "could not revoke a refresh token after a code replay");
        }
    }

    fn new_refresh_token(&self, code: &AuthCode, now: i64) -> RefreshToken {
        let mut token = RefreshToken {
            id: random_id(16),
            token: random_id(32),
            obsolete_token: None,
            client_id: code.client_id.clone(),
            connector_id: code.connector_id.clone(),
            scopes: code.scopes.clone(),
            nonce: code.nonce.clone(),
            identity: code.identity.clone(),
            created_at: now,
            last_used: now,
            expires_at: 0,
        };
        token.expires_at = self.refresh_expiry(&token);
        token
    }

    /// The earliest moment the token stops being valid (idle or absolute), `i64::MAX` if never.
    fn refresh_expiry(&self, t: &RefreshToken) -> i64 {
        let p = self.settings.refresh;
        let idle = p
            .valid_if_not_used_for
            .map_or(i64::MAX, |d| t.last_used.saturating_add(d));
        let absolute = p
            .absolute_lifetime
            .map_or(i64::MAX, |d| t.created_at.saturating_add(d));
        idle.min(absolute)
    }

    async fn refresh(
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
            let is_current = keygate_config::Secret::new(stored.token.clone()).matches(secret);
            let is_obsolete = stored
                .obsolete_token
                .as_ref()
                .is_some_and(|o| keygate_config::Secret::new(o.clone()).matches(secret));
            let in_window = now < stored.last_used.saturating_add(policy.reuse_interval);
            let scopes = self.refresh_scopes(&stored, req.scope.as_deref())?;

            if in_window && (is_current || is_obsolete) {
                // Concurrent or repeated refresh: same refresh token, fresh ID token from the stored
                // claims, no upstream call, no write.
                let value = format!("{}.{}", stored.id, stored.token);
                return self.issue(
                    client,
                    &stored.identity,
                    &stored.connector_id,
                    &scopes,
                    stored.nonce.clone(),
                    Some(value),
                    None,
                    now,
                );
            }
            if !is_current {
                return Err(invalid());
            }

            // The one caller that wins the compare-and-swap below refreshes the user.
            let identity = self.refreshed_identity(client, &stored, now)?;
            let mut next = stored.clone();
            if !policy.disable_rotation {
                next.obsolete_token = Some(stored.token.clone());
                next.token = random_id(32);
            }
            next.identity = identity;
            next.last_used = now;
            next.expires_at = self.refresh_expiry(&next);
            if self.store.compare_and_swap(version, &next).await? {
                let value = format!("{}.{}", next.id, next.token);
                return self.issue(
                    client,
                    &next.identity,
                    &next.connector_id,
                    &scopes,
                    next.nonce.clone(),
                    Some(value),
                    None,
                    now,
                );
            }
            // Lost to a concurrent refresh: re-read; our token is now the obsolete one.
        }
    }

    fn refresh_scopes(
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

    /// Re-checks the user at refresh: deleted or expired users are refused, group changes and the
    /// client's filters apply to the new tokens.
    fn refreshed_identity(
        &self,
        client: &Client,
        stored: &RefreshToken,
        now: i64,
    ) -> Result<Identity, OAuthError> {
        let gone = || OAuthError::invalid_grant("The user no longer exists or has expired.");
        let mut identity = match stored.connector_id.as_str() {
            crate::LOCAL_CONNECTOR => self
                .users
                .current(&stored.identity.user_id, now)
                .ok_or_else(gone)?,
            _ => return Err(gone()),
        };
        identity.groups = client
            .filter_user(&identity.email, &identity.groups)
            .ok_or_else(|| {
                OAuthError::invalid_grant("The user is no longer allowed to use this client.")
            })?;
        Ok(identity)
    }

    #[allow(clippy::too_many_arguments)]
    fn issue(
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
        let access_token = self.sign(&claims)?;
        claims.nonce = nonce;
        claims.at_hash = Some(half_hash(&access_token));
        claims.c_hash = code.map(half_hash);
        let id_token = self.sign(&claims)?;
        Ok(TokenResponse {
            access_token,
            token_type: "bearer",
            expires_in: self.settings.id_token_ttl,
            refresh_token,
            id_token,
        })
    }

    fn sign(&self, claims: &IdTokenClaims) -> Result<String, OAuthError> {
        let payload =
            serde_json::to_vec(claims).map_err(|e| ProviderError::Crypto(e.to_string()))?;
        Ok(self.keys.sign(&payload)?)
    }

    fn claims(
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

    // ---- userinfo and introspection ---------------------------------------------------------

    pub fn userinfo(&self, access_token: &str) -> Result<Value, OAuthError> {
        let claims = self.verify_token(access_token).ok_or_else(|| {
            OAuthError::new(
                ErrorCode::InvalidToken,
                "The access token is invalid or has expired.",
            )
        })?;
        let mut info = json!({ "sub": claims.sub });
        let fields = [
            ("email", claims.email.map(Value::from)),
            ("email_verified", claims.email_verified.map(Value::from)),
            ("groups", claims.groups.map(Value::from)),
            ("name", claims.name.map(Value::from)),
            (
                "preferred_username",
                claims.preferred_username.map(Value::from),
            ),
        ];
        for (k, v) in fields {
            if let Some(v) = v {
                info[k] = v;
            }
        }
        Ok(info)
    }

    /// RFC 7662. Access tokens are introspectable by any authenticated client (resource servers),
    /// refresh tokens only by the client they were issued to.
    pub async fn introspect(&self, auth: &ClientAuth, token: &str) -> Result<Value, OAuthError> {
        let client = self.clients.authenticate(auth)?;
        let inactive = json!({ "active": false });
        if token.is_empty() {
            return Err(OAuthError::invalid_request("No token provided."));
        }
        if token.len() > 16 * 1024 {
            return Ok(inactive);
        }
        if let Some(c) = self.verify_token(token) {
            let client_id = c.azp.clone().unwrap_or_else(|| match &c.aud {
                Audience::One(a) => a.clone(),
                Audience::Many(v) => v.first().cloned().unwrap_or_default(),
            });
            return Ok(json!({
                "active": true, "token_type": "Bearer", "token_use": "access_token",
                "client_id": client_id, "iss": c.iss, "sub": c.sub, "aud": c.aud, "exp": c.exp, "iat": c.iat,
                "username": c.email, "email": c.email, "groups": c.groups,
            }));
        }
        let Some((id, secret)) = token.split_once('.') else {
            return Ok(inactive);
        };
        let now = self.now();
        match self.store.get::<RefreshToken>(id).await? {
            Some(t)
                if t.client_id == client.id
                    && keygate_config::Secret::new(t.token.clone()).matches(secret)
                    && now < self.refresh_expiry(&t) =>
            {
                let exp = self.refresh_expiry(&t);
                Ok(json!({
                    "active": true, "token_use": "refresh_token", "client_id": t.client_id,
                    "iss": self.settings.issuer, "sub": dex_subject(&t.identity.user_id, &t.connector_id),
                    "iat": t.created_at, "exp": if exp == i64::MAX { Value::Null } else { exp.into() },
                    "username": t.identity.email,
                }))
            }
            _ => Ok(inactive),
        }
    }
}
