//! Evaluation of head scores: ROC against a ground-truth circuit (`roc`), activation
//! patching per head (`patching`), faithfulness of top-k circuits (`faithfulness`), MIB's
//! faithfulness curve with CPR and CMD (`mib_curve`).
pub mod faithfulness;
pub mod mib_curve;
pub mod patching;
pub mod roc;
