//! ROC analysis of head scores against a ground-truth circuit (notes/paper.md §4.3).
//!
//! - [`roc_curve`] is scikit-learn's `roc_curve(y_true, y_score, drop_intermediate=…)`:
//!   points at each distinct score, highest first, preceded by (0, 0) with threshold +∞.
//! - [`auc`] is `sklearn.metrics.auc` (trapezoid over the curve); it equals
//!   [`auc_mann_whitney`] (pairs with ½ credit for ties).
//! - The paper's "F1" is the harmonic mean of TPR and TNR, `2·TPR·(1−FPR)/(TPR+1−FPR)`,
//!   maximised over the curve's points ([`f1_tpr_tnr`]). True precision/recall F1 is also
//!   given at k = |circuit| and at the thresholds ([`evaluate`]).
//!
//! Labels must contain both classes (the ROC is undefined otherwise), scores must not be NaN.
use crate::error::{Error, Result};

/// An ROC curve; all three vectors have the same length, thresholds decreasing.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct RocCurve {
    pub fpr: Vec<f64>,
    pub tpr: Vec<f64>,
    /// `thresholds[0] = +∞`; point i counts `score >= thresholds[i]` as predicted positive.
    pub thresholds: Vec<f64>,
}

fn check(scores: &[f64], labels: &[bool]) -> Result<(usize, usize)> {
    if scores.len() != labels.len() {
        return Err(Error::shape("ROC labels", scores.len(), labels.len()));
    }
    if scores.iter().any(|s| s.is_nan()) {
        return Err(Error::InvalidInput("ROC scores contain NaN".into()));
    }
    let p = labels.iter().filter(|&&l| l).count();
    let n = labels.len() - p;
    if p == 0 || n == 0 {
        return Err(Error::InvalidInput(format!(
            "ROC needs both classes (got {p} positive, {n} negative labels)"
        )));
    }
    Ok((p, n))
}

/// Indices sorted by score descending (ties by index, immaterial to every output).
fn order_desc(scores: &[f64]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[b].total_cmp(&scores[a]));
    idx
}

/// scikit-learn's `roc_curve`. With `drop_intermediate` (sklearn's default) points where
/// both the FP and TP count sequences have zero second difference are dropped.
pub fn roc_curve(scores: &[f64], labels: &[bool], drop_intermediate: bool) -> Result<RocCurve> {
    let (p, n) = check(scores, labels)?;
    let idx = order_desc(scores);
    let (mut tps, mut fps, mut thr) = (Vec::new(), Vec::new(), Vec::new());
    let mut tp = 0usize;
    for (i, &j) in idx.iter().enumerate() {
        tp += labels[j] as usize;
        let last_of_value = i + 1 == idx.len() || scores[idx[i + 1]] != scores[j];
        if last_of_value {
            tps.push(tp as f64);
            fps.push((i + 1 - tp) as f64);
            thr.push(scores[j]);
        }
    }
    if drop_intermediate && fps.len() > 2 {
        let keep: Vec<usize> = (0..fps.len())
            .filter(|&i| {
                i == 0
                    || i + 1 == fps.len()
                    || fps[i + 1] - 2.0 * fps[i] + fps[i - 1] != 0.0
                    || tps[i + 1] - 2.0 * tps[i] + tps[i - 1] != 0.0
            })
            .collect();
        tps = keep.iter().map(|&i| tps[i]).collect();
        fps = keep.iter().map(|&i| fps[i]).collect();
        thr = keep.iter().map(|&i| thr[i]).collect();
    }
    let mut curve = RocCurve {
        fpr: vec![0.0],
        tpr: vec![0.0],
        thresholds: vec![f64::INFINITY],
    };
    curve.fpr.extend(fps.iter().map(|f| f / n as f64));
    curve.tpr.extend(tps.iter().map(|t| t / p as f64));
    curve.thresholds.extend(thr);
    Ok(curve)
}

/// Area under a curve by the trapezoid rule (`sklearn.metrics.auc`, increasing x).
pub fn auc_of(curve: &RocCurve) -> f64 {
    curve
        .fpr
        .windows(2)
        .zip(curve.tpr.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0)
        .sum()
}

/// ROC AUC = `auc(roc_curve(...))`.
pub fn auc(scores: &[f64], labels: &[bool]) -> Result<f64> {
    Ok(auc_of(&roc_curve(scores, labels, false)?))
}

/// ROC AUC as the Mann–Whitney statistic: P(score_pos > score_neg) + ½ P(equal), via
/// average ranks.
pub fn auc_mann_whitney(scores: &[f64], labels: &[bool]) -> Result<f64> {
    let (p, n) = check(scores, labels)?;
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| scores[a].total_cmp(&scores[b]));
    let mut rank_sum_pos = 0.0f64;
    let mut i = 0;
    while i < idx.len() {
        let mut j = i;
        while j + 1 < idx.len() && scores[idx[j + 1]] == scores[idx[i]] {
            j += 1;
        }
        let avg_rank = (i + j) as f64 / 2.0 + 1.0; // ranks are 1-based
        for &k in &idx[i..=j] {
            if labels[k] {
                rank_sum_pos += avg_rank;
            }
        }
        i = j + 1;
    }
    let (p, n) = (p as f64, n as f64);
    Ok((rank_sum_pos - p * (p + 1.0) / 2.0) / (p * n))
}

/// The paper's "F1" at one point: harmonic mean of TPR and TNR (0 when both are 0).
pub fn tpr_tnr_f1(tpr: f64, fpr: f64) -> f64 {
    let tnr = 1.0 - fpr;
    if tpr + tnr == 0.0 {
        0.0
    } else {
        2.0 * tpr * tnr / (tpr + tnr)
    }
}

/// Max of the paper's "F1" over the curve's points and the index of the first maximum.
pub fn f1_tpr_tnr(curve: &RocCurve) -> (f64, usize) {
    let mut best = (f64::NEG_INFINITY, 0);
    for (i, (&t, &f)) in curve.tpr.iter().zip(&curve.fpr).enumerate() {
        let v = tpr_tnr_f1(t, f);
        if v > best.0 {
            best = (v, i);
        }
    }
    best
}

/// Confusion counts and precision/recall/F1 for one prediction.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct PrecisionRecall {
    pub tp: usize,
    pub fp: usize,
    pub fn_: usize,
    /// tp/(tp+fp); 0 when nothing is predicted (sklearn's zero_division=0).
    pub precision: f64,
    pub recall: f64,
    /// 2PR/(P+R); 0 when P+R = 0.
    pub f1: f64,
}

impl PrecisionRecall {
    /// From a predicted mask and the truth.
    pub fn from_mask(pred: &[bool], labels: &[bool]) -> Result<Self> {
        if pred.len() != labels.len() {
            return Err(Error::shape("prediction mask", labels.len(), pred.len()));
        }
        let (mut tp, mut fp, mut fn_) = (0, 0, 0);
        for (&p, &l) in pred.iter().zip(labels) {
            match (p, l) {
                (true, true) => tp += 1,
                (true, false) => fp += 1,
                (false, true) => fn_ += 1,
                _ => {}
            }
        }
        let ratio = |a: usize, b: usize| if b == 0 { 0.0 } else { a as f64 / b as f64 };
        let precision = ratio(tp, tp + fp);
        let recall = ratio(tp, tp + fn_);
        let f1 = if precision + recall == 0.0 {
            0.0
        } else {
            2.0 * precision * recall / (precision + recall)
        };
        Ok(PrecisionRecall {
            tp,
            fp,
            fn_,
            precision,
            recall,
            f1,
        })
    }
}

/// Predict the `k` highest-scoring heads (ties: lower index first).
pub fn top_k_mask(scores: &[f64], k: usize) -> Vec<bool> {
    let mut mask = vec![false; scores.len()];
    for &i in order_desc(scores).iter().take(k) {
        mask[i] = true;
    }
    mask
}

/// Predict every head with `score >= threshold`.
pub fn threshold_mask(scores: &[f64], threshold: f64) -> Vec<bool> {
    scores.iter().map(|&s| s >= threshold).collect()
}

/// Everything the reports need about one score vector against one circuit.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CircuitEval {
    pub auc: f64,
    /// Max over ROC points of the paper's TPR/TNR "F1" (curve with sklearn's default
    /// `drop_intermediate=True`, as the paper's code).
    pub f1_tpr_tnr: f64,
    /// Threshold of that maximum (first one on ties).
    pub best_threshold: f64,
    /// True precision/recall/F1 of the top-|circuit| heads.
    pub at_k: PrecisionRecall,
    /// True precision/recall/F1 at `best_threshold`.
    pub at_best_threshold: PrecisionRecall,
    /// Max true F1 over all ROC thresholds (its precision/recall).
    pub best_f1: PrecisionRecall,
}

/// AUC, both F1 notions and precision/recall of `scores` against the circuit `labels`.
pub fn evaluate(scores: &[f64], labels: &[bool]) -> Result<CircuitEval> {
    let curve = roc_curve(scores, labels, true)?;
    let auc = auc_of(&curve);
    let (f1, i) = f1_tpr_tnr(&curve);
    let best_threshold = curve.thresholds[i];
    let k = labels.iter().filter(|&&l| l).count();
    let at_k = PrecisionRecall::from_mask(&top_k_mask(scores, k), labels)?;
    let at_best_threshold =
        PrecisionRecall::from_mask(&threshold_mask(scores, best_threshold), labels)?;
    let full = roc_curve(scores, labels, false)?;
    let mut best_f1 = PrecisionRecall::from_mask(&vec![false; scores.len()], labels)?;
    for &t in &full.thresholds[1..] {
        let pr = PrecisionRecall::from_mask(&threshold_mask(scores, t), labels)?;
        if pr.f1 > best_f1.f1 {
            best_f1 = pr;
        }
    }
    Ok(CircuitEval {
        auc,
        f1_tpr_tnr: f1,
        best_threshold,
        at_k,
        at_best_threshold,
        best_f1,
    })
}

/// Mean and population standard deviation (`np.std`, ddof = 0) over trials.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct MeanStd {
    pub mean: f64,
    pub std: f64,
}

/// Mean ± population std of `values` (error when empty).
pub fn mean_std(values: &[f64]) -> Result<MeanStd> {
    if values.is_empty() {
        return Err(Error::InvalidInput("mean ± std of no values".into()));
    }
    let n = values.len() as f64;
    let mean = values.iter().sum::<f64>() / n;
    let var = values.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / n;
    Ok(MeanStd {
        mean,
        std: var.sqrt(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_reversed_and_tied() {
        let y = [true, true, false, false, false];
        assert_eq!(auc(&[5.0, 4.0, 3.0, 2.0, 1.0], &y).unwrap(), 1.0);
        assert_eq!(auc(&[1.0, 2.0, 3.0, 4.0, 5.0], &y).unwrap(), 0.0);
        assert_eq!(auc(&[7.0; 5], &y).unwrap(), 0.5);
        assert_eq!(auc_mann_whitney(&[7.0; 5], &y).unwrap(), 0.5);
    }

    #[test]
    fn hand_computed_case_matches_sklearn() {
        // sklearn: roc_curve([1,0,1,0,1,0], [0.9,0.8,0.8,0.3,0.3,0.1], drop_intermediate=False)
        // -> thresholds [inf, .9, .8, .3, .1], tpr [0, 1/3, 2/3, 1, 1], fpr [0, 0, 1/3, 2/3, 1]
        // AUC: pos scores {.9,.8,.3} vs neg {.8,.3,.1}: wins .9:3, .8:1+½, .3:½+1 -> 7/9.
        let s = [0.9, 0.8, 0.8, 0.3, 0.3, 0.1];
        let y = [true, false, true, false, true, false];
        let c = roc_curve(&s, &y, false).unwrap();
        assert_eq!(c.thresholds[0], f64::INFINITY);
        assert_eq!(&c.thresholds[1..], &[0.9, 0.8, 0.3, 0.1]);
        let third = 1.0 / 3.0;
        let close = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-12);
        assert!(close(&c.tpr, &[0.0, third, 2.0 * third, 1.0, 1.0]));
        assert!(close(&c.fpr, &[0.0, 0.0, third, 2.0 * third, 1.0]));
        assert!((auc(&s, &y).unwrap() - 7.0 / 9.0).abs() < 1e-12);
        assert!((auc_mann_whitney(&s, &y).unwrap() - 7.0 / 9.0).abs() < 1e-12);
        // Paper F1 per point: 0, .5, 2/3·… max at (tpr 2/3, fpr 1/3): 2·(2/3)(2/3)/(4/3)=2/3;
        // at (1/3, 0): 2·(1/3)/(4/3) = 0.5; at (1, 2/3): 2·(1/3)/(4/3) = 0.5.
        let (f1, i) = f1_tpr_tnr(&c);
        assert!((f1 - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(c.thresholds[i], 0.8);
    }

    #[test]
    fn drop_intermediate_matches_sklearn() {
        // sklearn: roc_curve([1,1,1,0,0,0],[6,5,4,3,2,1]) (default drop_intermediate=True)
        // -> thresholds [inf, 6, 4, 1], fpr [0, 0, 0, 1], tpr [0, 1/3, 1, 1]
        let s = [6.0, 5.0, 4.0, 3.0, 2.0, 1.0];
        let y = [true, true, true, false, false, false];
        let c = roc_curve(&s, &y, true).unwrap();
        assert_eq!(c.thresholds, vec![f64::INFINITY, 6.0, 4.0, 1.0]);
        assert_eq!(c.tpr, vec![0.0, 1.0 / 3.0, 1.0, 1.0]);
        assert_eq!(c.fpr, vec![0.0, 0.0, 0.0, 1.0]);
        assert_eq!(auc_of(&c), 1.0);
    }

    #[test]
    fn auc_forms_agree_on_random_ties() {
        let mut state = 12345u64;
        let mut next = || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as usize
        };
        for _ in 0..50 {
            let len = 2 + next() % 40;
            let s: Vec<f64> = (0..len).map(|_| (next() % 7) as f64).collect();
            let mut y: Vec<bool> = (0..len).map(|_| next() % 3 == 0).collect();
            y[0] = true;
            y[1] = false;
            let a = auc(&s, &y).unwrap();
            let b = auc_mann_whitney(&s, &y).unwrap();
            let c = auc_of(&roc_curve(&s, &y, true).unwrap());
            assert!(
                (a - b).abs() < 1e-12 && (a - c).abs() < 1e-12,
                "{a} {b} {c}"
            );
        }
    }

    #[test]
    fn one_class_and_bad_inputs_are_errors() {
        assert!(auc(&[1.0, 2.0], &[true, true]).is_err());
        assert!(auc(&[1.0, 2.0], &[false, false]).is_err());
        assert!(auc(&[1.0], &[true, false]).is_err());
        assert!(auc(&[f64::NAN, 1.0], &[true, false]).is_err());
        assert!(evaluate(&[], &[]).is_err());
        assert!(mean_std(&[]).is_err());
    }

    #[test]
    fn precision_recall_at_k_and_threshold() {
        // Circuit = heads 0, 2, 4 (k = 3). Top-3 by score: 0 (.9), 1 (.8), 2 (.7).
        let s = [0.9, 0.8, 0.7, 0.1, 0.6];
        let y = [true, false, true, false, true];
        let e = evaluate(&s, &y).unwrap();
        assert_eq!((e.at_k.tp, e.at_k.fp, e.at_k.fn_), (2, 1, 1));
        assert!((e.at_k.precision - 2.0 / 3.0).abs() < 1e-12);
        assert!((e.at_k.recall - 2.0 / 3.0).abs() < 1e-12);
        // Threshold 0.6 catches all positives with 1 FP: TPR 1, FPR 1/2 -> paper F1 2/3;
        // threshold .9: TPR 1/3, FPR 0 -> .5. Best paper F1 = 2/3 at .6.
        assert!((e.f1_tpr_tnr - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(e.best_threshold, 0.6);
        assert_eq!((e.at_best_threshold.tp, e.at_best_threshold.fp), (3, 1));
        assert!((e.best_f1.f1 - 6.0 / 7.0).abs() < 1e-12);
        // AUC: pos {.9,.7,.6} vs neg {.8,.1}: wins 2 + 1 + 1 = 4 of 6.
        assert!((e.auc - 4.0 / 6.0).abs() < 1e-12);
    }

    #[test]
    fn mean_and_population_std() {
        let m = mean_std(&[1.0, 2.0, 3.0, 4.0]).unwrap();
        assert_eq!(m.mean, 2.5);
        assert!((m.std - 1.25f64.sqrt()).abs() < 1e-12);
    }
}
