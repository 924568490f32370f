//! The forward pass as ACDC's computational graph (Conmy et al. 2023), the structure that
//! ACDC prunes and edge attribution patching scores.
//!
//! Senders write into the residual stream: the embeddings (`input`), every head's output
//! (`result`, without b_O) and every MLP's output. Receivers read the sum of the senders
//! upstream of them: every head's query, key and value input (`split_qkv`, ACDC's
//! `use_split_qkv_input`) or one input per head, every MLP's input, and the unembedding
//! (`output`). An edge sender→receiver can be cut: the receiver then reads that sender's
//! value from the corrupted run instead of the current one. With every edge kept the pass
//! equals [`super::Model::forward`].
//!
//! Gemma's post-attention RMSNorm normalises the sum of a layer's heads, which is not a
//! sum of per-head terms. Each head sends `result_h · w / rms(Σ_h result_h + b_O)`, its
//! share under the scale of the run it came from, so the senders still sum to what joins
//! the residual stream and every edge stays additive (as in EAP-IG's graphs, which read
//! per-head outputs before the norm). Cutting all of one head's edges is therefore a
//! first-order version of patching its `z` on those models, not the same number.
//!
//! GPT-NeoX's parallel block: a layer's MLP reads the layer's input, so its upstream
//! senders end before that layer's heads.
//!
//! Grouped-query attention is ungrouped (each query head has its own key and value input,
//! like EAP-IG's `ungroup_grouped_query_attention`), so a model has `n_heads` nodes per layer.
//!
//! Indexing. Senders in topological order: `input`, then per layer its heads and its MLP.
//! Receivers: per layer its head inputs (head-major, ports q, k, v) and its MLP, then
//! `output`. A receiver's upstream senders are a prefix `senders[..n_up]` of that order, so
//! its edges are the ids `offset[r] .. offset[r] + n_up[r]`, in sender order.
//!
//! Cutting edges. A receiver's input is `R − Σ_removed δ_s` or `C + Σ_kept δ_s`, where `R`
//! is the sum of all current sender outputs (plus biases), `C` the same in the corrupted
//! run and `δ_s` = current − corrupted output of sender s; the smaller of the two sums is
//! used, as one matmul per sender block ([N, d, k] @ [k, receivers]).
use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use super::forward::{attend, embed, last_logits, mlp, norm};
use super::process::repeat_kv;
use super::Model;
use crate::error::{Error, Result};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Sender {
    Input,
    Head { layer: usize, head: usize },
    Mlp { layer: usize },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Port {
    Q,
    K,
    V,
    /// One input for query, key and value (no q/k/v split).
    Qkv,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Receiver {
    Head {
        layer: usize,
        head: usize,
        port: Port,
    },
    Mlp {
        layer: usize,
    },
    Output,
}

/// Whether the model's layers have MLPs (graph nodes).
pub fn model_has_mlp(cfg: &super::ModelConfig) -> bool {
    cfg.d_mlp > 0 && !cfg.attn_only
}

/// The graph of one model shape.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CircuitGraph {
    pub n_layers: usize,
    pub n_heads: usize,
    pub has_mlp: bool,
    pub split_qkv: bool,
    /// Each layer's MLP reads the layer's input beside its heads (GPT-NeoX), so the
    /// heads of the same layer are not upstream of it.
    #[serde(default)]
    pub parallel: bool,
    pub senders: Vec<Sender>,
    pub receivers: Vec<Receiver>,
    n_up: Vec<usize>,
    /// `offset[r]` = first edge id of receiver r; `offset[receivers]` = edge count.
    offset: Vec<usize>,
}

impl CircuitGraph {
    pub fn new(
        n_layers: usize,
        n_heads: usize,
        has_mlp: bool,
        split_qkv: bool,
        parallel: bool,
    ) -> Self {
        let m = has_mlp as usize;
        let mut senders = vec![Sender::Input];
        let mut receivers = Vec::new();
        let mut n_up = Vec::new();
        let ports: &[Port] = if split_qkv {
            &[Port::Q, Port::K, Port::V]
        } else {
            &[Port::Qkv]
        };
        for layer in 0..n_layers {
            let up_attn = 1 + layer * (n_heads + m);
            for head in 0..n_heads {
                for &port in ports {
                    receivers.push(Receiver::Head { layer, head, port });
                    n_up.push(up_attn);
                }
            }
            for head in 0..n_heads {
                senders.push(Sender::Head { layer, head });
            }
            if has_mlp {
                receivers.push(Receiver::Mlp { layer });
                n_up.push(if parallel { up_attn } else { up_attn + n_heads });
                senders.push(Sender::Mlp { layer });
            }
        }
        receivers.push(Receiver::Output);
        n_up.push(senders.len());
        let mut offset = Vec::with_capacity(n_up.len() + 1);
        let mut acc = 0;
        for &u in &n_up {
            offset.push(acc);
            acc += u;
        }
        offset.push(acc);
        Self {
            n_layers,
            n_heads,
            has_mlp,
            split_qkv,
            parallel,
            senders,
            receivers,
            n_up,
            offset,
        }
    }

    pub fn for_model(model: &Model, split_qkv: bool) -> Self {
        let c = &model.cfg;
        Self::new(
            c.n_layers,
            c.n_heads,
            c.d_mlp > 0 && !c.attn_only,
            split_qkv,
            c.details.parallel_attn_mlp,
        )
    }

    pub fn n_edges(&self) -> usize {
        self.offset[self.receivers.len()]
    }
    /// Ports per head: 3 with the q/k/v split, else 1.
    pub fn ports(&self) -> usize {
        if self.split_qkv {
            3
        } else {
            1
        }
    }
    /// Senders upstream of receiver `r` (its edges, in sender order).
    pub fn n_upstream(&self, r: usize) -> usize {
        self.n_up[r]
    }
    pub fn edges_of(&self, r: usize) -> std::ops::Range<usize> {
        self.offset[r]..self.offset[r + 1]
    }
    pub fn edge_id(&self, s: usize, r: usize) -> Option<usize> {
        (r < self.receivers.len() && s < self.n_up[r]).then(|| self.offset[r] + s)
    }
    /// (sender, receiver) of edge `e`.
    pub fn edge(&self, e: usize) -> (usize, usize) {
        let r = self.offset.partition_point(|&o| o <= e) - 1;
        (e - self.offset[r], r)
    }
    pub fn head_sender(&self, layer: usize, head: usize) -> usize {
        1 + layer * (self.n_heads + self.has_mlp as usize) + head
    }
    pub fn mlp_sender(&self, layer: usize) -> Option<usize> {
        self.has_mlp
            .then(|| 1 + layer * (self.n_heads + 1) + self.n_heads)
    }
    fn layer_receivers(&self) -> usize {
        self.ports() * self.n_heads + self.has_mlp as usize
    }
    /// The receivers of layer `l`'s heads, head-major.
    pub fn attn_receivers(&self, layer: usize) -> std::ops::Range<usize> {
        let a = layer * self.layer_receivers();
        a..a + self.ports() * self.n_heads
    }
    pub fn mlp_receiver(&self, layer: usize) -> Option<usize> {
        self.has_mlp
            .then(|| layer * self.layer_receivers() + self.ports() * self.n_heads)
    }
    pub fn output_receiver(&self) -> usize {
        self.receivers.len() - 1
    }
    /// The first layer a forward must re-run for a change at receiver `r`
    /// (`n_layers` for the output).
    pub fn receiver_layer(&self, r: usize) -> usize {
        match self.receivers[r] {
            Receiver::Head { layer, .. } | Receiver::Mlp { layer } => layer,
            Receiver::Output => self.n_layers,
        }
    }
    /// The sender that receiver `r` feeds (its node's output); `None` for the output.
    pub fn sender_of_receiver(&self, r: usize) -> Option<usize> {
        match self.receivers[r] {
            Receiver::Head { layer, head, .. } => Some(self.head_sender(layer, head)),
            Receiver::Mlp { layer } => self.mlp_sender(layer),
            Receiver::Output => None,
        }
    }
    pub fn sender_label(&self, s: usize) -> String {
        match self.senders[s] {
            Sender::Input => "input".into(),
            Sender::Head { layer, head } => format!("L{layer}H{head}"),
            Sender::Mlp { layer } => format!("MLP{layer}"),
        }
    }
    pub fn receiver_label(&self, r: usize) -> String {
        match self.receivers[r] {
            Receiver::Head { layer, head, port } => {
                let p = match port {
                    Port::Q => ".q",
                    Port::K => ".k",
                    Port::V => ".v",
                    Port::Qkv => "",
                };
                format!("L{layer}H{head}{p}")
            }
            Receiver::Mlp { layer } => format!("MLP{layer}"),
            Receiver::Output => "output".into(),
        }
    }
    pub fn edge_label(&self, e: usize) -> String {
        let (s, r) = self.edge(e);
        format!("{}->{}", self.sender_label(s), self.receiver_label(r))
    }
    /// Sender blocks as (first sender, count): the input, then per layer its heads and MLP.
    fn blocks(&self) -> Vec<(usize, usize)> {
        let mut b = vec![(0, 1)];
        for l in 0..self.n_layers {
            b.push((self.head_sender(l, 0), self.n_heads));
            if let Some(m) = self.mlp_sender(l) {
                b.push((m, 1));
            }
        }
        b
    }
}

/// Every sender's output and every receiver's all-kept input from one unpatched run.
#[derive(Debug, Clone)]
pub struct GraphCache {
    pub lengths: Vec<usize>,
    /// Per sender block ([`CircuitGraph`] order), [N, k, d] with N = batch·pos.
    pub blocks: Vec<Tensor>,
    /// All-kept input of each layer's heads (= resid_pre) [N, d].
    pub attn_base: Vec<Tensor>,
    /// All-kept input of each layer's MLP (= resid_mid) [N, d].
    pub mlp_base: Vec<Tensor>,
    /// The final residual stream [N, d].
    pub final_base: Tensor,
    /// Last-position logits [batch, vocab].
    pub logits: Tensor,
}

/// The clean and corrupted caches of one batch of prompt pairs, and their differences.
pub struct PatchContext {
    pub clean: GraphCache,
    pub corrupt: GraphCache,
    /// Per block, clean − corrupt as [N, d, k] (the layout the mixing matmul reads).
    delta_t: Vec<Tensor>,
    /// Whether `corrupt`'s receiver inputs (`attn_base`, …) are the sums of its sender
    /// values. A mean or zero ablation sets sender values only, so a cut receiver then
    /// always starts from the current run's input and subtracts.
    corrupt_bases: bool,
}

impl PatchContext {
    pub fn new(clean: GraphCache, corrupt: GraphCache) -> Result<Self> {
        if clean.lengths != corrupt.lengths {
            return Err(Error::InvalidInput(
                "clean and corrupt prompts must have equal token lengths, pair by pair".into(),
            ));
        }
        let delta_t = clean
            .blocks
            .iter()
            .zip(&corrupt.blocks)
            .map(|(a, b)| Ok((a - b)?.transpose(1, 2)?.contiguous()?))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            clean,
            corrupt,
            delta_t,
            corrupt_bases: true,
        })
    }

    /// Cut edges read `values` instead of a corrupted run: per sender block one value
    /// broadcast to [N, k, d] (a mean over a dataset, or zeros), the mean and zero
    /// ablations of MIB's evaluation.
    pub fn ablate(clean: GraphCache, values: &[Tensor]) -> Result<Self> {
        if values.len() != clean.blocks.len() {
            return Err(Error::shape(
                "ablation values (sender blocks)",
                clean.blocks.len(),
                values.len(),
            ));
        }
        let blocks = clean
            .blocks
            .iter()
            .zip(values)
            .map(|(c, v)| Ok(v.broadcast_as(c.shape())?.contiguous()?))
            .collect::<Result<Vec<_>>>()?;
        let corrupt = GraphCache {
            lengths: clean.lengths.clone(),
            blocks,
            attn_base: clean.attn_base.clone(),
            mlp_base: clean.mlp_base.clone(),
            final_base: clean.final_base.clone(),
            logits: clean.logits.clone(),
        };
        let mut ctx = Self::new(clean, corrupt)?;
        ctx.corrupt_bases = false;
        Ok(ctx)
    }
}

/// Options of one graph forward.
#[derive(Default, Clone, Copy)]
pub struct GraphRunOptions<'a> {
    /// Kept edges (`true` = kept), one per edge id; `None` keeps all.
    pub mask: Option<&'a [bool]>,
    /// Needed when an edge is cut or `start_layer > 0`.
    pub patch: Option<&'a PatchContext>,
    /// Re-run from this layer (0..=n_layers), reading everything below from the clean
    /// cache; valid only if no edge into a receiver below it is cut.
    pub start_layer: usize,
    /// Return a [`GraphCache`] (unpatched runs only).
    pub capture: bool,
    /// Track gradients: a zero variable is added to every receiver's input and returned in
    /// [`GraphOutput::inputs`]; its gradient is the gradient with respect to that input.
    pub track: bool,
    /// Sum each receiver's input edge by edge (a slow reference for the mixing).
    pub reference: bool,
    /// Replaces the `input` sender's output (the embeddings, [N, d]) of these tokens: EAP-IG
    /// runs on points between the clean and the corrupted embeddings. Only with
    /// `start_layer` 0.
    pub input: Option<&'a Tensor>,
}

pub struct GraphOutput {
    /// Last-position logits [batch, vocab].
    pub logits: Tensor,
    pub cache: Option<GraphCache>,
    /// With `track`, the zero variables added to the receivers' inputs: per layer the heads'
    /// [N, ports·H, d] (receiver order) and the MLP's [N, d], then the output's [N, d].
    pub inputs: Vec<Tensor>,
}

/// Per-head weights laid out for batched matmuls over heads.
pub struct GraphModel<'m> {
    model: &'m Model,
    /// The model widened to f32 when it runs in bf16 or f16: the graph's forward and its
    /// gradients (EAP) run in f32, at the cost of an f32 copy of the weights while the
    /// graph lives (documented in docs/precision.md).
    widened: Option<Box<Model>>,
    pub graph: CircuitGraph,
    layers: Vec<HeadWeights>,
}

struct HeadWeights {
    wq: Tensor, // [H, d, dh]
    bq: Tensor, // [H, 1, dh]
    wk: Tensor, // [H, d, dh] (key/value heads repeated per query head)
    bk: Tensor,
    wv: Tensor,
    bv: Tensor,
    wo: Tensor, // [H, dh, d]
}

/// [N, H, d] @ per-head [H, d, e] (+ [H, 1, e]) → [H, N, e]
fn per_head(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let y = x.transpose(0, 1)?.contiguous()?.matmul(w)?;
    Ok(match b {
        Some(b) => y.broadcast_add(b)?,
        None => y,
    })
}

impl<'m> GraphModel<'m> {
    pub fn new(model: &'m Model, split_qkv: bool) -> Result<Self> {
        let widened = match model.dtype() {
            super::WeightDtype::F32 => None,
            _ => Some(Box::new(model.to_dtype(super::WeightDtype::F32)?)),
        };
        let m = widened.as_deref().unwrap_or(model);
        let c = &m.cfg;
        let rep = c.n_heads / c.n_kv_heads;
        let mut layers = Vec::with_capacity(c.n_layers);
        for l in &m.weights.layers {
            let h = c.n_heads;
            let ungroup = |w: &Tensor| repeat_kv(w, rep);
            layers.push(HeadWeights {
                wq: l.w_q.contiguous()?,
                bq: l.b_q.reshape((h, 1, c.d_head))?,
                wk: ungroup(&l.w_k)?.contiguous()?,
                bk: ungroup(&l.b_k)?.reshape((h, 1, c.d_head))?,
                wv: ungroup(&l.w_v)?.contiguous()?,
                bv: ungroup(&l.b_v)?.reshape((h, 1, c.d_head))?,
                wo: l.w_o.contiguous()?,
            });
        }
        Ok(Self {
            model,
            graph: CircuitGraph::for_model(model, split_qkv),
            layers,
            widened,
        })
    }

    /// The model the graph runs: f32 whatever the loaded model's dtype.
    fn m(&self) -> &Model {
        self.widened.as_deref().unwrap_or(self.model)
    }

    /// Clean and corrupted caches for a batch of pairs (equal lengths pair by pair).
    pub fn patch_context(&self, clean: &[Vec<u32>], corrupt: &[Vec<u32>]) -> Result<PatchContext> {
        let cap = |t: &[Vec<u32>]| -> Result<GraphCache> {
            self.run(
                t,
                GraphRunOptions {
                    capture: true,
                    ..Default::default()
                },
            )?
            .cache
            .ok_or_else(|| Error::InvalidInput("graph run captured nothing".into()))
        };
        PatchContext::new(cap(clean)?, cap(corrupt)?)
    }

    pub fn run(&self, tokens: &[Vec<u32>], opts: GraphRunOptions<'_>) -> Result<GraphOutput> {
        let g = &self.graph;
        let cfg = &self.m().cfg;
        let w = &self.m().weights;
        let rt = &self.m().rt;
        if let Some(m) = opts.mask {
            if m.len() != g.n_edges() {
                return Err(Error::shape("edge mask", g.n_edges(), m.len()));
            }
        }
        let cuts = opts.mask.is_some_and(|m| m.iter().any(|&k| !k));
        if (cuts || opts.start_layer > 0) && opts.patch.is_none() {
            return Err(Error::InvalidInput(
                "cutting edges or resuming needs the clean and corrupted caches".into(),
            ));
        }
        if opts.start_layer > cfg.n_layers {
            return Err(Error::InvalidInput(format!(
                "start layer {} beyond the model's {} layers",
                opts.start_layer, cfg.n_layers
            )));
        }
        if let (Some(m), true) = (opts.mask, opts.start_layer > 0) {
            let first = if opts.start_layer < cfg.n_layers {
                g.attn_receivers(opts.start_layer).start
            } else {
                g.output_receiver()
            };
            if m[..g.edges_of(first).start].iter().any(|&k| !k) {
                return Err(Error::InvalidInput(format!(
                    "an edge into a layer below the resume layer {} is cut",
                    opts.start_layer
                )));
            }
        }
        if opts.capture && cuts {
            return Err(Error::InvalidInput(
                "a cache is taken from an unpatched run only".into(),
            ));
        }
        let super::forward::Embedded {
            x: x0,
            short_pos,
            tables,
            lengths,
            b,
            t,
        } = embed(cfg, w, tokens)?;
        let short_pos = short_pos.map(|p| p.unsqueeze(1)).transpose()?; // [N, 1, d]
        let x0 = match opts.input {
            None => x0,
            Some(_) if opts.start_layer > 0 => {
                return Err(Error::InvalidInput(
                    "a replaced input needs a run from layer 0".into(),
                ))
            }
            Some(x) => {
                if x.dims() != x0.dims() {
                    return Err(Error::shape(
                        "replaced input embeddings",
                        format!("{:?}", x0.dims()),
                        format!("{:?}", x.dims()),
                    ));
                }
                x.clone()
            }
        };
        let dev = w.w_e.device().clone();
        if let Some(p) = opts.patch {
            if p.clean.lengths != lengths {
                return Err(Error::InvalidInput(
                    "prompts differ in length from the cached clean run".into(),
                ));
            }
        }
        let (d, h, dh) = (cfg.d_model, cfg.n_heads, cfg.d_head);
        let n = b * t;
        let ports = g.ports();
        let blocks_idx = g.blocks();

        // Current sender outputs per block ([N, k, d]) and δ = current − corrupt ([N, d, k]).
        let nb = blocks_idx.len();
        let mut cur: Vec<Option<Tensor>> = vec![None; nb];
        let mut delta: Vec<Option<Tensor>> = vec![None; nb];
        let start = opts.start_layer;
        // Blocks produced below the start layer come from the clean cache.
        let first_block_of_layer = |l: usize| 1 + l * (1 + g.has_mlp as usize);
        let mut base;
        if start == 0 {
            cur[0] = Some(x0.unsqueeze(1)?);
            base = x0.clone();
        } else {
            let p = opts
                .patch
                .ok_or_else(|| Error::InvalidInput("resume needs caches".into()))?;
            for bi in 0..first_block_of_layer(start) {
                cur[bi] = Some(p.clean.blocks[bi].clone());
                delta[bi] = Some(p.delta_t[bi].clone());
            }
            base = if start < cfg.n_layers {
                p.clean.attn_base[start].clone()
            } else {
                p.clean.final_base.clone()
            };
        }
        let mut cache = opts.capture.then(|| GraphCache {
            lengths: lengths.clone(),
            blocks: Vec::new(),
            attn_base: Vec::new(),
            mlp_base: Vec::new(),
            final_base: base.clone(),
            logits: base.clone(),
        });
        let mut inputs = Vec::new();
        let patch = opts.patch;
        // candle keeps gradients of variables only: each receiver's input gets a zero
        // variable added, whose gradient is the gradient with respect to that input.
        let probe = |x: Tensor, inputs: &mut Vec<Tensor>| -> Result<Tensor> {
            if !opts.track {
                return Ok(x);
            }
            let v = Var::zeros(x.shape(), x.dtype(), x.device())?;
            let y = (x + v.as_tensor())?;
            inputs.push(v.as_tensor().clone());
            Ok(y)
        };

        // Mixes the inputs of receivers `rows` (all with the same upstream count).
        let mix = |rows: std::ops::Range<usize>,
                   base: &Tensor,
                   corr_base: Option<&Tensor>,
                   cur: &[Option<Tensor>],
                   delta: &mut [Option<Tensor>],
                   bias: Option<&Tensor>|
         -> Result<Tensor> {
            let nr = rows.len();
            let up = g.n_upstream(rows.start);
            if let Some(bias) = bias {
                return self.reference_mix(rows, cur, patch, opts.mask, bias, n, d);
            }
            let mask = match opts.mask {
                Some(m) if cuts => m,
                _ => {
                    return Ok(base.unsqueeze(1)?.broadcast_as((n, nr, d))?);
                }
            };
            // Per row: +1 on kept edges over the corrupted base, or −1 on cut edges
            // over the clean base, whichever touches fewer senders.
            let mut use_corr = vec![false; nr];
            let mut coef = vec![0f32; nr * up];
            let mut any = false;
            for (i, r) in rows.clone().enumerate() {
                let m = &mask[g.edges_of(r)];
                let kept = m.iter().filter(|&&k| k).count();
                let removed = up - kept;
                if removed == 0 {
                    continue;
                }
                any = true;
                use_corr[i] = kept < removed && patch.is_some_and(|p| p.corrupt_bases);
                for (s, &k) in m.iter().enumerate() {
                    coef[i * up + s] = match (use_corr[i], k) {
                        (true, true) => 1.0,
                        (false, false) => -1.0,
                        _ => 0.0,
                    };
                }
            }
            let bb = base.unsqueeze(1)?.broadcast_as((n, nr, d))?;
            if !any {
                return Ok(bb);
            }
            let p = patch.ok_or_else(|| Error::InvalidInput("cuts need caches".into()))?;
            let cb = corr_base.ok_or_else(|| Error::InvalidInput("missing corrupt base".into()))?;
            let sel = Tensor::from_vec(
                use_corr.iter().map(|&c| c as u8 as f32).collect::<Vec<_>>(),
                (1, nr, 1),
                &dev,
            )?;
            let cbb = cb.unsqueeze(1)?.broadcast_as((n, nr, d))?;
            let mut x = (bb.broadcast_mul(&(1.0 - &sel)?)? + cbb.broadcast_mul(&sel)?)?;
            let mut acc: Option<Tensor> = None; // [N, d, nr]
            for (bi, &(s0, k)) in blocks_idx.iter().enumerate() {
                if s0 >= up {
                    break;
                }
                let mut c = vec![0f32; k * nr]; // [k, nr]
                let mut nz = false;
                for i in 0..nr {
                    for j in 0..k {
                        let v = coef[i * up + s0 + j];
                        if v != 0.0 {
                            c[j * nr + i] = v;
                            nz = true;
                        }
                    }
                }
                if !nz {
                    continue;
                }
                if delta[bi].is_none() {
                    let cu = cur[bi]
                        .as_ref()
                        .ok_or_else(|| Error::InvalidInput("sender block not computed".into()))?;
                    delta[bi] = Some(
                        (cu - &p.corrupt.blocks[bi])?
                            .transpose(1, 2)?
                            .contiguous()?,
                    );
                }
                let dt = delta[bi]
                    .as_ref()
                    .ok_or_else(|| Error::InvalidInput("δ".into()))?;
                let c = Tensor::from_vec(c, (k, nr), &dev)?;
                let y = dt.broadcast_matmul(&c)?; // [N, d, nr]
                acc = Some(match acc {
                    Some(a) => (a + y)?,
                    None => y,
                });
            }
            if let Some(a) = acc {
                x = (x + a.transpose(1, 2)?)?;
            }
            Ok(x)
        };

        // The reference mixing alone needs the residual stream's bias terms (b_O of each
        // layer so far) on their own.
        let mut bias = None;
        if opts.reference {
            let mut b0 = Tensor::zeros((1, d), candle_core::DType::F32, &dev)?;
            for l in &self.m().weights.layers[..start.min(cfg.n_layers)] {
                b0 = b0.broadcast_add(&l.b_o.unsqueeze(0)?)?;
            }
            bias = Some(b0);
        }

        for li in start..cfg.n_layers {
            let l = &rt.layers[li];
            let hw = &self.layers[li];
            let wl = &self.m().weights.layers[li];
            if let Some(c) = cache.as_mut() {
                c.attn_base.push(base.clone());
            }
            let corr_attn = patch.and_then(|p| p.corrupt.attn_base.get(li));
            let x = mix(
                g.attn_receivers(li),
                &base,
                corr_attn,
                &cur,
                &mut delta,
                bias.as_ref(),
            )?;
            let x = probe(x, &mut inputs)?;
            let xn = norm(&x, &l.ln1, cfg.norm, cfg.eps)?; // [N, ports·H, d]
            let port = |p: usize| -> Result<Tensor> {
                if ports == 1 {
                    return Ok(xn.clone());
                }
                Ok(xn.reshape((n, h, ports, d))?.narrow(2, p, 1)?.squeeze(2)?)
            };
            let (xq, xk, xv) = (port(0)?, port(1.min(ports - 1))?, port(2.min(ports - 1))?);
            let (xq, xk) = match &short_pos {
                Some(p) => (xq.broadcast_add(p)?, xk.broadcast_add(p)?),
                None => (xq, xk),
            };
            // [H, N, dh] → [B, H, T, dh]
            let heads_first = |y: Tensor| -> Result<Tensor> {
                Ok(y.reshape((h, b, t, dh))?.transpose(0, 1)?.contiguous()?)
            };
            let q = heads_first(per_head(&xq, &hw.wq, Some(&hw.bq))?)?;
            let k = heads_first(per_head(&xk, &hw.wk, Some(&hw.bk))?)?;
            let v = heads_first(per_head(&xv, &hw.wv, Some(&hw.bv))?)?;
            let z = attend(cfg, l, &tables, li, q, k, v)?; // [B, H, T, dh]
            let z = z.transpose(0, 1)?.contiguous()?.reshape((h, n, dh))?;
            let mut result = z.matmul(&hw.wo)?.transpose(0, 1)?.contiguous()?; // [N, H, d]
            let mut b_o = wl.b_o.unsqueeze(0)?; // [1 or N, d]
            if let Some(post) = &l.ln1_post {
                // The post-attention RMSNorm scales the layer's summed output by
                // w / rms(Σ_h result_h + b_O). Each head sends its result under that
                // scale, so the senders still sum to what joins the residual stream.
                let pw = match (cfg.norm, &post.w, &post.b) {
                    (crate::model::Norm::RmsNorm, Some(pw), None) => pw,
                    _ => {
                        return Err(Error::UnsupportedModel(
                            "the graph supports a post-attention RMSNorm with weight only".into(),
                        ))
                    }
                };
                let total = result.sum(1)?.broadcast_add(&b_o)?;
                let inv = (total.sqr()?.mean_keepdim(1)? + cfg.eps)?.sqrt()?.recip()?;
                let scale = inv.broadcast_mul(&pw.unsqueeze(0)?)?; // [N, d]
                result = result.broadcast_mul(&scale.unsqueeze(1)?)?;
                b_o = b_o.broadcast_mul(&scale)?;
            }
            let hb = first_block_of_layer(li);
            // GPT-NeoX's MLP reads the layer's input, not the heads' output.
            let layer_in = cfg
                .details
                .parallel_attn_mlp
                .then(|| (base.clone(), bias.clone()));
            base = (base + result.sum(1)?)?.broadcast_add(&b_o)?;
            if let Some(b0) = bias.as_mut() {
                *b0 = b0.broadcast_add(&wl.b_o.unsqueeze(0)?)?;
            }
            let (mlp_base, mlp_bias) = layer_in.unwrap_or_else(|| (base.clone(), bias.clone()));
            cur[hb] = Some(result);
            if let Some(m) = &l.mlp {
                if let Some(c) = cache.as_mut() {
                    c.mlp_base.push(mlp_base.clone());
                }
                let r = g
                    .mlp_receiver(li)
                    .ok_or_else(|| Error::UnsupportedModel("MLP outside the graph".into()))?;
                let corr_mlp = patch.and_then(|p| p.corrupt.mlp_base.get(li));
                let x = mix(
                    r..r + 1,
                    &mlp_base,
                    corr_mlp,
                    &cur,
                    &mut delta,
                    mlp_bias.as_ref(),
                )?
                .squeeze(1)?;
                let x = probe(x, &mut inputs)?;
                let out = mlp(cfg, l, m, &x)?;
                base = (base + &out)?;
                cur[hb + 1] = Some(out.unsqueeze(1)?);
            }
        }
        let r = g.output_receiver();
        let corr_fin = patch.map(|p| &p.corrupt.final_base);
        let x = mix(r..r + 1, &base, corr_fin, &cur, &mut delta, bias.as_ref())?.squeeze(1)?;
        let x = probe(x, &mut inputs)?;
        let logits = last_logits(cfg, w, &x, &lengths, t)?;
        let cache = match cache {
            Some(mut c) => {
                c.final_base = base;
                c.logits = logits.clone();
                c.blocks = cur
                    .into_iter()
                    .map(|x| x.ok_or_else(|| Error::InvalidInput("block not computed".into())))
                    .collect::<Result<Vec<_>>>()?;
                Some(c)
            }
            None => None,
        };
        Ok(GraphOutput {
            logits,
            cache,
            inputs,
        })
    }

    /// Σ_s (kept ? current : corrupted) output of each upstream sender, plus the b_O of the
    /// layers below: the definition, summed edge by edge.
    #[allow(clippy::too_many_arguments)]
    fn reference_mix(
        &self,
        rows: std::ops::Range<usize>,
        cur: &[Option<Tensor>],
        patch: Option<&PatchContext>,
        mask: Option<&[bool]>,
        bias: &Tensor,
        n: usize,
        d: usize,
    ) -> Result<Tensor> {
        let g = &self.graph;
        let sender_value = |s: usize, from_corrupt: bool| -> Result<Tensor> {
            let (bi, j) = g
                .blocks()
                .iter()
                .enumerate()
                .find(|(_, &(s0, k))| s >= s0 && s < s0 + k)
                .map(|(bi, &(s0, _))| (bi, s - s0))
                .ok_or_else(|| Error::InvalidInput(format!("sender {s} in no block")))?;
            let blk = if from_corrupt {
                &patch
                    .ok_or_else(|| Error::InvalidInput("cuts need caches".into()))?
                    .corrupt
                    .blocks[bi]
            } else {
                cur[bi]
                    .as_ref()
                    .ok_or_else(|| Error::InvalidInput("sender not computed".into()))?
            };
            Ok(blk.narrow(1, j, 1)?.squeeze(1)?)
        };
        let mut out = Vec::with_capacity(rows.len());
        for r in rows {
            let mut x = bias.broadcast_as((n, d))?.contiguous()?;
            for (s, e) in g.edges_of(r).enumerate() {
                let kept = mask.is_none_or(|m| m[e]);
                x = (x + sender_value(s, !kept)?)?;
            }
            out.push(x);
        }
        Ok(Tensor::stack(&out, 1)?)
    }
}

/// Mean over prompts of KL(clean ‖ patched) at the last position, from logits [B, V]
/// (ACDC's metric), clamped at 0 against rounding.
pub fn kl_from_logits(clean_logp: &Tensor, logits: &Tensor) -> Result<f64> {
    let lp = log_softmax(logits)?;
    let kl = (clean_logp.exp()? * (clean_logp - lp)?)?.sum(1)?.mean(0)?;
    Ok((kl.to_dtype(candle_core::DType::F64)?.to_scalar::<f64>()?).max(0.0))
}

/// log-softmax over the last dimension of [B, V].
pub fn log_softmax(x: &Tensor) -> Result<Tensor> {
    let m = x.max_keepdim(1)?.detach();
    let xs = x.broadcast_sub(&m)?;
    let lse = xs.exp()?.sum_keepdim(1)?.log()?;
    Ok(xs.broadcast_sub(&lse)?)
}
