//! The transformer runtime: configs, checkpoint loaders (HF GPT-2, TransformerLens
//! state dicts, HF Llama, GGUF), TransformerLens weight processing and the forward pass.
//! Knows nothing of tasks, SAEs or reports.
pub mod config;
pub mod dtype;
pub mod fetch;
pub mod forward;
mod forward_cpu;
pub mod graph;
pub mod load;
pub mod process;
pub mod random;
pub mod weights;

use std::path::{Path, PathBuf};

use candle_core::Device;

pub use config::{Activation, ModelConfig, Norm, PosEmbedding, Processing};
pub use dtype::{LoadTarget, WeightDtype};
pub use forward::{ForwardOptions, ForwardOutput, Intervention, LogitsAt};
pub use weights::Weights;

use crate::error::{Error, Result};
use crate::tokenize::{Gpt2Tokenizer, HfTokenizer, Tokenizer};

/// A loaded model with its processing applied and matrices laid out for the forward pass.
pub struct Model {
    pub cfg: ModelConfig,
    pub weights: Weights,
    /// Processing actually applied (flags that do not apply to the family are off).
    pub processing: Processing,
    /// Where it came from, for manifests.
    pub source: String,
    rt: forward::Runtime,
    /// Run every forward through candle's ops even where the CPU path applies
    /// ([`Model::use_candle_forward`]).
    candle_only: bool,
}

impl Model {
    pub fn from_parts(
        cfg: ModelConfig,
        mut weights: Weights,
        processing: Processing,
        source: String,
    ) -> Result<Self> {
        weights.settle()?;
        let processing = process::process(&cfg, &mut weights, processing)?;
        let rt = forward::Runtime::new(&weights)?;
        Ok(Self {
            cfg,
            weights,
            processing,
            source,
            rt,
            candle_only: false,
        })
    }

    pub fn device(&self) -> &Device {
        self.weights.w_e.device()
    }

    /// The dtype the weights are kept in and the forward runs in.
    pub fn dtype(&self) -> WeightDtype {
        // `settle` and the loaders only ever make f32, bf16 or f16 weights.
        WeightDtype::of(self.weights.dtype()).unwrap_or(WeightDtype::F32)
    }

    /// This model with its weights in `dtype` (a copy; the same model if already so).
    pub fn to_dtype(&self, dtype: WeightDtype) -> Result<Model> {
        let d = dtype.dtype();
        let w = &self.weights;
        let mut weights = Weights {
            w_e: w.w_e.to_dtype(d)?,
            w_pos: w.w_pos.as_ref().map(|t| t.to_dtype(d)).transpose()?,
            layers: w
                .layers
                .iter()
                .map(|l| l.to_dtype(d))
                .collect::<Result<_>>()?,
            ln_final: w.ln_final.clone(),
            w_u: w.w_u.to_dtype(d)?,
            b_u: w.b_u.to_dtype(d)?,
            synthesized: w.synthesized,
        };
        weights.settle()?;
        let rt = forward::Runtime::new(&weights)?;
        Ok(Model {
            cfg: self.cfg.clone(),
            weights,
            processing: self.processing,
            source: self.source.clone(),
            rt,
            candle_only: self.candle_only,
        })
    }

    /// The forward pass: on the CPU with f32 weights the host-buffer path
    /// (`forward_cpu`), otherwise candle's ([`Model::forward_candle`]).
    pub fn forward(&self, tokens: &[Vec<u32>], opts: ForwardOptions<'_>) -> Result<ForwardOutput> {
        if !self.candle_only && forward_cpu::applies(&self.weights) {
            forward_cpu::forward(&self.cfg, &self.weights, &self.rt, tokens, opts)
        } else {
            self.forward_candle(tokens, opts)
        }
    }

    /// Send every later forward through candle's ops ([`Model::forward_candle`]), as before
    /// the CPU path existed: the bench times both, and tests run whole pipelines on both.
    pub fn use_candle_forward(&mut self, on: bool) {
        self.candle_only = on;
    }

    /// The forward pass through candle's ops on any device and dtype: the CUDA and
    /// half-precision path, and the reference the CPU path is tested against.
    pub fn forward_candle(
        &self,
        tokens: &[Vec<u32>],
        opts: ForwardOptions<'_>,
    ) -> Result<ForwardOutput> {
        forward::forward(&self.cfg, &self.weights, &self.rt, tokens, opts)
    }

    /// Last-position logits for each prompt, computed in batches.
    pub fn last_logits(&self, tokens: &[Vec<u32>], batch_size: usize) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(tokens.len());
        for chunk in tokens.chunks(batch_size.max(1)) {
            let o = self.forward(chunk, ForwardOptions::default())?;
            let l = o
                .logits
                .ok_or_else(|| Error::InvalidInput("no logits computed".into()))?;
            out.extend(l.to_vec2::<f32>()?);
        }
        Ok(out)
    }
}

/// Softmax of one logits row (max-subtracted, f64 accumulation).
pub fn softmax(logits: &[f32]) -> Vec<f32> {
    let m = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits.iter().map(|&x| ((x - m) as f64).exp()).collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|&x| (x / s) as f32).collect()
}

/// How to load a model.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    pub processing: Processing,
    pub device: Device,
    /// `--dtype`; `None`: [`WeightDtype::choose`]'s default for the device.
    pub dtype: Option<WeightDtype>,
    /// `--max-memory` in bytes: weights beyond it are refused before they are read.
    pub max_memory: Option<u64>,
}

impl LoadOptions {
    fn target(&self) -> LoadTarget {
        LoadTarget {
            dtype: self.dtype,
            max_bytes: self.max_memory,
        }
    }
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self {
            processing: Processing::TL_DEFAULT,
            device: Device::Cpu,
            dtype: None,
            max_memory: None,
        }
    }
}

/// What a model argument on the command line resolves to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSpec {
    /// HF folder with config.json (`model_type` gpt2 or llama).
    HfDir(PathBuf),
    /// TransformerLens state dict + its config.json.
    TransformerLens {
        config: PathBuf,
        weights: PathBuf,
    },
    Gguf(PathBuf),
}

/// Built-in names resolved through the local model cache (fetched on first use).
pub const BUILTIN_MODELS: &[&str] = &[fetch::SMOLLM2_135M.name, fetch::GEMMA3_270M.name];

impl ModelSpec {
    /// Resolve a path, a built-in name (`smollm2-135m`, `gemma-3-270m`, fetched on first
    /// use) or a Hugging Face repo id (`gpt2`, `Qwen/Qwen2.5-0.5B`, `hub:gpt2`; downloaded
    /// into the hub cache unless built without the default `hub` feature).
    pub fn resolve(arg: &str) -> Result<Self> {
        if arg.trim().is_empty() {
            return Err(Error::InvalidInput("empty model argument".into()));
        }
        let p = Path::new(arg);
        if p.exists() {
            return Self::from_path(p);
        }
        if let Some(m) = fetch::builtin(arg) {
            return Ok(ModelSpec::Gguf(m.path()?));
        }
        if let Some(repo) = arg.strip_prefix("hub:") {
            return Self::from_path(&fetch::hub_download(repo)?);
        }
        if fetch::looks_like_repo(arg) {
            return Self::from_path(&fetch::hub_download(arg)?);
        }
        Err(Error::io(
            p,
            std::io::Error::new(
                std::io::ErrorKind::NotFound,
                format!(
                    "no such model file or folder, built-in name ({}) or hub repo id",
                    BUILTIN_MODELS.join(", ")
                ),
            ),
        ))
    }

    fn from_path(p: &Path) -> Result<Self> {
        if p.is_dir() {
            let cfg = p.join("config.json");
            if !cfg.is_file() {
                return Err(Error::format(p, "folder has no config.json"));
            }
            let c = load::read_json(&cfg)?;
            if c.get("model_type").is_some() {
                return Ok(ModelSpec::HfDir(p.to_owned()));
            }
            if c.get("n_layers").is_some() {
                for name in ["model.safetensors", "model.pth", "model.pt"] {
                    if p.join(name).is_file() {
                        return Ok(ModelSpec::TransformerLens {
                            config: cfg,
                            weights: p.join(name),
                        });
                    }
                }
                return Err(Error::format(
                    p,
                    "TransformerLens folder without model.safetensors / model.pth",
                ));
            }
            return Err(Error::UnsupportedModel(format!(
                "{}: config.json has neither `model_type` (Hugging Face) nor `n_layers` (TransformerLens)",
                cfg.display()
            )));
        }
        match p.extension().and_then(|e| e.to_str()) {
            Some("gguf") => Ok(ModelSpec::Gguf(p.to_owned())),
            Some("safetensors") | Some("pth") | Some("pt") => {
                let dir = p.parent().unwrap_or(Path::new("."));
                let cfg = dir.join("config.json");
                if !cfg.is_file() {
                    return Err(Error::format(
                        p,
                        "a TransformerLens checkpoint needs a config.json beside it",
                    ));
                }
                Ok(ModelSpec::TransformerLens {
                    config: cfg,
                    weights: p.to_owned(),
                })
            }
            _ => Err(Error::UnsupportedModel(format!(
                "{}: unknown model file type (expected a folder, .gguf, .safetensors or .pth)",
                p.display()
            ))),
        }
    }
}

/// Load a model and its tokenizer.
pub fn load(spec: &ModelSpec, opts: &LoadOptions) -> Result<(Model, Box<dyn Tokenizer>)> {
    let dev = &opts.device;
    match spec {
        ModelSpec::HfDir(dir) => {
            let cfg_path = dir.join("config.json");
            let c = load::read_json(&cfg_path)?;
            let mt = c.get("model_type").and_then(|v| v.as_str()).unwrap_or("");
            let (cfg, w) = match mt {
                "gpt2" => load::load_gpt2_hf(dir, dev, opts.target())?,
                "llama" | "mistral" | "qwen2" | "gemma2" | "gemma3_text" | "gemma3" => {
                    load::load_llama_hf(dir, dev, opts.target())?
                }
                "gpt_neox" => load::load_neox_hf(dir, dev, opts.target())?,
                other => {
                    return Err(Error::UnsupportedModel(format!(
                        "{}: model_type {other:?} (supported: gpt2, llama, mistral, qwen2, \
                         gemma2, gemma3_text, gpt_neox)",
                        cfg_path.display()
                    )))
                }
            };
            let tok: Box<dyn Tokenizer> = if dir.join("tokenizer.json").is_file() {
                let bos = c
                    .get("bos_token_id")
                    .and_then(|v| v.as_u64())
                    .map(|v| v as u32);
                let t = HfTokenizer::from_file(&dir.join("tokenizer.json"), None)?;
                Box::new(t.with_bos(bos))
            } else if mt == "gpt2" {
                Box::new(Gpt2Tokenizer::new()?)
            } else {
                Box::new(crate::tokenize::MissingTokenizer::new(format!(
                    "{}: folder has no tokenizer.json",
                    dir.display()
                )))
            };
            let m = Model::from_parts(cfg, w, opts.processing, dir.display().to_string())?;
            Ok((m, tok))
        }
        ModelSpec::TransformerLens { config, weights } => {
            let (cfg, w) = load::load_transformer_lens(config, weights, dev, opts.target())?;
            let dir = config.parent().unwrap_or(Path::new("."));
            let tok: Box<dyn Tokenizer> = if dir.join("tokenizer.json").is_file() {
                Box::new(HfTokenizer::from_file(&dir.join("tokenizer.json"), None)?)
            } else {
                Box::new(Gpt2Tokenizer::new()?)
            };
            let m = Model::from_parts(cfg, w, opts.processing, weights.display().to_string())?;
            Ok((m, tok))
        }
        ModelSpec::Gguf(path) => {
            let (cfg, w, vocab) = load::load_gguf(path, dev, opts.target())?;
            let name = format!("{} (GGUF vocab)", path.display());
            let tok: Box<dyn Tokenizer> = match vocab {
                load::GgufVocab::Bpe {
                    tokens,
                    merges,
                    pre,
                    bos_id,
                } => Box::new(HfTokenizer::from_bpe_parts(
                    &tokens, &merges, &pre, bos_id, name,
                )?),
                load::GgufVocab::Spm {
                    tokens,
                    scores,
                    token_types,
                    bos_id,
                    add_space_prefix,
                } => Box::new(crate::tokenize::SpmTokenizer::new(
                    tokens,
                    scores,
                    token_types,
                    bos_id,
                    add_space_prefix,
                    name,
                )?),
            };
            let m = Model::from_parts(cfg, w, opts.processing, path.display().to_string())?;
            Ok((m, tok))
        }
    }
}
