//! Launches kernels/overlap.cu: the node scores (per head |P\N| and |N\P|) and the edge
//! scores (code pairs seen only on positives) of a code table.
use cudarc::driver::sys::CUfunction_attribute;
use cudarc::driver::{CudaSlice, PushKernelArg};

use super::{cfg, grid1, u32_of, CudaResultExt, GpuContext};
use crate::error::{Error, Result};
use crate::gpu::launch::{self, EdgeAlgo};
use crate::gpu::{checks, OverlapCounts};

impl GpuContext {
    /// Node scores: per head |P\N| and |N\P| from codes [examples, heads] and labels.
    pub fn node_overlap_counts(
        &self,
        codes: &[u32],
        is_pos: &[bool],
        heads: usize,
        n_codes: usize,
    ) -> Result<OverlapCounts> {
        checks::codes_table(codes, is_pos, heads)?;
        let cd = self.upload(codes)?;
        let pd = self.upload_mask(is_pos)?;
        self.d_node_overlap(&cd, &pd, is_pos.len(), heads, n_codes)
    }

    pub(crate) fn d_node_overlap(
        &self,
        codes: &CudaSlice<u32>,
        is_pos: &CudaSlice<u8>,
        examples: usize,
        heads: usize,
        n_codes: usize,
    ) -> Result<OverlapCounts> {
        if n_codes == 0 {
            return Err(Error::InvalidInput("n_codes = 0".into()));
        }
        let words = launch::bitset_words(n_codes as u64) as usize;
        let mut pb = self.zeros::<u32>(heads * words)?;
        let mut nb = self.zeros::<u32>(heads * words)?;
        let mut bad = self.zeros::<u32>(1)?;
        let mut pn = self.zeros::<u32>(heads)?;
        let mut np = self.zeros::<u32>(heads)?;
        let (e_u, h_u, n_u, w_u) = (
            u32_of(examples, "examples")?,
            u32_of(heads, "heads")?,
            u32_of(n_codes, "n_codes")?,
            u32_of(words, "words")?,
        );
        if examples > 0 {
            let grid = grid1(
                launch::elementwise_grid(examples * heads, launch::ELEM_BLOCK),
                "node bitsets",
            )?;
            let mut b = self.stream.launch_builder(&self.k.node_bitsets);
            b.arg(codes)
                .arg(is_pos)
                .arg(&e_u)
                .arg(&h_u)
                .arg(&n_u)
                .arg(&w_u)
                .arg(&mut pb)
                .arg(&mut nb)
                .arg(&mut bad);
            // SAFETY: matches node_bitsets_u32(const u32* codes[E*H], const u8* is_pos[E], E, H,
            // n_codes, words, u32* pos[H*words], u32* neg[H*words], u32* bad); sizes as allocated.
            unsafe { b.launch(cfg(grid, launch::ELEM_BLOCK, 0)) }.cuda("node_bitsets_u32")?;
        }
        let mut b = self.stream.launch_builder(&self.k.node_popcount);
        b.arg(&pb)
            .arg(&nb)
            .arg(&h_u)
            .arg(&w_u)
            .arg(&mut pn)
            .arg(&mut np);
        // SAFETY: matches node_popcount_u32(const u32* pos, const u32* neg, H, words, u32* p_not_n[H],
        // u32* n_not_p[H]); one block per head.
        unsafe { b.launch(cfg((h_u, 1, 1), 128, 0)) }.cuda("node_popcount_u32")?;
        self.sample_mem();
        let bad = self.download(&bad, 1)?[0];
        if bad > 0 {
            return Err(Error::InvalidInput(format!(
                "{bad} codes are >= n_codes = {n_codes}"
            )));
        }
        Ok(OverlapCounts {
            p_not_n: self.download(&pn, heads)?,
            n_not_p: self.download(&np, heads)?,
        })
    }

    /// Edge scores U [heads, heads] (symmetric, zero diagonal): code pairs seen only on positives.
    pub fn edge_overlap_counts(
        &self,
        codes: &[u32],
        is_pos: &[bool],
        heads: usize,
        n_codes: usize,
    ) -> Result<Vec<u32>> {
        self.edge_overlap_counts_with(codes, is_pos, heads, n_codes, None)
    }

    /// As [`Self::edge_overlap_counts`], forcing one algorithm (None = choose by shared memory).
    pub fn edge_overlap_counts_with(
        &self,
        codes: &[u32],
        is_pos: &[bool],
        heads: usize,
        n_codes: usize,
        algo: Option<EdgeAlgo>,
    ) -> Result<Vec<u32>> {
        checks::codes_table(codes, is_pos, heads)?;
        let cd = self.upload(codes)?;
        let pd = self.upload_mask(is_pos)?;
        let out = self.d_edge_overlap(&cd, &pd, is_pos.len(), heads, n_codes, algo)?;
        self.download(&out, heads * heads)
    }

    pub(crate) fn d_edge_overlap(
        &self,
        codes: &CudaSlice<u32>,
        is_pos: &CudaSlice<u8>,
        examples: usize,
        heads: usize,
        n_codes: usize,
        algo: Option<EdgeAlgo>,
    ) -> Result<CudaSlice<u32>> {
        if n_codes == 0 {
            return Err(Error::InvalidInput("n_codes = 0".into()));
        }
        let limit = self.smem_optin as u64;
        let algo = match algo {
            Some(a) => a,
            None => launch::choose_edge_algo(n_codes, examples, limit).ok_or_else(|| {
                Error::InvalidInput(format!(
                    "edge overlap: neither {n_codes}^2-bit bitsets nor {examples} keys fit in {limit} B of shared memory"
                ))
            })?,
        };
        let (func, smem) = match algo {
            EdgeAlgo::Bitset => (&self.k.edge_bitset, launch::edge_bitset_smem_bytes(n_codes)),
            EdgeAlgo::List => (
                &self.k.edge_list,
                launch::edge_list_smem_bytes(examples).max(8),
            ),
        };
        if smem > limit {
            return Err(Error::InvalidInput(format!(
                "edge overlap ({algo:?}) needs {smem} B shared memory > {limit}"
            )));
        }
        let smem_u = smem as u32;
        if smem_u > 48 * 1024 {
            func.set_attribute(
                CUfunction_attribute::CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                smem_u as i32,
            )
            .cuda("edge kernel shared memory attribute")?;
        }
        let mut out = self.zeros::<u32>(heads * heads)?;
        let mut bad = self.zeros::<u32>(1)?;
        let h_u = u32_of(heads, "heads")?;
        if heads > 65_535 {
            return Err(Error::InvalidInput(format!(
                "{heads} heads: more than 65535"
            )));
        }
        let (e_u, n_u) = (u32_of(examples, "examples")?, u32_of(n_codes, "n_codes")?);
        if heads >= 2 && examples > 0 {
            let mut b = self.stream.launch_builder(func);
            b.arg(codes)
                .arg(is_pos)
                .arg(&e_u)
                .arg(&h_u)
                .arg(&n_u)
                .arg(&mut out)
                .arg(&mut bad);
            // SAFETY: matches edge_{bitset,list}_u32(const u32* codes[E*H], const u8* is_pos[E], E, H,
            // n_codes, u32* out[H*H], u32* bad); dynamic smem sized per launch.rs and <= the opt-in limit.
            unsafe { b.launch(cfg((h_u, h_u, 1), launch::EDGE_BLOCK, smem_u)) }
                .cuda("edge overlap kernel")?;
        }
        self.sample_mem();
        let bad = self.download(&bad, 1)?[0];
        if bad > 0 {
            return Err(Error::InvalidInput(format!(
                "codes >= n_codes = {n_codes} in the code table"
            )));
        }
        Ok(out)
    }
}
