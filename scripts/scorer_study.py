#!/usr/bin/env python3
"""Head statistics of one's own, scored on a discover run's saved vectors.

Usage: scripts/scorer_study.py RUN CIRCUIT.json [CIRCUIT.json ...]

RUN is a `headcode discover ... --save-activations` output folder. Each statistic below is
computed per head from RUN/activations.safetensors (`z` and `result`, the vectors every
headcode scorer read) and its ROC AUC printed against each circuit file (a JSON list of
"LxHy" labels, or an object with "heads"). `cm` is headcode's class-mean distance and
reproduces discover's `class-means(-z)` AUCs; the others are candidates to beat it:

  cm           ||mean_pos - mean_neg||
  rel-cm       cm / mean ||x||                 (a head's change relative to its loudness)
  paired-norm  mean over pairs ||x_clean - x_corrupt||   (pairs from the `pair` tensor)
  consistency  cm / paired-norm                (do the pairs move the same way)
  proj-auc     AUC of pos vs neg along the mean difference, cross-fitted over two halves
  sign         fraction of pairs whose difference points along the mean difference
  cm*proj      cm * |proj-auc - 0.5|

Needs numpy only.
"""
import json
import signal
import struct
import sys

import numpy as np


def load_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        base = 8 + n
        out = {}
        for name, v in header.items():
            if name == "__metadata__":
                continue
            s, e = v["data_offsets"]
            f.seek(base + s)
            dt = {"F32": np.float32, "I64": np.int64}[v["dtype"]]
            out[name] = np.frombuffer(f.read(e - s), dtype=dt).reshape(v["shape"])
        return out, json.loads(header.get("__metadata__", {}).get("labels", "null"))


def auc(scores, mask):
    s = np.asarray(scores, dtype=np.float64)
    m = np.asarray(mask, dtype=bool)
    p, n = s[m], s[~m]
    wins = (p[:, None] > n[None, :]).sum() + 0.5 * (p[:, None] == n[None, :]).sum()
    return wins / (len(p) * len(n))


def statistics(acts):
    y = acts["is_pos"].astype(bool)
    pair = acts["pair"]
    out = {}
    for hook in ("z", "result"):
        x = acts[hook].astype(np.float64)  # [examples, heads, d]
        pos = x[y][np.argsort(pair[y], kind="stable")]
        neg = x[~y][np.argsort(pair[~y], kind="stable")]
        if len(pos) != len(neg) or not np.array_equal(
            np.sort(pair[y]), np.sort(pair[~y])
        ):
            sys.exit("the paired statistics need every pair's positive and negative (no --filter)")
        mu = pos.mean(0) - neg.mean(0)
        cm = np.linalg.norm(mu, axis=1)
        d = pos - neg
        paired = np.linalg.norm(d, axis=2).mean(0)
        half = np.arange(len(d)) % 2 == 0
        proj = []
        for train, test in ((half, ~half), (~half, half)):
            w = pos[train].mean(0) - neg[train].mean(0)
            pp, nn = (pos[test] * w).sum(2), (neg[test] * w).sum(2)
            lab = np.r_[np.ones(len(pp)), np.zeros(len(nn))]
            proj.append([auc(np.r_[pp[:, h], nn[:, h]], lab) for h in range(x.shape[1])])
        proj = np.mean(proj, 0)
        out[f"cm {hook}"] = cm
        out[f"rel-cm {hook}"] = cm / np.linalg.norm(x, axis=2).mean(0)
        out[f"paired-norm {hook}"] = paired
        out[f"consistency {hook}"] = cm / paired
        out[f"proj-auc {hook}"] = proj
        out[f"sign {hook}"] = ((d * mu).sum(2) > 0).mean(0)
        out[f"cm*proj {hook}"] = cm * np.abs(proj - 0.5)
    return out


def main():
    # `| head` closes stdout early; end quietly as other command-line tools do.
    signal.signal(signal.SIGPIPE, signal.SIG_DFL)
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    path = f"{sys.argv[1]}/activations.safetensors"
    try:
        acts, labels = load_safetensors(path)
    except (OSError, ValueError, KeyError, struct.error) as e:
        sys.exit(f"{path}: not a discover --save-activations file ({e})")
    if labels is None or not {"z", "result", "is_pos", "pair"} <= acts.keys():
        sys.exit(f"{path}: needs z, result, is_pos, pair and head labels (discover --save-activations)")
    circuits = []
    for p in sys.argv[2:]:
        try:
            c = json.load(open(p))
        except (OSError, ValueError) as e:
            sys.exit(f"{p}: not a circuit file ({e})")
        heads = set(c["heads"] if isinstance(c, dict) else c)
        if not heads <= set(labels):
            sys.exit(f"{p}: heads not in the run's model: {sorted(heads - set(labels))}")
        name = p.rsplit("/", 1)[-1].removesuffix(".json")
        circuits.append((name, [l in heads for l in labels]))
    stats = statistics(acts)
    w = max(len(name) for name, _ in circuits) + 2
    print("statistic".ljust(20) + "".join(name.rjust(w) for name, _ in circuits))
    for k, v in stats.items():
        print(k.ljust(20) + "".join(f"{auc(v, m):{w}.3f}" for _, m in circuits))


if __name__ == "__main__":
    main()
