//! Stand-in for the CUDA context in builds without the `cuda` feature: the same API, every
//! call returns [`Error::NoCuda`].
use crate::error::{Error, Result};

use super::{EdgeAlgo, HookDims, HookReduce, OverlapCounts, SaeParams, TrainConfig, TrainOutput};

/// Trained SAEs on the device (not constructible in this build).
pub struct DeviceSaes {
    _never: std::convert::Infallible,
}

/// The GPU context (not constructible in this build).
pub struct GpuContext {
    never: std::convert::Infallible,
}

impl GpuContext {
    pub fn new() -> Result<Self> {
        Err(Error::NoCuda)
    }
    pub fn device_name(&self) -> &str {
        match self.never {}
    }
    pub fn compute_capability(&self) -> (i32, i32) {
        match self.never {}
    }
    pub fn shared_mem_optin(&self) -> usize {
        match self.never {}
    }
    pub fn device_limits(&self) -> super::device::DeviceLimits {
        match self.never {}
    }
    pub fn auto_train_path(&self, _rows: usize, _d: usize, _n: usize) -> super::TrainPath {
        match self.never {}
    }
    pub fn argmax_rows(&self, _x: &[f32], _k: usize) -> Result<Vec<u32>> {
        match self.never {}
    }
    pub fn node_overlap_counts(
        &self,
        _codes: &[u32],
        _is_pos: &[bool],
        _heads: usize,
        _n_codes: usize,
    ) -> Result<OverlapCounts> {
        match self.never {}
    }
    pub fn edge_overlap_counts(
        &self,
        _codes: &[u32],
        _is_pos: &[bool],
        _heads: usize,
        _n_codes: usize,
    ) -> Result<Vec<u32>> {
        match self.never {}
    }
    pub fn edge_overlap_counts_with(
        &self,
        _codes: &[u32],
        _is_pos: &[bool],
        _heads: usize,
        _n_codes: usize,
        _algo: Option<EdgeAlgo>,
    ) -> Result<Vec<u32>> {
        match self.never {}
    }
    pub fn train_saes(
        &self,
        _x: &[f32],
        _rows: usize,
        _init: &[SaeParams],
        _cfg: &TrainConfig,
    ) -> Result<TrainOutput> {
        match self.never {}
    }
    pub fn train_saes_clocked(
        &self,
        _x: &[f32],
        _rows: usize,
        _init: &[SaeParams],
        _cfg: &TrainConfig,
    ) -> Result<(TrainOutput, super::clocks::PhaseProfile)> {
        match self.never {}
    }
    pub fn train_saes_tensor(
        &self,
        _x: &candle_core::Tensor,
        _rows: usize,
        _init: &[SaeParams],
        _cfg: &TrainConfig,
    ) -> Result<TrainOutput> {
        match self.never {}
    }
    pub fn train_saes_tensor_kept(
        &self,
        _x: &candle_core::Tensor,
        _rows: usize,
        _init: &[SaeParams],
        _cfg: &TrainConfig,
    ) -> Result<(TrainOutput, DeviceSaes)> {
        match self.never {}
    }
    pub fn encode_argmax_kept(
        &self,
        _saes: &DeviceSaes,
        _x: &candle_core::Tensor,
        _examples: usize,
    ) -> Result<Vec<u32>> {
        match self.never {}
    }
    pub fn encode_argmax_tensor(
        &self,
        _params: &[SaeParams],
        _x: &candle_core::Tensor,
        _examples: usize,
    ) -> Result<Vec<u32>> {
        match self.never {}
    }
    pub fn encode_argmax(
        &self,
        _params: &[SaeParams],
        _x: &[f32],
        _examples: usize,
    ) -> Result<Vec<u32>> {
        match self.never {}
    }
    pub fn hook_reduce(
        &self,
        _z: &[f32],
        _mask: &[bool],
        _dims: HookDims,
        _mode: HookReduce,
        _w_o: Option<(&[f32], usize)>,
    ) -> Result<Vec<f32>> {
        match self.never {}
    }
}
