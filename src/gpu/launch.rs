//! Launch-configuration math and memory layouts shared by the CUDA wrappers. Pure Rust, no
//! CUDA needed: everything here is unit-tested on the CPU. Each function mirrors the launch
//! mapping documented in the header of the matching `kernels/*.cu` file.

/// Threads per block of the warp-per-row kernels (argmax, renorm, radial Adam).
pub const ROW_BLOCK: u32 = 256;
/// Threads per block of the 1-D elementwise kernels.
pub const ELEM_BLOCK: u32 = 256;
/// Threads per block of the persistent SAE trainers (`__launch_bounds__(512, 1)` in sae.cu).
pub const PERSIST_THREADS: u32 = 512;
/// Tile of `gemm_f32` (rows x cols); K step 16.
pub const GEMM_TILE: u32 = 64;
/// Batch rows per block in `hook_reduce_f32` (`HOOK_BT` in hook.cu).
pub const HOOK_BT: u32 = 16;
/// Batched trainer: at most this many rows per SAE use the fused outer-product gradient +
/// Adam kernel (`sae_adam_radial_outer_f32`) instead of two gradient GEMMs.
pub const OUTER_MAX_ROWS: usize = 64;
/// Register classes of `sae_adam_radial_outer_r{PL}_f32`: each lane keeps PL elements of a
/// row (rows up to 32·PL long); index 0 of [`adam_row_regs`]'s answer is the untiled kernel.
pub const ADAM_ROW_REGS: [usize; 4] = [8, 16, 24, 32];

/// Which `sae_adam_radial_outer_*_f32` updates rows of `len` floats: the index into
/// `[generic, r8, r16, r24, r32]`, the smallest register class that holds the row, or 0
/// (the kernel that re-reads the row from memory) for rows over 1024 floats.
pub fn adam_row_regs(len: usize) -> usize {
    ADAM_ROW_REGS
        .iter()
        .position(|&pl| len <= 32 * pl)
        .map_or(0, |i| i + 1)
}

/// Most row groups of `sae_colsum_f32` (its blockDim is (32, G), G <= COLSUM_G; `COLSUM_G` in
/// sae.cu sizes its shared memory).
pub const COLSUM_G: u32 = 32;

/// Grid of `sae_colsum_f32`: (column tiles of 32 of the wider of its two jobs, SAEs, the
/// two jobs).
pub fn colsum_grid(cols0: usize, cols1: usize, count: usize) -> Option<(u32, u32, u32)> {
    let gx = div_ceil_u32(cols0.max(cols1) as u64, 32)?;
    let gy = u32::try_from(count).ok()?;
    (gx > 0 && gy > 0 && gy <= 65_535).then_some((gx, gy, 2))
}

/// Row groups (blockDim.y) of `sae_colsum_f32` for `rows` rows: one a row up to `COLSUM_G`.
pub fn colsum_groups(rows: usize) -> u32 {
    rows.clamp(1, COLSUM_G as usize) as u32
}

/// Floats a step in the Adam constants table (`ADAM_K` in sae.cu; `sae_adam_table_f32`).
pub const ADAM_K: usize = 6;

/// Chunks P of `sae_loss_partial_f32` per SAE: about 4096 elements each, at most 64 (one
/// for the small per-head SAEs, 64 for the shared SAE's 1440 x 768 residuals).
pub fn loss_parts(rows: usize, d: usize, n: usize) -> u32 {
    let elems = rows.saturating_mul(d.max(n));
    (elems / 4096).clamp(1, 64) as u32
}

/// Threads per block of the edge kernels.
pub const EDGE_BLOCK: u32 = 256;

/// Ceil division.
pub fn div_ceil_u32(a: u64, b: u64) -> Option<u32> {
    if b == 0 {
        return None;
    }
    u32::try_from(a.div_ceil(b)).ok()
}

/// Grid (x) for one warp per row with `block` threads per block.
pub fn warp_per_row_grid(rows: usize, block: u32) -> Option<u32> {
    let warps = (block / 32).max(1) as u64;
    div_ceil_u32(rows as u64, warps)
}

/// Grid (x) for one thread per element.
pub fn elementwise_grid(elems: usize, block: u32) -> Option<u32> {
    div_ceil_u32(elems as u64, block as u64)
}

/// Grid of `gemm_f32` for a batch of `batch` (m x nc) outputs: (x = col tiles, y = row tiles, z = batch).
pub fn gemm_grid(m: usize, nc: usize, batch: usize, k_split: usize) -> Option<(u32, u32, u32)> {
    let gx = div_ceil_u32(nc as u64, GEMM_TILE as u64)?;
    let gy = div_ceil_u32(m as u64, gemm_tile_rows(m) as u64)?;
    let gz = u32::try_from(batch.checked_mul(k_split)?).ok()?;
    (gy <= 65_535 && gz <= 65_535 && gz > 0).then_some((gx, gy, gz))
}

/// Rows of a GEMM output tile: 16 (`gemm_m16_f32`) for at most 16 rows, else 64 (`gemm_f32`).
pub fn gemm_tile_rows(m: usize) -> u32 {
    if m <= GEMM_M16 {
        16
    } else {
        GEMM_TILE
    }
}

/// GEMMs with at most this many rows use `gemm_m16_f32`.
pub const GEMM_M16: usize = 16;

/// K rows per `gemm_f32` K tile (`GBK` in sae.cu).
pub const GEMM_K_TILE: usize = 16;

/// How many ways `gemm_f32` splits K for an m x nc output (per batch entry) on `sms` SMs:
/// enough parts for about two blocks per SM when the output tiles alone leave SMs idle, each
/// part at least 4 K tiles (64 rows), at most 16 parts. 1 when the tiles already fill the
/// device. The shared SAE's weight gradients (768 x 200 and 200 x 768, K = 1440, 48 tiles)
/// split 6 ways on 132 SMs.
pub fn gemm_k_split(m: usize, nc: usize, batch: usize, k: usize, sms: u32) -> usize {
    let blocks = m.div_ceil(gemm_tile_rows(m) as usize) * nc.div_ceil(GEMM_TILE as usize) * batch;
    let sms = sms as usize;
    if blocks == 0 || blocks >= sms {
        return 1;
    }
    let want = (2 * sms).div_ceil(blocks);
    let by_k = (k.div_ceil(GEMM_K_TILE) / 4).max(1);
    want.min(by_k).clamp(1, 16)
}

/// Words (u32) of a bitset of `bits` bits.
pub fn bitset_words(bits: u64) -> u64 {
    bits.div_ceil(32)
}

/// Position of bit `c` of head `h` in the node bitsets of overlap.cu: (word index, mask).
pub fn node_bit(h: usize, c: u32, words_per_head: usize) -> (usize, u32) {
    (h * words_per_head + (c as usize >> 5), 1u32 << (c & 31))
}

/// Bit index of the code pair (c1, c2) in an edge bitset (row-major n x n).
pub fn edge_bit(c1: u32, c2: u32, n_codes: u32) -> u64 {
    c1 as u64 * n_codes as u64 + c2 as u64
}

/// Dynamic shared memory of `edge_bitset_u32`: two n^2-bit bitsets.
pub fn edge_bitset_smem_bytes(n_codes: usize) -> u64 {
    2 * bitset_words((n_codes as u64) * (n_codes as u64)) * 4
}

/// Dynamic shared memory of `edge_list_u32`: one u64 key per example.
pub fn edge_list_smem_bytes(examples: usize) -> u64 {
    examples as u64 * 8
}

/// Which edge kernel to use given the per-block shared memory limit (opt-in bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum EdgeAlgo {
    /// Two n^2-bit bitsets per head pair in shared memory.
    Bitset,
    /// O(E^2) key comparison per head pair, E keys in shared memory.
    List,
}

pub fn choose_edge_algo(n_codes: usize, examples: usize, smem_limit: u64) -> Option<EdgeAlgo> {
    if edge_bitset_smem_bytes(n_codes) <= smem_limit {
        Some(EdgeAlgo::Bitset)
    } else if edge_list_smem_bytes(examples) <= smem_limit {
        Some(EdgeAlgo::List)
    } else {
        None
    }
}

/// Floats of dynamic shared memory of `sae_train_persistent_f32` (layout in sae.cu).
pub fn persistent_smem_floats(rows: usize, d: usize, n: usize) -> u64 {
    let (r, d, n) = (rows as u64, d as u64, n as u64);
    n * (d + 1) + d * (n + 1) + 2 * n + d + 3 * r * d + 2 * r * n + 64
}

pub fn persistent_smem_bytes(rows: usize, d: usize, n: usize) -> u64 {
    persistent_smem_floats(rows, d, n) * 4
}

/// Floats of dynamic shared memory of `sae_train_tiled_f32` (layout in sae.cu): every array
/// starts at a multiple of 4 floats, activation rows are padded to a multiple of 4, and xc is
/// double-buffered.
pub fn tiled_smem_floats(rows: usize, d: usize, n: usize) -> u64 {
    let (r, d, n) = (rows as u64, d as u64, n as u64);
    let r4 = |x: u64| x.div_ceil(4) * 4;
    let (ldx, ldf) = (r4(d), r4(n));
    r4(n * (d + 1)) + r4(d * (n + 1)) + 2 * r4(n) + r4(d) + 4 * r * ldx + 2 * r * ldf + 64
}

pub fn tiled_smem_bytes(rows: usize, d: usize, n: usize) -> u64 {
    tiled_smem_floats(rows, d, n) * 4
}

/// Whether the register-tiled persistent trainer can run this shape within `smem_limit`.
pub fn tiled_fits(rows: usize, d: usize, n: usize, smem_limit: u64) -> bool {
    rows > 0
        && d <= PERSIST_MAX_ROW
        && n <= PERSIST_MAX_ROW
        && tiled_smem_bytes(rows, d, n) <= smem_limit
}

/// Longest weight row (d or n) the persistent trainer handles: each lane of a warp keeps at
/// most 8 of a row's gradients and moments in registers (`PERSIST_MAX_ROW` in sae.cu).
pub const PERSIST_MAX_ROW: usize = 256;

/// Whether the persistent trainer can run this shape within `smem_limit` bytes per block.
pub fn persistent_fits(rows: usize, d: usize, n: usize, smem_limit: u64) -> bool {
    d <= PERSIST_MAX_ROW && n <= PERSIST_MAX_ROW && persistent_smem_bytes(rows, d, n) <= smem_limit
}

/// Dynamic shared memory of `hook_reduce_f32`.
pub fn hook_smem_bytes(d_head: usize) -> u64 {
    HOOK_BT as u64 * d_head as u64 * 4
}

/// Grid of `hook_reduce_f32`: (batch tiles, heads).
pub fn hook_grid(batch: usize, heads: usize) -> Option<(u32, u32)> {
    let gx = div_ceil_u32(batch as u64, HOOK_BT as u64)?;
    let gy = u32::try_from(heads).ok()?;
    (gy <= 65_535).then_some((gx, gy))
}

/// Parse a compute capability as build.rs does: "90", "9.0", "sm_90", "90a" -> "90".
pub fn parse_compute_cap(raw: &str) -> Option<String> {
    let s = raw
        .trim()
        .trim_start_matches("sm_")
        .trim_start_matches("compute_")
        .trim_end_matches('a');
    let digits = match s.split_once('.') {
        Some((maj, min)) => format!("{maj}{min}"),
        None => s.to_string(),
    };
    (digits.len() >= 2 && digits.chars().all(|c| c.is_ascii_digit())).then_some(digits)
}

/// Adam bias-correction constants as the kernels compute them (double, then f32):
/// returns (lr / (1 - b1^t), sqrt(1 - b2^t)).
pub fn adam_consts(lr: f32, b1: f32, b2: f32, t: u32) -> (f32, f32) {
    let bc1 = 1.0 - (b1 as f64).powi(t as i32);
    let bc2 = 1.0 - (b2 as f64).powi(t as i32);
    ((lr as f64 / bc1) as f32, bc2.sqrt() as f32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn compute_cap_forms() {
        for raw in ["90", "9.0", "sm_90", "90a", " sm_90a ", "compute_90"] {
            assert_eq!(parse_compute_cap(raw).as_deref(), Some("90"), "{raw}");
        }
        assert_eq!(parse_compute_cap("8.6").as_deref(), Some("86"));
        assert_eq!(parse_compute_cap("sm_100").as_deref(), Some("100"));
        assert!(parse_compute_cap("").is_none());
        assert!(parse_compute_cap("nine").is_none());
        assert!(parse_compute_cap("9").is_none());
    }

    #[test]
    fn grids_cover_all_work() {
        assert_eq!(warp_per_row_grid(72_000, ROW_BLOCK), Some(9_000));
        assert_eq!(warp_per_row_grid(1, ROW_BLOCK), Some(1));
        assert_eq!(warp_per_row_grid(9, ROW_BLOCK), Some(2));
        assert_eq!(elementwise_grid(257, 256), Some(2));
        assert_eq!(gemm_grid(1440, 200, 1, 1), Some((4, 23, 1)));
        assert_eq!(gemm_grid(10, 768, 144, 1), Some((12, 1, 144)));
        // 16-row tiles up to 16 rows, 64-row tiles above
        assert_eq!(gemm_tile_rows(16), 16);
        assert_eq!(gemm_tile_rows(17), 64);
        assert_eq!(gemm_grid(16, 200, 2, 1), Some((4, 1, 2)));
        assert_eq!(gemm_grid(17, 200, 2, 1), Some((4, 1, 2)));
        assert_eq!(gemm_grid(65, 200, 2, 1), Some((4, 2, 2)));
        assert_eq!(gemm_grid(10, 768, 70_000, 1), None);
        assert_eq!(gemm_grid(768, 200, 1, 6), Some((4, 12, 6)));
        assert_eq!(gemm_grid(768, 200, 20_000, 4), None);
    }

    #[test]
    fn k_split_fills_the_device_only_where_tiles_leave_it_idle() {
        // shared SAE weight gradients on 132 SMs: 48 tiles, K = 1440 -> 6 parts (288 blocks)
        assert_eq!(gemm_k_split(768, 200, 1, 1440, 132), 6);
        assert_eq!(gemm_k_split(200, 768, 1, 1440, 132), 6);
        // the encoder's shape (92 tiles) would split 3 ways, but only mode-0 GEMMs (the weight
        // gradients) are split: an epilogue needs the whole sum
        assert_eq!(gemm_k_split(1440, 200, 1, 768, 132), 3);
        // per-head shapes: enough blocks already, or too little K to split
        assert_eq!(gemm_k_split(64, 200, 144, 10, 132), 1);
        assert_eq!(gemm_k_split(128, 100, 1, 300, 132), 4); // 19 K tiles: 4 parts of 5
        assert_eq!(gemm_k_split(128, 100, 1, 48, 132), 1); // 3 K tiles: no split
        assert_eq!(gemm_k_split(64, 64, 1, 1 << 20, 132), 16); // capped
        assert_eq!(gemm_k_split(0, 64, 1, 100, 132), 1);
        assert_eq!(hook_grid(500, 144), Some((32, 144)));
        assert_eq!(div_ceil_u32(1, 0), None);
    }

    #[test]
    fn bitset_layout() {
        assert_eq!(bitset_words(200), 7);
        assert_eq!(bitset_words(64), 2);
        assert_eq!(node_bit(0, 0, 7), (0, 1));
        assert_eq!(node_bit(2, 33, 7), (15, 2));
        assert_eq!(node_bit(1, 199, 7), (7 + 6, 1 << 7));
        assert_eq!(edge_bit(3, 5, 200), 605);
        // n = 200: two 40 000-bit sets = 2 * 1250 words = 10 000 bytes
        assert_eq!(edge_bitset_smem_bytes(200), 10_000);
        assert_eq!(
            choose_edge_algo(200, 500, 48 * 1024),
            Some(EdgeAlgo::Bitset)
        );
        assert_eq!(
            choose_edge_algo(2000, 500, 227 * 1024),
            Some(EdgeAlgo::List)
        );
        assert_eq!(choose_edge_algo(2000, 100_000, 227 * 1024), None);
    }

    #[test]
    fn persistent_row_limit() {
        assert!(persistent_fits(10, 64, 200, 227 * 1024));
        assert!(!persistent_fits(10, 64, 257, 1 << 30));
        assert!(!persistent_fits(10, 257, 64, 1 << 30));
        assert!(!persistent_fits(10, 64, 200, 1024));
    }

    #[test]
    fn loss_parts_scale_with_the_sae() {
        assert_eq!(loss_parts(10, 64, 200), 1);
        assert_eq!(loss_parts(1440, 768, 200), 64);
        assert_eq!(loss_parts(100, 200, 100), 4);
        assert_eq!(loss_parts(0, 64, 200), 1);
    }

    #[test]
    fn colsum_grid_covers_columns_and_saes() {
        // the step's two jobs: dpre's n columns and diff's d columns
        assert_eq!(colsum_grid(200, 768, 1), Some((24, 1, 2)));
        assert_eq!(colsum_grid(200, 64, 144), Some((7, 144, 2)));
        assert_eq!(colsum_grid(33, 1, 2), Some((2, 2, 2)));
        assert_eq!(colsum_grid(0, 0, 2), None);
        assert_eq!(colsum_grid(64, 64, 70_000), None);
        assert_eq!(colsum_groups(10), 10);
        assert_eq!(colsum_groups(0), 1);
        assert_eq!(colsum_groups(1440), COLSUM_G);
    }

    #[test]
    fn tiled_fits_like_persistent_with_padding() {
        // the per-head z shape fits an H100 block (227 KB), the per-head result one does not
        assert!(tiled_fits(10, 64, 200, 227 * 1024));
        assert!(!tiled_fits(10, 768, 200, 227 * 1024));
        assert!(!tiled_fits(10, 64, 257, 1 << 30));
        assert!(!tiled_fits(0, 64, 200, 1 << 30));
        // padding only adds: never smaller than the untiled layout
        for &(r, d, n) in &[(10, 64, 200), (37, 48, 70), (4, 96, 50), (3, 5, 7)] {
            assert!(tiled_smem_floats(r, d, n) >= persistent_smem_floats(r, d, n));
            assert_eq!(tiled_smem_floats(r, d, n) % 4, 0);
        }
    }

    #[test]
    fn persistent_fits_h100_for_z_shape() {
        // 144 per-head SAEs on z: d = 64, n = 200, 10 rows each.
        let b = persistent_smem_bytes(10, 64, 200);
        assert!(b < 227 * 1024, "{b}");
        assert!(b > 100 * 1024);
        // 768-wide SAEs do not fit: they take the batched path.
        assert!(persistent_smem_bytes(10, 768, 200) > 227 * 1024);
    }

    #[test]
    fn adam_first_step_constants() {
        let (a, b) = adam_consts(1e-3, 0.9, 0.999, 1);
        assert!((a - 1e-2).abs() < 1e-8);
        // beta2 = 0.999f32 is 0.99900001..., so sqrt(1 - b2) differs from sqrt(0.001) by ~2e-7
        assert!((b - (0.001f64).sqrt() as f32).abs() < 1e-6);
        let (a, b) = adam_consts(1e-3, 0.9, 0.999, 10_000);
        assert!((a - 1e-3).abs() < 1e-9 && (b - 1.0).abs() < 1e-4);
    }
}

/// Every kernel symbol the wrappers load, by source file (checked against the sources in
/// a CPU test, so a rename cannot slip through without a GPU).
pub const KERNELS: &[(&str, &[&str])] = &[
    ("codes.cu", &["argmax_rows_f32"]),
    (
        "overlap.cu",
        &[
            "node_bitsets_u32",
            "node_popcount_u32",
            "edge_bitset_u32",
            "edge_list_u32",
        ],
    ),
    ("hook.cu", &["hook_reduce_f32"]),
    (
        "sae.cu",
        &[
            "sae_renorm_rows_f32",
            "sae_center_f32",
            "gemm_f32",
            "gemm_m16_f32",
            "sae_colsum_f32",
            "sae_bias_adam_f32",
            "sae_adam_table_f32",
            "sae_loss_partial_f32",
            "sae_loss_f32",
            "sae_adam_radial_rows_f32",
            "sae_adam_radial_outer_f32",
            "sae_adam_radial_outer_r8_f32",
            "sae_adam_radial_outer_r16_f32",
            "sae_adam_radial_outer_r24_f32",
            "sae_adam_radial_outer_r32_f32",
            "sae_epilogue_f32",
            "sae_train_persistent_f32",
            "sae_train_tiled_f32",
            "sae_train_persistent_clocks_f32",
            "sae_train_tiled_clocks_f32",
        ],
    ),
    ("util.cu", &["fill_uniform_f32"]),
];

#[cfg(test)]
mod source_tests {
    use super::KERNELS;

    fn source(file: &str) -> &'static str {
        match file {
            "codes.cu" => include_str!("../../kernels/codes.cu"),
            "overlap.cu" => include_str!("../../kernels/overlap.cu"),
            "hook.cu" => include_str!("../../kernels/hook.cu"),
            "sae.cu" => include_str!("../../kernels/sae.cu"),
            "util.cu" => include_str!("../../kernels/util.cu"),
            other => panic!("unknown kernel file {other}"),
        }
    }

    /// Names of `extern "C" __global__` functions in a source (attributes between allowed).
    fn entry_points(src: &str) -> Vec<String> {
        let mut out = Vec::new();
        let mut rest = src;
        while let Some(i) = rest.find("extern \"C\" __global__") {
            rest = &rest[i + 21..];
            let paren = rest.find('(').unwrap();
            let head = &rest[..paren];
            // the name is the last identifier before '(' (skips `void`, __launch_bounds__(...))
            let name: String = head
                .split(|c: char| !(c.is_alphanumeric() || c == '_'))
                .rfind(|s| !s.is_empty())
                .unwrap()
                .to_string();
            if name == "__launch_bounds__" {
                // `__launch_bounds__(N)\nname(`: take the identifier after the attribute
                let after = &rest[rest.find(')').unwrap() + 1..];
                let p2 = after.find('(').unwrap();
                out.push(after[..p2].trim().to_string());
            } else {
                out.push(name);
            }
        }
        out
    }

    #[test]
    fn wrappers_load_only_symbols_the_sources_define() {
        for (file, names) in KERNELS {
            let eps = entry_points(source(file));
            for n in *names {
                assert!(
                    eps.iter().any(|e| e == n),
                    "{file}: no kernel {n} (found {eps:?})"
                );
            }
            for e in &eps {
                assert!(
                    names.contains(&e.as_str()),
                    "{file}: kernel {e} is not listed in KERNELS"
                );
                let dtype = e.rsplit('_').next().unwrap();
                assert!(
                    ["f32", "u32"].contains(&dtype),
                    "{e}: name must end in a dtype"
                );
            }
        }
    }

    #[test]
    fn adam_row_classes_match_the_kernels() {
        use super::{adam_row_regs, ADAM_ROW_REGS};
        let src = source("sae.cu");
        for (i, pl) in ADAM_ROW_REGS.iter().enumerate() {
            assert!(src.contains(&format!(
                "sae_adam_radial_outer_r{pl}_f32(ADAM_OUTER_PARAMS) {{\n    adam_radial_outer<{pl}>"
            )));
            // the smallest class that holds the row, and the previous class does not
            assert_eq!(adam_row_regs(32 * pl), i + 1);
            assert_eq!(
                adam_row_regs(32 * pl + 1),
                if i + 1 < 4 { i + 2 } else { 0 }
            );
        }
        assert_eq!(adam_row_regs(1), 1);
        assert_eq!(adam_row_regs(200), 1); // W_dec rows at n = 200
        assert_eq!(adam_row_regs(768), 3); // W_enc rows at GPT-2 small's d_model
        assert_eq!(adam_row_regs(1600), 0); // GPT-2 XL: the generic kernel
        assert!(src
            .contains("sae_adam_radial_outer_f32(ADAM_OUTER_PARAMS) {\n    adam_radial_outer<0>"));
    }

    #[test]
    fn persistent_layout_matches_kernel_comment() {
        let src = source("sae.cu");
        assert!(src.contains("total = n(d+1) + d(n+1) + 2n + d + 3Rd + 2Rn + 64"));
        for k in ["persistent", "tiled"] {
            assert!(src.contains(&format!(
                "__launch_bounds__(512, 1) sae_train_{k}_f32(PERSIST_PARAMS)"
            )));
            assert!(src.contains(&format!(
                "__launch_bounds__(512, 1)\nsae_train_{k}_clocks_f32(PERSIST_PARAMS"
            )));
        }
        assert!(src.contains("#define PERSIST_PHASES 8") && src.contains("#define TILED_PHASES 6"));
        assert!(src.contains("#define CLOCK_HEAD 4"));
        assert_eq!(super::super::clocks::CLOCK_HEAD, 4);
        assert_eq!(super::super::clocks::PERSIST_PHASES.len(), 8);
        assert_eq!(super::super::clocks::TILED_PHASES.len(), 6);
        assert!(src.contains("#define PERSIST_MAXQ 8"));
        assert_eq!(super::PERSIST_MAX_ROW, 32 * 8);
        assert!(source("hook.cu").contains("#define HOOK_BT 16"));
        assert!(src.contains("#define COLSUM_G 32"));
        assert!(src.contains("#define ADAM_K 6"));
        assert!(src.contains("#define GBK 16") && src.contains("#define GBN 64"));
        assert_eq!((super::GEMM_K_TILE, super::GEMM_TILE), (16, 64));
        assert_eq!(super::ADAM_K, 6);
        assert_eq!(super::COLSUM_G, 32);
        assert_eq!(super::HOOK_BT, 16);
        assert_eq!(super::PERSIST_THREADS, 512);
        assert!(src
            .contains("total = r4(n(d+1)) + r4(d(n+1)) + 2 r4(n) + r4(d) + 4R ldx + 2R ldf + 64"));
        assert!(src.contains("d=64, n=200, R=10: 32,952 floats"));
        assert_eq!(super::tiled_smem_floats(10, 64, 200), 32_952);
    }
}
