use crate::{ErrorCode, OAuthError};

/// The cross-client scope prefix (Dex).
pub const AUDIENCE_PREFIX: &str = "audience:server:client_id:";

/// Requested scopes, validated against what Dex supports.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scopes {
    pub list: Vec<String>,
}

impl Scopes {
    /// Parses a space-separated scope parameter. `openid` is required; unknown scopes are refused,
    /// as Dex does.
    pub fn parse(raw: &str) -> Result<Self, OAuthError> {
        let mut list: Vec<String> = Vec::new();
        let mut unknown = Vec::new();
        for s in raw.split(' ').filter(|s| !s.is_empty()) {
            let known = matches!(
                s,
                "openid" | "email" | "profile" | "groups" | "offline_access" | "federated:id"
            ) || s
                .strip_prefix(AUDIENCE_PREFIX)
                .is_some_and(|p| !p.is_empty());
            if !known {
                unknown.push(s.to_owned());
            } else if !list.iter().any(|x| x == s) {
                list.push(s.to_owned());
            }
        }
        if !unknown.is_empty() {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                format!("Unrecognized scope(s) {unknown:?}"),
            ));
        }
        if !list.iter().any(|s| s == "openid") {
            return Err(OAuthError::new(
                ErrorCode::InvalidScope,
                "Missing required scope(s) [\"openid\"].",
            ));
        }
        Ok(Self { list })
    }

    pub fn from_list(list: Vec<String>) -> Self {
        Self { list }
    }

    pub fn has(&self, scope: &str) -> bool {
        self.list.iter().any(|s| s == scope)
    }

    /// The peers named by `audience:server:client_id:<peer>` scopes.
    pub fn audiences(&self) -> impl Iterator<Item = &str> {
        self.list
            .iter()
            .filter_map(|s| s.strip_prefix(AUDIENCE_PREFIX))
    }

    pub fn joined(&self) -> String {
        self.list.join(" ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let s = Scopes::parse("openid email  groups audience:server:client_id:kubernetes openid")
            .unwrap();
        assert_eq!(
            s.list,
            [
                "openid",
                "email",
                "groups",
                "audience:server:client_id:kubernetes"
            ]
        );
        assert_eq!(s.audiences().collect::<Vec<_>>(), ["kubernetes"]);
        assert_eq!(
            Scopes::parse("email").unwrap_err().code,
            ErrorCode::InvalidScope
        );
        assert_eq!(
            Scopes::parse("openid admin").unwrap_err().code,
            ErrorCode::InvalidScope
        );
        assert_eq!(
            Scopes::parse("openid audience:server:client_id:")
                .unwrap_err()
                .code,
            ErrorCode::InvalidScope
        );
    }
}
