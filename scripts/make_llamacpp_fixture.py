#!/usr/bin/env python3
"""Golden outputs of llama.cpp, the reference runtime for GGUF files, on Gemma 3 270M.

Writes tests/fixtures/gemma3_270m_llamacpp.json: llama.cpp's token ids for sample texts
(tests/spm_tokenizer.rs checks headcode's SentencePiece tokenizer against them) and its
next-token distribution for a few prompts (for the Gemma 3 forward test).

The venv (see scripts/requirements-llamacpp.txt; llama-cpp-python compiles llama.cpp, about
13 min on 2 busy cores; -DGGML_NATIVE=OFF because a native build crashed here):

    python3 -m venv ~/.cache/headcode/llamacpp-venv
    CMAKE_ARGS="-DGGML_NATIVE=OFF" ~/.cache/headcode/llamacpp-venv/bin/pip install \\
        -r scripts/requirements-llamacpp.txt
    scripts/fetch-models.sh gemma-3-270m
    ~/.cache/headcode/llamacpp-venv/bin/python scripts/make_llamacpp_fixture.py [GGUF]

GGUF defaults to headcode's cache path of the built-in `gemma-3-270m`. The run is
deterministic on one machine (CPU, 2 threads); probabilities may move in the last digits
on another CPU.

JSON layout:
  generator, versions {python, llama_cpp_python, llama_cpp_commit, numpy, system_info}
  model {file, bytes, sha256, n_vocab, bos_id, eos_id, add_bos}
  settings {n_ctx, n_threads, n_batch, logits_all}
  tokenize: [{text, ids, ids_with_bos, detokenized}]
      ids:          llm.tokenize(text.encode(), add_bos=False, special=False)
      ids_with_bos: the same with add_bos=True
      detokenized:  llama_detokenize(ids, remove_special=False, unparse_special=False),
                    UTF-8 decoded with replacement
  next_token: [{prompt, ids, argmax, top}]
      ids:  the prompt with BOS, as fed to the model
      top:  the 20 most probable next tokens at the last position, most probable first:
            {id, token (vocabulary text), text (rendered piece), logit, prob}; prob is the
            softmax over the full vocabulary (float64)
      logsumexp: of the last position's logits (so any logit converts to a log-prob)
"""

from __future__ import annotations

import argparse
import ctypes
import hashlib
import json
import os
import platform
from pathlib import Path

import numpy as np

import llama_cpp
from llama_cpp import Llama

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "fixtures" / "gemma3_270m_llamacpp.json"
# llama.cpp vendored by the llama-cpp-python 0.3.36 sdist (its git submodule).
LLAMA_CPP_COMMIT = "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
N_CTX, N_THREADS, N_BATCH, TOP_K = 512, 2, 512, 20


def cache_dir() -> Path:
    # Same rule as headcode's fetch::cache_dir.
    if os.environ.get("HEADCODE_CACHE"):
        return Path(os.environ["HEADCODE_CACHE"])
    if os.environ.get("XDG_CACHE_HOME"):
        return Path(os.environ["XDG_CACHE_HOME"]) / "headcode"
    return Path.home() / ".cache" / "headcode"


DEFAULT_GGUF = cache_dir() / "models" / "gemma-3-270m" / "gemma-3-270m-q4_k_m.gguf"

TEXTS = [
    "When Mary and John went to the store, John gave a drink to",
    "Then, Alice and Bob had a long argument. Afterwards Alice said to",
    "The war lasted from 1732 to 17",
    "One, two, three, four,",
    'def f(a, b):\n    """',
    "café naïve 日本語 🙂",
    " leading space",
    "multiple   spaces  and\ttabs\t\there",
    "line one\n\nline two\n\n\n  indented",
    " ",
    "\n",
    "a",
    "Hello</s> <b>bold</b> <unused0> <bos>",
    "3.14159 + 2,718 = 5.85959; 100% of $42",
    # Characters outside the vocabulary (byte tokens), a control character, a literal ▁.
    "rare: 𓀀 𐍈 \x07 ▁x",
]

PROMPTS = [
    # IOI (src/tasks/ioi.rs); the answer is " Mary".
    "When Mary and John went to the store, John gave a drink to",
    "One, two, three, four,",
    "The capital of France is",
    # Greater-Than (src/tasks/greater_than.rs): a year after 1732.
    "The war lasted from the year 1732 to the year 17",
    # Docstring (src/tasks/docstring.rs layout); the answer is " user".
    '\ndef port(self, load, context, file, size, user, item):\n    """Send a message\n\n'
    "    :param file: the input\n    :param size: total bytes\n    :param",
]


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def detokenize(vocab, ids: list[int]) -> str:
    """llama.cpp's own detokenizer (not the Python wrapper, which strips a space after BOS)."""
    arr = (llama_cpp.llama_token * len(ids))(*ids)
    size = 64 + 64 * len(ids)
    buf = ctypes.create_string_buffer(size)
    n = llama_cpp.llama_detokenize(vocab, arr, len(ids), buf, size, False, False)
    if n < 0:
        raise RuntimeError(f"detokenize needs {-n} bytes")
    return buf.raw[:n].decode("utf-8", errors="replace")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("gguf", nargs="?", type=Path, default=DEFAULT_GGUF)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    if not args.gguf.is_file():
        raise SystemExit(f"{args.gguf}: no such file (run scripts/fetch-models.sh gemma-3-270m)")

    llm = Llama(
        model_path=str(args.gguf),
        n_ctx=N_CTX,
        n_batch=N_BATCH,
        n_threads=N_THREADS,
        n_threads_batch=N_THREADS,
        logits_all=True,
        seed=0,
        verbose=False,
    )
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    n_vocab = llm.n_vocab()

    def token_text(i: int) -> str:
        return llama_cpp.llama_vocab_get_text(vocab, i).decode("utf-8", errors="replace")

    tokenize = []
    for text in TEXTS:
        ids = llm.tokenize(text.encode(), add_bos=False, special=False)
        tokenize.append(
            {
                "text": text,
                "ids": ids,
                "ids_with_bos": llm.tokenize(text.encode(), add_bos=True, special=False),
                "detokenized": detokenize(vocab, ids),
            }
        )

    next_token = []
    for prompt in PROMPTS:
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        llm.reset()
        llm.eval(ids)
        logits = np.asarray(llm.scores[len(ids) - 1], dtype=np.float64)
        assert logits.shape == (n_vocab,)
        m = logits.max()
        lse = m + np.log(np.exp(logits - m).sum())
        probs = np.exp(logits - lse)
        # Stable sort so ties keep the lower id first, as an argmax does.
        order = np.argsort(-logits, kind="stable")[:TOP_K]
        next_token.append(
            {
                "prompt": prompt,
                "ids": ids,
                "argmax": int(order[0]),
                "logsumexp": float(lse),
                "top": [
                    {
                        "id": int(i),
                        "token": token_text(int(i)),
                        "text": detokenize(vocab, [int(i)]),
                        "logit": float(logits[i]),
                        "prob": float(probs[i]),
                    }
                    for i in order
                ],
            }
        )

    out = {
        "generator": "scripts/make_llamacpp_fixture.py",
        "versions": {
            "python": platform.python_version(),
            "llama_cpp_python": llama_cpp.__version__,
            "llama_cpp_commit": LLAMA_CPP_COMMIT,
            "numpy": np.__version__,
            "system_info": llama_cpp.llama_print_system_info().decode().strip(),
        },
        "model": {
            "file": args.gguf.name,
            "bytes": args.gguf.stat().st_size,
            "sha256": sha256(args.gguf),
            "n_vocab": n_vocab,
            "bos_id": llm.token_bos(),
            "eos_id": llm.token_eos(),
            "add_bos": bool(llama_cpp.llama_vocab_get_add_bos(vocab)),
        },
        "settings": {
            "n_ctx": N_CTX,
            "n_threads": N_THREADS,
            "n_batch": N_BATCH,
            "logits_all": True,
        },
        "tokenize": tokenize,
        "next_token": next_token,
    }
    args.out.write_text(json.dumps(out, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")
    for t in next_token:
        top3 = ", ".join(f"{e['text']!r} {e['prob']:.3f}" for e in t["top"][:3])
        print(f"{t['prompt'][:50]!r}: {top3}")


if __name__ == "__main__":
    main()
