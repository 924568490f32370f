//! `inspect`, `predict` and `hooks`: one model, no task.
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Args;
use headcode::hooks::{collect, HookPoint, Reduce};
use headcode::say;
use headcode::tokenize::Tokenizer;

use super::ModelArgs;

#[derive(Args)]
pub struct InspectArgs {
    #[command(flatten)]
    model: ModelArgs,
}

#[derive(Args)]
pub struct PredictArgs {
    #[command(flatten)]
    model: ModelArgs,
    #[arg(long)]
    prompt: String,
    #[arg(long, default_value_t = 5)]
    top: usize,
    /// Do not prepend BOS.
    #[arg(long)]
    no_bos: bool,
}

#[derive(Args)]
pub struct HooksArgs {
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
}

pub fn inspect(a: &InspectArgs) -> Result<()> {
    let (model, tok) = a.model.load()?;
    headcode::report::summary::print_model(&model, tok.as_ref());
    Ok(())
}

fn encode_prompt(tok: &dyn Tokenizer, prompt: &str, bos: bool) -> Result<Vec<u32>> {
    if prompt.is_empty() {
        bail!("empty prompt");
    }
    Ok(tok.encode_with_bos(prompt, bos)?)
}

pub fn predict(a: &PredictArgs) -> Result<()> {
    let (model, tok) = a.model.load()?;
    let ids = encode_prompt(tok.as_ref(), &a.prompt, !a.no_bos)?;
    let logits = model.last_logits(&[ids], 1)?.remove(0);
    let probs = headcode::model::softmax(&logits);
    let mut order: Vec<usize> = (0..probs.len()).collect();
    order.sort_by(|&x, &y| probs[y].total_cmp(&probs[x]).then(x.cmp(&y)));
    say!("{:?}", a.prompt);
    for &i in order.iter().take(a.top.max(1)) {
        say!(
            "  {:>8.4}  {:>6}  {:?}",
            probs[i],
            i,
            tok.display_piece(i as u32)?
        );
    }
    Ok(())
}

pub fn hooks(a: HooksArgs) -> Result<()> {
    headcode::report::out::check_file_target(&a.out)?;
    let mut prompts = a.prompt;
    if let Some(f) = &a.prompts {
        let text = std::fs::read_to_string(f).with_context(|| format!("{}", f.display()))?;
        prompts.extend(
            text.lines()
                .filter(|l| !l.trim().is_empty())
                .map(String::from),
        );
    }
    if prompts.is_empty() {
        bail!("no prompts: give --prompt or --prompts FILE");
    }
    let (model, tok) = a.model.load()?;
    let ids: Vec<Vec<u32>> = prompts
        .iter()
        .map(|p| encode_prompt(tok.as_ref(), p, !a.no_bos))
        .collect::<Result<_>>()?;
    let c = collect(&model, &ids, a.reduce, 32, |_| {})?;
    let acts = match a.hook {
        HookPoint::Z => c.z,
        HookPoint::Result => c.result,
    };
    headcode::report::write_head_acts(&a.out, &acts, &ids, &c.last_logits, &model)?;
    say!(
        "wrote {} [{}] ({} heads, hook {:?}, reduce {:?})",
        a.out.display(),
        acts.shape
            .iter()
            .map(|d| d.to_string())
            .collect::<Vec<_>>()
            .join(", "),
        acts.heads(),
        a.hook,
        a.reduce
    );
    Ok(())
}
