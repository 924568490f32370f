#!/usr/bin/env python3
"""What precision does to the method (docs/precision.md): compare `discover` runs that
differ only in --dtype. The first run is the reference (f32); for each other run prints
  - the fraction of (prompt, head) codes equal to the reference's, over every trial;
  - each scorer's AUC difference (mean over trials) against the run's circuit;
  - the task's top-1 accuracy and mean metric, clean and corrupt, and their differences;
  - the runs' wall time per stage and peak host memory.
Usage: precision_study.py REF_DIR OTHER_DIR... (each a `discover --out` folder)."""
import json
import os
import sys


def load(d):
    with open(os.path.join(d, "scores.json")) as f:
        s = json.load(f)
    with open(os.path.join(d, "codes.json")) as f:
        c = json.load(f)
    return s, c


def main(dirs):
    ref_s, ref_c = load(dirs[0])
    out = {"reference": dirs[0], "runs": {}}
    # The noise floor: codes of the reference's own trials (other SAE seeds) against its first.
    t = ref_c["trials"]
    if len(t) > 1:
        pairs = [(t[0]["codes"], u["codes"]) for u in t[1:]]
        eq = sum(sum(x == y for x, y in zip(a, b)) for a, b in pairs) / sum(len(a) for a, _ in pairs)
        out["reference_trials_codes_equal"] = eq
        std = {k: v["std"] for k, v in ref_s["auc"].items()}
        out["reference_auc_std"] = std
        print(f"reference: its trials (other SAE seeds) share {100 * eq:.2f}% of codes with its first; "
              f"AUC std over trials up to {max(std.values()):.4f}")
    for d in dirs[1:]:
        s, c = load(d)
        same = total = 0
        for ta, tb in zip(ref_c["trials"], c["trials"]):
            if len(ta["codes"]) != len(tb["codes"]):
                sys.exit(f"{d}: {len(tb['codes'])} codes against {len(ta['codes'])}: different examples")
            same += sum(x == y for x, y in zip(ta["codes"], tb["codes"]))
            total += len(ta["codes"])
        auc = {k: s["auc"][k]["mean"] - v["mean"] for k, v in ref_s["auc"].items() if k in s["auc"]}
        task = {k: (ref_s["counts"][k], s["counts"][k], s["counts"][k] - ref_s["counts"][k])
                for k in ("clean_top1_acc", "corrupt_top1_acc", "clean_metric_mean", "corrupt_metric_mean")}
        out["runs"][d] = {
            "dtype": s["model"].get("dtype"),
            "codes_equal": same / max(total, 1),
            "codes": total,
            "auc_diff": auc,
            "auc_ref": {k: v["mean"] for k, v in ref_s["auc"].items()},
            "task": task,
            "timings_ms": s["timings_ms"],
            "host_peak_bytes": s.get("memory", {}).get("host_peak_bytes"),
        }
        r = out["runs"][d]
        print(f"== {d} against {dirs[0]} ==")
        print(f"codes equal on {100 * r['codes_equal']:.2f}% of {total} (prompt, head) codes")
        for k in sorted(auc):
            print(f"  AUC {k:<24} ref {r['auc_ref'][k]:.4f}  diff {auc[k]:+.4f}")
        for k, (a, b, dlt) in task.items():
            print(f"  {k:<22} ref {a:.4f}  this {b:.4f}  diff {dlt:+.4f}")
        tm = ", ".join(f"{k} {v / 1e3:.1f} s" for k, v in s["timings_ms"].items())
        print(f"  time: {tm}; peak host {r['host_peak_bytes'] / 1e9:.2f} GB" if r["host_peak_bytes"] else f"  time: {tm}")
    print(json.dumps(out, indent=1))


if __name__ == "__main__":
    if len(sys.argv) < 3:
        sys.exit(__doc__)
    main(sys.argv[1:])
