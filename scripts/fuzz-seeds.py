#!/usr/bin/env python3
"""Build every fuzz target's seed corpus (fuzz/corpus/<target>/) from tests/fixtures/ and
data/, with the leading selector bytes the drivers in fuzz/src/drivers.rs expect.

Standard library only. The run outputs (codes.json, scores.json, compare.json) have no
fixture, so they come from fuzz/seeds/, which this script fills by running headcode on the
tiny Qwen2 GGUF fixture when `--regen-runs` is given (set HEADCODE to a built binary, else
`cargo run --release` is used). Usage: scripts/fuzz-seeds.py [--regen-runs]
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FIX = ROOT / "tests" / "fixtures"
CORPUS = ROOT / "fuzz" / "corpus"
RUNS = ROOT / "fuzz" / "seeds"

# The family order of `Family::pick` in fuzz/src/drivers.rs.
FAMILIES = [
    "gpt2_tiny",
    "gpt2_tiny_hub_layout",
    "llama_tiny",
    "qwen2_tiny",
    "gemma2_tiny",
    "gemma3_tiny",
    "pythia_tiny",
    "attn_only_tiny",
    "attn_only_shortformer_tiny",
]

# The families whose weight files seed `safetensors` and `gguf`: the GPT-2, Llama, Gemma 3
# and TransformerLens layouts, and Qwen2 for a second GGUF vocabulary (BPE beside Gemma's
# SentencePiece).
WEIGHT_SEEDS = {"gpt2_tiny", "llama_tiny", "gemma3_tiny", "qwen2_tiny", "attn_only_tiny"}


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def byte_symbols():
    """GPT-2's byte-to-unicode table (bytes_to_unicode in its encoder.py): printable bytes
    stand for themselves, the rest for U+0100 onwards, in byte order."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, n = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + n)
            n += 1
    return [table[b] for b in range(256)]


def tokenizer_jsons():
    """Small tokenizer.json files of the model types `tokenizers` reads (no fixture has
    one): byte-level BPE with merges and added tokens, WordPiece, WordLevel, Unigram."""
    byte_vocab = {t: i for i, t in enumerate(byte_symbols())}
    byte_vocab.update({"Ġt": 256, "he": 257, "Ġthe": 258, "<|endoftext|>": 259})
    bpe = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 259, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None,
        "pre_tokenizer": {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True},
        "post_processor": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": False, "use_regex": True},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True, "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": byte_vocab, "merges": ["Ġ t", "h e", "Ġt he"]},
    }
    wp_vocab = {t: i for i, t in enumerate(["[UNK]", "[CLS]", "[SEP]", "hello", "world", "##s", ",", "!"])}
    wordpiece = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": {"type": "BertNormalizer", "clean_text": True, "handle_chinese_chars": True,
                       "strip_accents": None, "lowercase": True},
        "pre_tokenizer": {"type": "BertPreTokenizer"},
        "post_processor": {"type": "TemplateProcessing",
                           "single": [{"SpecialToken": {"id": "[CLS]", "type_id": 0}},
                                      {"Sequence": {"id": "A", "type_id": 0}},
                                      {"SpecialToken": {"id": "[SEP]", "type_id": 0}}],
                           "pair": [{"Sequence": {"id": "A", "type_id": 0}},
                                    {"Sequence": {"id": "B", "type_id": 1}}],
                           "special_tokens": {"[CLS]": {"id": "[CLS]", "ids": [1], "tokens": ["[CLS]"]},
                                              "[SEP]": {"id": "[SEP]", "ids": [2], "tokens": ["[SEP]"]}}},
        "decoder": {"type": "WordPiece", "prefix": "##", "cleanup": True},
        "model": {"type": "WordPiece", "unk_token": "[UNK]", "continuing_subword_prefix": "##",
                  "max_input_chars_per_word": 100, "vocab": wp_vocab},
    }
    wordlevel = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": {"type": "Sequence", "normalizers": [{"type": "NFKC"}, {"type": "Lowercase"}]},
        "pre_tokenizer": {"type": "Whitespace"}, "post_processor": None, "decoder": None,
        "model": {"type": "WordLevel", "vocab": {"<unk>": 0, "hello": 1, "world": 2}, "unk_token": "<unk>"},
    }
    unigram = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 1, "content": "<s>", "single_word": False, "lstrip": False, "rstrip": False,
                          "normalized": False, "special": True}],
        "normalizer": {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
        "pre_tokenizer": {"type": "Metaspace", "replacement": "\u2581", "prepend_scheme": "always", "split": False},
        "post_processor": None,
        "decoder": {"type": "Sequence", "decoders": [{"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
                                                      {"type": "ByteFallback"}, {"type": "Fuse"}, {"type": "Strip", "content": " ", "start": 1, "stop": 0}]},
        "model": {"type": "Unigram", "unk_id": 0, "byte_fallback": True,
                  "vocab": [["<unk>", 0.0], ["<s>", 0.0], ["\u2581", -1.0], ["\u2581hello", -2.0], ["world", -2.5],
                            ["h", -3.0], ["e", -3.0], ["l", -3.0], ["o", -3.0], ["<0x41>", -5.0]]},
    }
    return {"bpe": bpe, "wordpiece": wordpiece, "wordlevel": wordlevel, "unigram": unigram}


def gguf_vocab_seeds():
    """Byte layouts of `drivers::gguf_vocab`: flags, BOS byte, tokens NUL second NUL text."""
    bpe_tokens = byte_symbols() + ["Ġt", "he", "<|endoftext|>"]
    merges = ["Ġ t", "h e"]
    text = b"the cat, 123 <|endoftext|>"
    out = {}
    for pre_idx in range(4):
        flags = (pre_idx << 1) | 0x10
        out[f"bpe-pre{pre_idx}"] = (bytes([flags, 0]) + "\n".join(bpe_tokens).encode() + b"\0"
                                    + "\n".join(merges).encode() + b"\0" + text)
    # Every byte token, as llama.cpp's SentencePiece vocabularies carry them for fallback.
    spm_tokens = ["<unk>", "<s>", "</s>", "\u2581", "\u2581the", "c", "a", "t"] + [f"<0x{b:02X}>" for b in range(256)]
    types = bytes([2, 3, 3, 1, 1, 1, 1, 1] + [6] * 256)  # llama.cpp token types
    out["spm"] = bytes([0x31, 1]) + "\n".join(spm_tokens).encode() + b"\0" + types + b"\0" + b"the cat\nA"
    return out


def regen_runs():
    """Run `discover` and `compare` on the tiny Qwen2 GGUF fixture into fuzz/seeds/."""
    exe = os.environ.get("HEADCODE")
    cmd = [exe] if exe else ["cargo", "run", "--release", "-q", "--"]
    model = str(FIX / "qwen2_tiny" / "model.gguf")
    with tempfile.TemporaryDirectory() as t:
        t = Path(t)
        task = t / "task.jsonl"
        # Digits and punctuation: texts the 300-token fixture vocabulary covers.
        task.write_text("".join(json.dumps({"clean": f"{i}!{(i + 3) % 10}#{i}", "corrupt": f"{(i + 3) % 10}!{i}#{(i + 3) % 10}",
                                            "answer": str(i), "wrong_answers": [str((i + 3) % 10)],
                                            "metric": "logit_diff"}) + "\n" for i in range(8)))
        circ = t / "circuit.json"
        circ.write_text(json.dumps({"heads": ["L0H1", "L1H0"], "edges": ["L0H1->L1H0.q"]}))
        subprocess.run(cmd + ["discover", model, "--task", str(task), "--n", "8", "--steps", "10", "--trials", "2",
                              "--circuit", str(circ), "--quiet", "--out", str(t / "disc")], check=True)
        subprocess.run(cmd + ["compare", model, "--task", str(task), "--circuit", str(circ), "--pairs", "4", "--n", "8",
                              "--trials", "2", "--acdc-thresholds", "0.1", "--quiet", "--out", str(t / "cmp")], check=True)
        RUNS.mkdir(parents=True, exist_ok=True)
        for src, name in [(t / "disc" / "codes.json", "codes.json"), (t / "disc" / "scores.json", "scores.json"),
                          (t / "cmp" / "compare.json", "compare.json")]:
            shutil.copy(src, RUNS / name)


def main():
    if "--regen-runs" in sys.argv:
        regen_runs()
    # Seeds are written under their own names; the inputs the fuzzers added (named by their
    # SHA-1, merged in with `-merge=1`) stay beside them.

    # Model files: [family byte] + file for the family-picking targets. Every family's
    # config; the weight files (200-700 KB each) of a few families only, to keep the
    # committed corpus to a few MB.
    for i, fam in enumerate(FAMILIES):
        d = FIX / fam
        put("hf_config", fam, bytes([i]) + (d / "config.json").read_bytes())
        if fam in WEIGHT_SEEDS:
            put("safetensors", fam, bytes([i]) + (d / "model.safetensors").read_bytes())
        if (d / "model.gguf").is_file() and fam in WEIGHT_SEEDS:
            put("gguf", fam, (d / "model.gguf").read_bytes())
        if (d / "model.pth").is_file():
            put("tl_pth", fam, bytes([i & 1 ^ (1 if "shortformer" in fam else 0)]) + (d / "model.pth").read_bytes())
    put("safetensors_index", "llama_tiny_sharded", (FIX / "llama_tiny_sharded" / "model.safetensors.index.json").read_bytes())

    for name, tj in tokenizer_jsons().items():
        put("tokenizer_json", name, json.dumps(tj, ensure_ascii=False).encode())
    for name, b in gguf_vocab_seeds().items():
        put("gguf_vocab", name, b)

    for f in sorted((FIX / "tasks").glob("*.jsonl")):
        # The first lines are enough to show the format; whole files only slow the fuzzer.
        put("task_jsonl", f.stem, b"".join(f.read_bytes().splitlines(keepends=True)[:3]))
    for f in sorted((FIX / "tasks").glob("*.jsonl")):
        pairs = [json.loads(l) for l in f.read_text().splitlines()[:3]]
        ac = {"prompts": [{"clean": p["clean"], "corrupt": p["corrupt"],
                           "answers": [p["answer"], " extra"], "wrong_answers": p.get("wrong_answers", [])} for p in pairs]}
        put("auto_circuit", f.stem, json.dumps(ac).encode())

    circuits = sorted((ROOT / "data" / "circuits").glob("*.json"))
    for f in circuits[:6]:
        put("circuit_json", f.stem, f.read_bytes())
    put("circuit_json", "list", b'["L0H1", "L1H2", "L1H3"]')
    put("circuit_json", "edges", b'{"heads": ["L0H1", "L1H0"], "edges": ["L0H1->L1H0.q", "L0H0->L1H1.v"]}')
    gt = ROOT / "data" / "ground_truth_heads.json"
    if gt.is_file():
        put("circuit_json", "ground_truth_heads", gt.read_bytes())

    # MIB graph files: EAP-IG's own (tests/fixtures/mib/, written by scripts/mib_golden.py),
    # and the two smallest graphs, which the fuzzer mutates fastest.
    for name in ("tiny", "tiny_parallel"):
        put("mib_json", name, (FIX / "mib" / f"{name}.json").read_bytes())
    put("mib_json", "zero_layers", json.dumps({
        "cfg": {"n_layers": 0, "n_heads": 0, "parallel_attn_mlp": False, "d_model": 1},
        "nodes": {"input": {"in_graph": True}, "logits": {"in_graph": True}},
        "edges": {"input->logits": {"score": 0.5, "in_graph": True}}}).encode())
    one = ["input->a0.h0<q>", "input->a0.h0<k>", "input->a0.h0<v>", "input->m0", "a0.h0->m0",
           "input->logits", "a0.h0->logits", "m0->logits"]
    put("mib_json", "one_head_node_scores", json.dumps({
        "cfg": {"n_layers": 1, "n_heads": 1, "parallel_attn_mlp": False, "d_model": 4},
        "nodes": {"input": {"in_graph": True, "score": float("nan")},
                  "a0.h0": {"in_graph": True, "score": -0.25},
                  "m0": {"in_graph": False, "score": 1e-05},
                  "logits": {"in_graph": True, "score": float("nan")}},
        "edges": {e: {"score": (i - 3) / 8, "in_graph": i % 2 == 0} for i, e in enumerate(one)}}).encode())

    if RUNS.is_dir():
        codes = (RUNS / "codes.json").read_bytes()
        scores = (RUNS / "scores.json").read_bytes()
        for m in range(5):
            put("score_rescore", f"method{m}", bytes([m]) + codes + b"\0" + scores)
        put("score_rescore", "codes-only", bytes([0]) + codes)
        put("compare_rescore", "compare", (RUNS / "compare.json").read_bytes())

    total = sum(p.stat().st_size for p in CORPUS.rglob("*") if p.is_file())
    print(f"seed corpora in {CORPUS}: {sum(1 for p in CORPUS.rglob('*') if p.is_file())} files, {total} bytes")


if __name__ == "__main__":
    main()
