//! Parsing of the human units the config file uses: durations like `"30s"` and port ranges like
//! `"50000-50099"`. Pure functions, called only by the validator.

use std::ops::RangeInclusive;
use std::time::Duration;

/// Parses `"250ms"`, `"30s"`, `"5m"`, `"1h"`; a bare number is refused so that a unit is never
/// guessed.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .ok_or_else(|| "needs a unit: ms, s, m or h (e.g. \"30s\")".to_string())?;
    let (number, unit) = text.split_at(split);
    if number.is_empty() {
        return Err("must start with a whole number (e.g. \"30s\")".into());
    }
    let n: u64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a whole number that fits 64 bits"))?;
    let millis = match unit {
        "ms" => Some(n),
        "s" => n.checked_mul(1_000),
        "m" => n.checked_mul(60_000),
        "h" => n.checked_mul(3_600_000),
        other => return Err(format!("unknown unit {other:?}: use ms, s, m or h")),
    }
    .ok_or_else(|| "is too large".to_string())?;
    Ok(Duration::from_millis(millis))
}

/// Parses `"512KiB"`, `"10MiB"`, `"2GiB"`, `"100kB"`, `"4096"` (bytes) into bytes.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number
        .parse()
        .map_err(|_| "must start with a whole number (e.g. \"10MiB\")".to_string())?;
    let scale: u64 = match unit.trim() {
        "" | "B" => 1,
        "kB" | "KB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "unknown unit {other:?}: use B, KiB, MiB, GiB, kB, MB or GB"
            ))
        }
    };
    n.checked_mul(scale)
        .ok_or_else(|| "is too large".to_string())
}

/// Parses `"50000-50099"` (inclusive) or a single port `"50000"`.
pub fn parse_port_range(text: &str) -> Result<RangeInclusive<u32>, String> {
    let parse = |s: &str| -> Result<u32, String> {
        s.trim()
            .parse::<u32>()
            .map_err(|_| format!("{:?} is not a port number", s.trim()))
    };
    let (start, end) = match text.split_once('-') {
        Some((a, b)) => (parse(a)?, parse(b)?),
        None => {
            let p = parse(text)?;
            (p, p)
        }
    };
    if start > end {
        return Err(format!("start {start} is after end {end}"));
    }
    Ok(start..=end)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert!(parse_duration("30").is_err());
        assert!(parse_duration("s").is_err());
        assert!(parse_duration("3x").is_err());
        assert!(parse_duration("99999999999999999999s").is_err());
        assert!(parse_duration("18446744073709551615h").is_err());
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("10MiB"), Ok(10 << 20));
        assert_eq!(parse_size("100KiB"), Ok(100 << 10));
        assert_eq!(parse_size("2GB"), Ok(2_000_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("MiB").is_err());
        assert!(parse_size("3 parsecs").is_err());
        assert!(parse_size("99999999999GiB").is_err());
    }

    #[test]
    fn port_ranges() {
        assert_eq!(parse_port_range("50000-50099"), Ok(50000..=50099));
        assert_eq!(parse_port_range("7000"), Ok(7000..=7000));
        assert!(parse_port_range("9-1").is_err());
        assert!(parse_port_range("a-b").is_err());
    }
}
