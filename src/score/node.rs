//! Node (per-head) code-overlap scores (notes/paper.md §4.1).
//!
//! For head h: `P_h` = set of codes over positive examples, `N_h` = over negatives.
//! - unique (paper default, `normalise=False`): `|P_h \ N_h|`
//! - normalised (`normalise=True` ablation): `|P_h \ N_h| / |P_h ∪ N_h|` (0 when both empty)
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
