//! Phase clocks of the persistent SAE trainers: where the time of a step goes inside the one
//! launch that runs all steps, which CUDA events around the launch cannot show.
//!
//! The `*_clocks_f32` twins of `sae_train_persistent_f32` and `sae_train_tiled_f32`
//! (kernels/sae.cu) are the same code with thread 0 storing `clock64()` after each phase's
//! closing barrier, plus the block's SM (`%smid`) and `%globaltimer` at entry and exit. A
//! phase's cycles are therefore barrier to barrier, set by its slowest warp. This module
//! checks such a record and sums it up; it needs no GPU, so its arithmetic is tested on the
//! CPU.
//!
//! Record of block s (u64): `[sm, start_ns, end_ns, loop_start_cycles]` followed by
//! `steps × phases` cycle stamps, step-major.
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Header words of a block's record (`CLOCK_HEAD` in sae.cu).
pub const CLOCK_HEAD: usize = 4;

/// Phases of a `sae_train_tiled_f32` step, in order (`TILED_PHASES` in sae.cu).
pub const TILED_PHASES: [&str; 6] = [
    "encode",
    "decode",
    "dpre (+ loss)",
    "g_b_enc",
    "g_b + W_dec rows",
    "W_enc rows + b_enc + next xc",
];

/// Phases of a `sae_train_persistent_f32` step, in order (`PERSIST_PHASES` in sae.cu).
pub const PERSIST_PHASES: [&str; 8] = [
    "renorm",
    "centre",
    "encode",
    "decode",
    "dpre (+ loss)",
    "g_b_enc",
    "g_b",
    "W_enc + W_dec rows + b_enc",
];

/// u64 words of one block's record.
pub fn record_len(steps: u32, phases: usize) -> usize {
    CLOCK_HEAD + steps as usize * phases
}

/// One phase's share of a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseTime {
    pub phase: String,
    /// Mean over blocks and steps (cycles); the phases' means add up to the step's.
    pub mean_cycles: f64,
    /// Median over blocks and steps (cycles).
    pub median_cycles: f64,
    /// Mean over blocks and steps at the measured clock (µs).
    pub mean_us: f64,
    /// Of the mean step.
    pub share: f64,
}

/// A trainer's phase profile, from one clocked launch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PhaseProfile {
    pub kernel: String,
    pub blocks: usize,
    pub steps: u32,
    pub phases: Vec<PhaseTime>,
    /// Mean cycles of a whole step (the sum of the phases' means).
    pub step_cycles: f64,
    /// The same at the measured clock (µs).
    pub step_us: f64,
    /// Cycles per nanosecond, measured: the step loops' cycles over their blocks'
    /// `%globaltimer` spans (load and store of the params included, so slightly low).
    pub cycles_per_ns: f64,
    /// Median of a block's `%globaltimer` span, entry to exit (ms).
    pub block_ms: f64,
    /// First entry to last exit over all blocks (ms).
    pub span_ms: f64,
    /// SMs that ran at least one block, and the most blocks one SM ran: with one block an
    /// SM at a time (the trainers' shared memory), the launch ran in that many waves.
    pub sms_used: usize,
    pub waves: usize,
}

/// Median of a list (NaN when empty); the one the benches and clocks all use.
pub fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Check and sum up the raw record of `blocks` blocks (`phase_names.len()` phases a step).
/// Errors, not panics, on a record of the wrong length or with clocks that run backwards
/// (a record the kernel did not write, e.g. a launch that failed).
pub fn profile(
    kernel: &str,
    raw: &[u64],
    blocks: usize,
    steps: u32,
    phase_names: &[&str],
) -> Result<PhaseProfile> {
    let p = phase_names.len();
    let len = record_len(steps, p);
    if blocks == 0 || steps == 0 || p == 0 {
        return Err(Error::InvalidInput(format!(
            "{kernel}: phase clocks need at least one block, step and phase (got {blocks}, {steps}, {p})"
        )));
    }
    if raw.len() != blocks * len {
        return Err(Error::InvalidInput(format!(
            "{kernel}: phase-clock record holds {} words, {blocks} blocks of {len} expected",
            raw.len()
        )));
    }
    let mut per_phase: Vec<Vec<f64>> = vec![Vec::with_capacity(blocks * steps as usize); p];
    let (mut spans_ns, mut loop_cycles) = (Vec::with_capacity(blocks), 0f64);
    let (mut first_ns, mut last_ns) = (u64::MAX, 0u64);
    let mut per_sm: std::collections::BTreeMap<u64, usize> = Default::default();
    for (b, rec) in raw.chunks_exact(len).enumerate() {
        let (sm, start, end, mut prev) = (rec[0], rec[1], rec[2], rec[3]);
        if start == 0 && end == 0 {
            return Err(Error::Cuda(format!(
                "{kernel}: block {b} wrote no phase clocks (did the launch run?)"
            )));
        }
        if end < start {
            return Err(Error::Cuda(format!(
                "{kernel}: block {b} ends before it starts ({end} < {start} ns): not a record the kernel wrote"
            )));
        }
        let loop_start = prev;
        for (i, &stamp) in rec[CLOCK_HEAD..].iter().enumerate() {
            let delta = stamp.checked_sub(prev).ok_or_else(|| {
                Error::Cuda(format!(
                    "{kernel}: block {b}'s clock runs backwards at step {}, phase {} ({stamp} < {prev})",
                    i / p + 1,
                    phase_names[i % p]
                ))
            })?;
            per_phase[i % p].push(delta as f64);
            prev = stamp;
        }
        loop_cycles += (prev - loop_start) as f64;
        spans_ns.push((end - start) as f64);
        first_ns = first_ns.min(start);
        last_ns = last_ns.max(end);
        *per_sm.entry(sm).or_default() += 1;
    }
    let loop_ns: f64 = spans_ns.iter().sum();
    let cycles_per_ns = if loop_ns > 0.0 {
        loop_cycles / loop_ns
    } else {
        f64::NAN
    };
    let us = |cycles: f64| cycles / cycles_per_ns / 1e3;
    let means: Vec<f64> = per_phase
        .iter()
        .map(|v| v.iter().sum::<f64>() / v.len() as f64)
        .collect();
    let step_cycles: f64 = means.iter().sum();
    let phases = per_phase
        .iter_mut()
        .zip(&means)
        .zip(phase_names)
        .map(|((v, &mean), name)| PhaseTime {
            phase: name.to_string(),
            mean_cycles: mean,
            median_cycles: median(v),
            mean_us: us(mean),
            share: if step_cycles > 0.0 {
                mean / step_cycles
            } else {
                0.0
            },
        })
        .collect();
    Ok(PhaseProfile {
        kernel: kernel.into(),
        blocks,
        steps,
        phases,
        step_cycles,
        step_us: us(step_cycles),
        cycles_per_ns,
        block_ms: median(&spans_ns) / 1e6,
        span_ms: (last_ns - first_ns) as f64 / 1e6,
        sms_used: per_sm.len(),
        waves: per_sm.values().copied().max().unwrap_or(0),
    })
}

impl PhaseProfile {
    /// The table `bench` prints.
    pub fn table(&self) -> String {
        let mut s = format!(
            "phase clocks {} ({} blocks on {} SMs, {} wave(s); {} steps): {:.1} us a step ({:.0} cycles at {:.2} GHz measured), block {:.3} ms, launch {:.3} ms\n",
            self.kernel,
            self.blocks,
            self.sms_used,
            self.waves,
            self.steps,
            self.step_us,
            self.step_cycles,
            self.cycles_per_ns,
            self.block_ms,
            self.span_ms
        );
        for p in &self.phases {
            s += &format!(
                "  {:<30} {:>10.0} cycles (median {:>8.0}) {:>8.2} us {:>6.1} %\n",
                p.phase,
                p.mean_cycles,
                p.median_cycles,
                p.mean_us,
                100.0 * p.share
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A record as the kernel writes it: `sm`, entry at `start` ns, each phase p of every
    /// step taking `cost[p]` cycles, one cycle a nanosecond.
    fn record(sm: u64, start: u64, steps: u32, cost: &[u64]) -> Vec<u64> {
        let mut r = vec![sm, start, 0, start + 10];
        let mut c = start + 10;
        for _ in 0..steps {
            for &k in cost {
                c += k;
                r.push(c);
            }
        }
        r[2] = c + 10;
        r
    }

    #[test]
    fn phases_add_up_and_waves_are_counted() {
        let names = ["a", "b", "c"];
        let cost = [100, 300, 600];
        // blocks 0 and 1 on SM 0 one after the other, block 2 on SM 1
        let raw = [
            record(0, 0, 4, &cost),
            record(0, 5_000, 4, &cost),
            record(1, 0, 4, &cost),
        ]
        .concat();
        let p = profile("k", &raw, 3, 4, &names).unwrap();
        assert_eq!((p.sms_used, p.waves, p.blocks), (2, 2, 3));
        assert_eq!(p.step_cycles, 1000.0);
        let m: Vec<f64> = p.phases.iter().map(|x| x.mean_cycles).collect();
        assert_eq!(m, vec![100.0, 300.0, 600.0]);
        assert_eq!(p.phases[2].median_cycles, 600.0);
        assert!((p.phases[1].share - 0.3).abs() < 1e-12);
        // 4000 cycles in a 4020 ns span per block
        assert!((p.cycles_per_ns - 4000.0 / 4020.0).abs() < 1e-12);
        assert!((p.block_ms - 4020e-6).abs() < 1e-12);
        assert!((p.span_ms - 9020e-6).abs() < 1e-12);
        assert!(p.table().contains("2 wave(s)"));
    }

    #[test]
    fn uneven_steps_give_mean_and_median() {
        let names = ["x"];
        let mut r = record(3, 0, 3, &[10]);
        // steps of 10, 10 and 40 cycles
        r[CLOCK_HEAD + 2] += 30;
        r[2] += 30;
        let p = profile("k", &r, 1, 3, &names).unwrap();
        assert_eq!(p.phases[0].mean_cycles, 20.0);
        assert_eq!(p.phases[0].median_cycles, 10.0);
    }

    #[test]
    fn bad_records_are_errors() {
        let names = ["a", "b"];
        let good = record(0, 0, 2, &[5, 5]);
        assert!(profile("k", &good[1..], 1, 2, &names).is_err());
        assert!(profile("k", &good, 0, 2, &names).is_err());
        assert!(profile("k", &[0; CLOCK_HEAD], 1, 0, &names).is_err());
        // all zeros: a launch that never ran writes nothing, and the zero stamps after a
        // non-zero loop start run backwards
        let mut never = good.clone();
        for w in never.iter_mut().skip(CLOCK_HEAD) {
            *w = 0;
        }
        let e = profile("k", &never, 1, 2, &names).unwrap_err().to_string();
        assert!(e.contains("backwards"), "{e}");
        let zeros = vec![0u64; good.len()];
        let e = profile("k", &zeros, 1, 2, &names).unwrap_err().to_string();
        assert!(e.contains("no phase clocks"), "{e}");
        let mut swapped = good;
        swapped.swap(1, 2);
        assert!(profile("k", &swapped, 1, 2, &names).is_err());
    }
}
