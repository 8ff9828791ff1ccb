"""Fit a model's logo scoring (:mod:`ccu_vision.scoring`) on an evaluation set and write it into the file.

    python -m ccu_vision.train.logo_scoring fit --model M.onnx --evalset out/eval-calib \\
        --head-margins 0,0.4 --out out/logo-scoring.json
    python -m ccu_vision.train.logo_scoring fit --model M.onnx --evalset out/eval-calib \\
        --evalset out/eval-lettered-calib --features all --head-margins 0,0.4 --out out/logo-scoring.json
    python -m ccu_vision.train.logo_scoring attach --model M.onnx --scoring out/logo-scoring.json \\
        --out out/M2.onnx --model-id M2

``fit`` scores every logo query of the set (or of each ``--evalset``, pooled) once with the model's own
two stages (with the proposal head's boxes cut again at ``--head-margins``), takes each query's
``candidates`` best references and fits the fusion over ``--features`` (default: the seven of
v15cdpf; L2 logistic regression on standardised features, Newton's method, deterministic) with label
"a registered mark and this is its brand". ``attach`` writes it as ``ccu.logo_scoring``
under a new model id and clears the thresholds (calibrate the new file: its scores are probabilities).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from ..embedder import Embedder, combine_logo_scores, logo_stage_matrix
from ..evalset import read_truth
from ..evaluate import eval_references
from ..scoring import DEFAULT_FEATURES, FEATURES, NO_HEAD_LOGIT, LogoScoring, candidate_features

log = logging.getLogger(__name__)


def fit_logistic(x: np.ndarray, y: np.ndarray, c: float = 1.0, iters: int = 200) -> dict:
    """L2-regularised logistic regression (intercept not penalised) by Newton's method on
    standardised features: {"mean", "std", "w", "b"}. Deterministic."""
    assert x.ndim == 2 and y.shape == (len(x),), (x.shape, y.shape)
    mu, sd = x.mean(0), x.std(0) + 1e-9
    z = np.c_[(x - mu) / sd, np.ones(len(x))]
    w = np.zeros(z.shape[1])
    reg = np.r_[np.full(z.shape[1] - 1, 1.0 / c), 0.0]
    for _ in range(iters):
        p = 1 / (1 + np.exp(-z @ w))
        g = z.T @ (p - y) + reg * w
        h = (z * (p * (1 - p))[:, None]).T @ z + np.diag(reg)
        step = np.linalg.solve(h, g)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return {"mean": mu, "std": sd, "w": w[:-1], "b": float(w[-1])}


def collect(embedder: Embedder, root: str | Path, candidates: int = 5, batch: int = 32
            ) -> tuple[np.ndarray, np.ndarray]:
    """Features [Q * K, len(FEATURES)] and labels of every logo query's ``candidates`` best references
    on an evaluation set, scored with ``embedder``'s own crop plan (its ``logo_scoring`` margins)."""
    root = Path(root)
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    slugs, logos, owner = eval_references(embedder, root)
    xs, ys = [], []
    t0 = time.time()
    for i in range(0, len(rows), batch):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + batch]]
        for t, e in zip(rows[i : i + batch], embedder.embed_photos(ims), strict=True):
            region, crop, _ = logo_stage_matrix(e, logos, owner)
            assert crop is not None, f"{embedder.info.path}: the fusion needs a model with a crop stage"
            base = combine_logo_scores(region, crop.max(0))
            hl = e.head_logit
            cand, f = candidate_features(base, region, crop, NO_HEAD_LOGIT if hl is None else hl, np.arange(len(slugs)),
                                         candidates)
            xs.append(f)
            ys.append(np.array([t["kind"] == "registered" and slugs[c] == t["brand"] for c in cand], np.float64))
        log.info("%s: %d/%d queries scored (%.0f s)", root, min(i + batch, len(rows)), len(rows), time.time() - t0)
    return np.concatenate(xs), np.concatenate(ys)


def parse_features(text: str) -> tuple[str, ...]:
    """``--features``: "default" (the seven of v15cdpf), "all" (:data:`FEATURES`) or comma-separated names."""
    if text in ("", "default"):
        return DEFAULT_FEATURES
    if text == "all":
        return FEATURES
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in FEATURES]
    if bad or len(set(names)) != len(names) or not names:
        raise ValueError(f"--features {text!r}: unknown or repeated names {bad} (known: {', '.join(FEATURES)})")
    return names


def fit(model: str | Path, evalsets: str | Path | list[str | Path], head_margins: tuple[float, ...] = (),
        candidates: int = 5, c: float = 1.0, features: tuple[str, ...] = DEFAULT_FEATURES
        ) -> tuple[LogoScoring, dict]:
    """The fitted scoring for ``model`` (pooled over ``evalsets``) and a report (positives, candidates,
    weights by feature)."""
    sets = [evalsets] if isinstance(evalsets, (str, Path)) else list(evalsets)
    assert sets, "fit needs at least one evaluation set"
    emb = Embedder(model)
    emb.logo_scoring = LogoScoring(tuple(head_margins), candidates)  # the crop plan to fit on (no fusion yet)
    cols = [FEATURES.index(n) for n in features]
    parts = [collect(emb, s, candidates) for s in sets]
    x = np.concatenate([p[0] for p in parts])[:, cols]
    y = np.concatenate([p[1] for p in parts])
    m = fit_logistic(x, y, c)
    scoring = replace(emb.logo_scoring, mean=m["mean"], std=m["std"], weights=m["w"], bias=m["b"],
                      features=tuple(features))
    report = {"evalset": ", ".join(str(s) for s in sets), "candidates": int(len(y)), "positives": int(y.sum()),
              "c": c, "weights": {k: round(float(w), 4) for k, w in zip(features, m["w"], strict=True)},
              "bias": round(m["b"], 4)}
    return scoring, report


def attach(model: str | Path, scoring: LogoScoring, out: str | Path, *, model_id: str,
           command: list[str] | None = None, report: dict | None = None) -> Path:
    """Write ``model`` with ``scoring`` as its ``ccu.logo_scoring`` under its own ``model_id``; the
    thresholds are cleared (they belong to the old scoring) and the command chain grows."""
    import onnx

    from .export import save_with_metadata

    m = onnx.load(str(model))
    meta = {p.key: p.value for p in m.metadata_props}
    if not model_id or model_id == meta.get("ccu.model_id"):
        raise ValueError(f"{model}: give the file with a new logo scoring its own model id (catalogs pin the id, "
                         f"and the scoring changes the logo scores)")
    meta["ccu.model_id"] = model_id
    meta["ccu.thresholds"] = "{}"
    meta["ccu.logo_scoring"] = scoring.to_json()
    argvs = ([(report or {})["argv"]] if (report or {}).get("argv") else []) + ([command] if command else [])
    return save_with_metadata(m, meta, out, "python -m ccu_vision.train.logo_scoring", argvs)


def save(path: str | Path, scoring: LogoScoring, report: dict) -> None:
    Path(path).write_text(json.dumps({"scoring": json.loads(scoring.to_json()), "report": report}, indent=1))


def load(path: str | Path) -> tuple[LogoScoring, dict]:
    from ..scoring import parse_config

    d = json.loads(Path(path).read_text())
    scoring = parse_config(json.dumps(d["scoring"]), str(path))
    assert scoring is not None
    return scoring, d.get("report", {})


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ccu_vision.train.logo_scoring", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit the fusion on an evaluation set")
    f.add_argument("--model", required=True)
    f.add_argument("--evalset", required=True, action="append",
                   help="evaluation set folder (e.g. out/eval-calib); repeat to fit on several, pooled")
    f.add_argument("--head-margins", default="", help="comma-separated extra margins for the head's boxes, e.g. 0,0.4")
    f.add_argument("--candidates", type=int, default=5)
    f.add_argument("--c", type=float, default=1.0, help="inverse L2 strength (default 1)")
    f.add_argument("--features", default="default",
                   help=f"'default' (the seven of v15cdpf), 'all' or comma-separated names of: {', '.join(FEATURES)}")
    f.add_argument("--out", required=True, help="the fitted scoring (.json)")
    a = sub.add_parser("attach", help="write a fitted scoring into a model file")
    a.add_argument("--model", required=True)
    a.add_argument("--scoring", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--model-id", required=True, help="the new file's model id (catalogs pin it)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv_list = sys.argv[1:] if argv is None else list(argv)
    if args.cmd == "fit":
        margins = tuple(float(v) for v in args.head_margins.split(",") if v.strip())
        try:
            features = parse_features(args.features)
        except ValueError as e:
            ap.error(str(e))
        scoring, report = fit(args.model, args.evalset, margins, args.candidates, args.c, features)
        report["argv"] = argv_list
        save(args.out, scoring, report)
        log.info("fitted on %s: %s; wrote %s", report["evalset"], json.dumps(report), args.out)
        return 0
    scoring, report = load(args.scoring)
    attach(args.model, scoring, args.out, model_id=args.model_id, command=argv_list, report=report)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
