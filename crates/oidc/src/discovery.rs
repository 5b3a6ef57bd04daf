use serde_json::json;

/// The issuer with a path appended, the way Dex joins them.
pub(crate) fn endpoint(issuer: &str, path: &str) -> String {
    format!(
        "{}/{}",
        issuer.trim_end_matches('/'),
        path.trim_start_matches('/')
    )
}

/// The discovery document; `algorithms`: those of the published keys, the signing key's first.
pub(crate) fn document(issuer: &str, algorithms: &[String]) -> Vec<u8> {
    let doc = json!({
        "issuer": issuer,
        "authorization_endpoint": endpoint(issuer, "auth"),
        "token_endpoint": endpoint(issuer, "token"),
        "jwks_uri": endpoint(issuer, "keys"),
        "userinfo_endpoint": endpoint(issuer, "userinfo"),
        "introspection_endpoint": endpoint(issuer, "token/introspect"),
        "revocation_endpoint": endpoint(issuer, "token/revoke"),
        "device_authorization_endpoint": endpoint(issuer, "device/code"),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
        "subject_types_supported": ["public"],
        "id_token_signing_alg_values_supported": algorithms,
        "code_challenge_methods_supported": ["S256", "plain"],
        "scopes_supported": ["openid", "email", "groups", "profile", "offline_access", "federated:id"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
        "claims_supported": [
            "iss", "sub", "aud", "iat", "exp", "azp", "nonce", "at_hash", "c_hash",
            "email", "email_verified", "groups", "name", "preferred_username", "federated_claims"
        ],
    });
    serde_json::to_vec_pretty(&doc).unwrap_or_default()
}
