#!/usr/bin/env python3
"""Golden fixtures for headcode's MIB circuit files (src/mib/), made by EAP-IG's own code.

Run with the pinned fixtures venv (scripts/requirements-fixtures.txt):

    ~/.cache/headcode/fixtures-venv/bin/python scripts/mib_golden.py

EAP-IG is not on PyPI: its `src/eap/graph.py` (and the `visualization.py` it imports) are
vendored unchanged in scripts/vendor/eap_ig/ (MIT; commit in its README.md). Everything is
CPU-only and deterministic; a rerun rewrites byte-identical files.

Writes tests/fixtures/mib/:
  tiny.json             2 layers x 3 heads, edge and node scores (two nodes unscored: NaN)
  tiny_parallel.json    3 layers x 2 heads, parallel_attn_mlp (GPT-NeoX), edge scores only
  tiny_selections.json  apply_topn(n, absolute, level) + prune on both, for several n:
                        the in_graph of every edge and node and weighted_edge_count
  gpt2_small.json       GPT-2 small's counts, digests of the ordered node and edge names, and
                        digests of to_json and of several selections for rule-made scores

Each file is read back with EAP-IG's `Graph.from_json` and checked before it is kept.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts" / "vendor" / "eap_ig"))

import torch  # noqa: E402

from eap.graph import Graph  # noqa: E402

torch.set_grad_enabled(False)
torch.set_num_threads(1)

OUT = ROOT / "tests" / "fixtures" / "mib"

TINY = {"n_layers": 2, "n_heads": 3, "parallel_attn_mlp": False, "d_model": 16}
TINY_PARALLEL = {"n_layers": 3, "n_heads": 2, "parallel_attn_mlp": True, "d_model": 8}
GPT2 = {"n_layers": 12, "n_heads": 12, "parallel_attn_mlp": False, "d_model": 768}


def to_json_text(g: Graph) -> str:
    """`Graph.to_json`'s file as text.

    EAP-IG's `to_json` fails on a graph with node scores: it asks the `logits` node for
    its score, which indexes one past the end of `nodes_scores` (n_forward entries). The
    smallest shim is to pad `nodes_scores` with one NaN while it writes, so `logits` gets
    `"score": NaN`; every other byte is `to_json`'s own. Its readers skip `logits`.
    """
    padded = g.nodes_scores is not None
    if padded:
        real = g.nodes_scores
        g.nodes_scores = torch.cat([real, torch.tensor([float("nan")])])
    try:
        with tempfile.TemporaryDirectory() as d:
            p = Path(d) / "g.json"
            g.to_json(str(p))
            return p.read_text()
    finally:
        if padded:
            g.nodes_scores = real


def make_graph(cfg: dict, seed: int, node_scores: bool, unscored=()) -> Graph:
    g = Graph.from_model(dict(cfg), node_scores=node_scores)
    gen = torch.Generator().manual_seed(seed)
    # Continuous random values: no two scores (nor two |scores|) tie, so top-n is well
    # defined (torch's CPU argsort is not stable; ties at the cut are arbitrary there).
    g.scores[:] = torch.randn(g.scores.shape, generator=gen) * g.real_edge_mask
    if node_scores:
        g.nodes_scores[:] = torch.randn(g.n_forward, generator=gen)
        for name in unscored:
            g.nodes_scores[g.forward_index(g.nodes[name], attn_slice=False)] = float("nan")
    return g


def state(g: Graph) -> dict:
    """in_graph of every edge and node in to_json's order, as 0/1 strings."""
    return {
        "edges": "".join("1" if bool(e.in_graph) else "0" for e in g.edges.values()),
        "nodes": "".join("1" if bool(n.in_graph) else "0" for n in g.nodes.values()),
        "weighted_edge_count": g.weighted_edge_count(),
    }


def selections(g: Graph, levels) -> list:
    out = []
    for level in levels:
        if level == "edge":
            total = len(g.edges)
        else:
            total = int((~torch.isnan(g.nodes_scores)).sum().item())
        ns = sorted({0, 1, 2, 3, total // 10, total // 4, total // 2, total - 1, total})
        # MIB's own percentages (evaluate_area_under_curve), as int(pct * n_items).
        for pct in (0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1):
            ns.append(int(pct * total))
        for n in sorted(set(x for x in ns if x >= 0)):
            for absolute in (True, False):
                g.apply_topn(n, absolute, level=level, prune=True)
                out.append({"level": level, "n": n, "absolute": absolute, **state(g)})
    return out


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def write(name: str, text: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / name).write_text(text)
    print(f"wrote {OUT / name} ({len(text)} bytes)")


def check_roundtrip(g: Graph, text: str) -> None:
    """EAP-IG reads back what it wrote (the fixture is self-consistent)."""
    with tempfile.TemporaryDirectory() as d:
        p = Path(d) / "g.json"
        p.write_text(text)
        h = Graph.from_json(str(p))
    assert torch.equal(h.scores, g.scores)
    assert torch.equal(h.in_graph & h.real_edge_mask, g.in_graph & g.real_edge_mask)
    assert torch.equal(h.nodes_in_graph, g.nodes_in_graph)
    if g.nodes_scores is not None:
        assert torch.equal(h.nodes_scores.isnan(), g.nodes_scores.isnan())
        ok = ~g.nodes_scores.isnan()
        assert torch.equal(h.nodes_scores[ok], g.nodes_scores[ok])


def tiny_graphs():
    g = make_graph(TINY, seed=1, node_scores=True, unscored=("input", "m0"))
    g.apply_topn(30, True, level="edge")
    p = make_graph(TINY_PARALLEL, seed=2, node_scores=False)
    p.apply_topn(25, False, level="edge")
    return g, p


def rule_scores(g: Graph) -> None:
    """Scores both sides compute exactly: edge k of to_json's order gets ±(p+1) with
    p = k·7919 mod E (a permutation, 7919 prime), negative for odd p, so no two scores
    nor two |scores| tie; node f gets ±(q+1), q = f·31 mod n_forward, the same way."""
    e = len(g.edges)
    for k, edge in enumerate(g.edges.values()):
        p = (k * 7919) % e
        edge.score = float(-(p + 1) if p % 2 else p + 1)
    nf = g.n_forward
    for f in range(nf):
        q = (f * 31) % nf
        g.nodes_scores[f] = float(-(q + 1) if q % 2 else q + 1)


def gpt2() -> dict:
    g = Graph.from_model(dict(GPT2), node_scores=True)
    node_names = list(g.nodes)
    edge_names = list(g.edges)
    rule_scores(g)
    g.apply_topn(500, True, level="edge")
    text = to_json_text(g)
    check_roundtrip(g, text)
    sels = []
    for level, n, absolute in [
        ("edge", 0, True),
        ("edge", 32, True),
        ("edge", 324, False),
        ("edge", 3249, True),
        ("edge", 16245, False),
        ("edge", 32491, True),
        ("node", 0, True),
        ("node", 15, True),
        ("node", 78, False),
        ("node", 157, True),
    ]:
        g.apply_topn(n, absolute, level=level)
        st = state(g)
        sels.append(
            {
                "level": level,
                "n": n,
                "absolute": absolute,
                "edges_sha256": sha(st["edges"]),
                "n_edges": st["edges"].count("1"),
                "nodes": st["nodes"],
                "weighted_edge_count": st["weighted_edge_count"],
            }
        )
    return {
        "cfg": GPT2,
        "n_nodes": len(node_names),
        "n_edges": len(edge_names),
        "n_forward": g.n_forward,
        "n_backward": g.n_backward,
        "node_names_sha256": sha("\n".join(node_names)),
        "edge_names_sha256": sha("\n".join(edge_names)),
        "first_edges": edge_names[:5],
        "last_edges": edge_names[-3:],
        "to_json_topn500_sha256": sha(text),
        "to_json_topn500_bytes": len(text.encode()),
        "selections": sels,
    }


def main() -> None:
    argparse.ArgumentParser(description=__doc__).parse_args()
    g, p = tiny_graphs()
    for name, graph in [("tiny.json", g), ("tiny_parallel.json", p)]:
        text = to_json_text(graph)
        check_roundtrip(graph, text)
        write(name, text)
    sel = {
        "tiny": selections(g, ["edge", "node"]),
        "tiny_parallel": selections(p, ["edge"]),
    }
    write("tiny_selections.json", json.dumps(sel, indent=1) + "\n")
    write("gpt2_small.json", json.dumps(gpt2(), indent=1) + "\n")


if __name__ == "__main__":
    main()
