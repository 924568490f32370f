#!/usr/bin/env python3
"""The replicated core of two activation-patching runs, and how well they agree.

Usage: scripts/replicated_core.py RUN_A RUN_B [--top 5] [--circuit-top 27] [--signed]

RUN_A and RUN_B are `headcode discover ... --circuit patching:top=K` output folders made
with different `--seed`s (so on different prompt pairs). Each `scores.json` holds the
patching effect of every head. The core is the heads that rank in the top `--top` by
|effect| in both runs (ranked as `headcode` ranks them: |effect| descending, then head
index; `--signed` ranks by the signed effect, as headcode did before 2026-12-06). It is
printed as a circuit file (JSON list of labels) on stdout; the agreement of the two runs
goes to stderr: Spearman's rho of the ranking key (|effect|) over all heads, and the ROC
AUC of B's key against A's top `--circuit-top`, which says how much of A's circuit B
reproduces. `--top-circuit FILE` also writes A's top `--circuit-top` as a circuit file.

Standard library only, so it runs wherever `discover` does.
"""
import argparse
import json
import sys
from pathlib import Path


def effects(run):
    p = Path(run) / "scores.json"
    try:
        j = json.loads(p.read_text())
        pat = j["patching"]
        labels, eff = pat["labels"], [float(x) for x in pat["effect"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        sys.exit(f"{p}: not a discover run with patching ({e})")
    if len(labels) != len(eff) or not eff:
        sys.exit(f"{p}: patching.labels and patching.effect differ in length or are empty")
    return labels, eff


def order(eff):
    return sorted(range(len(eff)), key=lambda i: (-eff[i], i))


def ranks(v):
    """Average ranks (1-based), ties sharing their mean rank."""
    idx = sorted(range(len(v)), key=lambda i: v[i])
    r = [0.0] * len(v)
    i = 0
    while i < len(idx):
        j = i
        while j + 1 < len(idx) and v[idx[j + 1]] == v[idx[i]]:
            j += 1
        for k in range(i, j + 1):
            r[idx[k]] = (i + j) / 2 + 1
        i = j + 1
    return r


def pearson(a, b):
    n = len(a)
    ma, mb = sum(a) / n, sum(b) / n
    cov = sum((x - ma) * (y - mb) for x, y in zip(a, b))
    va = sum((x - ma) ** 2 for x in a)
    vb = sum((y - mb) ** 2 for y in b)
    return cov / (va * vb) ** 0.5


def auc(scores, mask):
    pos = [s for s, m in zip(scores, mask) if m]
    neg = [s for s, m in zip(scores, mask) if not m]
    wins = sum((p > q) + 0.5 * (p == q) for p in pos for q in neg)
    return wins / (len(pos) * len(neg))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_a")
    ap.add_argument("run_b")
    ap.add_argument("--top", type=int, default=5)
    ap.add_argument("--circuit-top", type=int, default=27)
    ap.add_argument("--signed", action="store_true", help="rank by the signed effect")
    ap.add_argument("--top-circuit", help="also write A's top --circuit-top to this file")
    a = ap.parse_args()
    la, ea = effects(a.run_a)
    lb, eb = effects(a.run_b)
    if not a.signed:
        ea, eb = [abs(x) for x in ea], [abs(x) for x in eb]
    if la != lb:
        sys.exit("the two runs have different heads")
    top_a, top_b = order(ea)[: a.top], order(eb)[: a.top]
    core = [i for i in top_a if i in top_b]
    core.sort()
    circ_a = set(order(ea)[: a.circuit_top])
    rho = pearson(ranks(ea), ranks(eb))
    rep = auc(eb, [i in circ_a for i in range(len(ea))])
    print(
        f"top-{a.top} of A: {' '.join(la[i] for i in top_a)}\n"
        f"top-{a.top} of B: {' '.join(lb[i] for i in top_b)}\n"
        f"core: {len(core)} heads; Spearman rho of the effects {rho:.3f}; "
        f"AUC of B's effects against A's top-{a.circuit_top}: {rep:.3f}",
        file=sys.stderr,
    )
    if a.top_circuit:
        top = sorted(order(ea)[: a.circuit_top])
        Path(a.top_circuit).write_text(json.dumps([la[i] for i in top], indent=1) + "\n")
    print(json.dumps([la[i] for i in core], indent=1))


if __name__ == "__main__":
    main()
