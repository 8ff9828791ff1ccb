"""What learned mark proposals buy the crop stage: variants side by side in one run.

    python -m ccu_vision.train.proposals fit --model ccu_vision/models/ccu-lite0-v15cd.onnx \
        --trainset out/proposal-train --out out/proposal-head.npz
    python scripts/proposal_head.py --model ccu_vision/models/ccu-lite0-v15cd.onnx \
        --head out/proposal-head.npz --evalset out/rebuild/eval-calib

Scores the logo queries of evaluation sets with the scan's formula (mean of the best region and the
best re-embedded crop similarity per reference) for crop stages fed by the best similarity windows,
the head's boxes (numpy head on the model's local map) or both, plus each one's proposal recall (share
of registered marks with a crop box of IoU >= 0.5 with the true box; sets built before session 17
have padded listings' boxes off by the padding, so rebuild them). Plan and results:
notebooks/results/experiments/proposal-head-plan.md.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ccu_vision.embedder import Embedder, best_per_reference
from ccu_vision.evalset import read_truth
from ccu_vision.evaluate import eval_references, logo_metrics
from ccu_vision.proposals import decode, head_forward, iou
from ccu_vision.train.proposals import load_head

KEYS = ("recall@1", "recall@5", "ap", "tpr@0.01fpr")


# ----------------------------------------------------------------------------- eval


VARIANTS = {"base": (6, 0), "s3h3": (3, 3), "s6h3": (6, 3), "h6": (0, 6)}


def evaluate(args: argparse.Namespace) -> None:
    emb = Embedder(args.model)
    head, _ = load_head(args.head)
    for root in map(Path, args.evalset):
        t0 = time.time()
        slugs, refs, owner = eval_references(emb, root)
        n = len(slugs)
        rows = [t for t in read_truth(root) if t["task"] == "logo"]
        scores = {v: [] for v in VARIANTS}
        recall = {v: [] for v in VARIANTS}
        t_head = 0.0
        for i in range(0, len(rows), 32):
            batch = rows[i : i + 32]
            canvases, lbs = emb.photo_canvases([Image.open(root / t["query"]).convert("RGB") for t in batch])
            local, gfeat = emb._run(canvases, with_global=True)
            for j, t in enumerate(batch):
                pe, cboxes = emb._pool_photo(local[j], lbs[j], None if gfeat is None else gfeat[j])
                sim = pe.regions @ refs.T
                b, _ = best_per_reference(sim, owner, n)
                top = np.argsort(-sim.max(1), kind="stable")[:6]
                th = time.perf_counter()
                hb, _ = decode(head_forward(head, local[j]), emb.stride, 6)
                t_head += time.perf_counter() - th
                allb = np.concatenate([cboxes[top].astype(np.float64), hb])
                c_all = emb.embed_views(emb.crop_views(canvases[j], allb)) @ refs.T  # [6 + k, V]
                true = lbs[j].to_canvas(np.asarray([t["box"]]))[0] if "box" in t and t["kind"] == "registered" else None
                for v, (ks, kh) in VARIANTS.items():
                    sel = list(range(min(ks, len(top)))) + [len(top) + q for q in range(min(kh, len(hb)))]
                    c, _ = best_per_reference(c_all[sel], owner, n)
                    scores[v].append(0.5 * (b + c))
                    if true is not None:
                        recall[v].append(bool((iou(allb[sel], true) >= 0.5).any()))
        print(f"== {root}: {len(rows)} logo queries, {n} registered brands, scored in {time.time() - t0:.0f} s; "
              f"head {1000 * t_head / len(rows):.2f} ms per photo (numpy)")
        for v, (ks, kh) in VARIANTS.items():
            s = np.array(scores[v])
            ranked = [[(slugs[k], float(s[q, k])) for k in np.argsort(-s[q])[:10]] for q in range(len(s))]
            m = logo_metrics(rows, ranked)
            print(f"{v:<6} ({ks} windows + {kh} head boxes, {ks + kh} crops) "
                  + " ".join(f"{k}={m[k]:.3f}" for k in KEYS)
                  + f"  proposal recall (IoU>=0.5) {np.mean(recall[v]):.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", required=True, help="the model whose local map the head reads (without a head)")
    ap.add_argument("--head", required=True, help="head weights from python -m ccu_vision.train.proposals fit")
    ap.add_argument("--evalset", action="append", required=True)
    evaluate(ap.parse_args())


if __name__ == "__main__":
    main()
