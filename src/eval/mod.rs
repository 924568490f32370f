//! Evaluation of head scores against ground-truth circuits.
//!
//! `roc`: ROC curve, AUC, the paper's TPR/TNR "F1", precision/recall, mean ± std.
//! Patching-based faithfulness/completeness modules come later (other files of this folder).
pub mod roc;
