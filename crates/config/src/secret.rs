use std::fmt;

use subtle::ConstantTimeEq;

/// A secret value: never printed by `Debug` or `Display`, compared in constant time.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }

    /// Constant-time comparison (the length may leak, the content does not).
    pub fn matches(&self, candidate: &str) -> bool {
        self.0.as_bytes().ct_eq(candidate.as_bytes()).into()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Resolves a secret given inline, by environment variable or by file; at most one may be set.
pub(crate) fn resolve(
    field: &str,
    inline: Option<&str>,
    from_env: Option<&str>,
    file: Option<&str>,
) -> Result<Option<Secret>, crate::ConfigError> {
    use crate::ConfigError;
    let set = [inline.is_some(), from_env.is_some(), file.is_some()]
        .iter()
        .filter(|x| **x)
        .count();
    if set > 1 {
        return Err(ConfigError::new(format!(
            "set only one of {field}, {field}FromEnv and {field}File"
        ))
        .field(field));
    }
    let value = if let Some(v) = inline {
        v.to_owned()
    } else if let Some(var) = from_env {
        std::env::var(var).map_err(|_| {
            ConfigError::new(format!("environment variable {var} is not set"))
                .field(format!("{field}FromEnv"))
        })?
    } else if let Some(path) = file {
        std::fs::read_to_string(path)
            .map_err(|e| {
                ConfigError::new(format!("cannot read {path}: {e}")).field(format!("{field}File"))
            })?
            .trim_end_matches(['\r', '\n'])
            .to_owned()
    } else {
        return Ok(None);
    };
    if value.is_empty() {
        return Err(ConfigError::new("the secret is empty").field(field));
    }
    Ok(Some(Secret(value)))
}
