//! `--dtype`: weights kept in bf16/f16, the forward's parity against f32 on every fixture
//! family, hooked activations handed out in f32, and the one-line refusals.
//!
//! Tolerances (max |half − f32| / max |f32| per tensor): each weight and each activation
//! is rounded once per operation to the dtype's unit roundoff, 2⁻⁹ ≈ 2.0e-3 for bf16 and
//! 2⁻¹² ≈ 2.4e-4 for f16 (8 and 11 significant bits). On a 2-layer fixture a value goes
//! through about ten such roundings in series (weights, Q/K/V, scores, z, W_O, residual,
//! norm, MLP, …) of up to one unit each, some in sums that add them; we allow 24 units:
//! 4.7e-2 for bf16 and 5.9e-3 for f16. Observed (candle 0.11.1, CPU): Gemma 2's logits
//! 3.1e-2 / 4.9e-3 (its residual stream runs at √d_model times the embedding's scale),
//! every other family and tensor ≤ 1.1e-2 / 1.7e-3. The test also requires a nonzero
//! error, which a forward that silently ran in f32 would not have.
mod common;

use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use common::{prompts, rel_err};
use headcode::hooks::{collect, Reduce};
use headcode::model::{load, LoadOptions, Model, ModelSpec, Processing, WeightDtype};

const BF16_TOL: f32 = 24.0 / 512.0;
const F16_TOL: f32 = 24.0 / 4096.0;

const FAMILIES: [&str; 8] = [
    "gpt2_tiny",
    "llama_tiny",
    "attn_only_tiny",
    "attn_only_shortformer_tiny",
    "qwen2_tiny",
    "gemma2_tiny",
    "gemma3_tiny",
    "pythia_tiny",
];

fn fixture_path(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn load_as(path: &Path, dtype: Option<WeightDtype>) -> headcode::Result<Model> {
    let spec = ModelSpec::resolve(path.to_str().unwrap())?;
    Ok(load(
        &spec,
        &LoadOptions {
            processing: Processing::TL_DEFAULT,
            device: Device::Cpu,
            dtype,
            max_memory: None,
        },
    )?
    .0)
}

fn flat(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1::<f32>().unwrap()
}

/// Every matrix and bias of `m` in `want`, every norm weight in f32.
fn assert_kept(m: &Model, want: DType) {
    let w = &m.weights;
    assert_eq!(w.w_e.dtype(), want);
    assert_eq!(w.w_u.dtype(), want);
    for l in &w.layers {
        for t in [&l.w_q, &l.b_q, &l.w_k, &l.w_v, &l.w_o, &l.b_o] {
            assert_eq!(t.dtype(), want);
        }
        if let Some(mlp) = &l.mlp {
            assert_eq!(mlp.w_in.dtype(), want);
            assert_eq!(mlp.w_out.dtype(), want);
        }
        for n in [&l.ln1, &l.ln2].into_iter().chain(l.extra_norms()) {
            for t in [&n.w, &n.b].into_iter().flatten() {
                assert_eq!(t.dtype(), DType::F32, "norm weights stay f32");
            }
        }
    }
    assert_eq!(m.dtype(), WeightDtype::of(want).unwrap());
}

/// (logits, z, result) of the fixture prompts, all positions.
fn outputs(m: &Model) -> [Vec<f32>; 3] {
    let (clean, _) = prompts();
    let out = m
        .forward(
            &clean,
            headcode::model::ForwardOptions {
                logits: headcode::model::LogitsAt::All,
                ..Default::default()
            },
        )
        .unwrap();
    let logits = out.logits.unwrap();
    assert_eq!(logits.dtype(), DType::F32, "logits are handed out in f32");
    let c = collect(m, &clean, Reduce::All, 8, |_| {}).unwrap();
    [flat(&logits), c.z.data, c.result.data]
}

#[test]
fn half_forward_matches_f32_on_every_family() {
    for name in FAMILIES {
        let path = fixture_path(name);
        let full = load_as(&path, None).unwrap();
        assert_kept(&full, DType::F32);
        let want = outputs(&full);
        for (dtype, tol) in [(WeightDtype::Bf16, BF16_TOL), (WeightDtype::F16, F16_TOL)] {
            let m = load_as(&path, Some(dtype)).unwrap();
            assert_kept(&m, dtype.dtype());
            let got = outputs(&m);
            for (what, (g, w)) in ["logits", "z", "result"].iter().zip(got.iter().zip(&want)) {
                let e = rel_err(g, w);
                eprintln!("{name} {dtype} {what}: {e:.2e}");
                assert!(e <= tol, "{name} {dtype} {what}: rel err {e} > {tol}");
                assert!(e > 0.0, "{name} {dtype} {what}: identical to f32");
            }
        }
    }
}

#[test]
fn gguf_dequantizes_to_the_chosen_dtype() {
    let path = fixture_path("qwen2_tiny").join("model.gguf");
    let full = load_as(&path, None).unwrap();
    let half = load_as(&path, Some(WeightDtype::Bf16)).unwrap();
    assert_kept(&half, DType::BF16);
    let (a, b) = (outputs(&half), outputs(&full));
    assert!(rel_err(&a[0], &b[0]) <= BF16_TOL);
}

/// A copy of the llama fixture whose tensors `edit` rewrites.
fn edited_llama(edit: impl Fn(&str, Tensor) -> Tensor) -> tempfile::TempDir {
    let src = fixture_path("llama_tiny");
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(src.join("config.json"), dir.path().join("config.json")).unwrap();
    let ts = candle_core::safetensors::load(src.join("model.safetensors"), &Device::Cpu).unwrap();
    let ts: std::collections::HashMap<String, Tensor> = ts
        .into_iter()
        .map(|(k, v)| (k.clone(), edit(&k, v)))
        .collect();
    candle_core::safetensors::save(&ts, dir.path().join("model.safetensors")).unwrap();
    dir
}

#[test]
fn a_bf16_checkpoint_stays_bf16_and_its_own_dtype_is_known() {
    let dir = edited_llama(|_, t| t.to_dtype(DType::BF16).unwrap());
    let files = [dir.path().join("model.safetensors")];
    let src = headcode::model::weights::TensorSource::safetensors(&files).unwrap();
    assert_eq!(src.own_dtype(), Some(WeightDtype::Bf16));
    let m = load_as(dir.path(), Some(WeightDtype::Bf16)).unwrap();
    assert_kept(&m, DType::BF16);
    // On the CPU the default is f32, whatever the checkpoint.
    assert_kept(&load_as(dir.path(), None).unwrap(), DType::F32);
}

#[test]
fn f16_refuses_a_weight_beyond_its_range_naming_the_tensor() {
    let dir = edited_llama(|name, t| {
        if name == "model.layers.0.mlp.up_proj.weight" {
            (t * 1e7).unwrap()
        } else {
            t
        }
    });
    assert!(load_as(dir.path(), Some(WeightDtype::Bf16)).is_ok());
    let e = load_as(dir.path(), Some(WeightDtype::F16))
        .err()
        .expect("f16 overflow refused")
        .to_string();
    assert!(
        e.contains("model.layers.0.mlp.up_proj.weight") && e.contains("F16"),
        "{e}"
    );
    assert!(!e.contains('\n'), "{e}");
}

/// A safetensors file of one fp8 tensor: no model dtype converts from it.
#[test]
fn an_fp8_checkpoint_is_refused_before_any_tensor_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let header =
        br#"{"model.embed_tokens.weight":{"dtype":"F8_E4M3","shape":[4,2],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    let p = dir.path().join("model.safetensors");
    std::fs::write(&p, bytes).unwrap();
    let e = match headcode::model::weights::TensorSource::safetensors(std::slice::from_ref(&p)) {
        Ok(_) => panic!("fp8 accepted"),
        Err(e) => e.to_string(),
    };
    assert!(
        e.contains("model.safetensors") && e.contains("model.embed_tokens.weight"),
        "{e}"
    );
    assert!(e.contains("F8E4M3") && !e.contains('\n'), "{e}");
}

#[test]
fn the_graph_forward_of_a_half_model_runs_in_f32() {
    use headcode::model::graph::{GraphModel, GraphRunOptions};
    let path = fixture_path("llama_tiny");
    let m = load_as(&path, Some(WeightDtype::Bf16)).unwrap();
    let (clean, _) = prompts();
    let g = GraphModel::new(&m, false).unwrap();
    let out = g.run(&clean, GraphRunOptions::default()).unwrap();
    assert_eq!(out.logits.dtype(), DType::F32);
    // The graph runs the bf16-rounded weights in f32: it is close to the bf16 forward.
    let plain = m
        .forward(&clean, headcode::model::ForwardOptions::default())
        .unwrap()
        .logits
        .unwrap();
    let e = rel_err(&flat(&out.logits), &flat(&plain));
    assert!(e <= BF16_TOL, "graph vs bf16 forward: {e}");
}

#[test]
fn the_cli_refuses_an_unknown_dtype_in_one_line() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_headcode"))
        .args(["inspect", "--dtype", "int8"])
        .arg(fixture_path("llama_tiny"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("int8") && err.contains("bf16"), "{err}");
}
