//! Parsers for option values people type: durations (`2`, `1.5`, `500ms`,
//! `1m`), `--wait` (a duration or `inf`) and sizes (`65536`, `64K`, `16M`).

use std::time::Duration;

/// A duration: plain seconds (`2`, `0.5`) or with a unit (`500ms`, `2s`,
/// `1m`, `1h 30m`).
pub fn duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        return Duration::try_from_secs_f64(secs)
            .map_err(|_| format!("{s:?} is not a usable number of seconds"));
    }
    humantime::parse_duration(s).map_err(|e| {
        format!("{s:?} is not a duration ({e}); write seconds (2, 0.5) or 500ms, 2s, 1m")
    })
}

/// How long to linger once input has ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// Close after this long without traffic.
    For(Duration),
    /// Never close because of input ending.
    Forever,
}

/// `--wait`: a duration, or `inf` / `forever`.
pub fn wait(s: &str) -> Result<Wait, String> {
    match s.trim() {
        "inf" | "infinity" | "forever" | "never" => Ok(Wait::Forever),
        other => duration(other).map(Wait::For),
    }
}

/// A size in bytes: `65536`, or with a binary suffix (`64K`, `16M`, `1G`;
/// `KiB`, `KB` and lower case are the same).
pub fn size(s: &str) -> Result<usize, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let n: usize = digits
        .parse()
        .map_err(|_| format!("{s:?} is not a size; write bytes (65536) or 64K, 16M, 1G"))?;
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        other => return Err(format!("unknown size unit {other:?}; use K, M or G")),
    };
    n.checked_mul(1 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(duration("2"), Ok(Duration::from_secs(2)));
        assert_eq!(duration("0.25"), Ok(Duration::from_millis(250)));
        assert_eq!(duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(duration("1m"), Ok(Duration::from_secs(60)));
        assert!(duration("-1").is_err());
        assert!(duration("soon").is_err());
    }

    #[test]
    fn waits() {
        assert_eq!(wait("inf"), Ok(Wait::Forever));
        assert_eq!(wait("1.5"), Ok(Wait::For(Duration::from_millis(1500))));
    }

    #[test]
    fn sizes() {
        assert_eq!(size("65536"), Ok(65536));
        assert_eq!(size("64K"), Ok(64 << 10));
        assert_eq!(size("16MiB"), Ok(16 << 20));
        assert_eq!(size("1g"), Ok(1 << 30));
        assert!(size("12Q").is_err());
        assert!(size("M").is_err());
    }
}
