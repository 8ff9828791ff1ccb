"""Near-duplicate sub-window shapes, side by side in one run (plan:
notebooks/results/experiments/dup-window-shapes-plan.md).

    python scripts/dup_windows.py --set calib --set calib2

Scores the near-duplicate queries of the named draws (pooled) with the model's own dense scoring
and ORB verification (as ``calibrate`` does) under each variant's ``VerifyConfig.window_shapes``,
and prints muAP, recall@P90, per-edit recall and the plan's rule.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace

from compare_models import SETS, one_model_args

from ccu_vision.embedder import Embedder
from ccu_vision.evalset import build_eval_set, read_truth
from ccu_vision.evaluate import dup_metrics, rank_with_embedder

VARIANTS = {
    "base": (),
    "H": ((1.0, 0.5), (0.5, 1.0)),
    "H7": ((1.0, 0.5), (0.5, 1.0), (1.0, 0.7), (0.7, 1.0)),
}


def main() -> None:
    args = one_model_args(__doc__, many_sets=True).parse_args()
    roots = [build_eval_set(f"out/eval-{n}", SETS[n], args.photos) for n in args.set]
    emb = Embedder(args.model)
    assert emb.verify is not None and not emb.verify.window_shapes, "the base must be the shipped settings"
    shipped = emb.verify
    res = {}
    for name, shapes in VARIANTS.items():
        emb.verify = replace(shipped, window_shapes=shapes)
        t0 = time.time()
        truth, ranked = [], []
        for root in roots:
            truth += [t for t in read_truth(root) if t["task"] == "dup"]
            ranked += rank_with_embedder(emb, root, logo=False)[1]
        m = dup_metrics(truth, ranked)
        res[name] = m
        print(f"{name:5s} windows {1 + 9 * len(shipped.window_fracs) + 3 * len(shapes):2d}  muAP {m['muap']:.4f} "
              f"R@P90 {m['recall@p90']:.4f} R@P99 {m['recall@p99']:.4f}  ({time.time() - t0:.0f} s)", flush=True)
        print("      per edit", json.dumps(m["per_edit_recall@p95"]), flush=True)
    b = res["base"]
    for name in list(VARIANTS)[1:]:
        m = res[name]
        ok = (m["muap"] >= b["muap"] + 0.005 and m["recall@p90"] >= b["recall@p90"] - 0.005
              and m["per_edit_recall@p95"]["collage"] > b["per_edit_recall@p95"]["collage"])
        print(f"rule {name}: muAP {m['muap'] - b['muap']:+.4f} (>= +0.005), R@P90 {m['recall@p90'] - b['recall@p90']:+.4f} "
              f"(>= -0.005), collage {b['per_edit_recall@p95']['collage']:.3f} -> {m['per_edit_recall@p95']['collage']:.3f} "
              f"-> {'pass' if ok else 'fail'}")


if __name__ == "__main__":
    main()
