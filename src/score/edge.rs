//! Edge (head-pair) code co-occurrence scores (notes/paper.md §4.2), without the paper's
//! dense H×H×n×n tensors.
//!
//! 1. For each head pair h1 < h2, `S⁺` = set of code pairs `(code(e,h1), code(e,h2))` over
//!    positive examples, `S⁻` over negatives; `U[h1,h2] = |S⁺ \ S⁻|`, mirrored to
//!    `U[h2,h1]`; `U[h,h] = 0`. (Same as the paper's `#{(c1,c2): C⁺>0 ∧ C⁻=0}`.)
//! 2. Rank all H² ordered pairs `p = h1·H + h2` (diagonal included) by U descending; **ties
//!    by ascending p** (a stable sort). The paper's `np.argsort(U.flatten())[::-1]` leaves
//!    tie order to NumPy's unstable sort, so exact parity on ties is not attempted.
//! 3. Write both endpoints of each ranked pair into a list (`h1, h2, h1', h2', …`), take
//!    the first k entries (default `k = H²/2`, integer division, the paper's last setting)
//!    and count how often each head appears: that count is the head's score.
//!
//! Pair sets are bitsets over `n_codes²` bits when that fits in [`BITSET_MAX_CODES`],
//! touched bits cleared after each pair (cost O(examples) per pair, independent of n);
//! otherwise sorted vectors of `c1·n_codes + c2` keys.
use super::node::{check_table, BITSET_MAX_CODES};
use crate::codes::CodeTable;
use crate::error::Result;

/// Edge scores and the intermediate pair matrix.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct EdgeScores {
    /// `U` [heads, heads], row-major, symmetric, zero diagonal.
    pub u: Vec<usize>,
    /// List entries taken from the ranked pair list.
    pub k: usize,
    /// Per head: appearances among the first k list entries (as f64 for ROC).
    pub score: Vec<f64>,
}

/// A set of u64 keys backed by a bitset, cleared by remembering what was set.
struct BitSet {
    words: Vec<u64>,
    touched: Vec<usize>,
}

impl BitSet {
    fn new(bits: usize) -> Self {
        BitSet {
            words: vec![0; bits.div_ceil(64)],
            touched: Vec::new(),
        }
    }
    fn contains(&self, k: usize) -> bool {
        (self.words[k >> 6] >> (k & 63)) & 1 == 1
    }
    /// Insert; true if newly inserted.
    fn insert(&mut self, k: usize) -> bool {
        let (w, b) = (k >> 6, 1u64 << (k & 63));
        if self.words[w] & b != 0 {
            return false;
        }
        self.words[w] |= b;
        self.touched.push(w);
        true
    }
    fn clear(&mut self) {
        for &w in &self.touched {
            self.words[w] = 0;
        }
        self.touched.clear();
    }
}

/// `U[h1,h2] = |S⁺ \ S⁻|` for every head pair (row-major [heads, heads]).
pub fn unique_pair_counts(t: &CodeTable) -> Result<Vec<usize>> {
    check_table(t)?;
    let (hn, nc) = (t.heads, t.n_codes.max(1));
    let mut u = vec![0usize; hn * hn];
    let space = nc.checked_mul(nc).filter(|&s| s <= BITSET_MAX_CODES);
    let pos: Vec<usize> = (0..t.examples).filter(|&e| t.is_pos[e]).collect();
    let neg: Vec<usize> = (0..t.examples).filter(|&e| !t.is_pos[e]).collect();
    match space {
        Some(bits) => {
            let mut negs = BitSet::new(bits);
            let mut seen = BitSet::new(bits);
            for h1 in 0..hn {
                for h2 in h1 + 1..hn {
                    let key = |e: usize| t.code(e, h1) as usize * nc + t.code(e, h2) as usize;
                    for &e in &neg {
                        negs.insert(key(e));
                    }
                    let mut count = 0;
                    for &e in &pos {
                        let k = key(e);
                        if !negs.contains(k) && seen.insert(k) {
                            count += 1;
                        }
                    }
                    negs.clear();
                    seen.clear();
                    u[h1 * hn + h2] = count;
                    u[h2 * hn + h1] = count;
                }
            }
        }
        None => {
            let (mut ps, mut ns) = (Vec::new(), Vec::new());
            for h1 in 0..hn {
                for h2 in h1 + 1..hn {
                    let key = |e: usize| t.code(e, h1) as u64 * nc as u64 + t.code(e, h2) as u64;
                    ps.clear();
                    ns.clear();
                    ps.extend(pos.iter().map(|&e| key(e)));
                    ns.extend(neg.iter().map(|&e| key(e)));
                    ps.sort_unstable();
                    ps.dedup();
                    ns.sort_unstable();
                    let count = ps.iter().filter(|k| ns.binary_search(k).is_err()).count();
                    u[h1 * hn + h2] = count;
                    u[h2 * hn + h1] = count;
                }
            }
        }
    }
    Ok(u)
}

/// Per-head counts among the first `k` entries of the ranked endpoint list built from `u`
/// [heads, heads] (see the module doc for ranking and tie-break). `k` is clamped to 2·H².
pub fn top_pair_counts(u: &[usize], heads: usize, k: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..heads * heads).collect();
    order.sort_by(|&a, &b| u[b].cmp(&u[a])); // stable: ties keep ascending pair index
    let mut counts = vec![0usize; heads];
    let take = k.min(2 * heads * heads);
    for i in 0..take {
        let p = order[i / 2];
        let h = if i % 2 == 0 { p / heads } else { p % heads };
        counts[h] += 1;
    }
    counts
}

/// The paper's edge score; `k = None` uses `H²/2` list entries.
pub fn edge_scores(t: &CodeTable, k: Option<usize>) -> Result<EdgeScores> {
    edge_scores_from_u(unique_pair_counts(t)?, t.heads, k)
}

/// Steps 2–3 on a pair matrix `U` [heads, heads] computed elsewhere (the GPU's
/// `edge_overlap_counts`, which the self-test holds exactly equal to [`unique_pair_counts`]).
pub fn edge_scores_from_u(u: Vec<usize>, heads: usize, k: Option<usize>) -> Result<EdgeScores> {
    if heads == 0 || u.len() != heads * heads {
        return Err(crate::error::Error::shape(
            "edge pair matrix U [heads, heads]",
            heads * heads,
            u.len(),
        ));
    }
    let hn = heads;
    let k = k.unwrap_or(hn * hn / 2);
    let counts = top_pair_counts(&u, hn, k);
    Ok(EdgeScores {
        u,
        k,
        score: counts.iter().map(|&c| c as f64).collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> CodeTable {
        // 3 heads; positives 0..3, negatives 3..5.
        let codes = vec![
            0, 1, 2, //
            0, 2, 2, //
            1, 1, 3, //
            0, 1, 9, //
            1, 1, 9,
        ];
        CodeTable::new(codes, 5, 3, 10, vec![true, true, true, false, false]).unwrap()
    }

    #[test]
    fn scores_from_u_equal_scores_from_codes() {
        let t = table();
        let u = unique_pair_counts(&t).unwrap();
        assert_eq!(
            edge_scores_from_u(u.clone(), 3, None).unwrap(),
            edge_scores(&t, None).unwrap()
        );
        assert!(edge_scores_from_u(u, 4, None).is_err());
        assert!(edge_scores_from_u(vec![], 0, None).is_err());
    }

    #[test]
    fn u_matches_hand_count() {
        // (0,1): S+={(0,1),(0,2),(1,1)} S-={(0,1),(1,1)} -> 1
        // (0,2): S+={(0,2),(1,3)}       S-={(0,9),(1,9)} -> 2
        // (1,2): S+={(1,2),(2,2),(1,3)} S-={(1,9)}       -> 3
        let u = unique_pair_counts(&table()).unwrap();
        assert_eq!(u, vec![0, 1, 2, 1, 0, 3, 2, 3, 0]);
    }

    #[test]
    fn sorted_fallback_agrees_with_bitsets() {
        let t = table();
        let mut big = t.clone();
        big.n_codes = 1 << 13; // n² = 2^26 > BITSET_MAX_CODES
        assert_eq!(
            unique_pair_counts(&t).unwrap(),
            unique_pair_counts(&big).unwrap()
        );
    }

    #[test]
    fn top_pair_counting_and_tie_break() {
        let t = table();
        // Ranked pairs: U=3: p=5 (1,2), p=7 (2,1); U=2: p=2 (0,2), p=6 (2,0);
        // U=1: p=1, p=3; U=0: p=0,4,8.  List: 1,2,2,1,0,2,2,0,0,1,1,0,0,0,1,1,2,2.
        // k = 9/2 = 4 -> entries 1,2,2,1 -> counts [0,2,2].
        let s = edge_scores(&t, None).unwrap();
        assert_eq!(s.k, 4);
        assert_eq!(s.score, vec![0.0, 2.0, 2.0]);
        let s = edge_scores(&t, Some(7)).unwrap(); // + 0,2,2
        assert_eq!(s.score, vec![1.0, 2.0, 4.0]);
        // Clamped: the whole list counts every head 2H times.
        let s = edge_scores(&t, Some(1000)).unwrap();
        assert_eq!(s.score, vec![6.0, 6.0, 6.0]);
    }
}
