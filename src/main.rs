//! The `headcode` command line: parses, calls the library, prints. No logic of its own.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use candle_core::Device;
use clap::{Args, Parser, Subcommand};
use headcode::hooks::{collect, HookPoint, Reduce};
use headcode::model::{self, LoadOptions, Model, ModelSpec, Processing};
use headcode::tokenize::Tokenizer;

#[derive(Parser)]
#[command(
    name = "headcode",
    version,
    about = "Find circuits in transformer language models with sparse autoencoders on attention-head outputs"
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Args, Clone)]
struct ModelArgs {
    /// Model: a folder (HF GPT-2 / Llama, TransformerLens), a .gguf/.safetensors/.pth file,
    /// or a built-in name (`smollm2-135m`, fetched on first use).
    model: String,
    /// Skip TransformerLens weight processing (fold LN, centre writing weights and
    /// unembed, fold value biases).
    #[arg(long)]
    no_processing: bool,
}

impl ModelArgs {
    fn load(&self) -> Result<(Model, Box<dyn Tokenizer>)> {
        let spec = ModelSpec::resolve(&self.model)?;
        let processing = if self.no_processing {
            Processing::NONE
        } else {
            Processing::TL_DEFAULT
        };
        Ok(model::load(
            &spec,
            &LoadOptions {
                processing,
                device: Device::Cpu,
            },
        )?)
    }
}

#[derive(Subcommand)]
enum Cmd {
    /// Architecture, sizes, parameter count and the processing applied.
    Inspect {
        #[command(flatten)]
        model: ModelArgs,
    },
    /// Next-token candidates with probabilities.
    Predict {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: String,
        #[arg(long, default_value_t = 5)]
        top: usize,
        /// Do not prepend BOS.
        #[arg(long)]
        no_bos: bool,
    },
    /// Hook every head's z or result and write them with their labels to safetensors.
    Hooks {
        #[command(flatten)]
        model: ModelArgs,
        #[arg(long)]
        prompt: Vec<String>,
        /// A text file with one prompt per line.
        #[arg(long)]
        prompts: Option<PathBuf>,
        #[arg(long, value_enum, default_value = "result")]
        hook: HookPoint,
        #[arg(long, value_enum, default_value = "mean")]
        reduce: Reduce,
        #[arg(long)]
        no_bos: bool,
        #[arg(long)]
        out: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.cmd {
        Cmd::Inspect { model } => inspect(&model),
        Cmd::Predict {
            model,
            prompt,
            top,
            no_bos,
        } => predict(&model, &prompt, top, !no_bos),
        Cmd::Hooks {
            model,
            prompt,
            prompts,
            hook,
            reduce,
            no_bos,
            out,
        } => hooks(&model, prompt, prompts, hook, reduce, !no_bos, &out),
    }
}

fn inspect(m: &ModelArgs) -> Result<()> {
    let (model, tok) = m.load()?;
    let c = &model.cfg;
    println!("source        {}", model.source);
    println!("architecture  {}", c.architecture);
    println!("layers        {}", c.n_layers);
    println!(
        "heads         {} per layer ({} key/value), {} in all",
        c.n_heads,
        c.n_kv_heads,
        c.n_heads_total()
    );
    println!("d_model       {}", c.d_model);
    println!("d_head        {}", c.d_head);
    println!(
        "d_mlp         {}",
        if c.attn_only {
            "none (attention-only)".to_string()
        } else {
            c.d_mlp.to_string()
        }
    );
    println!("vocab         {}", c.d_vocab);
    println!("context       {}", c.n_ctx);
    println!("norm          {:?}, eps {}", c.norm, c.eps);
    println!("positions     {:?}", c.pos);
    println!("activation    {:?}", c.act);
    println!("parameters    {}", model.weights.n_params());
    let p = model.processing;
    println!(
        "processing    fold_ln={} center_writing_weights={} center_unembed={} fold_value_biases={}",
        p.fold_ln, p.center_writing_weights, p.center_unembed, p.fold_value_biases
    );
    println!("tokenizer     {} (vocab {})", tok.name(), tok.vocab_size());
    Ok(())
}

fn encode_prompt(tok: &dyn Tokenizer, prompt: &str, bos: bool) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        bail!("empty prompt");
    }
    Ok(tok.encode_with_bos(prompt, bos)?)
}

fn predict(m: &ModelArgs, prompt: &str, top: usize, bos: bool) -> Result<()> {
    let (model, tok) = m.load()?;
    let ids = encode_prompt(tok.as_ref(), prompt, bos)?;
    let logits = model.last_logits(&[ids], 1)?.remove(0);
    let probs = model::softmax(&logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
    println!("{prompt:?}");
    for &i in order.iter().take(top.max(1)) {
        println!(
            "  {:>8.4}  {:>6}  {:?}",
            probs[i],
            i,
            tok.decode(&[i as u32])?
        );
    }
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn hooks(
    m: &ModelArgs,
    mut prompts: Vec<String>,
    file: Option<PathBuf>,
    hook: HookPoint,
    reduce: Reduce,
    bos: bool,
    out: &PathBuf,
) -> Result<()> {
    if let Some(f) = file {
        let text = std::fs::read_to_string(&f).with_context(|| format!("{}", f.display()))?;
        prompts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    if prompts.is_empty() {
        bail!("no prompts: give --prompt or --prompts FILE");
    }
    let (model, tok) = m.load()?;
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| encode_prompt(tok.as_ref(), p, bos))
        .collect::<Result<_>>()?;
    let c = collect(&model, &ids, reduce, 32, |_| {})?;
    let acts = match hook {
        HookPoint::Z => c.z,
        HookPoint::Result => c.result,
    };
    headcode::report::write_head_acts(out, &acts, &ids, &model)?;
    println!(
        "wrote {} [{}] ({} heads, hook {:?}, reduce {:?})",
        out.display(),
        acts.shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        acts.heads(),
        hook,
        reduce
    );
    Ok(())
}
