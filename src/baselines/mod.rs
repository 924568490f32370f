//! Circuit-discovery baselines run by the same engine, on the same model, prompts and
//! forward code as the SAE method: ACDC ([`acdc`]) and edge attribution patching ([`eap`]).
//! Both work on the computational graph of [`crate::model::graph`].
pub mod acdc;
pub mod eap;

pub use acdc::{acdc, AcdcConfig, AcdcMetric, AcdcResult, Granularity};
pub use eap::{eap, EapResult};
