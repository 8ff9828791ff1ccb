"""Logo metrics for several region/crop weightings of the two-stage logo score, from one scoring pass.

    python scripts/score_combination.py --set calib
    python scripts/score_combination.py --set calib2 --weights 0.5,0.75

The shipped score is ``0.5 * region + 0.5 * crop`` (``ccu_vision.embedder.combine_logo_scores``);
``w`` here is the crop's weight. Regions, crops and views are exactly the scan's
(``logo_stage_scores``, the two stages of ``dense_logo_scores`` kept apart). Sets as in ``compare_models.py``.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from compare_models import SETS, one_model_args, score_line  # scripts/ is on sys.path when run as a script
from PIL import Image

from ccu_vision.embedder import Embedder, logo_stage_scores
from ccu_vision.evalset import build_eval_set, read_truth
from ccu_vision.evaluate import eval_references


def stage_scores(emb: Embedder, root: Path, batch: int = 32) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Per logo query, every reference's best region and best crop similarity ([Q, N] each)."""
    slugs, refs, owner = eval_references(emb, root)
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    region, crop = [], []
    for i in range(0, len(rows), batch):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + batch]]
        for e in emb.embed_photos(ims):
            r_best, c_best, _ = logo_stage_scores(e, refs, owner)
            assert c_best is not None, "the shipped model re-embeds crops"
            region.append(r_best)
            crop.append(c_best)
    return slugs, np.stack(region), np.stack(crop)


def main() -> None:
    ap = one_model_args(__doc__)
    ap.add_argument("--weights", default="0,0.25,0.5,0.75,1", help="crop weights, comma-separated")
    args = ap.parse_args()
    root = build_eval_set(f"out/eval-{args.set}", SETS[args.set], args.photos)
    truth = read_truth(root)
    t = time.time()
    slugs, region, crop = stage_scores(Embedder(args.model), root)
    print("set", root, "model", args.model, "scored in", round(time.time() - t), "s", flush=True)
    for w in (float(x) for x in args.weights.split(",")):
        score = (1 - w) * region + w * crop
        print(f"crop weight {w:g}", score_line(truth, slugs, score), flush=True)


if __name__ == "__main__":
    main()
