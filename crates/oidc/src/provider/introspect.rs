//! Userinfo and token introspection.

use super::*;

impl Provider {
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
        if client.public {
            return Err(OAuthError::invalid_client(
                "Public clients cannot introspect tokens.",
            ));
        }
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
