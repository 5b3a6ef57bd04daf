use std::time::Duration;

/// Parses a Go-style duration as Deckhouse and Dex manifests write them: `10m`, `168h`, `2h30m`,
/// `1.5h`, `90s`, `500ms`. With `allow_days`, also `3d` (Deckhouse's password policy accepts days).
pub fn parse_duration(input: &str, allow_days: bool) -> Result<Duration, String> {
    let s = input.trim();
    if s.is_empty() {
        return Err("empty duration".into());
    }
    if s == "0" {
        return Ok(Duration::ZERO);
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        let number_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if number_len == 0 {
            return Err(format!("invalid duration {input:?}: expected a number"));
        }
        let number: f64 = rest[..number_len]
            .parse()
            .map_err(|_| format!("invalid duration {input:?}: bad number"))?;
        rest = &rest[number_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let seconds = match unit {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "d" if allow_days => 86400.0,
            "" => {
                return Err(format!(
                    "invalid duration {input:?}: missing unit (s, m or h)"
                ));
            }
            other => {
                return Err(format!(
                    "invalid duration {input:?}: unknown unit {other:?}"
                ));
            }
        };
        total += number * seconds;
    }
    if !total.is_finite() || total > 1e12 {
        return Err(format!("invalid duration {input:?}: too large"));
    }
    Ok(Duration::from_secs_f64(total))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_duration("10m", false), Ok(Duration::from_secs(600)));
        assert_eq!(
            parse_duration("2h30m", false),
            Ok(Duration::from_secs(9000))
        );
        assert_eq!(parse_duration("1.5h", false), Ok(Duration::from_secs(5400)));
        assert_eq!(
            parse_duration("2190h", false),
            Ok(Duration::from_secs(2190 * 3600))
        );
        assert_eq!(
            parse_duration("500ms", false),
            Ok(Duration::from_millis(500))
        );
        assert_eq!(
            parse_duration("3d", true),
            Ok(Duration::from_secs(3 * 86400))
        );
        assert_eq!(parse_duration("0", false), Ok(Duration::ZERO));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "10", "m", "3d", "10 minutes", "1h-5m", "1e3s", "h10"] {
            assert!(
                parse_duration(bad, false).is_err(),
                "{bad:?} must be refused"
            );
        }
    }
}
