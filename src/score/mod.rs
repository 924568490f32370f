//! Per-head scores: the paper's code-overlap scores (node and edge, notes/paper.md §4) and
//! baselines that need no SAE. Every scorer yields a [`Scores`] grid [layers, heads] in
//! layer-major order (head index `i` ↔ `L{i / heads}H{i % heads}`), the order of
//! TransformerLens' `stack_head_results`.
//!
//! Higher score = more likely in the circuit. No softmax is applied: the paper's softmax is
//! monotone, so it does not change the ROC (and it overflows on large head counts).
pub mod baseline;
pub mod edge;
pub mod node;

pub use edge::{edge_scores, edge_scores_from_u, top_pair_counts, unique_pair_counts, EdgeScores};
pub use node::{mutual_information, node_scores, NodeScores};

use crate::codes::CodeTable;
use crate::error::{Error, Result};

/// One score per head on a [layers, heads] grid.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Scores {
    /// Which scorer produced it (e.g. "node", "edge", "class_mean").
    pub method: String,
    pub layers: usize,
    pub heads: usize,
    /// [layers, heads], layer-major.
    pub values: Vec<f64>,
}

impl Scores {
    pub fn new(
        method: impl Into<String>,
        layers: usize,
        heads: usize,
        values: Vec<f64>,
    ) -> Result<Self> {
        if values.len() != layers * heads {
            return Err(Error::shape(
                "score grid",
                format!("{layers}×{heads}"),
                values.len(),
            ));
        }
        Ok(Scores {
            method: method.into(),
            layers,
            heads,
            values,
        })
    }

    /// Score of head `h` of layer `l`.
    pub fn get(&self, l: usize, h: usize) -> f64 {
        self.values[l * self.heads + h]
    }

    /// Label of flat index i: `L{l}H{h}`.
    pub fn label(&self, i: usize) -> String {
        format!("L{}H{}", i / self.heads.max(1), i % self.heads.max(1))
    }

    /// All labels in value order.
    pub fn labels(&self) -> Vec<String> {
        (0..self.values.len()).map(|i| self.label(i)).collect()
    }
}

/// What a scorer may read. Code-based scorers need `codes`; activation baselines need
/// `activations`; labels come from whichever is given (they must agree if both are).
#[derive(Debug, Clone, Copy, Default)]
pub struct ScoreInputs<'a> {
    pub codes: Option<&'a CodeTable>,
    /// Hooked vectors `x` [examples, heads_total, d] with `d`.
    pub activations: Option<(&'a [f32], usize)>,
    /// Per example: positive?
    pub is_pos: Option<&'a [bool]>,
}

/// The available scorers. Add a variant (and a match arm in [`ScoreMethod::score`]) for a
/// new one; everything downstream only sees [`Scores`].
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub enum ScoreMethod {
    /// `|P_h \ N_h|` (the paper's default) or, with `normalise`, `/ |P_h ∪ N_h|`.
    Node { normalise: bool },
    /// Mutual information between a head's code and the class.
    MutualInformation,
    /// Top-pair counting over `U`; `k = None` means `H²/2` list entries.
    Edge { k: Option<usize> },
    /// `‖mean_pos − mean_neg‖` of the hooked vectors.
    ClassMeanDistance,
    /// Mean `‖x‖` of the hooked vectors.
    MeanNorm,
    /// Seeded uniform noise: the chance baseline.
    Random { seed: u64 },
}

impl ScoreMethod {
    /// Short name used in [`Scores::method`] and reports.
    pub fn name(&self) -> &'static str {
        match self {
            ScoreMethod::Node { normalise: false } => "node",
            ScoreMethod::Node { normalise: true } => "node_normalised",
            ScoreMethod::MutualInformation => "node_mutual_information",
            ScoreMethod::Edge { .. } => "edge",
            ScoreMethod::ClassMeanDistance => "class_mean_distance",
            ScoreMethod::MeanNorm => "mean_norm",
            ScoreMethod::Random { .. } => "random",
        }
    }

    /// Score the `layers · heads` heads.
    pub fn score(&self, inp: &ScoreInputs<'_>, layers: usize, heads: usize) -> Result<Scores> {
        let total = layers * heads;
        let codes = || -> Result<&CodeTable> {
            let t = inp.codes.ok_or_else(|| {
                Error::InvalidInput(format!("scorer `{}` needs a code table", self.name()))
            })?;
            if t.heads != total {
                return Err(Error::shape("code table heads", total, t.heads));
            }
            Ok(t)
        };
        let acts = || -> Result<(&[f32], usize, &[bool], usize)> {
            let (x, d) = inp.activations.ok_or_else(|| {
                Error::InvalidInput(format!("scorer `{}` needs hooked activations", self.name()))
            })?;
            let is_pos = inp
                .is_pos
                .or(inp.codes.map(|t| t.is_pos.as_slice()))
                .ok_or_else(|| Error::InvalidInput("example labels are missing".into()))?;
            Ok((x, d, is_pos, is_pos.len()))
        };
        let values = match self {
            ScoreMethod::Node { normalise } => node_scores(codes()?, *normalise)?.score,
            ScoreMethod::MutualInformation => mutual_information(codes()?)?,
            ScoreMethod::Edge { k } => edge_scores(codes()?, *k)?.score,
            ScoreMethod::ClassMeanDistance => {
                let (x, d, y, ex) = acts()?;
                baseline::class_mean_distance(x, ex, total, d, y)?
            }
            ScoreMethod::MeanNorm => {
                let (x, d, y, ex) = acts()?;
                baseline::mean_norm(x, ex, total, d, y)?
            }
            ScoreMethod::Random { seed } => {
                if total == 0 {
                    return Err(Error::InvalidInput("no heads to score".into()));
                }
                baseline::random_scores(total, *seed)
            }
        };
        Scores::new(self.name(), layers, heads, values)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_are_layer_major() {
        let s = Scores::new("x", 2, 3, (0..6).map(|v| v as f64).collect()).unwrap();
        assert_eq!(
            s.labels(),
            vec!["L0H0", "L0H1", "L0H2", "L1H0", "L1H1", "L1H2"]
        );
        assert_eq!(s.get(1, 2), 5.0);
        assert!(Scores::new("x", 2, 3, vec![0.0; 5]).is_err());
    }

    #[test]
    fn scorer_dispatch_and_missing_inputs() {
        let t = CodeTable::new(vec![0, 1, 2, 2], 2, 2, 3, vec![true, false]).unwrap();
        let inp = ScoreInputs {
            codes: Some(&t),
            ..Default::default()
        };
        let s = ScoreMethod::Node { normalise: false }
            .score(&inp, 1, 2)
            .unwrap();
        assert_eq!(s.values, vec![1.0, 1.0]);
        assert_eq!(s.method, "node");
        let s = ScoreMethod::MutualInformation.score(&inp, 1, 2).unwrap();
        assert_eq!(s.values, vec![2f64.ln(); 2]);
        assert_eq!(s.method, "node_mutual_information");
        assert!(ScoreMethod::MeanNorm.score(&inp, 1, 2).is_err());
        assert!(ScoreMethod::Node { normalise: false }
            .score(&inp, 1, 3)
            .is_err());
        let x = [1.0f32, 0.0, 0.0, 0.0];
        let inp = ScoreInputs {
            codes: Some(&t),
            activations: Some((&x, 1)),
            is_pos: None,
        };
        let s = ScoreMethod::ClassMeanDistance.score(&inp, 1, 2).unwrap();
        assert_eq!(s.values, vec![1.0, 0.0]);
        let r = ScoreMethod::Random { seed: 3 }
            .score(&ScoreInputs::default(), 2, 2)
            .unwrap();
        assert_eq!(r.values.len(), 4);
    }
}
