use base64::Engine;

/// Dex and Deckhouse accept bcrypt costs in this range.
pub const MIN_BCRYPT_COST: u32 = 10;
pub const MAX_BCRYPT_COST: u32 = 16;

/// A validated bcrypt hash (`$2a$`, `$2b$` or `$2y$`).
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl std::fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("PasswordHash(<redacted>)")
    }
}

impl PasswordHash {
    /// Accepts the hash as Deckhouse's `User.spec.password` holds it: plain, or base64 of the hash.
    pub fn parse(value: &str) -> Result<Self, String> {
        let value = value.trim();
        let hash = if value.starts_with("$2") {
            value.to_owned()
        } else {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(value)
                .map_err(|_| {
                    "not a bcrypt hash: expected \"$2a$...\" or its base64 form (make one with `keygate hash-password`)".to_string()
                })?;
            String::from_utf8(decoded)
                .map_err(|_| "base64 value does not decode to a bcrypt hash".to_string())?
                .trim()
                .to_owned()
        };
        let parts: Vec<&str> = hash.split('$').collect();
        // "", "2a", "10", "<53 chars of salt+hash>"
        if parts.len() != 4 || !matches!(parts[1], "2a" | "2b" | "2y") || parts[3].len() != 53 {
            return Err("not a bcrypt hash: expected \"$2a$<cost>$<53 characters>\"".into());
        }
        let cost: u32 = parts[2]
            .parse()
            .map_err(|_| "bcrypt hash has an invalid cost".to_string())?;
        if !(MIN_BCRYPT_COST..=MAX_BCRYPT_COST).contains(&cost) {
            return Err(format!(
                "bcrypt cost {cost} is outside {MIN_BCRYPT_COST}..={MAX_BCRYPT_COST}"
            ));
        }
        Ok(Self(hash))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn cost(&self) -> u32 {
        self.0
            .split('$')
            .nth(2)
            .and_then(|c| c.parse().ok())
            .unwrap_or(MIN_BCRYPT_COST)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // "password" at cost 10, as in Dex's example config.
    const HASH: &str = "$2a$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W";

    #[test]
    fn plain_and_base64() {
        assert!(PasswordHash::parse(HASH).is_ok());
        let b64 = base64::engine::general_purpose::STANDARD.encode(HASH);
        assert_eq!(PasswordHash::parse(&b64), PasswordHash::parse(HASH));
        assert_eq!(PasswordHash::parse(HASH).map(|h| h.cost()), Ok(10));
    }

    #[test]
    fn refuses_plaintext_and_bad_costs() {
        assert!(PasswordHash::parse("password").is_err());
        assert!(
            PasswordHash::parse("$2a$04$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W")
                .is_err()
        );
        assert!(
            PasswordHash::parse("$2a$17$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W")
                .is_err()
        );
        assert!(
            PasswordHash::parse("$2x$10$2b2cU8CPhOTaGrs1HRQuAueS7JTT5ZHsHSzYiFPm1leZck7Mc8T4W")
                .is_err()
        );
    }

    #[test]
    fn debug_is_redacted() {
        let h = PasswordHash::parse(HASH).map(|h| format!("{h:?}"));
        assert_eq!(h.as_deref(), Ok("PasswordHash(<redacted>)"));
    }
}
