//! What a run will hold in memory, checked before it is allocated.
//!
//! Sizes from the command line (`--n`, `--features`, `--pairs`) and from files multiply
//! into allocations; an allocation the machine cannot make aborts the process with no
//! message a user can act on. Each stage that sizes memory from such counts asks
//! [`check`] first, so a run that cannot fit is a one-line error before any work.

use crate::error::{Error, Result};

/// Bytes the kernel says can still be allocated without swapping (`MemAvailable`), or
/// `None` where that is unknown (not Linux).
pub fn available() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/meminfo").ok()?;
    parse_meminfo(&text)
}

fn parse_meminfo(text: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// A byte count in the unit a person reads (GB are 10⁹ bytes, as `free -g` is not).
pub fn human(bytes: u128) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1000.0 && u + 1 < UNITS.len() {
        v /= 1000.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// Sizes multiplied without overflow: a product beyond u128 is as good as infinite here.
pub fn product(factors: &[usize]) -> u128 {
    factors
        .iter()
        .fold(1u128, |a, &f| a.saturating_mul(f as u128))
}

/// Refuse `what` (a phrase naming the setting that sized it, e.g. "--n 1000000000: the
/// hooked activations") if `bytes` exceeds what this machine has available.
pub fn check(what: &str, bytes: u128) -> Result<()> {
    check_against(what, bytes, available())
}

fn check_against(what: &str, bytes: u128, available: Option<u64>) -> Result<()> {
    match available {
        Some(avail) if bytes > avail as u128 => Err(Error::InvalidInput(format!(
            "{what} need about {}, but this machine has {} available",
            human(bytes),
            human(avail as u128)
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meminfo_is_read_in_kib() {
        let text = "MemTotal:       24000000 kB\nMemAvailable:   2000 kB\n";
        assert_eq!(parse_meminfo(text), Some(2_048_000));
        assert_eq!(parse_meminfo("MemTotal: 1 kB\n"), None);
    }

    #[test]
    fn refuses_only_beyond_what_is_available() {
        assert!(check_against("x", 10, Some(10)).is_ok());
        assert!(check_against("x", 10, None).is_ok());
        let e = check_against("--n 5: the activations", 2_000_000_000, Some(1_000_000_000))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("--n 5") && e.contains("2.0 GB") && e.contains("1.0 GB"),
            "{e}"
        );
    }

    #[test]
    fn products_saturate() {
        assert_eq!(product(&[2, 3, 4]), 24);
        assert_eq!(product(&[usize::MAX; 8]), u128::MAX);
    }
}
