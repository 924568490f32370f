//! Evaluation of head scores: ROC against a ground-truth circuit (`roc`), activation
//! patching per head (`patching`), faithfulness of top-k circuits (`faithfulness`).
pub mod faithfulness;
pub mod patching;
pub mod roc;
