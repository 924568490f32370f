//! Discretisation of SAE activations into one integer code per (example, head)
//! (notes/paper.md §3.4): `codes = np.argmax(learned_activations, axis=-1)`.
//!
//! NumPy semantics, kept exactly: the lowest index wins ties, so an all-zero row (every
//! feature dead) gets code 0 — "dead" and "feature 0" are the same code, as in the paper.
//! A NaN counts as the maximum (NumPy's argmax returns the first NaN).
//!
//! Optional top-k codes (`CodeOptions::top_k > 1`, off by default) replace the argmax by the
//! *set* of the k most active features: the k indices (ties: lowest index first) are sorted
//! ascending and packed in base n, `code = Σ_j idx_j · n^(k−1−j)`, so `n_codes = n^k`.
use crate::error::{Error, Result};

/// Per-row argmax of `x` [rows, k] (row-major). Lowest index wins ties; an all-zero row
/// gives 0; the first NaN wins over any number.
pub fn argmax_rows(x: &[f32], rows: usize, k: usize) -> Result<Vec<u32>> {
    if k == 0 {
        return Err(Error::InvalidInput("argmax over zero features".into()));
    }
    if x.len() != rows * k {
        return Err(Error::shape("argmax input", format!("{rows}×{k}"), x.len()));
    }
    if k > u32::MAX as usize {
        return Err(Error::InvalidInput(format!(
            "{k} features do not fit a u32 code"
        )));
    }
    Ok(x.chunks_exact(k).map(argmax_row).collect())
}

fn argmax_row(row: &[f32]) -> u32 {
    let mut best = 0usize;
    let mut bv = row[0];
    if bv.is_nan() {
        return 0;
    }
    for (i, &v) in row.iter().enumerate().skip(1) {
        if v.is_nan() {
            return i as u32;
        }
        if v > bv {
            bv = v;
            best = i;
        }
    }
    best as u32
}

/// Indices of the `k` largest values of `row` (ties: lower index first), sorted ascending.
fn top_k_sorted(row: &[f32], k: usize) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..row.len()).collect();
    // Descending by value with NaN as the largest, then ascending index: a total order.
    idx.sort_by(|&a, &b| {
        let (va, vb) = (row[a], row[b]);
        match (va.is_nan(), vb.is_nan()) {
            (true, true) => a.cmp(&b),
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ => vb
                .partial_cmp(&va)
                .unwrap_or(std::cmp::Ordering::Equal)
                .then(a.cmp(&b)),
        }
    });
    let mut top = idx[..k].to_vec();
    top.sort_unstable();
    top
}

/// How activations become codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CodeOptions {
    /// 1 (default) = argmax, the paper's code; k > 1 = the set of the top-k features.
    pub top_k: usize,
}

impl Default for CodeOptions {
    fn default() -> Self {
        CodeOptions { top_k: 1 }
    }
}

/// Codes of every (example, head), with the class of each example.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(try_from = "RawCodeTable")]
pub struct CodeTable {
    /// [examples, heads], row-major.
    pub codes: Vec<u32>,
    pub examples: usize,
    pub heads: usize,
    /// Codes lie in `0..n_codes` (n features, or n^k for top-k codes).
    pub n_codes: usize,
    /// Per example: true for a positive (task-solving) example.
    pub is_pos: Vec<bool>,
}

/// A code table as a file holds it, checked by [`CodeTable::new`] before it is used, so a
/// truncated or edited `codes.json` is an error and never an index out of bounds.
#[derive(serde::Deserialize)]
struct RawCodeTable {
    codes: Vec<u32>,
    examples: usize,
    heads: usize,
    n_codes: usize,
    is_pos: Vec<bool>,
}

impl TryFrom<RawCodeTable> for CodeTable {
    type Error = Error;
    fn try_from(r: RawCodeTable) -> Result<Self> {
        CodeTable::new(r.codes, r.examples, r.heads, r.n_codes, r.is_pos)
    }
}

impl CodeTable {
    /// Validate and wrap an existing code matrix.
    pub fn new(
        codes: Vec<u32>,
        examples: usize,
        heads: usize,
        n_codes: usize,
        is_pos: Vec<bool>,
    ) -> Result<Self> {
        if examples.checked_mul(heads) != Some(codes.len()) {
            return Err(Error::shape(
                "code table",
                format!("{examples}×{heads}"),
                codes.len(),
            ));
        }
        if is_pos.len() != examples {
            return Err(Error::shape("code table labels", examples, is_pos.len()));
        }
        // Codes are u32, so no table needs more than 2³² of them (top-k's bound too).
        if n_codes == 0 || n_codes as u64 > u32::MAX as u64 + 1 {
            return Err(Error::InvalidInput(format!(
                "n_codes {n_codes} is outside 1..=2^32"
            )));
        }
        if let Some(c) = codes.iter().find(|&&c| c as usize >= n_codes) {
            return Err(Error::InvalidInput(format!(
                "code {c} out of range 0..{n_codes}"
            )));
        }
        Ok(CodeTable {
            codes,
            examples,
            heads,
            n_codes,
            is_pos,
        })
    }

    /// Codes from activations `features` [examples, heads, n] — the layout of both
    /// `sae::encode_shared` and `sae::encode_per_head`, so this serves both modes.
    pub fn from_features(
        features: &[f32],
        examples: usize,
        heads: usize,
        n: usize,
        is_pos: Vec<bool>,
        opts: CodeOptions,
    ) -> Result<Self> {
        if features.len() != examples * heads * n {
            return Err(Error::shape(
                "SAE features",
                format!("{examples}×{heads}×{n}"),
                features.len(),
            ));
        }
        let rows = examples * heads;
        let (codes, n_codes) = match opts.top_k {
            0 => return Err(Error::InvalidInput("top_k must be at least 1".into())),
            1 => (argmax_rows(features, rows, n)?, n),
            k => {
                if k > n {
                    return Err(Error::InvalidInput(format!(
                        "top_k = {k} exceeds the {n} features"
                    )));
                }
                let n_codes = (n as u64)
                    .checked_pow(k as u32)
                    .filter(|&c| c <= u32::MAX as u64 + 1)
                    .ok_or_else(|| {
                        Error::InvalidInput(format!("{n}^{k} top-k codes do not fit a u32"))
                    })?;
                let codes = features
                    .chunks_exact(n)
                    .map(|row| {
                        top_k_sorted(row, k)
                            .iter()
                            .fold(0u64, |acc, &i| acc * n as u64 + i as u64)
                            as u32
                    })
                    .collect();
                (codes, n_codes as usize)
            }
        };
        CodeTable::new(codes, examples, heads, n_codes, is_pos)
    }

    /// Shared mode: encode `x` [examples, heads, d] with one SAE, then discretise.
    pub fn from_shared(
        sae: &crate::sae::Sae,
        x: &[f32],
        examples: usize,
        heads: usize,
        is_pos: Vec<bool>,
        opts: CodeOptions,
    ) -> Result<Self> {
        let f = crate::sae::encode_shared(sae, x, examples, heads)?;
        CodeTable::from_features(&f, examples, heads, sae.n, is_pos, opts)
    }

    /// Per-head mode: SAE h encodes `x[:, h, :]` of `x` [examples, heads = saes.len(), d].
    pub fn from_per_head(
        saes: &[crate::sae::Sae],
        x: &[f32],
        examples: usize,
        is_pos: Vec<bool>,
        opts: CodeOptions,
    ) -> Result<Self> {
        let f = crate::sae::encode_per_head(saes, x, examples)?;
        let n = saes.first().map_or(0, |s| s.n);
        CodeTable::from_features(&f, examples, saes.len(), n, is_pos, opts)
    }

    /// Code of example `e` at head `h`.
    pub fn code(&self, e: usize, h: usize) -> u32 {
        self.codes[e * self.heads + h]
    }

    /// Number of positive and negative examples.
    pub fn class_counts(&self) -> (usize, usize) {
        let p = self.is_pos.iter().filter(|&&b| b).count();
        (p, self.examples - p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn argmax_is_numpy_argmax() {
        let x = [
            0.0,
            0.0,
            0.0, // all zero -> 0
            1.0,
            3.0,
            3.0, // tie -> lowest
            -1.0,
            -2.0,
            -0.5, // negatives
            2.0,
            f32::NAN,
            5.0, // NaN wins
            f32::NEG_INFINITY,
            f32::NEG_INFINITY,
            0.0,
        ];
        assert_eq!(argmax_rows(&x, 5, 3).unwrap(), vec![0, 1, 2, 1, 2]);
    }

    #[test]
    fn argmax_bad_shapes() {
        assert!(argmax_rows(&[1.0; 5], 2, 3).is_err());
        assert!(argmax_rows(&[], 0, 0).is_err());
        assert_eq!(argmax_rows(&[], 0, 3).unwrap(), Vec::<u32>::new());
    }

    #[test]
    fn table_from_features_and_top_k() {
        // 2 examples × 2 heads × 3 features.
        let f = [
            0.1, 0.9, 0.5, /**/ 0.0, 0.0, 0.0, //
            0.7, 0.7, 0.2, /**/ 0.3, 0.1, 0.4,
        ];
        let t = CodeTable::from_features(&f, 2, 2, 3, vec![true, false], CodeOptions::default())
            .unwrap();
        assert_eq!(t.codes, vec![1, 0, 0, 2]);
        assert_eq!(t.n_codes, 3);
        assert_eq!(t.code(1, 1), 2);
        assert_eq!(t.class_counts(), (1, 1));
        let t2 = CodeTable::from_features(&f, 2, 2, 3, vec![true, false], CodeOptions { top_k: 2 })
            .unwrap();
        // {1,2} -> 1*3+2 = 5; all-zero {0,1} -> 1; {0,1} -> 1; {0,2} -> 2.
        assert_eq!(t2.codes, vec![5, 1, 1, 2]);
        assert_eq!(t2.n_codes, 9);
        let bad = CodeOptions { top_k: 4 };
        assert!(CodeTable::from_features(&f, 2, 2, 3, vec![true, false], bad).is_err());
        assert!(CodeTable::from_features(&f, 2, 2, 3, vec![true], CodeOptions::default()).is_err());
        assert!(CodeTable::new(vec![3], 1, 1, 3, vec![true]).is_err());
    }

    #[test]
    fn serde_round_trip() {
        let t = CodeTable::new(vec![0, 2, 1, 1], 2, 2, 3, vec![true, false]).unwrap();
        let s = serde_json::to_string(&t).unwrap();
        let back: CodeTable = serde_json::from_str(&s).unwrap();
        assert_eq!(t, back);
    }
}
