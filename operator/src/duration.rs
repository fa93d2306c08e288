//! Go-style durations (`90s`, `5m`, `720h`, `1h30m`), the form Kubernetes users
//! type into specs (as in cert-manager's `duration` and `renewBefore`).

use std::time::Duration;

/// Whole seconds as a Go duration, the way users write it: `1h30m`, `10m`, `45s`, `0s`.
pub fn format(duration: Duration) -> String {
    let seconds = duration.as_secs();
    if seconds == 0 {
        return "0s".to_owned();
    }
    let (h, m, s) = (seconds / 3600, seconds % 3600 / 60, seconds % 60);
    [(h, "h"), (m, "m"), (s, "s")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect()
}

/// Parses a Go duration; `field` names where it came from in the error.
pub fn parse(field: &str, text: &str) -> Result<Duration, String> {
    let invalid =
        |why: &str| format!("{field}: invalid duration {text:?}: {why} (e.g. \"90s\", \"5m\", \"720h\", \"1h30m\")");
    let trimmed = text.trim();
    if trimmed == "0" {
        return Ok(Duration::ZERO);
    }
    if trimmed.is_empty() {
        return Err(invalid("empty"));
    }
    if trimmed.starts_with('-') {
        return Err(invalid("negative"));
    }
    let mut total = Duration::ZERO;
    let mut rest = trimmed;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .unwrap_or(rest.len());
        if digits == 0 {
            return Err(invalid("expected a number"));
        }
        let number: f64 = rest[..digits].parse().map_err(|_| invalid("malformed number"))?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let seconds_per_unit = match &rest[..unit_len] {
            "ns" => 1e-9,
            "us" | "µs" => 1e-6,
            "ms" => 1e-3,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            "" => return Err(invalid("missing unit")),
            _ => return Err(invalid("unknown unit")),
        };
        rest = &rest[unit_len..];
        let part = Duration::try_from_secs_f64(number * seconds_per_unit).map_err(|_| invalid("out of range"))?;
        total = total.checked_add(part).ok_or_else(|| invalid("out of range"))?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse("f", "90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse("f", "720h"), Ok(Duration::from_secs(720 * 3600)));
        assert_eq!(parse("f", "1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse("f", "1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse("f", "250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse("f", "0"), Ok(Duration::ZERO));
    }

    #[test]
    fn bad_durations_name_the_field() {
        for bad in ["", "10", "5d", "-5s", "h", "1.2.3s"] {
            let err = parse("spec.upgrade.minSoak", bad).unwrap_err();
            assert!(
                err.starts_with("spec.upgrade.minSoak: invalid duration"),
                "{bad}: {err}"
            );
        }
    }
}
