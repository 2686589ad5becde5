//! The one syntax that flags and the manifest's `run:` settings share for
//! durations (`200ms`, `15s`, `30m`), rates (`20/10s`, `5/s`) and sizes (`8MiB`).

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
        let d = humantime::parse_duration(s).map_err(|e| {
            format!("{s:?} is not a duration ({e}; write it like 200ms, 15s or 30m)")
        })?;
        if d > Span::LONGEST {
            return Err(format!("{s:?} is too long (at most 1y)"));
        }
        Ok(Span(d))
    }
}

impl Span {
    /// The longest duration any setting takes. No batch waits longer, and a
    /// deadline this far from now still fits the clock's arithmetic.
    pub const LONGEST: Duration = Duration::from_secs(31_557_600);
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

    /// The largest count a rate takes: the runner keeps one place per count.
    pub const MAX_COUNT: u32 = 100_000;

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
        if count > Rate::MAX_COUNT {
            return Err(format!(
                "{s:?} counts too many (at most {} per period)",
                Rate::MAX_COUNT
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

/// A number of bytes, written `8MiB`, `10MB`, `500KB`, `500KiB` or `1048576` (bytes);
/// shown in binary units (`612 B`, `1.5 KiB`, `8 MiB`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl FromStr for Size {
    type Err = String;

    fn from_str(s: &str) -> Result<Size, String> {
        let t = s.trim();
        let split = t
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(t.len());
        let (number, unit) = t.split_at(split);
        let unit = unit.trim().to_ascii_lowercase();
        let factor: u64 = match unit.as_str() {
            "" | "b" => 1,
            "kb" | "k" => 1000,
            "kib" => 1 << 10,
            "mb" | "m" => 1000 * 1000,
            "mib" => 1 << 20,
            "gb" | "g" => 1000 * 1000 * 1000,
            "gib" => 1 << 30,
            _ => {
                return Err(format!(
                    "{t:?} is not a size (write it like 8MiB, 10MB or 500KB)"
                ));
            }
        };
        let value: f64 = number
            .parse()
            .map_err(|_| format!("{t:?} is not a size (write it like 8MiB, 10MB or 500KB)"))?;
        #[expect(clippy::cast_precision_loss, reason = "factors are far below 2^52")]
        let bytes = value * factor as f64;
        if !(1.0..=1e15).contains(&bytes) {
            return Err(format!("{t:?} is out of range (1 byte to 1000 TB)"));
        }
        #[expect(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            reason = "checked finite, positive and in range above"
        )]
        Ok(Size(bytes.round() as u64))
    }
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
        if self.0 < 1024 {
            return write!(f, "{} B", self.0);
        }
        #[expect(clippy::cast_precision_loss, reason = "a size to show, rounded anyway")]
        let mut value = self.0 as f64 / 1024.0;
        let mut unit = 0;
        while value >= 1024.0 && unit + 1 < UNITS.len() {
            value /= 1024.0;
            unit += 1;
        }
        if value.fract() == 0.0 {
            write!(f, "{:.0} {}", value, UNITS[unit])
        } else {
            write!(f, "{:.1} {}", value, UNITS[unit])
        }
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
        assert_eq!("1y".parse::<Span>().unwrap().0, Span::LONGEST);
        assert_eq!(
            "300000000000y".parse::<Span>().unwrap_err(),
            r#""300000000000y" is too long (at most 1y)"#
        );
        assert!("1y 1s".parse::<Span>().is_err());
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
        assert_eq!("100000/1s".parse::<Rate>().unwrap().count, Rate::MAX_COUNT);
        assert!(
            "100001/1s"
                .parse::<Rate>()
                .unwrap_err()
                .contains("too many")
        );
        assert!("5/300000000000y".parse::<Rate>().is_err());
        assert!((Rate::KIE_DEFAULT.per_second() - 2.0).abs() < 1e-9);
    }

    #[test]
    fn sizes() {
        assert_eq!("8MiB".parse::<Size>().unwrap(), Size(8 << 20));
        assert_eq!("10MB".parse::<Size>().unwrap(), Size(10_000_000));
        assert_eq!(" 500 kb ".parse::<Size>().unwrap(), Size(500_000));
        assert_eq!("1.5KiB".parse::<Size>().unwrap(), Size(1536));
        assert_eq!("1024".parse::<Size>().unwrap(), Size(1024));
        assert!("0".parse::<Size>().is_err());
        assert!("big".parse::<Size>().unwrap_err().contains("not a size"));
        assert!("5 parsecs".parse::<Size>().is_err());
        assert_eq!(Size(612).to_string(), "612 B");
        assert_eq!(Size(1536).to_string(), "1.5 KiB");
        assert_eq!(Size(8 << 20).to_string(), "8 MiB");
        assert_eq!(Size(12_500_000).to_string(), "11.9 MiB");
    }
}
