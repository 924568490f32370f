//! Launches kernels/sae.cu's SAE training: the persistent trainers (`sae_train_persistent_f32`,
//! `sae_train_tiled_f32` and their phase-clock twins), and the batched trainer's step (centre,
//! loss, column sums, bias and weight Adam with the next step's renormalisation) replayed as a
//! CUDA graph, with the Adam table. The step's GEMMs go through `gemm.rs`.
use candle_core::Tensor;
use cudarc::driver::sys::{
    CUevent_flags, CUfunction_attribute, CUgraphInstantiate_flags, CUstreamCaptureMode,
};
use cudarc::driver::{CudaEvent, CudaSlice, LaunchConfig, PushKernelArg};

use super::gemm::{GemmImpl, GemmOp};
use super::{cfg, grid1, u32_of, CudaResultExt, DevSaes, DeviceSaes, GpuContext};
use crate::error::{Error, Result};
use crate::gpu::{checks, clocks, launch, SaeParams, TrainConfig, TrainOutput, TrainPath};

/// Which persistent trainer runs: the tiled kernel or the untiled one, plain or as its
/// phase-clock twin recording into `clock_buf` (`gpu::clocks`).
struct Persistent<'a> {
    tiled: bool,
    clock_buf: Option<&'a mut CudaSlice<u64>>,
}

impl Persistent<'_> {
    fn plain(tiled: bool) -> Self {
        Persistent {
            tiled,
            clock_buf: None,
        }
    }

    /// The kernel this runs (sae.cu).
    fn name(&self) -> &'static str {
        match (self.tiled, self.clock_buf.is_some()) {
            (true, false) => "sae_train_tiled_f32",
            (true, true) => "sae_train_tiled_clocks_f32",
            (false, false) => "sae_train_persistent_f32",
            (false, true) => "sae_train_persistent_clocks_f32",
        }
    }
}

/// Events recorded on the stream after each kernel of one profiled training step.
struct StepMarks {
    start: CudaEvent,
    marks: Vec<(&'static str, CudaEvent)>,
}

/// Work buffers of the batched trainer.
struct Work {
    xc: CudaSlice<f32>,
    f: CudaSlice<f32>,
    diff: CudaSlice<f32>,
    dpre: CudaSlice<f32>,
    g_we: CudaSlice<f32>,
    g_wd: CudaSlice<f32>,
    g_be: CudaSlice<f32>,
    cs: CudaSlice<f32>,
    /// the loss's partial sums [c, P, 2] (`launch::loss_parts`), when the loss is recorded
    loss_part: CudaSlice<f32>,
    /// current 1-based step
    t_dev: CudaSlice<u32>,
    /// blocks of the step's last kernel that have finished (`step_done` in sae.cu; 0 between
    /// steps)
    done: CudaSlice<u32>,
    /// Adam's constants of every step (`adam_table`)
    adam: CudaSlice<f32>,
    /// K parts of g_we and g_wd (`grad_splits`; the unfused path's buffers hold that many
    /// whole gradients)
    split_we: usize,
    split_wd: usize,
}

/// Adam moments (zero-initialised) for a DevSaes.
struct Moments {
    m_we: CudaSlice<f32>,
    v_we: CudaSlice<f32>,
    m_be: CudaSlice<f32>,
    v_be: CudaSlice<f32>,
    m_wd: CudaSlice<f32>,
    v_wd: CudaSlice<f32>,
    m_b: CudaSlice<f32>,
    v_b: CudaSlice<f32>,
}

impl GpuContext {
    /// Renormalise rows of a device matrix in place (benchmark SAEs, and step 1 of the
    /// batched trainer: later steps get theirs from the previous step's Adam row kernels).
    pub(crate) fn d_renorm_rows(
        &self,
        w: &mut CudaSlice<f32>,
        rows: usize,
        len: usize,
    ) -> Result<()> {
        let (rows_u, len_u) = (u32_of(rows, "rows")?, u32_of(len, "len")?);
        if w.len() < rows * len {
            return Err(Error::InvalidInput("renorm: buffer too small".into()));
        }
        let grid = grid1(launch::warp_per_row_grid(rows, launch::ROW_BLOCK), "renorm")?;
        let mut b = self.stream.launch_builder(&self.k.renorm);
        b.arg(w).arg(&rows_u).arg(&len_u);
        // SAFETY: matches sae_renorm_rows_f32(float* w[rows*len], rows, len); size checked above.
        unsafe { b.launch(cfg(grid, launch::ROW_BLOCK, 0)) }.cuda("sae_renorm_rows_f32")?;
        Ok(())
    }

    /// Train N SAEs at once: x is [N, rows, d] (SAE i trains on x[i]), `init[i]` its initial
    /// params (e.g. from the CPU init, so results are comparable).
    pub fn train_saes(
        &self,
        x: &[f32],
        rows: usize,
        init: &[SaeParams],
        cfg_t: &TrainConfig,
    ) -> Result<TrainOutput> {
        checks::train_inputs(x.len(), rows, init)?;
        let xd = self.upload(x)?;
        self.train_uploaded(&xd, rows, init, cfg_t)
    }

    /// [`Self::train_saes`] on a candle tensor [n_sae, rows, d] (any layout); a CUDA
    /// tensor is copied device to device, so hooked activations never visit the host.
    pub fn train_saes_tensor(
        &self,
        x: &Tensor,
        rows: usize,
        init: &[SaeParams],
        cfg_t: &TrainConfig,
    ) -> Result<TrainOutput> {
        Ok(self.train_saes_tensor_kept(x, rows, init, cfg_t)?.0)
    }

    /// [`train_saes_tensor`](Self::train_saes_tensor), also keeping the trained SAEs on the
    /// device for [`encode_argmax_kept`](Self::encode_argmax_kept): `discover` encodes with
    /// them instead of uploading the parameters it just downloaded (15 MB for 144 per-head
    /// SAEs).
    pub fn train_saes_tensor_kept(
        &self,
        x: &Tensor,
        rows: usize,
        init: &[SaeParams],
        cfg_t: &TrainConfig,
    ) -> Result<(TrainOutput, DeviceSaes)> {
        checks::train_inputs(x.elem_count(), rows, init)?;
        let xd = self.tensor_slice(x)?;
        let (out, saes) = self.train_uploaded_kept(&xd, rows, init, cfg_t)?;
        Ok((out, DeviceSaes(saes)))
    }

    fn train_uploaded(
        &self,
        xd: &CudaSlice<f32>,
        rows: usize,
        init: &[SaeParams],
        cfg_t: &TrainConfig,
    ) -> Result<TrainOutput> {
        Ok(self.train_uploaded_kept(xd, rows, init, cfg_t)?.0)
    }

    fn train_uploaded_kept(
        &self,
        xd: &CudaSlice<f32>,
        rows: usize,
        init: &[SaeParams],
        cfg_t: &TrainConfig,
    ) -> Result<(TrainOutput, DevSaes)> {
        let count = init.len();
        let mut saes = self.upload_saes(init)?;
        let mut loss = if cfg_t.record_loss {
            Some(self.zeros::<f32>(count * cfg_t.steps() as usize)?)
        } else {
            None
        };
        let path = self.d_train(xd, rows, &mut saes, cfg_t, loss.as_mut())?;
        let params = self.download_saes(&saes)?;
        let loss = match loss {
            Some(l) => {
                let v = self.download(&l, count * cfg_t.steps() as usize)?;
                Some(
                    v.chunks(cfg_t.steps().max(1) as usize)
                        .map(|c| c.to_vec())
                        .collect(),
                )
            }
            None => None,
        };
        Ok((TrainOutput { params, loss, path }, saes))
    }

    fn moments(&self, c: usize, d: usize, n: usize) -> Result<Moments> {
        Ok(Moments {
            m_we: self.zeros(c * n * d)?,
            v_we: self.zeros(c * n * d)?,
            m_be: self.zeros(c * n)?,
            v_be: self.zeros(c * n)?,
            m_wd: self.zeros(c * d * n)?,
            v_wd: self.zeros(c * d * n)?,
            m_b: self.zeros(c * d)?,
            v_b: self.zeros(c * d)?,
        })
    }

    /// `path`, with `Auto` resolved for these sizes.
    fn resolve_path(&self, path: TrainPath, rows: usize, d: usize, n: usize) -> TrainPath {
        match path {
            TrainPath::Auto => self.auto_train_path(rows, d, n),
            p => p,
        }
    }

    /// Which path `Auto` picks for these sizes. Above [`launch::OUTER_MAX_ROWS`] rows per SAE
    /// (the shared SAE) the weight gradients are real GEMMs, and cuBLAS FP32 ran them faster
    /// than our tiled `gemm_f32` on an H200 (2026-11-27, 500 steps): 91.5 vs 154.1 ms for
    /// 1440 x 768 -> 200, 760 vs 1568 ms for 12,000 x 1600 -> 200, with the same codes after
    /// 500 steps as the CPU reference in the self-test.
    pub fn auto_train_path(&self, rows: usize, d: usize, n: usize) -> TrainPath {
        if launch::tiled_fits(rows, d, n, self.smem_optin as u64) {
            TrainPath::PersistentTiled
        } else if launch::persistent_fits(rows, d, n, self.smem_optin as u64) {
            TrainPath::Persistent
        } else if rows > launch::OUTER_MAX_ROWS {
            TrainPath::Cublas
        } else {
            TrainPath::Batched
        }
    }

    /// Train the device-resident SAEs in place on x [count, rows, d]; loss (if given) gets
    /// [count, steps]. Returns the path that ran.
    pub(crate) fn d_train(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        s: &mut DevSaes,
        tc: &TrainConfig,
        loss: Option<&mut CudaSlice<f32>>,
    ) -> Result<TrainPath> {
        let (c, d, n) = (s.count, s.d, s.n);
        if x.len() < c * rows * d {
            return Err(Error::InvalidInput("train: x buffer too small".into()));
        }
        if let Some(l) = &loss {
            if l.len() < c * tc.steps() as usize {
                return Err(Error::InvalidInput("train: loss buffer too small".into()));
            }
        }
        let path = self.resolve_path(tc.path, rows, d, n);
        if tc.steps() == 0 {
            return Ok(path);
        }
        match path {
            TrainPath::Persistent => {
                self.train_persistent(x, rows, s, tc, loss, Persistent::plain(false))?
            }
            TrainPath::PersistentTiled => {
                self.train_persistent(x, rows, s, tc, loss, Persistent::plain(true))?
            }
            TrainPath::Cublas => self.train_batched(
                x,
                rows,
                s,
                tc,
                loss,
                GemmImpl::Cublas { tf32: tc.tf32 },
                None,
            )?,
            _ => self.train_batched(x, rows, s, tc, loss, GemmImpl::Tiled, None)?,
        }
        Ok(path)
    }

    /// The batched (or cuBLAS) trainer's steps one at a time without a graph, with a CUDA
    /// event after every kernel: per step, (kernel label, ms since the previous event). The
    /// SAEs are trained in place as by `d_train` (`tc.steps()` steps); for `bench`'s breakdown.
    pub(crate) fn d_profile_steps(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        s: &mut DevSaes,
        tc: &TrainConfig,
    ) -> Result<Vec<Vec<(&'static str, f64)>>> {
        if x.len() < s.count * rows * s.d {
            return Err(Error::InvalidInput("train: x buffer too small".into()));
        }
        let imp = match tc.path {
            TrainPath::Batched => GemmImpl::Tiled,
            TrainPath::Cublas => GemmImpl::Cublas { tf32: tc.tf32 },
            p => {
                return Err(Error::InvalidInput(format!(
                    "a step breakdown needs the Batched or Cublas path ({p:?} runs all steps in one launch)"
                )))
            }
        };
        let mut out = Vec::with_capacity(tc.steps() as usize);
        self.train_batched(x, rows, s, tc, None, imp, Some(&mut out))?;
        Ok(out)
    }

    /// Train the device-resident SAEs in place, as `d_train` on a persistent path (`Auto`
    /// resolved as there), with the kernel's phase-clock twin: the same arithmetic, plus
    /// thread 0's clock after every phase (`gpu::clocks`). For `bench` and the self-test.
    pub(crate) fn d_phase_clocks(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        s: &mut DevSaes,
        tc: &TrainConfig,
    ) -> Result<clocks::PhaseProfile> {
        let (c, d, n) = (s.count, s.d, s.n);
        if x.len() < c * rows * d {
            return Err(Error::InvalidInput("train: x buffer too small".into()));
        }
        let (tiled, names): (bool, &[&str]) = match self.resolve_path(tc.path, rows, d, n) {
            TrainPath::PersistentTiled => (true, &clocks::TILED_PHASES),
            TrainPath::Persistent => (false, &clocks::PERSIST_PHASES),
            p => {
                return Err(Error::InvalidInput(format!(
                    "phase clocks need a persistent trainer ({p:?} launches kernels per step: its step breakdown times them with events)"
                )))
            }
        };
        if tc.steps() == 0 {
            return Err(Error::InvalidInput(
                "phase clocks need at least one step".into(),
            ));
        }
        let len = c * clocks::record_len(tc.steps(), names.len());
        let mut buf = self.zeros::<u64>(len)?;
        let run = Persistent {
            tiled,
            clock_buf: Some(&mut buf),
        };
        let kernel = run.name();
        self.train_persistent(x, rows, s, tc, None, run)?;
        let raw = self.download(&buf, len)?;
        clocks::profile(kernel, &raw, c, tc.steps(), names)
    }

    /// [`Self::train_saes`] by a persistent trainer's phase-clock twin: the trained SAEs (the
    /// same, bit for bit, as the plain kernel's) and where each step's time went.
    pub fn train_saes_clocked(
        &self,
        x: &[f32],
        rows: usize,
        init: &[SaeParams],
        cfg_t: &TrainConfig,
    ) -> Result<(TrainOutput, clocks::PhaseProfile)> {
        checks::train_inputs(x.len(), rows, init)?;
        let xd = self.upload(x)?;
        let mut saes = self.upload_saes(init)?;
        let path = self.resolve_path(cfg_t.path, rows, saes.d, saes.n);
        let cfg = TrainConfig { path, ..*cfg_t };
        let prof = self.d_phase_clocks(&xd, rows, &mut saes, &cfg)?;
        let params = self.download_saes(&saes)?;
        Ok((
            TrainOutput {
                params,
                loss: None,
                path,
            },
            prof,
        ))
    }

    /// A new event, recorded on the stream now.
    fn event(&self) -> Result<CudaEvent> {
        let ev = self
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .cuda("event")?;
        ev.record(&self.stream).cuda("event record")?;
        Ok(ev)
    }

    fn train_persistent(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        s: &mut DevSaes,
        tc: &TrainConfig,
        loss: Option<&mut CudaSlice<f32>>,
        kernel: Persistent<'_>,
    ) -> Result<()> {
        let name = kernel.name();
        let Persistent { tiled, clock_buf } = kernel;
        let (c, d, n) = (s.count, s.d, s.n);
        let limit = self.smem_optin as u64;
        let kernel = match (tiled, clock_buf.is_some()) {
            (true, false) => &self.k.tiled,
            (true, true) => &self.k.tiled_clocks,
            (false, false) => &self.k.persistent,
            (false, true) => &self.k.persistent_clocks,
        };
        let (smem, fits) = if tiled {
            (
                launch::tiled_smem_bytes(rows, d, n),
                launch::tiled_fits(rows, d, n, limit),
            )
        } else {
            (
                launch::persistent_smem_bytes(rows, d, n),
                launch::persistent_fits(rows, d, n, limit),
            )
        };
        let phases = if tiled {
            clocks::TILED_PHASES.len()
        } else {
            clocks::PERSIST_PHASES.len()
        };
        if let Some(cl) = &clock_buf {
            if cl.len() < c * clocks::record_len(tc.steps(), phases) {
                return Err(Error::InvalidInput(
                    "train: phase-clock buffer too small".into(),
                ));
            }
        }
        if !fits {
            return Err(Error::InvalidInput(format!(
                "{name}: rows={rows}, d={d}, n={n} need {smem} B of shared memory (limit {}) and d, n <= {}",
                self.smem_optin,
                launch::PERSIST_MAX_ROW
            )));
        }
        let smem_u = smem as u32;
        kernel
            .set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem_u as i32,
            )
            .cuda("persistent trainer shared memory attribute")?;
        let mut mo = self.moments(c, d, n)?;
        self.sample_mem();
        let (r_u, d_u, n_u, c_u) = (
            u32_of(rows, "rows")?,
            u32_of(d, "d")?,
            u32_of(n, "n")?,
            u32_of(c, "SAE count")?,
        );
        let steps_u = tc.steps();
        let null: u64 = 0;
        let adam = self.adam_table(tc)?;
        let mut b = self.stream.launch_builder(kernel);
        b.arg(x)
            .arg(&mut s.w_enc)
            .arg(&mut s.b_enc)
            .arg(&mut s.w_dec)
            .arg(&mut s.b)
            .arg(&mut mo.m_we)
            .arg(&mut mo.v_we)
            .arg(&mut mo.m_be)
            .arg(&mut mo.v_be)
            .arg(&mut mo.m_wd)
            .arg(&mut mo.v_wd)
            .arg(&mut mo.m_b)
            .arg(&mut mo.v_b)
            .arg(&r_u)
            .arg(&d_u)
            .arg(&n_u)
            .arg(&steps_u)
            .arg(&adam)
            .arg(&tc.sae.lambda);
        match loss {
            Some(l) => b.arg(l),
            None => b.arg(&null),
        };
        if let Some(cl) = clock_buf {
            b.arg(cl);
        }
        // SAFETY: matches sae_train_persistent_f32 / sae_train_tiled_f32 (same signature:
        // const float* X[c*R*d], W_enc, b_enc, W_dec, b, 8 moment buffers (same sizes as their
        // params), R, d, n, steps, const float* adam[steps*ADAM_K] (adam_table), lambda,
        // float* loss[c*steps] or NULL), and their *_clocks_f32 twins, which take one more
        // argument, u64* clocks[c * clocks::record_len(steps, phases)] (checked above);
        // grid = one block per SAE, smem = that kernel's launch::*_smem_bytes, checked above.
        unsafe { b.launch(cfg((c_u, 1, 1), launch::PERSIST_THREADS, smem_u)) }.cuda(name)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    fn train_batched(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        s: &mut DevSaes,
        tc: &TrainConfig,
        mut loss: Option<&mut CudaSlice<f32>>,
        imp: GemmImpl,
        profile: Option<&mut Vec<Vec<(&'static str, f64)>>>,
    ) -> Result<()> {
        let (c, d, n, r) = (s.count, s.d, s.n, rows);
        if let GemmImpl::Cublas { .. } = imp {
            self.blas()?; // the handle's allocations must not fall inside the graph capture
        }
        let mut mo = self.moments(c, d, n)?;
        // the fused small-R path never materialises the weight gradients; the unfused one
        // holds each as its split-K partial sums
        let (split_wd, split_we) = self.grad_splits(imp, c, r, d, n);
        let (g_we_len, g_wd_len) = if r <= launch::OUTER_MAX_ROWS {
            (1, 1)
        } else {
            (split_we * c * n * d, split_wd * c * n * d)
        };
        let mut wb = Work {
            xc: self.zeros(c * r * d)?,
            f: self.zeros(c * r * n)?,
            diff: self.zeros(c * r * d)?,
            dpre: self.zeros(c * r * n)?,
            g_we: self.zeros(g_we_len)?,
            g_wd: self.zeros(g_wd_len)?,
            g_be: self.zeros(c * n)?,
            cs: self.zeros(c * d)?,
            loss_part: self.zeros(if loss.is_some() {
                c * launch::loss_parts(r, d, n) as usize * 2
            } else {
                1
            })?,
            t_dev: self.upload(&[1u32])?,
            done: self.upload(&[0u32])?,
            adam: self.adam_table(tc)?,
            split_we,
            split_wd,
        };
        self.sample_mem();
        if tc.steps() > 0 {
            // step 1's renormalisation; each step's Adam row kernels renormalise for the next
            self.d_renorm_rows(&mut s.w_enc, c * n, d)?;
            self.d_renorm_rows(&mut s.w_dec, c * d, n)?;
        }
        let mut step = |marks: Option<&mut StepMarks>| {
            self.enqueue_step(
                x,
                r,
                s,
                &mut mo,
                &mut wb,
                tc,
                loss.as_deref_mut(),
                imp,
                marks,
            )
        };
        if let Some(out) = profile {
            // Every step launched directly, with an event after each kernel (d_profile_steps).
            for _ in 0..tc.steps() {
                let mut marks = StepMarks {
                    start: self.event()?,
                    marks: Vec::new(),
                };
                step(Some(&mut marks))?;
                let mut prev = &marks.start;
                let mut times = Vec::with_capacity(marks.marks.len());
                if let Some((_, last)) = marks.marks.last() {
                    last.synchronize().cuda("event synchronize")?;
                }
                for (label, ev) in &marks.marks {
                    times.push((*label, prev.elapsed_ms(ev).cuda("event elapsed")? as f64));
                    prev = ev;
                }
                out.push(times);
            }
            return Ok(());
        }
        // cuBLAS sets up its workspace and picks its kernels on first use: take the first step
        // directly so none of that falls inside the capture (t_dev counts steps on the device).
        let mut remaining = tc.steps();
        if matches!(imp, GemmImpl::Cublas { .. }) && remaining > 0 {
            step(None)?;
            remaining -= 1;
        }
        // One step captured as a CUDA graph and replayed for the remaining steps (the step
        // index lives in t_dev); if capture is refused, fall back to direct launches.
        let mut done = false;
        // HEADCODE_NO_GRAPHS=1 forces direct launches (for debugging / comparison).
        if remaining > 1
            && std::env::var_os("HEADCODE_NO_GRAPHS").is_none()
            && self
                .stream
                .begin_capture(CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL)
                .is_ok()
        {
            let enq = step(None);
            let graph = self.stream.end_capture(CUgraphInstantiate_flags(0));
            if let (Ok(()), Ok(Some(graph))) = (&enq, &graph) {
                for _ in 0..remaining {
                    graph.launch().cuda("graph launch")?;
                }
                // keep the graph alive until every replay has run
                self.sync()?;
                done = true;
            } else {
                // discard any error the failed capture left behind
                let _ = self.ctx.check_err();
            }
        }
        if !done {
            for _ in 0..remaining {
                step(None)?;
            }
        }
        Ok(())
    }

    /// Adam's constants of steps 1..=tc.steps(), [steps, ADAM_K] (`sae_adam_table_f32`), which
    /// every Adam kernel reads instead of computing the bias corrections in FP64 itself.
    fn adam_table(&self, tc: &TrainConfig) -> Result<CudaSlice<f32>> {
        let steps_u = tc.steps();
        let steps = steps_u as usize;
        let mut table = self.zeros(steps.max(1) * launch::ADAM_K)?;
        if steps > 0 {
            let grid = grid1(
                launch::elementwise_grid(steps, launch::ELEM_BLOCK),
                "adam table",
            )?;
            let mut b = self.stream.launch_builder(&self.k.adam_table);
            b.arg(&mut table)
                .arg(&steps_u)
                .arg(&tc.sae.lr)
                .arg(&tc.sae.beta1)
                .arg(&tc.sae.beta2)
                .arg(&tc.sae.eps);
            // SAFETY: matches sae_adam_table_f32(float* table[steps*ADAM_K], steps, lr, b1, b2,
            // eps); the table holds steps*ADAM_K floats, one thread per step.
            unsafe { b.launch(cfg(grid, launch::ELEM_BLOCK, 0)) }.cuda("sae_adam_table_f32")?;
        }
        Ok(table)
    }

    /// Enqueue one full training step of the batched path (no host synchronisation).
    #[allow(clippy::too_many_arguments)]
    fn enqueue_step(
        &self,
        x: &CudaSlice<f32>,
        r: usize,
        s: &mut DevSaes,
        mo: &mut Moments,
        wb: &mut Work,
        tc: &TrainConfig,
        loss: Option<&mut CudaSlice<f32>>,
        imp: GemmImpl,
        mut marks: Option<&mut StepMarks>,
    ) -> Result<()> {
        // With marks (d_profile_steps), an event after each kernel, named for the breakdown.
        let mut mark = |label: &'static str| -> Result<()> {
            if let Some(m) = marks.as_deref_mut() {
                let ev = self.event()?;
                m.marks.push((label, ev));
            }
            Ok(())
        };
        let (c, d, n) = (s.count, s.d, s.n);
        let (c_u, r_u, d_u, n_u) = (
            u32_of(c, "SAE count")?,
            u32_of(r, "rows")?,
            u32_of(d, "d")?,
            u32_of(n, "n")?,
        );
        let rows_we = u32_of(c * n, "rows")?;
        let rows_wd = u32_of(c * d, "rows")?;
        let s1 = 2.0f32 / (r * d) as f32;
        let lam_r = tc.sae.lambda / r as f32;
        let steps_u = tc.steps();
        let rd64 = d as u64;
        let x_bs = (r * d) as u64;
        let g_we_rows = grid1(
            launch::warp_per_row_grid(c * n, launch::ROW_BLOCK),
            "renorm",
        )?;
        let g_wd_rows = grid1(
            launch::warp_per_row_grid(c * d, launch::ROW_BLOCK),
            "renorm",
        )?;
        let e = |len: usize| {
            grid1(
                launch::elementwise_grid(len, launch::ELEM_BLOCK),
                "elementwise",
            )
        };
        let Work {
            xc,
            f,
            diff,
            dpre,
            g_we,
            g_wd,
            g_be,
            cs,
            loss_part,
            t_dev,
            done,
            adam,
            split_we,
            split_wd,
        } = wb;
        let (split_we, split_wd) = (*split_we, *split_wd);
        // 1. renormalise: done by the previous step's Adam row kernels (and once before step 1
        //    by train_batched), so the step reads and writes the weights one time fewer
        // 2. centre
        {
            let mut b = self.stream.launch_builder(&self.k.center);
            b.arg(x)
                .arg(&x_bs)
                .arg(&rd64)
                .arg(&s.b)
                .arg(&c_u)
                .arg(&r_u)
                .arg(&d_u)
                .arg(&mut *xc);
            // SAFETY: matches sae_center_f32(const float* x, u64 x_bs, u64 x_rs, const float* b[c*d],
            // N, R, d, float* xc[c*R*d]); x holds c*R*d floats (checked in d_train).
            unsafe { b.launch(cfg(e(c * r * d)?, launch::ELEM_BLOCK, 0)) }
                .cuda("sae_center_f32")?;
            mark("center")?;
        }
        // f = relu(xc W_enc^T + b_enc)            [c, R, n]
        self.gemm(
            imp,
            &GemmOp {
                m: r,
                nc: n,
                k: d,
                batch: c,
                a: (&*xc, r * d, d, 1),
                b: (&s.w_enc, n * d, 1, d),
                mode: 1,
                alpha: 1.0,
                beta: 0.0,
                bias: Some((&s.b_enc, n)),
                aux: None,
                k_split: 1,
            },
            (&mut *f, r * n, n),
        )?;
        mark("gemm_encode")?;
        // diff = f W_dec^T + b - x                 [c, R, d]
        self.gemm(
            imp,
            &GemmOp {
                m: r,
                nc: d,
                k: n,
                batch: c,
                a: (&*f, r * n, n, 1),
                b: (&s.w_dec, d * n, 1, n),
                mode: 2,
                alpha: 1.0,
                beta: 0.0,
                bias: Some((&s.b, d)),
                aux: Some(x),
                k_split: 1,
            },
            (&mut *diff, r * d, d),
        )?;
        mark("gemm_decode")?;
        if let Some(l) = loss {
            let parts = launch::loss_parts(r, d, n);
            let mut b = self.stream.launch_builder(&self.k.loss_partial);
            b.arg(&*diff)
                .arg(&*f)
                .arg(&r_u)
                .arg(&d_u)
                .arg(&n_u)
                .arg(&parts)
                .arg(&mut *loss_part);
            // SAFETY: matches sae_loss_partial_f32(const float* diff[c*R*d], const float*
            // f[c*R*n], R, d, n, P, float* part[c*P*2]); loss_part was sized for this P.
            unsafe { b.launch(cfg((parts, c_u, 1), 256, 0)) }.cuda("sae_loss_partial_f32")?;
            mark("loss_partial")?;
            let mut b = self.stream.launch_builder(&self.k.loss);
            b.arg(&*loss_part)
                .arg(&c_u)
                .arg(&parts)
                .arg(&r_u)
                .arg(&d_u)
                .arg(&tc.sae.lambda)
                .arg(l)
                .arg(&steps_u)
                .arg(&*t_dev);
            // SAFETY: matches sae_loss_f32(const float* part[c*P*2], N, P, R, d, lambda,
            // float* loss[c*steps], loss_stride, const u32* t_dev); 1 <= *t_dev <= steps.
            unsafe { b.launch(cfg(e(c)?, launch::ELEM_BLOCK, 0)) }.cuda("sae_loss_f32")?;
            mark("loss")?;
        }
        // dpre = [f>0] (s1 diff W_dec + lambda/R)  [c, R, n]
        self.gemm(
            imp,
            &GemmOp {
                m: r,
                nc: n,
                k: d,
                batch: c,
                a: (&*diff, r * d, d, 1),
                b: (&s.w_dec, d * n, n, 1),
                mode: 3,
                alpha: s1,
                beta: lam_r,
                bias: None,
                aux: Some(&*f),
                k_split: 1,
            },
            (&mut *dpre, r * n, n),
        )?;
        mark("gemm_dpre")?;
        let fused = r <= launch::OUTER_MAX_ROWS;
        if !fused {
            // g_W_dec = s1 diff^T f                    [c, d, n], in split_wd K parts
            self.gemm(
                imp,
                &GemmOp {
                    m: d,
                    nc: n,
                    k: r,
                    batch: c,
                    a: (&*diff, r * d, 1, d),
                    b: (&*f, r * n, n, 1),
                    mode: 0,
                    alpha: s1,
                    beta: 0.0,
                    bias: None,
                    aux: None,
                    k_split: split_wd,
                },
                (&mut *g_wd, d * n, n),
            )?;
            mark("gemm_grad_w_dec")?;
            // g_W_enc = dpre^T xc                      [c, n, d], in split_we K parts
            self.gemm(
                imp,
                &GemmOp {
                    m: n,
                    nc: d,
                    k: r,
                    batch: c,
                    a: (&*dpre, r * n, 1, n),
                    b: (&*xc, r * d, d, 1),
                    mode: 0,
                    alpha: 1.0,
                    beta: 0.0,
                    bias: None,
                    aux: None,
                    k_split: split_we,
                },
                (&mut *g_we, n * d, d),
            )?;
            mark("gemm_grad_w_enc")?;
        }
        // column sums of dpre (g_b_enc) and diff, one launch
        {
            let grid = launch::colsum_grid(n, d, c)
                .ok_or_else(|| Error::InvalidInput("colsum: grid too large".into()))?;
            let lc = LaunchConfig {
                grid_dim: grid,
                block_dim: (32, launch::colsum_groups(r), 1),
                shared_mem_bytes: 0,
            };
            let mut b = self.stream.launch_builder(&self.k.colsum);
            b.arg(&*dpre)
                .arg(&n_u)
                .arg(&mut *g_be)
                .arg(&*diff)
                .arg(&d_u)
                .arg(&mut *cs)
                .arg(&c_u)
                .arg(&r_u);
            // SAFETY: matches sae_colsum_f32(const float* src0[c*R*n], C0 = n, float* dst0[c*n],
            // const float* src1[c*R*d], C1 = d, float* dst1[c*d], N, R); grid (ceil(max(n, d)/32),
            // N, 2) and block (32, G) with 1 <= G = colsum_groups(R) <= COLSUM_G (its part[] rows)
            // as its header states.
            unsafe { b.launch(lc) }.cuda("sae_colsum_f32")?;
            mark("colsum")?;
        }
        // g_b and Adam on both biases, before the W_enc row update (g_b reads this step's W_enc)
        {
            let mut b = self.stream.launch_builder(&self.k.bias_adam);
            b.arg(&mut s.b_enc)
                .arg(&mut mo.m_be)
                .arg(&mut mo.v_be)
                .arg(&mut s.b)
                .arg(&mut mo.m_b)
                .arg(&mut mo.v_b)
                .arg(&*g_be)
                .arg(&*cs)
                .arg(&s.w_enc)
                .arg(&c_u)
                .arg(&n_u)
                .arg(&d_u)
                .arg(&s1)
                .arg(&*t_dev)
                .arg(&*adam);
            // SAFETY: matches sae_bias_adam_f32(float* b_enc, m_be, v_be [c*n], float* b, m_b, v_b
            // [c*d], const float* g_benc[c*n], const float* colsum_diff[c*d], const float*
            // w_enc[c*n*d], N, n, d, s1, const u32* t_dev, const float* adam[steps*ADAM_K]);
            // 1 <= *t_dev <= steps.
            unsafe { b.launch(cfg(e(c * (n + d))?, launch::ELEM_BLOCK, 0)) }
                .cuda("sae_bias_adam_f32")?;
            mark("bias_adam")?;
        }
        // radial removal + Adam on the weights and the next step's renormalisation; the W_dec
        // launch is the step's last and advances t_dev (finish = 1)
        if fused {
            let r_u32 = r_u;
            for (w, m, v, a, bsrc, rows_u, per_u, (len, len_u), scale, grid, finish, label) in [
                (
                    &mut s.w_enc,
                    &mut mo.m_we,
                    &mut mo.v_we,
                    &*dpre,
                    &*xc,
                    rows_we,
                    n_u,
                    (d, d_u),
                    1.0f32,
                    g_we_rows,
                    0u32,
                    "adam_w_enc",
                ),
                (
                    &mut s.w_dec,
                    &mut mo.m_wd,
                    &mut mo.v_wd,
                    &*diff,
                    &*f,
                    rows_wd,
                    d_u,
                    (n, n_u),
                    s1,
                    g_wd_rows,
                    1u32,
                    "adam_w_dec",
                ),
            ] {
                let kernel = &self.k.adam_outer[launch::adam_row_regs(len)];
                let mut b = self.stream.launch_builder(kernel);
                b.arg(w)
                    .arg(m)
                    .arg(v)
                    .arg(a)
                    .arg(bsrc)
                    .arg(&rows_u)
                    .arg(&per_u)
                    .arg(&len_u)
                    .arg(&r_u32);
                b.arg(&scale)
                    .arg(&mut *t_dev)
                    .arg(&mut *done)
                    .arg(&finish)
                    .arg(&steps_u)
                    .arg(&*adam);
                // SAFETY: matches sae_adam_radial_outer{,_r8,_r16,_r24,_r32}_f32(float* w, float* m,
                // float* v, const float* A [c*R*rows_per], const float* B [c*R*len], rows_total,
                // rows_per, len, R, scale, u32* t_dev, u32* done, finish, steps, const float*
                // adam[steps*ADAM_K]);
                // w/m/v hold rows_total*len = c*rows_per*len floats; adam_row_regs(len) picks a
                // class whose registers hold len (32 PL >= len) or the generic kernel; t_dev and
                // done hold one u32 each, and the grid is 1-D as step_done needs.
                unsafe { b.launch(cfg(grid, launch::ROW_BLOCK, 0)) }
                    .cuda("sae_adam_radial_outer_f32")?;
                mark(label)?;
            }
        } else {
            let g_ps = (c * n * d) as u64; // one part: the whole gradient
            for (w, (g, parts), m, v, rows_u, len_u, grid, finish, label) in [
                (
                    &mut s.w_enc,
                    (&*g_we, split_we),
                    &mut mo.m_we,
                    &mut mo.v_we,
                    rows_we,
                    d_u,
                    g_we_rows,
                    0u32,
                    "adam_w_enc",
                ),
                (
                    &mut s.w_dec,
                    (&*g_wd, split_wd),
                    &mut mo.m_wd,
                    &mut mo.v_wd,
                    rows_wd,
                    n_u,
                    g_wd_rows,
                    1u32,
                    "adam_w_dec",
                ),
            ] {
                let parts_u = u32_of(parts, "K parts")?;
                let mut b = self.stream.launch_builder(&self.k.adam_radial);
                b.arg(w)
                    .arg(g)
                    .arg(&parts_u)
                    .arg(&g_ps)
                    .arg(m)
                    .arg(v)
                    .arg(&rows_u)
                    .arg(&len_u)
                    .arg(&mut *t_dev)
                    .arg(&mut *done)
                    .arg(&finish)
                    .arg(&steps_u)
                    .arg(&*adam);
                // SAFETY: matches sae_adam_radial_rows_f32(float* w, const float* g, g_parts, g_ps,
                // float* m, float* v, rows, len, u32* t_dev, u32* done, finish, steps, const float*
                // adam[steps*ADAM_K]); w, m, v hold rows*len = g_ps floats and g holds g_parts
                // such parts (Work's split_we/split_wd, which sized it and split the GEMMs above);
                // t_dev and done one u32 each; 1-D grid.
                unsafe { b.launch(cfg(grid, launch::ROW_BLOCK, 0)) }
                    .cuda("sae_adam_radial_rows_f32")?;
                mark(label)?;
            }
        }
        Ok(())
    }
}
