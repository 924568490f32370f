//! `discover` end to end: task → tokenize → forward + hooks → SAEs → codes → scores →
//! evaluation, with the baselines computed from the same hooked vectors. Each stage is a
//! function of plain values from the stage before; this module only wires them and times
//! them. Files are written by `report`. `compare` runs the SAE method beside patching,
//! ACDC and EAP on the same prompts.
pub mod budget;
pub mod compare;
pub mod discover;
pub mod evaluate;
pub mod patch;
pub mod prompts;

pub use compare::{compare, CompareConfig, CompareResult, Method};
pub use discover::{discover, DiscoverConfig, DiscoverResult, SaeMode, ScorerKind};
pub use prompts::{PreparedTask, Split, TaskSource};
