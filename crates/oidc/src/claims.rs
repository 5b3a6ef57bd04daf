use serde::{Deserialize, Serialize};

/// `sub` as Dex computes it: base64url (no padding) of the protobuf message
/// `{1: user_id, 2: connector_id}`, so subjects survive a migration from Dex.
pub(crate) fn dex_subject(user_id: &str, connector_id: &str) -> String {
    let mut buf = Vec::with_capacity(user_id.len() + connector_id.len() + 8);
    for (field, value) in [(1u8, user_id), (2u8, connector_id)] {
        buf.push((field << 3) | 2);
        let mut len = value.len();
        while len >= 0x80 {
            buf.push((len as u8 & 0x7f) | 0x80);
            len >>= 7;
        }
        buf.push(len as u8);
        buf.extend_from_slice(value.as_bytes());
    }
    crate::jose::b64(&buf)
}

/// A single audience is a string, several are an array (as Dex and RFC 7519 allow).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum Audience {
    One(String),
    Many(Vec<String>),
}

impl Audience {
    pub fn contains(&self, id: &str) -> bool {
        match self {
            Audience::One(a) => a == id,
            Audience::Many(v) => v.iter().any(|a| a == id),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedClaims {
    pub connector_id: String,
    pub user_id: String,
}

/// The claims of our ID tokens, which are also our access tokens (or, with
/// `accessTokenFormat: JWT`, the claims of a separate access token without `nonce` and hashes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdTokenClaims {
    pub iss: String,
    pub sub: String,
    pub aud: Audience,
    pub exp: i64,
    pub iat: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azp: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nonce: Option<String>,
    /// Only with `accessTokenFormat: JWT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub at_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub c_hash: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_verified: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub preferred_username: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub federated_claims: Option<FederatedClaims>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_matches_dex() {
        // The static user of Dex's example config, as Dex's docs show its `sub`.
        assert_eq!(
            dex_subject("08a8684b-db88-4b73-90a9-3cd1661f5466", "local"),
            "CiQwOGE4Njg0Yi1kYjg4LTRiNzMtOTBhOS0zY2QxNjYxZjU0NjYSBWxvY2Fs"
        );
    }
}
