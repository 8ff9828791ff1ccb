"""A light reference view (the mark white on black) beside the scan's two, from one pass over the
queries (plan: notebooks/results/experiments/light-view-plan.md).

    python scripts/light_view_compare.py --set calib4 --set lettered-calib --set clutter-calib --set lowcontrast-calib

Indexes: ``base`` (own colours + the dark view: what the scan indexes) and ``light`` (base + the dark
view as white ink, which the reference canvas puts on black; an opaque upload: its inverted
grayscale). Both scored with the file's own scoring (fusion included); the first set decides.
"""

from __future__ import annotations

import json
import time

import numpy as np
from compare_models import (  # scripts/ is on sys.path when run as a script
    KEYS,
    SETS,
    decision_rule,
    one_model_args,
)
from PIL import Image, ImageOps

from ccu_vision.embedder import Embedder, dense_logo_scores, monochrome
from ccu_vision.evalset import build_eval_set, read_truth
from ccu_vision.evaluate import logo_metrics
from ccu_vision.preprocess import is_transparent


def light(img: Image.Image) -> Image.Image:
    """The dark view's ink in white (transparent), or an opaque upload's inverted grayscale."""
    dark = monochrome(img)
    if not is_transparent(img):
        return ImageOps.invert(dark.convert("L")).convert("RGB")
    arr = np.asarray(dark.convert("RGBA")).copy()
    arr[:, :, :3] = 255
    return Image.fromarray(arr, "RGBA")


def indexes(emb: Embedder, logos: list[Image.Image]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    base = emb.embed_logo_views(logos)
    lv = emb.embed_logos([light(im) for im in logos])
    out = {"base": (np.concatenate(base), np.concatenate([np.full(len(v), i) for i, v in enumerate(base)]))}
    plus = [np.vstack([v, lv[i : i + 1]]) for i, v in enumerate(base)]
    out["light"] = (np.concatenate(plus), np.concatenate([np.full(len(v), i) for i, v in enumerate(plus)]))
    return out


def metrics(truth: list[dict], slugs: list[str], scores: np.ndarray) -> dict:
    top = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    lm = logo_metrics(truth, [[(slugs[j], float(r[j])) for j in o if np.isfinite(r[j])] for r, o in zip(scores, top)])
    return {k: round(lm[k], 4) for k in KEYS} | {"ci95": {k: v for k, v in lm["ci95"].items() if k != "resamples"}}


def main() -> None:
    args = one_model_args(__doc__, many_sets=True).parse_args()
    emb = Embedder(args.model)
    res: dict[str, dict[str, dict]] = {}
    for name in args.set:
        root = build_eval_set(f"out/eval-{name}", SETS[name], args.photos)
        truth = read_truth(root)
        slugs = sorted(p.stem for p in (root / "logos").glob("*.png"))
        idx = indexes(emb, [Image.open(root / "logos" / f"{s}.png") for s in slugs])
        rows = [t for t in truth if t["task"] == "logo"]
        scores: dict[str, list] = {k: [] for k in idx}
        t0 = time.time()
        for i in range(0, len(rows), 32):
            for e in emb.embed_photos([Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + 32]]):
                for k, (refs, owner) in idx.items():
                    scores[k].append(dense_logo_scores(e, refs, owner)[0])
        print(f"== {name}: {len(rows)} queries, {len(slugs)} logos, scored in {time.time() - t0:.0f} s; vectors per logo "
              + json.dumps({k: round(len(r) / len(slugs), 2) for k, (r, _) in idx.items()}), flush=True)
        for k, s in scores.items():
            m = metrics(truth, slugs, np.stack(s))
            res.setdefault(k, {})[name] = m
            print(f"{k:6s}", json.dumps(m), flush=True)
    _, _, line = decision_rule(res["light"], res["base"], args.set[0], args.set[1:])
    print("rule light on", line)


if __name__ == "__main__":
    main()
