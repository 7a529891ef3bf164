//! Human durations such as "300s", "5m" or "1d", as written in the config files.

use std::fmt;
use std::time::Duration;

/// Units and their length in milliseconds.
const UNITS: [(&str, u64); 6] = [
    ("ms", 1),
    ("s", 1000),
    ("m", 60_000),
    ("h", 3_600_000),
    ("d", 86_400_000),
    ("w", 7 * 86_400_000),
];

/// Why a duration was refused, with the text as written (trimmed).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    /// No digits first: "", "m", "-5s".
    #[error(
        "invalid duration {0:?}: expected a number followed by ms, s, m, h, d or w, like \"5m\""
    )]
    NoNumber(String),
    /// The digits are followed by something other than a unit: "5x", "1.5m", "5 m".
    #[error("invalid duration unit {unit:?} in {text:?}: use ms, s, m, h, d or w")]
    UnknownUnit { unit: String, text: String },
    /// More milliseconds than a u64 holds.
    #[error("duration {0:?} is too large")]
    TooLarge(String),
}

/// Parses "<number><unit>" where unit is one of ms, s, m, h, d, w. A bare number means
/// seconds.
pub fn parse(text: &str) -> Result<Duration, DurationError> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    if digits.is_empty() {
        return Err(DurationError::NoNumber(text.to_owned()));
    }
    let factor = match unit {
        "" => 1000,
        unit => UNITS
            .iter()
            .find(|(name, _)| *name == unit)
            .map(|(_, f)| *f)
            .ok_or_else(|| DurationError::UnknownUnit {
                unit: unit.to_owned(),
                text: text.to_owned(),
            })?,
    };
    digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .map(Duration::from_millis)
        .ok_or_else(|| DurationError::TooLarge(text.to_owned()))
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
        write!(f, "{}ms", self.0.as_millis())
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

/// The longest an escalated ban may last (`recidive-max`): a duration, or "permanent".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MaxBantime {
    Permanent,
    Limit(HumanDuration),
}

impl<'de> serde::Deserialize<'de> for MaxBantime {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        let text = String::deserialize(de)?;
        if text == "permanent" {
            return Ok(MaxBantime::Permanent);
        }
        parse(&text)
            .map(|d| MaxBantime::Limit(HumanDuration(d)))
            .map_err(|e| serde::de::Error::custom(format!("{e}, or \"permanent\"")))
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
        assert_eq!(parse("250ms").unwrap(), Duration::from_millis(250));
    }

    #[test]
    fn rejects_garbage() {
        for bad in ["", "m", "-5s"] {
            assert!(
                matches!(parse(bad), Err(DurationError::NoNumber(_))),
                "{bad:?}"
            );
        }
        for bad in ["5x", "1.5m", "5 m"] {
            assert!(
                matches!(parse(bad), Err(DurationError::UnknownUnit { .. })),
                "{bad:?}"
            );
        }
        for bad in ["99999999999999999999s", "18446744073709551615w"] {
            assert!(
                matches!(parse(bad), Err(DurationError::TooLarge(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn messages_are_unchanged() {
        assert_eq!(
            parse(" m ").unwrap_err().to_string(),
            "invalid duration \"m\": expected a number followed by ms, s, m, h, d or w, like \"5m\""
        );
        assert_eq!(
            parse("5x").unwrap_err().to_string(),
            "invalid duration unit \"x\" in \"5x\": use ms, s, m, h, d or w"
        );
        assert_eq!(
            parse("99999999999999999999s").unwrap_err().to_string(),
            "duration \"99999999999999999999s\" is too large"
        );
    }
}
