"""The PyTorch peer of `headcode bench --device cuda --model llama-3.1-8b-shape` (issue 24):
the same work in Hugging Face transformers at Llama-3.1-8B's shape, random weights drawn on
the GPU in bf16 (timing does not depend on them), on the same GPU in the same device call.

  1. hook: 500 prompts x 18 tokens (IOI's length) in one batch, bf16 forward with a forward
     pre-hook on every layer's o_proj (its input is the heads' z), z averaged over positions,
     cast to f32; last-position logits only (`logits_to_keep=1`);
  2. sae: 1024 per-head SAEs on z (128 -> 200), 10 examples each, 500 Adam steps, batched
     with bmm, eager and captured in a CUDA graph (the strongest plain-PyTorch form);
  3. codes: encode all 500 x 1024 vectors, argmax, per-head |P \\ N| in torch ops.

Prints one line per stage ("  <ms> ms  <name>"), the totals, and the peak memory PyTorch
allocated; writes $OUT/peer_llama8b.json. Run: python3 peer_llama8b.py
"""
import json, os, time
import torch, torch.nn.functional as F
from transformers import LlamaConfig, LlamaForCausalLM

dev = "cuda"
torch.manual_seed(0)
N_PROMPTS, T, STEPS, N_FEAT, EXAMPLES = 500, 18, 500, 200, 10


def sync():
    torch.cuda.synchronize()


def timed(fn, reps=3):
    fn(); sync()
    ts = []
    for _ in range(reps):
        t = time.perf_counter(); fn(); sync(); ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2]


cfg = LlamaConfig(  # meta-llama/Llama-3.1-8B's config.json
    vocab_size=128256, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
    num_attention_heads=32, num_key_value_heads=8, head_dim=128, max_position_embeddings=131072,
    rms_norm_eps=1e-5, rope_theta=500000.0, tie_word_embeddings=False,
    rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                  "high_freq_factor": 4.0, "original_max_position_embeddings": 8192},
    torch_dtype="bfloat16", attn_implementation="sdpa",
)
t0 = time.perf_counter()
with torch.device(dev):
    torch.set_default_dtype(torch.bfloat16)
    model = LlamaForCausalLM(cfg).eval()
    torch.set_default_dtype(torch.float32)
sync()
build_s = time.perf_counter() - t0
L, H, dh = cfg.num_hidden_layers, cfg.num_attention_heads, cfg.head_dim
torch.cuda.reset_peak_memory_stats()

tokens = torch.randint(0, cfg.vocab_size, (N_PROMPTS, T), device=dev)
caught = {}
def mk_hook(l):
    def pre(mod, args):
        caught[l] = args[0]  # [B, T, H*dh]: the heads' z, o_proj's input
    return pre
for l in range(L):
    model.model.layers[l].self_attn.o_proj.register_forward_pre_hook(mk_hook(l))

def hook_batched():
    with torch.no_grad():
        try:
            model(tokens, logits_to_keep=1)
        except TypeError:  # transformers before 4.45 names it num_logits_to_keep
            model(tokens, num_logits_to_keep=1)
        return torch.stack([caught[l].float().mean(1).view(-1, H, dh) for l in range(L)], 1).reshape(
            N_PROMPTS, L * H, dh)

rows = []
t_hook = timed(hook_batched)
rows.append(("hook 500 prompts x 18 tokens, one batch, bf16", t_hook))
Z = hook_batched()                               # [500, 1024, 128] f32
idx = torch.randperm(N_PROMPTS, device=dev)[:EXAMPLES]


def per_head_step(x, n=N_FEAT, lam=0.02):
    E, Hh, d = x.shape
    xs = x.transpose(0, 1).contiguous()
    W_enc = torch.randn(Hh, n, d, device=dev, requires_grad=True)
    W_dec = torch.randn(Hh, d, n, device=dev, requires_grad=True)
    b_enc = ((torch.rand(Hh, n, device=dev) * 2 - 1) / d ** 0.5).requires_grad_()
    b = torch.zeros(Hh, d, device=dev, requires_grad=True)
    opt = torch.optim.Adam([W_enc, W_dec, b_enc, b], lr=1e-3, capturable=True)
    def step():
        with torch.no_grad():
            W_enc.copy_(F.normalize(W_enc, dim=-1)); W_dec.copy_(F.normalize(W_dec, dim=-1))
        f = F.relu(torch.bmm(xs - b[:, None], W_enc.transpose(1, 2)) + b_enc[:, None])
        xh = torch.bmm(f, W_dec.transpose(1, 2)) + b[:, None]
        loss = ((xh - xs) ** 2).mean() + lam * f.abs().sum(-1).mean()
        loss.backward(); opt.step()
    return step, opt, (W_enc, b_enc, b)


def eager():
    step, opt, _ = per_head_step(Z[idx])
    for _ in range(STEPS):
        opt.zero_grad(set_to_none=True); step()


def graphed():
    step, opt, params = per_head_step(Z[idx])
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            opt.zero_grad(set_to_none=True); step()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        step()
    def run():
        for _ in range(STEPS):
            g.replay()
    return run, params


t_sae = timed(eager, reps=1)
rows.append((f"{L * H} per-head SAEs on z {dh}->{N_FEAT} (bmm), {STEPS} Adam steps", t_sae))
t_sae_g = None
try:
    run, (W_enc, b_enc, b) = graphed()
    t_sae_g = timed(run)
    rows.append((f"{L * H} per-head SAEs on z, CUDA graph, {STEPS} steps", t_sae_g))
except Exception as e:  # keep the rest if capture is refused
    print("CUDA graph row skipped:", repr(e))
    W_enc = torch.randn(L * H, N_FEAT, dh, device=dev); b_enc = torch.zeros(L * H, N_FEAT, device=dev)
    b = torch.zeros(L * H, dh, device=dev)


def codes_torch():
    with torch.no_grad():
        f = F.relu(torch.einsum("ehd,hnd->ehn", Z - b[None], W_enc.detach()) + b_enc.detach()[None])
        c = f.argmax(-1)                                  # [500, 1024]
        oh = F.one_hot(c, N_FEAT).bool()
        P = oh[: N_PROMPTS // 2].any(0); Nn = oh[N_PROMPTS // 2:].any(0)
        return (P & ~Nn).sum(-1)
t_codes = timed(codes_torch)
rows.append(("encode+argmax+|P\\N| (torch ops)", t_codes))
peak = torch.cuda.max_memory_allocated()

print("\n=== peer timings, Llama-3.1-8B shape, bf16 (PyTorch %s, %s) ===" % (
    torch.__version__, torch.cuda.get_device_name()))
print(f"model built on the GPU in {build_s:.1f} s")
for name, t in rows:
    print(f"{t * 1e3:12.2f} ms  {name}")
best_sae = min(t for t in (t_sae, t_sae_g) if t is not None)
total = t_hook + best_sae + t_codes
print(f"{total * 1e3:12.2f} ms  TOTAL batched PyTorch (hook + best SAE + codes)")
print(f"peak memory allocated by PyTorch: {peak / 1e9:.2f} GB")
out = os.environ.get("OUT", ".")
with open(os.path.join(out, "peer_llama8b.json"), "w") as f:
    json.dump({"rows_ms": {n: t * 1e3 for n, t in rows}, "total_ms": total * 1e3,
               "peak_allocated_bytes": peak, "build_s": build_s,
               "torch": torch.__version__, "device": torch.cuda.get_device_name()}, f, indent=1)
