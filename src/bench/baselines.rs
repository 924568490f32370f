//! Unit costs of the baselines on whatever device the model lives on: one ACDC head test,
//! one ACDC edge test (q/k/v-split graph) and one EAP batch, each on `pairs` prompt pairs
//! of 18 tokens, resumed at the middle layer (a sweep's average). Every timed call ends
//! by copying a value to the host, so the device is synchronised. With these and a graph's
//! size, a whole ACDC run's cost can be estimated before starting it. [`run`] is
//! `headcode bench --baselines`.
use std::time::Instant;

use candle_core::Tensor;
use serde::{Deserialize, Serialize};

use candle_core::Device;

use super::BenchRequest;
use crate::baselines::eap::eap;
use crate::error::Result;
use crate::model::graph::{CircuitGraph, GraphModel, GraphRunOptions};
use crate::model::{ForwardOptions, Model};
use crate::tasks::{MetricKind, PairTokens};

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UnitCosts {
    pub pairs: usize,
    pub tokens_per_prompt: usize,
    pub start_layer: usize,
    pub reps: usize,
    /// Medians in milliseconds.
    pub acdc_head_test_ms: f64,
    pub acdc_edge_test_ms: f64,
    pub eap_batch_ms: f64,
    /// Edges of the q/k/v-split graph and heads, for cost estimates.
    pub n_edges_qkv: usize,
    pub n_heads: usize,
    /// Last-position logits of the edge test, for a parity check across devices.
    #[serde(skip)]
    pub edge_test_logits: Vec<f32>,
}

/// Deterministic prompt pairs over a vocabulary: every fifth token differs.
pub fn synthetic_pairs(pairs: usize, len: usize, vocab: usize) -> (Vec<Vec<u32>>, Vec<Vec<u32>>) {
    let v = vocab.max(2) as u32;
    let clean: Vec<Vec<u32>> = (0..pairs as u32)
        .map(|i| (0..len as u32).map(|j| (i * 131 + j * 17) % v).collect())
        .collect();
    let corrupt = clean
        .iter()
        .map(|p| {
            p.iter()
                .enumerate()
                .map(|(j, &t)| if j % 5 == 2 { (t + 7) % v } else { t })
                .collect()
        })
        .collect();
    (clean, corrupt)
}

/// A mask with every tenth edge cut among the edges into layers from `start_layer` up:
/// the state of a graph part-way through an ACDC sweep resumed there.
pub fn sample_cut_mask(graph: &CircuitGraph, start_layer: usize) -> Vec<bool> {
    let first = if start_layer < graph.n_layers {
        graph.attn_receivers(start_layer).start
    } else {
        graph.output_receiver()
    };
    (0..graph.n_edges())
        .map(|e| graph.edge(e).1 < first || e % 10 != 0)
        .collect()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn sync(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.get(0)?.to_vec1::<f32>()?)
}

pub fn unit_costs(model: &Model, pairs: usize, reps: usize) -> Result<UnitCosts> {
    let len = 18;
    let (clean, corrupt) = synthetic_pairs(pairs.max(1), len, model.cfg.d_vocab);
    let mid = model.cfg.n_layers / 2;
    let reps = reps.max(1);
    let time = |f: &mut dyn FnMut() -> Result<()>| -> Result<f64> {
        f()?; // warm-up
        let mut v = Vec::with_capacity(reps);
        for _ in 0..reps {
            let t0 = Instant::now();
            f()?;
            v.push(t0.elapsed().as_secs_f64() * 1e3);
        }
        Ok(median(v))
    };
    let base = model.forward(
        &clean,
        ForwardOptions {
            capture_resid: true,
            ..Default::default()
        },
    )?;
    let head_ms = time(&mut || {
        let o = model.forward(
            &clean,
            ForwardOptions {
                start: Some((mid, base.resid[mid].clone())),
                ..Default::default()
            },
        )?;
        if let Some(l) = o.logits {
            sync(&l)?;
        }
        Ok(())
    })?;
    let gm = GraphModel::new(model, true)?;
    let ctx = gm.patch_context(&clean, &corrupt)?;
    let mask = sample_cut_mask(&gm.graph, mid);
    let mut logits = Vec::new();
    let edge_ms = time(&mut || {
        let o = gm.run(
            &clean,
            GraphRunOptions {
                mask: Some(&mask),
                patch: Some(&ctx),
                start_layer: mid,
                ..Default::default()
            },
        )?;
        logits = o.logits.flatten_all()?.to_vec1::<f32>()?;
        Ok(())
    })?;
    let toks: Vec<PairTokens> = (0..clean.len())
        .map(|i| PairTokens {
            metric: MetricKind::LogitDiff,
            answer: (100 + i as u32) % model.cfg.d_vocab as u32,
            wrong: vec![(200 + i as u32) % model.cfg.d_vocab as u32],
            greater: vec![],
            not_greater: vec![],
        })
        .collect();
    let eap_ms = time(&mut || {
        eap(model, &clean, &corrupt, &toks, true, clean.len(), |_, _| {})?;
        Ok(())
    })?;
    Ok(UnitCosts {
        pairs: clean.len(),
        tokens_per_prompt: len,
        start_layer: mid,
        reps,
        acdc_head_test_ms: head_ms,
        acdc_edge_test_ms: edge_ms,
        eap_batch_ms: eap_ms,
        n_edges_qkv: gm.graph.n_edges(),
        n_heads: model.cfg.n_heads_total(),
        edge_test_logits: logits,
    })
}

/// The baselines' unit costs (ACDC head and edge tests, one EAP batch) at a random-weight
/// shape; on CUDA also the edge test's logits against the CPU.
pub fn run(a: &BenchRequest) -> Result<()> {
    let build = |dev: &Device| -> Result<Model> {
        crate::model::random::random_model(&a.model, 0, dev, a.dtype)
    };
    let gpu = a.gpu;
    if gpu {
        crate::gpu::require_gpu()?;
    }
    let dev = if gpu {
        crate::gpu::cuda_device()?
    } else {
        Device::Cpu
    };
    let reps = a.reps.max(1);
    let c = unit_costs(&build(&dev)?, a.pairs, reps)?;
    let mut j = serde_json::to_value(&c)?;
    j["device"] = if gpu { "cuda:0" } else { "cpu" }.into();
    j["model"] = a.model.clone().into();
    say!(
        "baselines, {} (random weights), {}, {} pairs x {} tokens, resumed at layer {}, median of {reps}",
        a.model, if gpu { "CUDA" } else { "CPU" }, c.pairs, c.tokens_per_prompt, c.start_layer
    );
    say!(
        "  ACDC head test      {:>10.2} ms  ({} heads: ~{:.1} s per threshold)",
        c.acdc_head_test_ms,
        c.n_heads,
        c.acdc_head_test_ms * c.n_heads as f64 / 1e3
    );
    say!(
        "  ACDC edge test      {:>10.2} ms  ({} q/k/v-split edges: at most ~{:.0} s per threshold)",
        c.acdc_edge_test_ms,
        c.n_edges_qkv,
        c.acdc_edge_test_ms * c.n_edges_qkv as f64 / 1e3
    );
    say!("  EAP batch           {:>10.2} ms", c.eap_batch_ms);
    if gpu {
        // The same edge test on the CPU, for parity.
        let cpu = unit_costs(&build(&Device::Cpu)?, a.pairs.min(4), 1)?;
        let g = unit_costs(&build(&dev)?, a.pairs.min(4), 1)?;
        let scale = cpu
            .edge_test_logits
            .iter()
            .fold(0f32, |m, v| m.max(v.abs()))
            .max(1e-12);
        let err = g
            .edge_test_logits
            .iter()
            .zip(&cpu.edge_test_logits)
            .fold(0f32, |m, (x, y)| m.max((x - y).abs()))
            / scale;
        let ok = err <= 1e-4;
        say!(
            "  edge test logits, CUDA vs CPU (4 pairs): max |diff| / max |ref| {err:.2e} {}",
            if ok { "PASS" } else { "FAIL" }
        );
        j["edge_test_parity"] = err.into();
        j["edge_test_parity_pass"] = ok.into();
    }
    if let Some(p) = &a.json {
        crate::error::write_file(p, serde_json::to_string_pretty(&j)?)?;
    }
    Ok(())
}
