//! Evaluation: ROC against a ground-truth circuit, activation patching, faithfulness.
pub mod faithfulness;
pub mod patching;
