//! Launches kernels/codes.cu (`argmax_rows_f32`), and the encode that ends in it: W_enc
//! renormalised and x centred (sae.cu's `sae_renorm_rows_f32`, `sae_center_f32`), the
//! encoder GEMM (`gemm.rs`), then the per-row argmax.
use candle_core::Tensor;
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::gemm::{GemmImpl, GemmOp};
use super::{cfg, grid1, u32_of, CudaResultExt, DevSaes, DeviceSaes, GpuContext};
use crate::error::{Error, Result};
use crate::gpu::{checks, launch, SaeParams};

impl GpuContext {
    /// Per-row argmax of a [rows, k] matrix (lowest index on ties).
    pub fn argmax_rows(&self, x: &[f32], k: usize) -> Result<Vec<u32>> {
        if k == 0 || x.len() % k != 0 {
            return Err(Error::shape(
                "argmax_rows x [rows, k]",
                format!("multiple of k={k}"),
                x.len(),
            ));
        }
        let rows = x.len() / k;
        if rows == 0 {
            return Ok(Vec::new());
        }
        let xd = self.upload(x)?;
        let mut out = self.zeros::<u32>(rows)?;
        self.d_argmax(&xd, rows, k, rows, 0, 1, &mut out)?;
        self.download(&out, rows)
    }

    /// out[(row / group) * os_g + (row % group) * os_r] = argmax of row.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn d_argmax(
        &self,
        x: &CudaSlice<f32>,
        rows: usize,
        k: usize,
        group: usize,
        os_g: usize,
        os_r: usize,
        out: &mut CudaSlice<u32>,
    ) -> Result<()> {
        if x.len() < rows * k || group == 0 {
            return Err(Error::InvalidInput("argmax: buffer too small".into()));
        }
        let max_out = (rows - 1) / group * os_g + (rows - 1) % group * os_r;
        if out.len() <= max_out {
            return Err(Error::InvalidInput(
                "argmax: output buffer too small".into(),
            ));
        }
        let (rows_u, k_u, g_u) = (
            u32_of(rows, "rows")?,
            u32_of(k, "k")?,
            u32_of(group, "group")?,
        );
        let (og, or) = (u32_of(os_g, "stride")?, u32_of(os_r, "stride")?);
        let grid = grid1(launch::warp_per_row_grid(rows, launch::ROW_BLOCK), "argmax")?;
        let mut b = self.stream.launch_builder(&self.k.argmax);
        b.arg(x)
            .arg(&rows_u)
            .arg(&k_u)
            .arg(&g_u)
            .arg(&og)
            .arg(&or)
            .arg(out);
        // SAFETY: matches argmax_rows_f32(const float*, u32 rows, u32 k, u32 group, u32 os_g,
        // u32 os_r, u32* out); x holds rows*k floats and every output index is < out.len().
        unsafe { b.launch(cfg(grid, launch::ROW_BLOCK, 0)) }.cuda("argmax_rows_f32")?;
        Ok(())
    }

    /// [`encode_argmax_tensor`](Self::encode_argmax_tensor) with SAEs already on the device.
    pub fn encode_argmax_kept(
        &self,
        saes: &DeviceSaes,
        x: &Tensor,
        examples: usize,
    ) -> Result<Vec<u32>> {
        let s = &saes.0;
        let heads = checks::encode_heads(s.count, s.d, x.elem_count(), examples)?;
        let xd = self.tensor_slice(x)?;
        let mut out = self.zeros::<u32>(examples * heads)?;
        self.d_encode_argmax(s, &xd, examples, heads, &mut out)?;
        self.download(&out, examples * heads)
    }

    /// Codes [examples, heads] of x [examples, heads, d]: one shared SAE (params.len() == 1)
    /// or one SAE per head (params.len() == heads). W_enc rows are renormalised first, as a
    /// forward call does.
    pub fn encode_argmax(
        &self,
        params: &[SaeParams],
        x: &[f32],
        examples: usize,
    ) -> Result<Vec<u32>> {
        let heads = checks::encode_inputs(params, x.len(), examples)?;
        let xd = self.upload(x)?;
        self.encode_uploaded(params, &xd, examples, heads)
    }

    /// [`Self::encode_argmax`] on a candle tensor [examples, heads, d] (device to device
    /// for a CUDA tensor).
    pub fn encode_argmax_tensor(
        &self,
        params: &[SaeParams],
        x: &Tensor,
        examples: usize,
    ) -> Result<Vec<u32>> {
        let heads = checks::encode_inputs(params, x.elem_count(), examples)?;
        let xd = self.tensor_slice(x)?;
        self.encode_uploaded(params, &xd, examples, heads)
    }

    fn encode_uploaded(
        &self,
        params: &[SaeParams],
        xd: &CudaSlice<f32>,
        examples: usize,
        heads: usize,
    ) -> Result<Vec<u32>> {
        let saes = self.upload_saes(params)?;
        let mut out = self.zeros::<u32>(examples * heads)?;
        self.d_encode_argmax(&saes, xd, examples, heads, &mut out)?;
        self.download(&out, examples * heads)
    }

    pub(crate) fn d_encode_argmax(
        &self,
        s: &DevSaes,
        x: &CudaSlice<f32>,
        examples: usize,
        heads: usize,
        out: &mut CudaSlice<u32>,
    ) -> Result<()> {
        let (d, n) = (s.d, s.n);
        let (groups, r, x_bs, x_rs) = if s.count == 1 {
            (1, examples * heads, 0usize, d)
        } else if s.count == heads {
            (heads, examples, d, heads * d)
        } else {
            return Err(Error::shape(
                "encode SAE count (1 or heads)",
                heads,
                s.count,
            ));
        };
        if x.len() < examples * heads * d {
            return Err(Error::InvalidInput("encode: x buffer too small".into()));
        }
        let mut w = self.stream.clone_dtod(&s.w_enc).cuda("copy W_enc")?;
        let mut xc = self.zeros::<f32>(groups * r * d)?;
        let mut f = self.zeros::<f32>(groups * r * n)?;
        self.sample_mem();
        let (g_u, r_u, d_u) = (
            u32_of(groups, "groups")?,
            u32_of(r, "rows")?,
            u32_of(d, "d")?,
        );
        let rows_u = u32_of(groups * n, "rows")?;
        {
            let grid = grid1(
                launch::warp_per_row_grid(groups * n, launch::ROW_BLOCK),
                "renorm",
            )?;
            let mut b = self.stream.launch_builder(&self.k.renorm);
            b.arg(&mut w).arg(&rows_u).arg(&d_u);
            // SAFETY: matches sae_renorm_rows_f32(float* w[rows*len], rows, len).
            unsafe { b.launch(cfg(grid, launch::ROW_BLOCK, 0)) }.cuda("sae_renorm_rows_f32")?;
        }
        {
            let (xb, xr) = (x_bs as u64, x_rs as u64);
            let grid = grid1(
                launch::elementwise_grid(groups * r * d, launch::ELEM_BLOCK),
                "center",
            )?;
            let mut b = self.stream.launch_builder(&self.k.center);
            b.arg(x)
                .arg(&xb)
                .arg(&xr)
                .arg(&s.b)
                .arg(&g_u)
                .arg(&r_u)
                .arg(&d_u)
                .arg(&mut xc);
            // SAFETY: matches sae_center_f32(x, x_bs, x_rs, b[groups*d], N, R, d, xc[groups*R*d]);
            // the largest x index is (groups-1)*x_bs + (R-1)*x_rs + d-1 < examples*heads*d.
            unsafe { b.launch(cfg(grid, launch::ELEM_BLOCK, 0)) }.cuda("sae_center_f32")?;
        }
        // The tiled kernel, whatever trained the SAEs: codes stay exact against the CPU.
        self.gemm(
            GemmImpl::Tiled,
            &GemmOp {
                m: r,
                nc: n,
                k: d,
                batch: groups,
                a: (&xc, r * d, d, 1),
                b: (&w, n * d, 1, d),
                mode: 1,
                alpha: 1.0,
                beta: 0.0,
                bias: Some((&s.b_enc, n)),
                aux: None,
                k_split: 1,
            },
            (&mut f, r * n, n),
        )?;
        if groups == 1 {
            self.d_argmax(&f, r, n, r, 0, 1, out)
        } else {
            // row = h * examples + e  ->  out[e * heads + h]
            self.d_argmax(&f, groups * r, n, examples, 1, heads, out)
        }
    }
}
