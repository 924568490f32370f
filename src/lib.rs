//! headcode: find circuits in transformer language models by training tiny sparse
//! autoencoders on every attention head's output (O'Neill & Bui 2024, arXiv 2405.12522).
//!
//! Data flow of `discover`, one module per stage:
//! tasks → tokenize → model (forward) → hooks → sae → codes → score → eval → report.
//! Every arrow is a plain value (tensors, code tables, score grids), so each stage can be
//! run, tested or replaced alone. `gpu` holds the CUDA path of the same stages.
/// `println!` that ignores a closed stdout (`headcode discover ... | head`): a report line
/// nobody reads is not worth a panic, and the run goes on to write its files.
#[macro_export]
macro_rules! say {
    ($($arg:tt)*) => {{
        use ::std::io::Write as _;
        let _ = ::std::writeln!(::std::io::stdout(), $($arg)*);
    }};
}

pub mod error;
pub use error::{Error, Result};

pub mod baselines;
pub mod bench;
pub mod check;
pub mod codes;
pub mod eval;
pub mod gpu;
pub mod hooks;
pub mod interrupt;
pub(crate) mod linalg;
pub mod memory;
pub mod mib;
pub mod model;
pub mod pipeline;
pub mod report;
pub mod sae;
pub mod score;
pub mod tasks;
pub mod tokenize;
