//! RFC 8628, the device authorization grant: for `keygate login` on machines without a browser.
//! The device gets a device code and a user code; the user approves the user code at
//! `<issuer>device` in any browser, which runs the ordinary authorization-code flow with the
//! redirect URI `<issuer>device/callback`; the device's polls then receive the tokens once.

use keygate_store::model::DeviceRequest;

use super::*;

/// How long a device code lives, and the polling interval we ask for.
const DEVICE_TTL: i64 = 300;
const POLL_INTERVAL: i64 = 5;
/// User codes avoid letters people confuse (no vowels, no 0/O, 1/I).
const USER_CODE_ALPHABET: &[u8] = b"BCDFGHJKLMNPQRSTVWXZ";

fn user_code() -> String {
    let mut bytes = [0u8; 8];
    if aws_lc_rs::rand::fill(&mut bytes).is_err() {
        std::process::abort();
    }
    let chars: String = bytes
        .iter()
        .map(|b| USER_CODE_ALPHABET[*b as usize % USER_CODE_ALPHABET.len()] as char)
        .collect();
    format!("{}-{}", &chars[..4], &chars[4..])
}

/// `xxxx-xxxx`, `XXXXXXXX`, ` xxxx xxxx `: the form people type codes in.
pub fn normalize_user_code(input: &str) -> String {
    let letters: String = input
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .map(|c| c.to_ascii_uppercase())
        .collect();
    if letters.len() == 8 {
        format!("{}-{}", &letters[..4], &letters[4..])
    } else {
        letters
    }
}

/// The answer to `/device/code`.
#[derive(Debug, Clone, Serialize)]
pub struct DeviceAuthorization {
    pub device_code: String,
    pub user_code: String,
    pub verification_uri: String,
    pub verification_uri_complete: String,
    pub expires_in: i64,
    pub interval: i64,
}

impl Provider {
    /// The redirect URI of the device flow's browser half.
    pub fn device_callback(&self) -> String {
        self.endpoint("device/callback")
    }

    /// `/device/code`: a public client (or a confidential one with its secret) asks for codes.
    pub async fn device_authorization(
        &self,
        auth: &ClientAuth,
        scope: Option<&str>,
    ) -> Result<DeviceAuthorization, OAuthError> {
        let client = self.clients.authenticate(auth)?;
        if !client.redirect_uri_allowed("/device/callback") {
            return Err(OAuthError::new(
                ErrorCode::UnauthorizedClient,
                "This client may not use the device flow (it needs /device/callback among its redirect URIs, or to be public without any).",
            ));
        }
        let scopes = Scopes::parse(scope.unwrap_or("openid"))?;
        for peer in scopes.audiences() {
            if peer != client.id && !self.peer_trusts(peer, &client.id) {
                return Err(OAuthError::new(
                    ErrorCode::InvalidScope,
                    format!("Client can't request audience {peer:?}"),
                ));
            }
        }
        let now = self.now();
        let request = DeviceRequest {
            id: random_id(32),
            user_code: user_code(),
            client_id: client.id.clone(),
            scopes: scopes.list,
            expires_at: now + DEVICE_TTL,
            interval: POLL_INTERVAL,
            last_poll: None,
            tokens: None,
            denied: false,
        };
        self.store.create(&request).await?;
        let verification_uri = self.endpoint("device");
        Ok(DeviceAuthorization {
            verification_uri_complete: format!(
                "{verification_uri}?user_code={}",
                request.user_code
            ),
            verification_uri,
            user_code: request.user_code,
            device_code: request.id,
            expires_in: DEVICE_TTL,
            interval: POLL_INTERVAL,
        })
    }

    /// The pending request for a user code typed in the browser.
    pub async fn device_request_by_user_code(
        &self,
        typed: &str,
    ) -> Result<Option<DeviceRequest>, OAuthError> {
        let code = normalize_user_code(typed);
        if code.len() != 9 {
            return Ok(None);
        }
        let now = self.now();
        Ok(self
            .store
            .list_owned::<DeviceRequest>(&code)
            .await?
            .into_iter()
            .find(|r| r.expires_at > now && r.tokens.is_none() && !r.denied))
    }

    /// Starts the browser half for a user code: an authorization request whose redirect URI is
    /// the device callback and whose `state` is the user code. Never the device code: it would
    /// land in the browser's history, and whoever holds it can collect the tokens.
    pub async fn device_authorize_params(&self, request: &DeviceRequest) -> AuthorizeParams {
        AuthorizeParams {
            client_id: Some(request.client_id.clone()),
            redirect_uri: Some(self.device_callback()),
            response_type: Some("code".into()),
            scope: Some(request.scopes.join(" ")),
            state: Some(request.user_code.clone()),
            nonce: None,
            code_challenge: None,
            code_challenge_method: None,
        }
    }

    /// The pending request a browser answer names (its `state` is the user code).
    async fn pending_device_request(&self, user_code: &str) -> Result<DeviceRequest, OAuthError> {
        self.device_request_by_user_code(user_code)
            .await?
            .ok_or_else(|| {
                OAuthError::new(
                    ErrorCode::InvalidGrant,
                    "This device code has expired. Start the login on the device again.",
                )
            })
    }

    /// The browser came back with a code: redeem it for the device and park the tokens.
    pub async fn device_complete(&self, code: &str, user_code: &str) -> Result<(), OAuthError> {
        let request = self.pending_device_request(user_code).await?;
        let req = TokenRequest {
            grant_type: Some("authorization_code".into()),
            code: Some(code.to_owned()),
            redirect_uri: Some(self.device_callback()),
            ..TokenRequest::default()
        };
        // The device client may be confidential: redeem as the provider itself, for it.
        let client = self
            .clients
            .get(&request.client_id)
            .ok_or_else(|| OAuthError::invalid_client("The client is gone."))?;
        let tokens = self.exchange_code(&client, &req).await?;
        let json =
            serde_json::to_string(&tokens).map_err(|e| ProviderError::Crypto(e.to_string()))?;
        self.store
            .update::<DeviceRequest, (), _>(&request.id, |mut r| {
                if r.tokens.is_some() || r.denied {
                    return Err(());
                }
                r.tokens = Some(json.clone());
                Ok(r)
            })
            .await
            .map_err(|_| OAuthError::invalid_request("This device code was already used."))?;
        Ok(())
    }

    /// The user refused (or the provider refused the user): the device's next poll says so.
    pub async fn device_deny(&self, user_code: &str) -> Result<(), OAuthError> {
        let request = self.pending_device_request(user_code).await?;
        let _ = self
            .store
            .update::<DeviceRequest, (), _>(&request.id, |mut r| {
                r.denied = true;
                Ok(r)
            })
            .await;
        Ok(())
    }

    /// The device's poll at the token endpoint.
    pub(super) async fn device_token(
        &self,
        client: &Client,
        req: &TokenRequest,
    ) -> Result<TokenResponse, OAuthError> {
        let device_code = req
            .device_code
            .as_deref()
            .filter(|c| !c.is_empty())
            .ok_or_else(|| OAuthError::invalid_request("No device_code provided."))?;
        let now = self.now();
        let Some((request, version)) = self
            .store
            .get_versioned::<DeviceRequest>(device_code)
            .await?
        else {
            return Err(OAuthError::new(
                ErrorCode::ExpiredToken,
                "The device code is unknown or has expired.",
            ));
        };
        if request.client_id != client.id {
            return Err(OAuthError::invalid_grant(
                "The device code belongs to another client.",
            ));
        }
        if request.expires_at <= now {
            return Err(OAuthError::new(
                ErrorCode::ExpiredToken,
                "The device code has expired.",
            ));
        }
        if request.denied {
            return Err(OAuthError::new(
                ErrorCode::AccessDenied,
                "The user denied the request.",
            ));
        }
        if let Some(tokens) = &request.tokens {
            // Single use: whoever deletes it gets the tokens.
            if !self.store.delete::<DeviceRequest>(device_code).await? {
                return Err(OAuthError::new(
                    ErrorCode::ExpiredToken,
                    "The device code was already used.",
                ));
            }
            return serde_json::from_str(tokens)
                .map_err(|e| ProviderError::Crypto(e.to_string()).into());
        }
        let too_fast = request
            .last_poll
            .is_some_and(|last| now < last + request.interval);
        let mut polled = request.clone();
        polled.last_poll = Some(now);
        if too_fast {
            polled.interval += 5;
        }
        // Losing this race only means another poll recorded its time.
        let _ = self.store.compare_and_swap(version, &polled).await?;
        if too_fast {
            return Err(OAuthError::new(
                ErrorCode::SlowDown,
                format!("Poll at most every {} s.", polled.interval),
            ));
        }
        Err(OAuthError::new(
            ErrorCode::AuthorizationPending,
            "The user has not approved the request yet.",
        ))
    }
}
