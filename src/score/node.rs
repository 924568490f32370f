//! Node (per-head) code-overlap scores (notes/paper.md §4.1).
//!
//! For head h: `P_h` = set of codes over positive examples, `N_h` = over negatives.
//! - unique (paper default, `normalise=False`): `|P_h \ N_h|`
//! - normalised (`normalise=True` ablation): `|P_h \ N_h| / |P_h ∪ N_h|` (0 when both empty)
//!
//! - mutual information (ours, not the paper's): `I(code; class)` of the head's code
//!   histograms, which weighs how often a code occurs where the overlap counts only ask
//!   whether it occurs
//!
//! Sets are sorted, deduplicated vectors of codes (any `n_codes`, including top-k codes).
use crate::codes::CodeTable;
use crate::error::{Error, Result};

/// Per-head overlap counts and the chosen score.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NodeScores {
    /// The score per head (unique or normalised).
    pub score: Vec<f64>,
    /// `|P_h \ N_h|` per head.
    pub n_unique_pos: Vec<usize>,
    /// `|N_h \ P_h|` per head (computed but unused by the paper).
    pub n_unique_neg: Vec<usize>,
    /// `|P_h ∪ N_h|` per head.
    pub n_union: Vec<usize>,
}

/// Largest code space handled with bitsets (bits); above it, sorted vectors.
pub(crate) const BITSET_MAX_CODES: usize = 1 << 24;

/// Set sizes of one head's positive and negative codes: (|P\N|, |N\P|, |P∪N|).
fn head_counts(pos: &mut Vec<u64>, neg: &mut Vec<u64>) -> (usize, usize, usize) {
    pos.sort_unstable();
    pos.dedup();
    neg.sort_unstable();
    neg.dedup();
    let (mut i, mut j, mut both) = (0, 0, 0);
    while i < pos.len() && j < neg.len() {
        match pos[i].cmp(&neg[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                both += 1;
                i += 1;
                j += 1;
            }
        }
    }
    (
        pos.len() - both,
        neg.len() - both,
        pos.len() + neg.len() - both,
    )
}

/// Overlap scores of every head; `normalise` picks the Jaccard-like variant.
pub fn node_scores(t: &CodeTable, normalise: bool) -> Result<NodeScores> {
    check_table(t)?;
    let h_n = t.heads;
    let mut out = NodeScores {
        score: Vec::with_capacity(h_n),
        n_unique_pos: Vec::with_capacity(h_n),
        n_unique_neg: Vec::with_capacity(h_n),
        n_union: Vec::with_capacity(h_n),
    };
    let (mut pos, mut neg) = (Vec::new(), Vec::new());
    for h in 0..h_n {
        pos.clear();
        neg.clear();
        for e in 0..t.examples {
            let c = t.code(e, h) as u64;
            if t.is_pos[e] {
                pos.push(c);
            } else {
                neg.push(c);
            }
        }
        let (up, un, union) = head_counts(&mut pos, &mut neg);
        let s = if normalise {
            if union == 0 {
                0.0
            } else {
                up as f64 / union as f64
            }
        } else {
            up as f64
        };
        out.score.push(s);
        out.n_unique_pos.push(up);
        out.n_unique_neg.push(un);
        out.n_union.push(union);
    }
    Ok(out)
}

/// Mutual information (nats) between a head's code and the example's class, per head:
/// `Σ_{c,y} p(c,y) ln(p(c,y) / (p(c) p(y)))` with plug-in frequencies. It is 0 when the
/// code says nothing about the class and at most the class entropy (ln 2 for balanced
/// classes, reached when no code occurs in both). With one class only every head scores 0.
/// Terms are summed in ascending code order, so the result is reproducible bit for bit.
pub fn mutual_information(t: &CodeTable) -> Result<Vec<f64>> {
    check_table(t)?;
    let (n_pos, n_neg) = t.class_counts();
    if n_pos == 0 || n_neg == 0 {
        return Ok(vec![0.0; t.heads]);
    }
    let n = t.examples as f64;
    let (py, ny) = (n_pos as f64 / n, n_neg as f64 / n);
    let mut pairs: Vec<(u32, bool)> = Vec::with_capacity(t.examples);
    let mut out = Vec::with_capacity(t.heads);
    for h in 0..t.heads {
        pairs.clear();
        pairs.extend((0..t.examples).map(|e| (t.code(e, h), t.is_pos[e])));
        pairs.sort_unstable();
        let mut mi = 0.0f64;
        let mut i = 0;
        while i < pairs.len() {
            let c = pairs[i].0;
            let (mut cp, mut cn) = (0usize, 0usize);
            while i < pairs.len() && pairs[i].0 == c {
                if pairs[i].1 {
                    cp += 1;
                } else {
                    cn += 1;
                }
                i += 1;
            }
            let pc = (cp + cn) as f64 / n;
            for (k, p_y) in [(cp, py), (cn, ny)] {
                if k > 0 {
                    let pj = k as f64 / n;
                    mi += pj * (pj / (pc * p_y)).ln();
                }
            }
        }
        // Rounding can leave -1e-17 for an uninformative head.
        out.push(mi.max(0.0));
    }
    Ok(out)
}

/// A table the scorers can use: consistent shape, at least one head and one example.
pub(crate) fn check_table(t: &CodeTable) -> Result<()> {
    if t.heads == 0 || t.examples == 0 {
        return Err(Error::InvalidInput(format!(
            "empty code table ({} examples, {} heads)",
            t.examples, t.heads
        )));
    }
    if t.codes.len() != t.examples * t.heads {
        return Err(Error::shape(
            "code table",
            format!("{}×{}", t.examples, t.heads),
            t.codes.len(),
        ));
    }
    if t.is_pos.len() != t.examples {
        return Err(Error::shape(
            "code table labels",
            t.examples,
            t.is_pos.len(),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_made_table() {
        // 3 positives, 2 negatives, 3 heads.
        // head 0: P={0,1,2} N={1}     -> |P\N|=2 |N\P|=0 |P∪N|=3
        // head 1: P={5}     N={5,6}   -> 0, 1, 2
        // head 2: P={3,4}   N={7,8}   -> 2, 2, 4
        let codes = vec![
            0, 5, 3, //
            1, 5, 4, //
            2, 5, 3, //
            1, 5, 7, //
            1, 6, 8,
        ];
        let t = CodeTable::new(codes, 5, 3, 10, vec![true, true, true, false, false]).unwrap();
        let s = node_scores(&t, false).unwrap();
        assert_eq!(s.score, vec![2.0, 0.0, 2.0]);
        assert_eq!(s.n_unique_pos, vec![2, 0, 2]);
        assert_eq!(s.n_unique_neg, vec![0, 1, 2]);
        assert_eq!(s.n_union, vec![3, 2, 4]);
        let s = node_scores(&t, true).unwrap();
        assert_eq!(s.score, vec![2.0 / 3.0, 0.0, 0.5]);
    }

    #[test]
    fn mutual_information_by_hand() {
        // 2 positives, 2 negatives.
        // head 0: codes separate the classes    -> ln 2
        // head 1: one code everywhere           -> 0
        // head 2: same histogram in both classes -> 0
        // head 3: P={0,0} N={0,1}: p(0,+)=1/2, p(0,-)=p(1,-)=1/4, p(0)=3/4, p(1)=1/4
        //         -> 1/2 ln(4/3) + 1/4 ln(2/3) + 1/4 ln 2
        let codes = vec![
            0, 7, 1, 0, //
            1, 7, 2, 0, //
            2, 7, 1, 0, //
            3, 7, 2, 1,
        ];
        let t = CodeTable::new(codes, 4, 4, 8, vec![true, true, false, false]).unwrap();
        let mi = mutual_information(&t).unwrap();
        let want3 = 0.5 * (4.0f64 / 3.0).ln() + 0.25 * (2.0f64 / 3.0).ln() + 0.25 * 2f64.ln();
        let want = [2f64.ln(), 0.0, 0.0, want3];
        for (h, (g, w)) in mi.iter().zip(want).enumerate() {
            assert!((g - w).abs() < 1e-12, "head {h}: {g} vs {w}");
        }
        // The overlap count cannot tell head 3 (one shared code) from a head whose
        // positives and negatives share nothing; MI ranks them apart.
        assert!(mi[0] > mi[3] && mi[3] > mi[2]);
        // Unbalanced classes: the maximum is the class entropy.
        let t = CodeTable::new(vec![0, 0, 1], 3, 1, 2, vec![true, true, false]).unwrap();
        let h = -(2.0f64 / 3.0) * (2.0f64 / 3.0).ln() - (1.0f64 / 3.0) * (1.0f64 / 3.0).ln();
        assert!((mutual_information(&t).unwrap()[0] - h).abs() < 1e-12);
        // One class only, and an empty table.
        let t = CodeTable::new(vec![0, 1, 2], 3, 1, 3, vec![true; 3]).unwrap();
        assert_eq!(mutual_information(&t).unwrap(), vec![0.0]);
        let t = CodeTable::new(vec![], 0, 2, 3, vec![]).unwrap();
        assert!(mutual_information(&t).is_err());
    }

    #[test]
    fn one_class_only_and_empty() {
        let t = CodeTable::new(vec![0, 1, 2], 3, 1, 3, vec![true; 3]).unwrap();
        assert_eq!(node_scores(&t, false).unwrap().score, vec![3.0]);
        let t = CodeTable::new(vec![0, 1, 2], 3, 1, 3, vec![false; 3]).unwrap();
        let s = node_scores(&t, true).unwrap();
        assert_eq!((s.score[0], s.n_unique_neg[0]), (0.0, 3));
        let t = CodeTable::new(vec![], 0, 2, 3, vec![]).unwrap();
        assert!(node_scores(&t, false).is_err());
    }
}
