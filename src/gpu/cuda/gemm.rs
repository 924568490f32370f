//! The batched GEMMs of the SAE trainer's step and of the encode: sae.cu's `gemm_f32` /
//! `gemm_m16_f32` with the epilogue fused, or cuBLAS's strided-batched GEMM followed by
//! sae.cu's `sae_epilogue_f32`; and the split-K sizing of the weight gradients.
use cudarc::driver::{CudaSlice, LaunchArgs, PushKernelArg};

use super::{cfg, grid1, u32_of, CudaResultExt, GpuContext};
use crate::error::{Error, Result};
use crate::gpu::launch;

/// The GEMM behind the batched trainer's step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum GemmImpl {
    /// `gemm_f32`, epilogues fused (path B).
    Tiled,
    /// cuBLAS strided-batched GEMM + `sae_epilogue_f32` (path C).
    Cublas { tf32: bool },
}

/// One batched GEMM of the trainer step with its epilogue: C[s] = epilogue(alpha·A[s]·B[s]),
/// C [batch, m, nc]. Operands are (buffer, batch stride, stride along the output dimension,
/// stride along k) for A and (buffer, batch stride, stride along k, stride along nc) for B;
/// modes as `gemm_f32` in sae.cu (bias for modes 1–2, aux for modes 2–3).
#[derive(Clone, Copy)]
pub(super) struct GemmOp<'a> {
    pub(super) m: usize,
    pub(super) nc: usize,
    pub(super) k: usize,
    pub(super) batch: usize,
    pub(super) a: (&'a CudaSlice<f32>, usize, usize, usize),
    pub(super) b: (&'a CudaSlice<f32>, usize, usize, usize),
    pub(super) mode: u32,
    pub(super) alpha: f32,
    pub(super) beta: f32,
    pub(super) bias: Option<(&'a CudaSlice<f32>, usize)>,
    pub(super) aux: Option<&'a CudaSlice<f32>>,
    /// K split into this many parts, each writing its partial sum one whole C
    /// (batch · m · nc floats) after the previous (mode 0, `gemm_f32` only; 1 = no split).
    pub(super) k_split: usize,
}

impl<'a> GemmOp<'a> {
    fn bias_stride(&self) -> u64 {
        self.bias.map_or(0, |(_, s)| s as u64)
    }

    /// `bias, bias_bs, aux` (NULL where absent): the trailing arguments `gemm_f32` and
    /// `sae_epilogue_f32` share.
    fn push_epilogue_args<'b>(&self, b: &mut LaunchArgs<'b>, bias_bs: &'b u64, null: &'b u64)
    where
        'a: 'b,
    {
        match self.bias {
            Some((p, _)) => b.arg(p),
            None => b.arg(null),
        };
        b.arg(bias_bs);
        match self.aux {
            Some(p) => b.arg(p),
            None => b.arg(null),
        };
    }
}

impl GpuContext {
    /// One trainer GEMM with its epilogue, by the tiled kernel or by cuBLAS.
    pub(super) fn gemm(
        &self,
        imp: GemmImpl,
        op: &GemmOp<'_>,
        c: (&mut CudaSlice<f32>, usize, usize),
    ) -> Result<()> {
        if let GemmImpl::Cublas { tf32 } = imp {
            return self.gemm_cublas(op, c, tf32);
        }
        if op.k_split != 1 && (op.mode != 0 || op.k_split == 0) {
            return Err(Error::InvalidInput(format!(
                "gemm: a {}-way K split needs mode 0 (got mode {})",
                op.k_split, op.mode
            )));
        }
        let grid = launch::gemm_grid(op.m, op.nc, op.batch, op.k_split)
            .ok_or_else(|| Error::InvalidInput("gemm: grid too large".into()))?;
        let (m_u, n_u, k_u) = (u32_of(op.m, "m")?, u32_of(op.nc, "n")?, u32_of(op.k, "k")?);
        let st = |v: usize| v as u64;
        let (a, bm) = (op.a, op.b);
        let (a_s, a_bs, a_i, a_k) = (a.0, st(a.1), st(a.2), st(a.3));
        let (b_s, b_bs, b_k, b_j) = (bm.0, st(bm.1), st(bm.2), st(bm.3));
        let (c_s, c_bs, ldc) = (c.0, st(c.1), st(c.2));
        let parts = u32_of(op.k_split, "K split")?;
        let c_ps = c_bs * op.batch as u64;
        if (c_s.len() as u64) < c_ps * parts as u64 {
            return Err(Error::InvalidInput(format!(
                "gemm: C holds {} floats, {} K parts of {c_ps} need more",
                c_s.len(),
                parts
            )));
        }
        let (bias_bs, null) = (op.bias_stride(), 0u64);
        // the 16-row tile where it holds every row (launch::gemm_tile_rows, as gemm_grid)
        let (kernel, name) = if op.m <= launch::GEMM_M16 {
            (&self.k.gemm_m16, "gemm_m16_f32")
        } else {
            (&self.k.gemm, "gemm_f32")
        };
        let mut b = self.stream.launch_builder(kernel);
        b.arg(&m_u).arg(&n_u).arg(&k_u);
        b.arg(a_s).arg(&a_bs).arg(&a_i).arg(&a_k);
        b.arg(b_s).arg(&b_bs).arg(&b_k).arg(&b_j);
        b.arg(c_s).arg(&c_bs).arg(&ldc).arg(&parts).arg(&c_ps);
        b.arg(&op.mode).arg(&op.alpha).arg(&op.beta);
        op.push_epilogue_args(&mut b, &bias_bs, &null);
        // SAFETY: matches gemm_f32 / gemm_m16_f32(M, Nc, K, A, a_bs, a_i, a_k, B, b_bs, b_k, b_j, C, c_bs, ldc,
        // k_split, c_ps, mode, alpha, beta, bias, bias_bs, aux); the callers below pass strides that
        // stay inside each buffer (shapes documented in sae.cu), C holds k_split parts of c_ps
        // floats (checked above), bias/aux are non-NULL for the modes that read them; the
        // grid's rows follow the kernel's tile (gemm_grid uses gemm_tile_rows(m)).
        unsafe { b.launch(cfg(grid, 256, 0)) }.cuda(name)?;
        Ok(())
    }

    /// `gemm` through cuBLAS: C[s] = alpha·A[s]·B[s] (FP32, or TF32 tensor cores), then
    /// `sae_epilogue_f32` for modes 1–3. Operands use `gemm`'s row-major stride convention;
    /// one of each operand's two inner strides must be 1, and C must be contiguous.
    fn gemm_cublas(
        &self,
        op: &GemmOp<'_>,
        c: (&mut CudaSlice<f32>, usize, usize),
        tf32: bool,
    ) -> Result<()> {
        let GemmOp {
            m,
            nc,
            k,
            batch,
            a,
            b: bm,
            mode,
            alpha,
            beta,
            ..
        } = *op;
        use cudarc::cublas::sys::{
            cublasComputeType_t, cublasGemmAlgo_t, cublasOperation_t, cudaDataType_t,
        };
        use cudarc::driver::{DevicePtr, DevicePtrMut};
        let (a_s, a_bs, a_i, a_k) = a;
        let (b_s, b_bs, b_k, b_j) = bm;
        let (c_s, c_bs, ldc) = c;
        if op.k_split != 1 {
            return Err(Error::InvalidInput(
                "gemm_cublas: cuBLAS splits K itself (k_split must be 1)".into(),
            ));
        }
        if ldc != nc || c_bs != m * nc {
            return Err(Error::InvalidInput(
                "gemm_cublas: C must be contiguous [batch, m, n]".into(),
            ));
        }
        // Row-major C [m, nc] is column-major C^T [nc, m] with ld = ldc, and C^T = B^T·A^T:
        // cuBLAS runs (m', n', k') = (nc, m, k) with A' = B^T and B' = A^T.
        // An operand whose element (row, col) lies at rs·row + cs·col is column-major with
        // ld = cs when rs = 1, or the transpose of one with ld = rs when cs = 1.
        let layout = |rs: usize, cs: usize, what: &str| -> Result<(cublasOperation_t, usize)> {
            match (rs, cs) {
                (1, _) => Ok((cublasOperation_t::CUBLAS_OP_N, cs)),
                (_, 1) => Ok((cublasOperation_t::CUBLAS_OP_T, rs)),
                _ => Err(Error::InvalidInput(format!(
                    "gemm_cublas: {what} needs a unit inner stride"
                ))),
            }
        };
        // A' [nc, k]: element (j, kk) at b_j·j + b_k·kk; B' [k, m]: (kk, i) at a_k·kk + a_i·i.
        let (op_a, lda) = layout(b_j, b_k, "B")?;
        let (op_b, ldb) = layout(a_k, a_i, "A")?;
        let int = |v: usize, what: &str| -> Result<i32> {
            i32::try_from(v).map_err(|_| Error::InvalidInput(format!("gemm_cublas: {what} {v}")))
        };
        let long = |v: usize| v as i64;
        let compute = if tf32 {
            cublasComputeType_t::CUBLAS_COMPUTE_32F_FAST_TF32
        } else {
            cublasComputeType_t::CUBLAS_COMPUTE_32F
        };
        let zero = 0f32;
        {
            let (pa, _ga) = b_s.device_ptr(&self.stream);
            let (pb, _gb) = a_s.device_ptr(&self.stream);
            let (pc, _gc) = c_s.device_ptr_mut(&self.stream);
            // SAFETY: cublasGemmStridedBatchedEx on this context's stream; A' = B (b_bs apart),
            // B' = A (a_bs apart) and C (c_bs apart) hold batch matrices of the sizes the
            // callers document in sae.cu; alpha/beta are host scalars read during the call.
            unsafe {
                cudarc::cublas::result::gemm_strided_batched_ex(
                    *self.blas()?.handle(),
                    op_a,
                    op_b,
                    int(nc, "n")?,
                    int(m, "m")?,
                    int(k, "k")?,
                    &alpha as *const f32 as *const _,
                    pa as *const _,
                    cudaDataType_t::CUDA_R_32F,
                    int(lda, "lda")?,
                    long(b_bs),
                    pb as *const _,
                    cudaDataType_t::CUDA_R_32F,
                    int(ldb, "ldb")?,
                    long(a_bs),
                    &zero as *const f32 as *const _,
                    pc as *mut _,
                    cudaDataType_t::CUDA_R_32F,
                    int(ldc, "ldc")?,
                    long(c_bs),
                    int(batch, "batch")?,
                    compute,
                    cublasGemmAlgo_t::CUBLAS_GEMM_DEFAULT,
                )
            }
            .cuda("cublasGemmStridedBatchedEx")?;
        }
        if mode == 0 {
            return Ok(());
        }
        let len = batch * m * nc;
        let grid = grid1(
            launch::elementwise_grid(len, launch::ELEM_BLOCK),
            "epilogue",
        )?;
        let (bias_bs, null) = (op.bias_stride(), 0u64);
        let (n_u, m_u, nc_u) = (u32_of(batch, "batch")?, u32_of(m, "m")?, u32_of(nc, "n")?);
        let mut b = self.stream.launch_builder(&self.k.epilogue);
        b.arg(c_s)
            .arg(&n_u)
            .arg(&m_u)
            .arg(&nc_u)
            .arg(&mode)
            .arg(&beta);
        op.push_epilogue_args(&mut b, &bias_bs, &null);
        // SAFETY: matches sae_epilogue_f32(float* C[N*M*Nc], N, M, Nc, mode, beta, bias, bias_bs,
        // aux[N*M*Nc]); the callers pass bias for modes 1–2 and aux for modes 2–3 (as for gemm_f32).
        unsafe { b.launch(cfg(grid, launch::ELEM_BLOCK, 0)) }.cuda("sae_epilogue_f32")?;
        Ok(())
    }

    /// K parts of the unfused step's weight-gradient GEMMs (g_W_dec [d, n], g_W_enc [n, d],
    /// K = rows): split to fill the SMs on the tiled path (`launch::gemm_k_split`); cuBLAS
    /// splits by itself.
    pub(super) fn grad_splits(
        &self,
        imp: GemmImpl,
        c: usize,
        r: usize,
        d: usize,
        n: usize,
    ) -> (usize, usize) {
        match imp {
            GemmImpl::Tiled => (
                launch::gemm_k_split(d, n, c, r, self.sms),
                launch::gemm_k_split(n, d, c, r, self.sms),
            ),
            GemmImpl::Cublas { .. } => (1, 1),
        }
    }
}
