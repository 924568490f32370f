//! Launches kernels/hook.cu: z [batch, pos, heads, d_head] reduced over the real positions
//! per head (`hook_reduce_f32`), optionally projected by W_O.
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{cfg, u32_of, CudaResultExt, GpuContext};
use crate::error::{Error, Result};
use crate::gpu::{checks, launch, HookDims, HookReduce};

impl GpuContext {
    /// Reduce z [batch, pos, heads, d_head] over the real positions (mask [batch, pos]),
    /// optionally projecting by W_O [heads, d_head, d_model]: returns [batch, heads, d_head or d_model].
    pub fn hook_reduce(
        &self,
        z: &[f32],
        mask: &[bool],
        dims: HookDims,
        mode: HookReduce,
        w_o: Option<(&[f32], usize)>,
    ) -> Result<Vec<f32>> {
        checks::hook_inputs(z, mask, dims, w_o)?;
        let zd = self.upload(z)?;
        let md = self.upload_mask(mask)?;
        let wd = match w_o {
            Some((w, dm)) => Some((self.upload(w)?, dm)),
            None => None,
        };
        let out_w = w_o.map_or(dims.d_head, |(_, dm)| dm);
        let mut out = self.zeros::<f32>(dims.batch * dims.heads * out_w)?;
        self.d_hook(
            &zd,
            &md,
            dims,
            mode,
            wd.as_ref().map(|(w, dm)| (w, *dm)),
            &mut out,
        )?;
        self.download(&out, dims.batch * dims.heads * out_w)
    }

    pub(crate) fn d_hook(
        &self,
        z: &CudaSlice<f32>,
        mask: &CudaSlice<u8>,
        dims: HookDims,
        mode: HookReduce,
        w_o: Option<(&CudaSlice<f32>, usize)>,
        out: &mut CudaSlice<f32>,
    ) -> Result<()> {
        let HookDims {
            batch,
            pos,
            heads,
            d_head,
        } = dims;
        if batch == 0 || heads == 0 || d_head == 0 {
            return Ok(());
        }
        let smem = launch::hook_smem_bytes(d_head);
        if smem > 48 * 1024 {
            return Err(Error::InvalidInput(format!(
                "hook: d_head {d_head} too large (max 768)"
            )));
        }
        let (gx, gy) = launch::hook_grid(batch, heads)
            .ok_or_else(|| Error::InvalidInput("hook: grid too large".into()))?;
        let (b_u, p_u, h_u, dh_u) = (
            u32_of(batch, "batch")?,
            u32_of(pos, "pos")?,
            u32_of(heads, "heads")?,
            u32_of(d_head, "d_head")?,
        );
        let mode_u: u32 = match mode {
            HookReduce::Mean => 0,
            HookReduce::Last => 1,
        };
        let null: u64 = 0;
        let dm_u = match w_o {
            Some((_, dm)) => u32_of(dm, "d_model")?,
            None => 0,
        };
        let mut b = self.stream.launch_builder(&self.k.hook);
        b.arg(z)
            .arg(mask)
            .arg(&b_u)
            .arg(&p_u)
            .arg(&h_u)
            .arg(&dh_u)
            .arg(&mode_u);
        match w_o {
            Some((w, _)) => b.arg(w),
            None => b.arg(&null),
        };
        b.arg(&dm_u);
        b.arg(out);
        // SAFETY: matches hook_reduce_f32(const float* z[B*P*H*dh], const u8* mask[B*P], B, P, H, dh,
        // mode, const float* w_o (or NULL), dm, float* out[B*H*(dm or dh)]); shapes checked by callers.
        unsafe { b.launch(cfg((gx, gy, 1), 256, smem as u32)) }.cuda("hook_reduce_f32")?;
        self.sample_mem();
        Ok(())
    }
}
