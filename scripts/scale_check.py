#!/usr/bin/env python3
"""The class-mean distance of `z` with and without each head's scale.

Usage: scale_check.py RUN CIRCUIT... [-- RUN CIRCUIT...]

RUN is a `headcode discover ... --save-activations` folder. For each circuit file prints
the ROC AUC (circuit heads against the rest) of three head scores computed from the
run's activations: the class-mean distance ||mean z(pos) - mean z(neg)|| (headcode's
`class-means-z`), the head's mean ||z|| (its scale), and the distance divided by that
scale. Needs numpy and safetensors (the fixtures venv has both).
"""
import json, sys
import numpy as np
from safetensors import safe_open

def auc(scores, pos):
    # Mann-Whitney U: P(score of a circuit head > score of another), ties count half.
    P, N = pos.sum(), len(pos) - pos.sum()
    a, b = scores[pos == 1][:, None], scores[pos == 0][None, :]
    return ((a > b).sum() + 0.5 * (a == b).sum()) / (P * N)

groups, cur = [], []
for a in sys.argv[1:]:
    if a == "--":
        groups.append(cur)
        cur = []
    else:
        cur.append(a)
groups.append(cur)
for run, *circs in [g for g in groups if g]:
    f = safe_open(f"{run}/activations.safetensors", "np")
    labels = json.loads(f.metadata()["labels"])
    z, isp = f.get_tensor("z"), f.get_tensor("is_pos").astype(bool)
    dist = np.linalg.norm(z[isp].mean(0) - z[~isp].mean(0), axis=-1)  # [H]
    scale = np.linalg.norm(z, axis=-1).mean(0)                          # mean ‖z‖ per head
    for c in circs:
        heads = set(json.load(open(c)))
        pos = np.array([l in heads for l in labels], dtype=int)
        print(f"{run} {c.split('/')[-1]}: class-means-z {auc(dist, pos):.3f}, "
              f"mean-norm {auc(scale, pos):.3f}, class-means-z / mean-norm {auc(dist / scale, pos):.3f}")
