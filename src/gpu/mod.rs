//! The CUDA path (placeholder until the kernels land).
use crate::error::{Error, Result};

/// Ok when a CUDA device can be used.
pub fn require_gpu() -> Result<()> {
    Err(Error::NoCuda)
}
