//! What a run will hold in memory, checked before it is allocated.
//!
//! Sizes from the command line (`--n`, `--features`, `--pairs`) and from files multiply
//! into allocations; an allocation the machine cannot make aborts the process with no
//! message a user can act on. Each stage that sizes memory from such counts asks
//! [`check`] first, so a run that cannot fit is a one-line error before any work.

use serde::{Deserialize, Serialize};

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

/// Peak memory of a run, whole and per stage: `scores.json`'s and `compare.json`'s
/// `memory`, the bench JSON's, and the printed summaries'.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PeakMemory {
    /// The process's peak resident set (bytes, `VmHWM`) over the run; `None` off Linux.
    pub host_peak_bytes: Option<u64>,
    /// The CUDA device's peak memory in use (bytes, total − free as the driver reports
    /// it, so candle's memory pool counts), sampled at every stage end and after every
    /// forward batch; `None` when the run used no GPU.
    pub device_peak_bytes: Option<u64>,
    /// Per stage, in the order the stages ended.
    pub stages: Vec<StagePeak>,
    /// How the per-stage host peaks were taken: `"reset"`: the high-water mark was reset
    /// (`/proc/self/clear_refs`, 5) at each stage's start, so each is that stage's own
    /// peak; `"running"`: the reset was not allowed, so each is the run's peak so far.
    pub host_stage_method: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StagePeak {
    pub stage: String,
    pub host_peak_bytes: Option<u64>,
    pub device_peak_bytes: Option<u64>,
}

impl PeakMemory {
    /// One line for a summary: `peak memory: host 1.2 GB (forward_hooks 1.1 GB, …)`.
    pub fn summary(&self) -> String {
        let show = |b: Option<u64>| b.map_or("?".into(), |b| human(b as u128));
        let mut s = format!("peak memory: host {}", show(self.host_peak_bytes));
        if let Some(d) = self.device_peak_bytes {
            s += &format!(", device {}", human(d as u128));
        }
        let per: Vec<String> = self
            .stages
            .iter()
            .map(|st| match st.device_peak_bytes {
                Some(d) => format!(
                    "{} {} / {}",
                    st.stage,
                    show(st.host_peak_bytes),
                    human(d as u128)
                ),
                None => format!("{} {}", st.stage, show(st.host_peak_bytes)),
            })
            .collect();
        if !per.is_empty() {
            let how = if self.host_stage_method == "reset" {
                ""
            } else {
                ", host as the running peak"
            };
            s += &format!(" (per stage{how}: {})", per.join(", "));
        }
        s
    }
}

/// The process's resident-set high-water mark (`VmHWM`, bytes).
pub fn peak_rss() -> Option<u64> {
    status_kib("VmHWM:")
}

/// The process's resident set now (`VmRSS`, bytes).
pub fn rss() -> Option<u64> {
    status_kib("VmRSS:")
}

fn status_kib(key: &str) -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/status").ok()?;
    parse_kib(&text, key)
}

fn parse_kib(text: &str, key: &str) -> Option<u64> {
    let line = text.lines().find(|l| l.starts_with(key))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    kib.checked_mul(1024)
}

/// Reset the resident-set high-water mark to the current resident set (Linux ≥ 4.0:
/// writing 5 to `/proc/self/clear_refs`); false where that is not allowed.
pub fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// The device's highest memory in use seen by [`sample_device`] since the last
/// [`take_device_peak`].
static DEVICE_PEAK: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Record `dev`'s memory in use into the device peak (nothing on the CPU).
pub fn sample_device(dev: &candle_core::Device) {
    if let Some(used) = crate::gpu::device_memory_used(dev) {
        DEVICE_PEAK.fetch_max(used, std::sync::atomic::Ordering::Relaxed);
    }
}

/// The device peak since the last call (`None` if nothing was sampled), restarting it.
fn take_device_peak() -> Option<u64> {
    match DEVICE_PEAK.swap(0, std::sync::atomic::Ordering::Relaxed) {
        0 => None,
        b => Some(b),
    }
}

/// Records [`PeakMemory`] stage by stage: create it where the run starts, call
/// [`MemoryMeter::stage_end`] as each stage ends.
pub struct MemoryMeter {
    device: Option<candle_core::Device>,
    peaks: PeakMemory,
    reset: bool,
}

impl Default for MemoryMeter {
    fn default() -> Self {
        Self::new(None)
    }
}

impl MemoryMeter {
    /// Start measuring; `device`: the run's device, sampled at every stage end.
    /// What the process held at its peak before (loading the model and the tokenizer) is
    /// the first stage, `load`.
    pub fn new(device: Option<&candle_core::Device>) -> Self {
        Self::after("load", device)
    }

    /// [`Self::new`], naming the first stage (what ran before) `first`.
    pub fn after(first: &str, device: Option<&candle_core::Device>) -> Self {
        let device = device.filter(|d| d.is_cuda()).cloned();
        if let Some(d) = &device {
            sample_device(d);
        }
        let mut m = MemoryMeter {
            device: None,
            peaks: PeakMemory::default(),
            reset: true,
        };
        m.stage_end(first);
        m.device = device;
        m.peaks.host_stage_method = if m.reset { "reset" } else { "running" }.into();
        m
    }

    /// Sample the device from now on (a meter made before the model's device was known).
    pub fn set_device(&mut self, device: &candle_core::Device) {
        if device.is_cuda() {
            self.device = Some(device.clone());
            sample_device(device);
        }
    }

    /// Close stage `stage`: record its peaks and restart them for the next stage. A
    /// stage that ends several times (per trial) keeps the largest.
    pub fn stage_end(&mut self, stage: &str) {
        self.stage_end_with(stage, &PeakMemory::default());
    }

    /// [`Self::stage_end`] for a stage that ran its own meter (`discover` inside
    /// `compare`): its peaks count too, since its resets hid them from this meter.
    pub fn stage_end_with(&mut self, stage: &str, inner: &PeakMemory) {
        if let Some(d) = &self.device {
            sample_device(d);
        }
        let host = peak_rss().max(inner.host_peak_bytes);
        let device = take_device_peak().max(inner.device_peak_bytes);
        let p = &mut self.peaks;
        p.host_peak_bytes = p.host_peak_bytes.max(host);
        p.device_peak_bytes = p.device_peak_bytes.max(device);
        match p.stages.iter_mut().find(|s| s.stage == stage) {
            Some(s) => {
                s.host_peak_bytes = s.host_peak_bytes.max(host);
                s.device_peak_bytes = s.device_peak_bytes.max(device);
            }
            None => p.stages.push(StagePeak {
                stage: stage.into(),
                host_peak_bytes: host,
                device_peak_bytes: device,
            }),
        }
        if self.reset {
            self.reset = reset_peak_rss();
        }
        if let Some(d) = &self.device {
            // The next stage starts from what is held now.
            sample_device(d);
        }
    }

    /// The peaks so far (the run's, whole and per stage).
    pub fn peaks(&self) -> PeakMemory {
        let mut p = self.peaks.clone();
        p.host_peak_bytes = p.host_peak_bytes.max(peak_rss());
        p
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
    fn status_lines_are_read_in_kib() {
        let text = "VmPeak:\t  10 kB\nVmHWM:\t    2048 kB\nVmRSS:\t 1024 kB\n";
        assert_eq!(parse_kib(text, "VmHWM:"), Some(2048 * 1024));
        assert_eq!(parse_kib(text, "VmRSS:"), Some(1024 * 1024));
        assert_eq!(parse_kib("VmRSS: x kB", "VmRSS:"), None);
        // This process has a resident set, and its peak is at least it.
        if let (Some(now), Some(peak)) = (rss(), peak_rss()) {
            assert!(now > 0 && peak >= now / 2);
        }
    }

    #[test]
    fn stages_keep_their_largest_peak_and_inner_runs_count() {
        let mut m = MemoryMeter::new(None);
        let big = PeakMemory {
            host_peak_bytes: Some(u64::MAX / 2),
            device_peak_bytes: Some(7),
            ..Default::default()
        };
        m.stage_end("a");
        m.stage_end_with("b", &big);
        m.stage_end("b");
        let p = m.peaks();
        let names: Vec<&str> = p.stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["load", "a", "b"]);
        assert_eq!(p.stages[2].host_peak_bytes, Some(u64::MAX / 2));
        assert_eq!(p.stages[2].device_peak_bytes, Some(7));
        assert_eq!(p.host_peak_bytes, Some(u64::MAX / 2));
        assert!(p.stages[1].host_peak_bytes.is_some_and(|b| b > 0));
        let s = p.summary();
        assert!(
            s.starts_with("peak memory: host ") && s.contains("b "),
            "{s}"
        );
    }

    #[test]
    fn products_saturate() {
        assert_eq!(product(&[2, 3, 4]), 24);
        assert_eq!(product(&[usize::MAX; 8]), u128::MAX);
    }
}
