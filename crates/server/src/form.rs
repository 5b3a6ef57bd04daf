//! Strict parsing of query strings and form bodies: RFC 6749 §3.1 forbids repeated parameters.

use std::collections::HashMap;

/// Parameters by name. `Err` names a parameter that was repeated.
pub fn parse_params(raw: &[u8]) -> Result<HashMap<String, String>, String> {
    let mut out = HashMap::new();
    for (k, v) in url::form_urlencoded::parse(raw) {
        if out.insert(k.to_string(), v.into_owned()).is_some() {
            return Err(k.into_owned());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duplicates_are_refused() {
        assert_eq!(parse_params(b"a=1&b=2").map(|m| m.len()), Ok(2));
        assert_eq!(parse_params(b"a=1&a=2"), Err("a".to_string()));
        assert_eq!(parse_params(b"%zz=%ff").map(|m| m.len()), Ok(1));
    }
}
