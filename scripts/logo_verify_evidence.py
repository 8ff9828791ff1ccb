"""Keypoint verification of logo candidates (:mod:`ccu_vision.logo_verify`) beside the shipped text
evidence, measured offline on named draws.

    python scripts/text_evidence.py ocr --set calib --photo L736n      # each draw: its OCR and ranking dumps
    python scripts/text_evidence.py rank --set calib --model out/ccu-lite0-v15cdpft2.onnx
    python scripts/logo_verify_evidence.py inliers --set calib          # -> out/logo-inliers-<set>@<key>.json
    python scripts/logo_verify_evidence.py eval --fit calib --fit clutter-calib --decide lettered-calib2 \
        --no-harm calib --no-harm clutter-calib
    python scripts/logo_verify_evidence.py attach --calib calib --calib clutter-calib --calib lettered-calib2 \
        --weight 6 --floor 3 --cap 10 --model out/ccu-lite0-v15cdpft2.onnx \
        --out ccu_vision/models/ccu-lite0-v15cdpft3.onnx --model-id ccu-lite0-v15cdpft3

(``git show a9ada30:ccu_vision/models/ccu-lite0-v15cdpft2.onnx > out/ccu-lite0-v15cdpft2.onnx`` restores
the input file; ``rank`` with it or with v15cdpft3 gives the same rankings, the network and fused
scoring being the same.)

``inliers`` needs the draw's ``out/rank-<set>.json`` and ``out/ocr-<set>@L736n.json`` (from
``scripts/text_evidence.py rank`` / ``ocr --photo L736n``): each query's candidates are the
``candidates`` best brands after the shipped text evidence, exactly those the scan verifies, and each
is counted with the product's functions (:func:`ccu_vision.logo_verify.query_gray`, ``features``,
``ref_features``, ``count_inliers``) on the draw's own files. The scan skips candidates that cannot
reach the threshold (:func:`ccu_vision.logo_verify.should_verify`); that changes no flag, only the
order of matches below the threshold, so rankings here verify every candidate.

Plan and rule: ``notebooks/results/experiments/logo-verify-plan.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np

# scripts/ is on sys.path when run as a script
from compare_models import DEFAULT_MODEL, KEYS, SETS, decision_rule
from text_evidence import _root, combine, load_draw, metrics, pooled_threshold, shipped_scoring

from ccu_vision import imageio
from ccu_vision.logo_verify import LogoVerifyConfig, count_inliers, features, query_gray, ref_features

OCR = "L736n"  # how v15cdpft2 and v15cdpft3 read photos
GRID = [(w, f, c) for w in (2.0, 3.0, 4.0, 6.0) for f, c in ((3, 10), (4, 12), (5, 14), (6, 16))]


def feature_cfg(cfg: LogoVerifyConfig) -> LogoVerifyConfig:
    """The settings inlier counts depend on (the bonus's floor, cap and weight do not)."""
    return dataclasses.replace(cfg, floor=LogoVerifyConfig.floor, cap=LogoVerifyConfig.cap,
                               weight=LogoVerifyConfig.weight)


def inliers_path(name: str, cfg: LogoVerifyConfig) -> Path:
    return Path(f"out/logo-inliers-{name}@{feature_cfg(cfg).key()}.json")


def cmd_inliers(args: argparse.Namespace) -> None:
    cfg = LogoVerifyConfig(**json.loads(args.config)) if args.config else LogoVerifyConfig()
    d = load_draw(args.set, args.photos, OCR)
    root = _root(args.set, args.photos)
    ranked = combine(d, *shipped_scoring())
    rows = [t for t in d["truth"] if t["task"] == "logo"]
    assert len(rows) == len(ranked), (len(rows), len(ranked))
    refs: dict = {}
    out, t0 = [], time.perf_counter()
    for i, (t, r) in enumerate(zip(rows, ranked)):
        q = features(query_gray(imageio.load_image(root / t["query"]), cfg))
        got = {}
        for brand, _p in r[: cfg.candidates]:
            if brand not in refs:
                refs[brand] = ref_features(imageio.load_image(root / "logos" / f"{brand}.png", keep_alpha=True), cfg)
            got[brand] = count_inliers(q, refs[brand], cfg)
        out.append(got)
        if (i + 1) % 200 == 0:
            print(f"{args.set}: {i + 1}/{len(rows)} ({(time.perf_counter() - t0) / (i + 1):.3f} s/query)", flush=True)
    p = inliers_path(args.set, cfg)
    p.write_text(json.dumps({"set": args.set, "config": feature_cfg(cfg).to_dict(), "inliers": out}))
    print(f"{args.set}: {len(out)} queries, {(time.perf_counter() - t0) / max(len(out), 1):.3f} s/query -> {p}")


def load_inliers(name: str, cfg: LogoVerifyConfig) -> list[dict[str, int]]:
    p = inliers_path(name, cfg)
    data = json.loads(p.read_text())
    assert data["config"] == feature_cfg(cfg).to_dict(), (p, data["config"])
    return data["inliers"]


def verified(ranked: list, inl: list[dict[str, int]], cfg: LogoVerifyConfig) -> list[list[tuple[str, float]]]:
    """Each query's ranking after verification (every candidate verified, see the module docstring)."""
    assert len(ranked) == len(inl), (len(ranked), len(inl))
    out = []
    for r, m in zip(ranked, inl):
        z = [(b, cfg.apply(p, m[b]) if b in m else p) for b, p in r]
        out.append(sorted(z, key=lambda x: (-x[1], x[0])))
    return out


def draw_with_inliers(name: str, photos: str, cfg: LogoVerifyConfig) -> tuple[dict, list, list]:
    d = load_draw(name, photos, OCR)
    return d, combine(d, *shipped_scoring()), load_inliers(name, cfg)


def cmd_eval(args: argparse.Namespace) -> None:
    base = LogoVerifyConfig()
    fit = [draw_with_inliers(n, args.photos, base) for n in args.fit]
    best = None
    print("grid on the fit draws (mean over " + "+".join(args.fit) + "):")
    for w, f, c in GRID:
        cfg = dataclasses.replace(base, weight=w, floor=f, cap=c)
        ms = [metrics(d, verified(txt, inl, cfg)) for d, txt, inl in fit]
        tpr, ap = float(np.mean([m["tpr@0.01fpr"] for m in ms])), float(np.mean([m["ap"] for m in ms]))
        print(f"  weight {w:g} floor {f} cap {c}: mean TPR@1%FPR {tpr:.4f}  mean AP {ap:.4f}")
        if best is None or tpr > best[0] + 1e-9:
            best = (tpr, ap, cfg)
    cfg = best[2] if args.weight is None else dataclasses.replace(base, weight=args.weight, floor=args.floor,
                                                                   cap=args.cap)
    print(f"best on the fit draws: weight {best[2].weight:g} floor {best[2].floor} cap {best[2].cap}; "
          f"reported below: weight {cfg.weight:g} floor {cfg.floor} cap {cfg.cap}")
    th_old = th_new = None
    if args.flags:  # the flags each file's stored logo_text threshold raises
        from ccu_vision.embedder import Embedder

        th_old = float(Embedder(args.base_model).info.thresholds["logo_text"])
        th_new = float(Embedder(args.model).info.thresholds["logo_text"])
        print(f"flags at logo_text: text-only {args.base_model} {th_old}; verified {args.model} {th_new}")
    new, old = {}, {}
    for name in [*args.fit, *args.decide, *args.no_harm, *args.read]:
        if name in new:
            continue
        d, txt, inl = draw_with_inliers(name, args.photos, cfg)
        role = ("fit" if name in args.fit else "decide" if name in args.decide
                else "no-harm" if name in args.no_harm else "read")
        old[name], new[name] = metrics(d, txt, th_old), metrics(d, verified(txt, inl, cfg), th_new)
        print(f"{role:7s} {name:16s} text     {json.dumps(old[name])}\n"
              f"{'':24s} verified {json.dumps(new[name])}")
    for name in args.decide:  # the repository's rule (compare_models.decision_rule), text-only as the base
        print("rule: " + decision_rule(new, old, name, args.no_harm)[2])


def cmd_attach(args: argparse.Namespace) -> None:
    """Calibrate ``logo_text`` for verified scores on the pooled --calib draws (the rule
    ``scripts/text_evidence.py attach`` uses: precision 0.95 and at most 1 % of negatives at 95 %
    confidence) and write the model with ``ccu.logo_verify`` under a new model id."""
    from ccu_vision.train.logo_verify import attach

    cfg = dataclasses.replace(LogoVerifyConfig(), weight=args.weight, floor=args.floor, cap=args.cap)
    truth, ranked = [], []
    for name in args.calib:
        d, txt, inl = draw_with_inliers(name, args.photos, cfg)
        truth += d["truth"]
        ranked += verified(txt, inl, cfg)
    th, recall, n_neg, lm = pooled_threshold(truth, ranked)
    attach(args.model, cfg, args.out, model_id=args.model_id, logo_text=th,
           calibration={"recall_at_threshold": {"logo_text": round(recall, 4)},
                        "negatives": {"logo_text": n_neg}, "verify_calibrated_on": list(args.calib)},
           command=sys.argv[1:])
    print(f"{json.dumps(cfg.to_dict())}\nlogo_text threshold {th:.5f} on {n_neg} pooled negatives (recall there "
          f"{recall:.4f}); pooled {json.dumps({k: round(lm[k], 4) for k in KEYS})} -> {args.out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default="../shared/datasets/clothing-dataset-small")
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("inliers")
    p.add_argument("--set", required=True, choices=sorted(SETS))
    p.add_argument("--config", default="", help="LogoVerifyConfig fields as JSON (default: the defaults)")
    p = sub.add_parser("eval")
    p.add_argument("--fit", action="append", required=True, choices=sorted(SETS))
    p.add_argument("--decide", action="append", default=[], choices=sorted(SETS))
    p.add_argument("--no-harm", action="append", default=[], choices=sorted(SETS))
    p.add_argument("--read", action="append", default=[], choices=sorted(SETS),
                   help="draws read once after the decision (test draws)")
    p.add_argument("--flags", action="store_true", help="also the flags at the two files' logo_text thresholds")
    p.add_argument("--base-model", default="out/ccu-lite0-v15cdpft2.onnx", help="the text-only file (--flags)")
    p.add_argument("--model", default=DEFAULT_MODEL, help="the file with verification (--flags)")
    p = sub.add_parser("attach")
    p.add_argument("--calib", action="append", required=True, choices=sorted(SETS))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--model-id", required=True)
    p.add_argument("--out", required=True)
    for p in (sub.choices["eval"], sub.choices["attach"]):
        p.add_argument("--weight", type=float, default=None if p is sub.choices["eval"] else 4.0)
        p.add_argument("--floor", type=int, default=4)
        p.add_argument("--cap", type=int, default=12)
    args = ap.parse_args()
    {"inliers": cmd_inliers, "eval": cmd_eval, "attach": cmd_attach}[args.cmd](args)


if __name__ == "__main__":
    main()
