//! A version of a function as the engine keys it: `$LATEST` or a published number.
//!
//! Unlike [`crate::Qualifier`] it cannot be an alias: it is what a qualifier resolves to.
//! It shows and serializes as the string Lambda uses (`$LATEST`, `1`, …), so swapping it
//! for a `String` changes no wire output.

use crate::names::Qualifier;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

/// `$LATEST` or a published version number. `$LATEST` orders before every number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Version {
    /// `$LATEST`, the unpublished version that updates change.
    Latest,
    /// A published version number.
    Number(u64),
}

/// A string that is neither `$LATEST` nor a version number.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a function version: {0}")]
pub struct NotAVersion(pub String);

impl Version {
    /// The number of a published version; `None` for `$LATEST`.
    pub fn number(self) -> Option<u64> {
        match self {
            Self::Latest => None,
            Self::Number(n) => Some(n),
        }
    }

    pub fn is_latest(self) -> bool {
        self == Self::Latest
    }

    /// The version a qualifier names directly; `None` for an alias, which needs a lookup.
    pub fn of_qualifier(q: &Qualifier) -> Option<Self> {
        match q {
            Qualifier::Latest => Some(Self::Latest),
            Qualifier::Version(n) => Some(Self::Number(*n)),
            Qualifier::Alias(_) => None,
        }
    }
}

impl From<u64> for Version {
    fn from(n: u64) -> Self {
        Self::Number(n)
    }
}

impl From<Version> for Qualifier {
    fn from(v: Version) -> Self {
        match v {
            Version::Latest => Self::Latest,
            Version::Number(n) => Self::Version(n),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Latest => f.write_str(Qualifier::LATEST),
            Self::Number(n) => write!(f, "{n}"),
        }
    }
}

impl FromStr for Version {
    type Err = NotAVersion;

    /// `$LATEST` or digits only (no sign, no spaces), as Lambda writes versions.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s == Qualifier::LATEST {
            return Ok(Self::Latest);
        }
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(NotAVersion(s.to_string()));
        }
        s.parse::<u64>().map(Self::Number).map_err(|_| NotAVersion(s.to_string()))
    }
}

impl PartialEq<str> for Version {
    fn eq(&self, other: &str) -> bool {
        other.parse::<Self>().is_ok_and(|v| v == *self)
    }
}

impl Serialize for Version {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Version {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_shows_lambda_strings() {
        assert_eq!("$LATEST".parse::<Version>(), Ok(Version::Latest));
        assert_eq!("7".parse::<Version>(), Ok(Version::Number(7)));
        assert_eq!(Version::Latest.to_string(), "$LATEST");
        assert_eq!(Version::Number(12).to_string(), "12");
        for bad in ["", "latest", "$latest", "+1", "-1", " 1", "1a", "prod", "99999999999999999999999"] {
            assert!(bad.parse::<Version>().is_err(), "{bad:?} parsed");
        }
    }

    #[test]
    fn serializes_as_the_string_lambda_uses() {
        assert_eq!(serde_json::to_string(&Version::Latest).unwrap(), r#""$LATEST""#);
        assert_eq!(serde_json::to_string(&Version::Number(3)).unwrap(), r#""3""#);
        assert_eq!(serde_json::from_str::<Version>(r#""3""#).unwrap(), Version::Number(3));
        assert!(serde_json::from_str::<Version>("3").is_err(), "a JSON number is not a version string");
        assert!(serde_json::from_str::<Version>(r#""prod""#).is_err());
    }

    #[test]
    fn latest_orders_first_and_numbers_numerically() {
        let mut v = vec![Version::Number(10), Version::Number(2), Version::Latest];
        v.sort();
        assert_eq!(v, [Version::Latest, Version::Number(2), Version::Number(10)]);
    }

    #[test]
    fn matches_qualifier() {
        assert_eq!(Version::of_qualifier(&Qualifier::Latest), Some(Version::Latest));
        assert_eq!(Version::of_qualifier(&Qualifier::Version(4)), Some(Version::Number(4)));
        assert_eq!(Version::of_qualifier(&Qualifier::Alias("prod".into())), None);
        assert_eq!(Qualifier::from(Version::Number(4)), Qualifier::Version(4));
    }

    proptest! {
        #[test]
        fn display_round_trips(n in any::<u64>()) {
            let v = Version::Number(n);
            prop_assert_eq!(v.to_string().parse::<Version>(), Ok(v));
            prop_assert!(v == *v.to_string().as_str() && Version::Latest != *v.to_string().as_str());
        }
    }
}
