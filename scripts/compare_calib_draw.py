"""v6d vs v5d on a fresh, larger calibration draw (rule in notebooks/results/experiments/ccu-lite0-v6-plan.md).

Run from the repository root after exporting out/ccu-lite0-v6d.onnx and out/ccu-lite0-v5d.onnx (about 30 min on 2 cores).
"""
import json
import time

from ccu_vision.embedder import Embedder
from ccu_vision.evalset import EvalConfig, build_eval_set, read_truth
from ccu_vision.evaluate import dup_metrics, logo_metrics, rank_with_embedder

cfg = EvalConfig(split="validation", seed=778, n_brands=300, pos_per_brand=4, n_unregistered=1200, n_clean=800,
                 n_products=120, n_lookalikes=150)
t = time.time()
root = build_eval_set("out/eval-calib2", cfg, "../shared/datasets/clothing-dataset-small")
print("built", root, round(time.time() - t), "s", flush=True)
truth = read_truth(root)
for m in ("out/ccu-lite0-v6d.onnx", "out/ccu-lite0-v5d.onnx"):
    t = time.time()
    lr, dr, _ = rank_with_embedder(Embedder(m), root)
    lm, dm = logo_metrics(truth, lr), dup_metrics(truth, dr)
    print(m, json.dumps({k: round(lm[k], 4) for k in ("recall@1", "recall@5", "ap", "tpr@0.01fpr")}),
          "ci", json.dumps(lm["ci95"]), "muap", round(dm["muap"], 4), round(time.time() - t), "s", flush=True)
