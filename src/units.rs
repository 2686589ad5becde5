//! The one syntax that flags and the manifest's `run:` settings share for
//! durations (`200ms`, `15s`, `30m`) and rates (`20/10s`, `5/s`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

/// A duration written as a number and a unit (`200ms`, `15s`, `30m`, `1h 30m`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Span(pub Duration);

impl FromStr for Span {
    type Err = String;

    fn from_str(s: &str) -> Result<Span, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("a duration is empty (write it like 200ms, 15s or 30m)".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!("{s:?} has no unit (write it like {s}s or {s}ms)"));
        }
        humantime::parse_duration(s)
            .map(Span)
            .map_err(|e| format!("{s:?} is not a duration ({e}; write it like 200ms, 15s or 30m)"))
    }
}

impl fmt::Display for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", humantime::format_duration(self.0))
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Span, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// At most `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    pub count: u32,
    pub per: Duration,
}

impl Rate {
    /// The documented account limit: 20 generate calls per 10 seconds.
    pub const KIE_DEFAULT: Rate = Rate {
        count: 20,
        per: Duration::from_secs(10),
    };

    /// The documented cap on status queries: 10 per second per key.
    pub const KIE_POLLS: Rate = Rate {
        count: 10,
        per: Duration::from_secs(1),
    };

    /// Events per second.
    pub fn per_second(self) -> f64 {
        f64::from(self.count) / self.per.as_secs_f64()
    }
}

impl FromStr for Rate {
    type Err = String;

    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("{s:?} is not a rate (write it like 20/10s or 5/s)");
        let (count, per) = s.trim().split_once('/').ok_or_else(bad)?;
        let count: u32 = count.trim().parse().map_err(|_| bad())?;
        let per = per.trim();
        let per = if per.starts_with(|c: char| c.is_ascii_digit()) {
            per.parse::<Span>().map_err(|_| bad())?.0
        } else {
            format!("1{per}").parse::<Span>().map_err(|_| bad())?.0
        };
        if count == 0 || per.is_zero() {
            return Err(format!(
                "{s:?} allows nothing (the count and the period must be above 0)"
            ));
        }
        Ok(Rate { count, per })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, humantime::format_duration(self.per))
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Rate, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(
            "200ms".parse::<Span>().unwrap().0,
            Duration::from_millis(200)
        );
        assert_eq!("15s".parse::<Span>().unwrap().0, Duration::from_secs(15));
        assert_eq!("30m".parse::<Span>().unwrap().0, Duration::from_secs(1800));
        assert!("15".parse::<Span>().unwrap_err().contains("no unit"));
        assert!("soon".parse::<Span>().is_err());
    }

    #[test]
    fn rates() {
        assert_eq!("20/10s".parse::<Rate>().unwrap(), Rate::KIE_DEFAULT);
        assert_eq!(
            "5/s".parse::<Rate>().unwrap(),
            Rate {
                count: 5,
                per: Duration::from_secs(1)
            }
        );
        assert_eq!("2/m".parse::<Rate>().unwrap().per, Duration::from_secs(60));
        assert!("0/10s".parse::<Rate>().is_err());
        assert!("20".parse::<Rate>().is_err());
        assert!("x/10s".parse::<Rate>().is_err());
        assert!((Rate::KIE_DEFAULT.per_second() - 2.0).abs() < 1e-9);
    }
}
