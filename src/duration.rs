//! Human durations such as "300s", "5m" or "1d", as written in the config files.

use std::fmt;
use std::time::Duration;

const UNITS: [(char, u64); 5] = [
    ('s', 1),
    ('m', 60),
    ('h', 3600),
    ('d', 86400),
    ('w', 7 * 86400),
];

/// Parses "<number><unit>" where unit is one of s, m, h, d, w. A bare number means seconds.
pub fn parse(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let (digits, unit) = match text.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => (&text[..i], Some(c)),
        _ => (text, None),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid duration {text:?}: expected a number followed by s, m, h, d or w, like \"5m\""
        ));
    }
    let number: u64 = digits
        .parse()
        .map_err(|_| format!("duration {text:?} is too large"))?;
    let factor = match unit {
        None => 1,
        Some(u) => UNITS
            .iter()
            .find(|(name, _)| *name == u)
            .map(|(_, f)| *f)
            .ok_or_else(|| {
                format!("invalid duration unit {u:?} in {text:?}: use s, m, h, d or w")
            })?,
    };
    number
        .checked_mul(factor)
        .map(Duration::from_secs)
        .ok_or_else(|| format!("duration {text:?} is too large"))
}

/// A duration that deserializes from the config's text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn secs(secs: u64) -> Self {
        HumanDuration(Duration::from_secs(secs))
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}s", self.0.as_secs())
    }
}

impl<'de> serde::Deserialize<'de> for HumanDuration {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        parse(&text)
            .map(HumanDuration)
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units() {
        assert_eq!(parse("300s").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(parse("2h").unwrap(), Duration::from_secs(7200));
        assert_eq!(parse("1d").unwrap(), Duration::from_secs(86400));
        assert_eq!(parse("1w").unwrap(), Duration::from_secs(604800));
        assert_eq!(parse("42").unwrap(), Duration::from_secs(42));
    }

    #[test]
    fn rejects_garbage() {
        for bad in [
            "",
            "m",
            "5x",
            "-5s",
            "1.5m",
            "5 m",
            "99999999999999999999s",
            "18446744073709551615w",
        ] {
            assert!(parse(bad).is_err(), "{bad:?} should be rejected");
        }
    }
}
