"""Accuracy rows: every method on the same evaluation set files, in the same run.

A *method* turns the evaluation set (:mod:`ccu_vision.evalset`) into per-query ranked lists for
both tasks; :func:`ccu_vision.evaluate.logo_metrics` and :func:`~ccu_vision.evaluate.dup_metrics`
then score all of them identically. Rows that cannot run say why (``status: "not run: ..."``);
rows are never dropped.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from ..evalset import read_truth
from ..evaluate import Ranked, dup_metrics, logo_metrics, rank_with_embedder
from ..verify import VerifyConfig
from . import baselines

log = logging.getLogger(__name__)

N_MISSES = 8
N_FALSE_POSITIVES = 4
PR_POINTS = 200


@dataclass
class ModelSpec:
    """A model row to run: ``path`` is None (with ``reason``) when it cannot run."""

    role: str  # "model" (ccu-vision) or "baseline-model" (ImageNet backbone before fine-tuning)
    path: Path | None
    reason: str | None = None
    label: str | None = None


@dataclass
class MethodRun:
    """One accuracy row while it is computed (rankings kept for curves and misses)."""

    name: str
    kind: str
    role: str
    status: str = "ok"
    info: dict = field(default_factory=dict)
    logo_ranked: list[Ranked] | None = None
    dup_ranked: list[Ranked] | None = None
    boxes: list | None = None
    seconds: float = 0.0


# ----------------------------------------------------------------------------- curves / thresholds


def pr_curve(scores: np.ndarray, correct: np.ndarray, n_pos: int, max_points: int = PR_POINTS) -> dict:
    """Precision/recall along the ranked predictions (cut after each distinct score), thinned."""
    s = np.asarray(scores, np.float64)
    c = np.asarray(correct, bool)
    if len(s) == 0 or n_pos == 0:
        return {"recall": [], "precision": []}
    order = np.argsort(-s, kind="stable")
    s, c = s[order], c[order]
    tp = np.cumsum(c)
    prec = tp / np.arange(1, len(c) + 1)
    rec = tp / n_pos
    last = np.r_[s[1:] != s[:-1], True]
    prec, rec = prec[last], rec[last]
    if len(rec) > max_points:
        idx = np.unique(np.linspace(0, len(rec) - 1, max_points).round().astype(int))
        prec, rec = prec[idx], rec[idx]
    return {"recall": [round(float(v), 5) for v in rec], "precision": [round(float(v), 5) for v in prec]}


def _top1(r: Ranked) -> tuple[str, float]:
    return r[0] if r else ("", float("-inf"))


def logo_predictions(truth: list[dict], ranked: list[Ranked]) -> tuple[np.ndarray, np.ndarray, int]:
    """Top-1 scores, whether each top-1 is a correct registered-brand hit, and the positive count."""
    rows = [t for t in truth if t["task"] == "logo"]
    top = [_top1(r) for r in ranked]
    scores = np.array([s for _, s in top], np.float64)
    correct = np.array([t["kind"] == "registered" and k == t["brand"] for t, (k, _) in zip(rows, top)], bool)
    return scores, correct, sum(t["kind"] == "registered" for t in rows)


def dup_predictions(truth: list[dict], ranked: list[Ranked]) -> tuple[np.ndarray, np.ndarray, int]:
    """All (query, reference) predictions' scores and correctness (DISC21 micro-AP), positive count."""
    rows = [t for t in truth if t["task"] == "dup"]
    scores, correct = [], []
    for t, r in zip(rows, ranked):
        for key, s in r:
            scores.append(s)
            correct.append(key == t["product"])
    return np.array(scores, np.float64), np.array(correct, bool), sum(1 for t in rows if t["product"])


def at_thresholds(truth: list[dict], logo_ranked: list[Ranked], dup_ranked: list[Ranked], thresholds: dict) -> dict:
    """Precision/recall of the flags a scan would raise at a model's stored thresholds."""
    out: dict = {}
    for task, ranked, key in (("logo", logo_ranked, "logo"), ("dup", dup_ranked, "near_duplicate")):
        th = thresholds.get(key)
        if th is None:
            continue
        rows = [t for t in truth if t["task"] == task]
        top = [_top1(r) for r in ranked]
        want = "brand" if task == "logo" else "product"
        flagged = np.array([s >= th for _, s in top], bool)
        right = np.array([bool(t[want]) and k == t[want] for t, (k, _) in zip(rows, top)], bool)
        n_pos = sum(1 for t in rows if t[want])
        n_neg = len(rows) - n_pos
        neg = np.array([not t[want] for t in rows], bool)
        out[task] = {
            "threshold": float(th),
            "flagged": int(flagged.sum()),
            "precision": float((flagged & right).sum() / flagged.sum()) if flagged.any() else None,
            "recall": float((flagged & right).sum() / n_pos) if n_pos else None,
            "fpr": float((flagged & neg).sum() / n_neg) if n_neg else None,
        }
    return out


# ----------------------------------------------------------------------------- methods


def _ref_loaders(root: Path) -> tuple[list[tuple[str, Image.Image]], list[tuple[str, Image.Image]]]:
    from ..imageio import load_image

    logos = [(p.stem, load_image(p)) for p in sorted((root / "logos").glob("*.png"))]  # alpha on white
    prods = [(p.stem, Image.open(p).convert("RGB")) for p in sorted((root / "products").glob("*.jpg"))]
    return logos, prods


def _query_loaders(root: Path, truth: list[dict], task: str) -> list[Callable[[], Image.Image]]:
    def loader(path: Path) -> Callable[[], Image.Image]:
        return lambda: Image.open(path).convert("RGB")

    return [loader(root / t["query"]) for t in truth if t["task"] == task]


def run_baseline(method: str, root: Path, truth: list[dict], k: int, orb: baselines.OrbConfig | None = None) -> MethodRun:
    """One hash/keypoint row (``status`` says "not run: ..." when its dependency is missing)."""
    kind = "hash" if method in baselines.HASH_METHODS else "keypoints"
    run = MethodRun(name=method, kind=kind, role="baseline")
    why = baselines.unavailable(method)
    if why:
        run.status = f"not run: {why}"
        return run
    t0 = time.perf_counter()
    logos, prods = _ref_loaders(root)
    run.logo_ranked = baselines.rank_task(method, logos, _query_loaders(root, truth, "logo"), k, orb)
    run.dup_ranked = baselines.rank_task(method, prods, _query_loaders(root, truth, "dup"), k, orb)
    run.seconds = time.perf_counter() - t0
    if method == "orb":
        run.info = {"orb": vars(orb or baselines.OrbConfig())}
    return run


def run_model(spec: ModelSpec, root: Path, k: int, threads: int | None) -> MethodRun:
    """One embedder row (ccu-vision or the ImageNet backbone) through :func:`rank_with_embedder`."""
    kind = "ccu-vision" if spec.role == "model" else "imagenet-backbone"
    run = MethodRun(name=spec.label or kind, kind=kind, role=spec.role)
    if spec.path is None:
        run.status = f"not run: {spec.reason}"
        return run
    from ..embedder import Embedder
    from ..errors import ModelError

    try:
        emb = Embedder(spec.path, threads=threads)
    except ModelError as e:
        run.status = f"not run: {e}"
        return run
    run.name = spec.label or emb.info.model_id
    run.info = {"model_id": emb.info.model_id, "path": str(spec.path), "sha256": emb.info.sha256,
                "embed_dim": emb.dim, "query_size": emb.query_size, "thresholds": emb.info.thresholds}
    if emb.verify is None and spec.role != "model":
        # the ImageNet backbone goes through the same pipeline, near-duplicate verification included
        emb.verify = VerifyConfig()
    run.info["dup_scoring"] = emb.verify.to_dict() if emb.verify is not None else "global descriptor"
    t0 = time.perf_counter()
    text = getattr(emb, "text_scoring", None) is not None  # a model with text evidence is measured with it
    run.info["text_evidence"] = text
    lv = getattr(emb, "logo_verify", None)  # applied with text evidence (rank_with_embedder)
    run.info["logo_verify"] = lv.to_dict() if lv is not None and text else None
    run.logo_ranked, run.dup_ranked, run.boxes = rank_with_embedder(emb, root, k=k, text=text)
    run.seconds = time.perf_counter() - t0
    return run


# ----------------------------------------------------------------------------- rows


def method_row(run: MethodRun, truth: list[dict]) -> dict:
    """The JSON row of a method: metrics, PR curves, timing (or just the status)."""
    row: dict = {"name": run.name, "kind": run.kind, "role": run.role, "status": run.status, **run.info}
    if run.status != "ok" or run.logo_ranked is None or run.dup_ranked is None:
        return row
    n_q = len(run.logo_ranked) + len(run.dup_ranked)
    row["seconds"] = round(run.seconds, 3)
    row["queries_per_s"] = round(n_q / run.seconds, 2) if run.seconds > 0 else None
    row["logo"] = logo_metrics(truth, run.logo_ranked)
    row["dup"] = dup_metrics(truth, run.dup_ranked)
    ls, lc, lp = logo_predictions(truth, run.logo_ranked)
    ds, dc, dp = dup_predictions(truth, run.dup_ranked)
    row["pr"] = {"logo": pr_curve(ls, lc, lp), "dup": pr_curve(ds, dc, dp)}
    th = run.info.get("thresholds") or {}
    if th:
        row["at_model_thresholds"] = at_thresholds(truth, run.logo_ranked, run.dup_ranked, th)
    # every query's top-1 (key, score), in truth order: flags at any other threshold can be
    # recomputed from results.json alone (bench.accuracy.at_thresholds on the row's "top1")
    row["top1"] = {task: [[k, round(s, 5) if np.isfinite(s) else None] for k, s in map(_top1, ranked)]
                   for task, ranked in (("logo", run.logo_ranked), ("dup", run.dup_ranked))}
    return row


def hardest_misses(run: MethodRun, truth: list[dict]) -> dict:
    """The most confident mistakes of a method: missed positives and top-scoring negatives, per task."""
    out: dict = {"method": run.name, "logo": [], "dup": []}
    if run.logo_ranked is None or run.dup_ranked is None:
        return out
    for task, ranked, want, ref_dir, ext in (
        ("logo", run.logo_ranked, "brand", "logos", ".png"),
        ("dup", run.dup_ranked, "product", "products", ".jpg"),
    ):
        rows = [t for t in truth if t["task"] == task]
        items = []
        for i, (t, r) in enumerate(zip(rows, ranked)):
            key, score = _top1(r)
            truth_key = t.get(want)
            keys = [kk for kk, _ in r]
            rank = keys.index(truth_key) + 1 if truth_key in keys else None
            if truth_key and rank == 1:
                continue
            item = {
                "task": task, "query": t["query"], "kind": t["kind"], "truth": truth_key,
                "pred": key or None, "pred_score": round(score, 5) if np.isfinite(score) else None,
                "true_rank": rank, "true_score": round(r[rank - 1][1], 5) if rank else None,
                "pred_ref": f"{ref_dir}/{key}{ext}" if key else None,
                "truth_ref": f"{ref_dir}/{truth_key}{ext}" if truth_key else None,
            }
            for extra in ("size_frac", "style", "box", "edits", "mark"):
                if extra in t:
                    item[extra] = t[extra]
            if task == "logo" and run.boxes is not None and i < len(run.boxes):
                item["pred_box"] = run.boxes[i]
            items.append(item)
        def conf(x: dict) -> float:
            return x["pred_score"] if x["pred_score"] is not None else float("-inf")
        missed = sorted((x for x in items if x["truth"]), key=conf, reverse=True)[:N_MISSES]
        false_pos = sorted((x for x in items if not x["truth"]), key=conf, reverse=True)[:N_FALSE_POSITIVES]
        out[task] = missed + false_pos
    return out


def run_accuracy(
    root: Path,
    models: list[ModelSpec],
    methods: list[str],
    k: int = 10,
    threads: int | None = None,
    orb: baselines.OrbConfig | None = None,
) -> dict:
    """All accuracy rows on the evaluation set in ``root``; returns the ``accuracy`` results section."""
    root = Path(root)
    truth = read_truth(root)
    runs: list[MethodRun] = []
    for spec in models:
        log.info("accuracy: model %s (%s)", spec.label or spec.path, spec.role)
        runs.append(_guard(lambda spec=spec: run_model(spec, root, k, threads), spec.label or spec.role, spec.role))
    for m in methods:
        log.info("accuracy: %s", m)
        runs.append(_guard(lambda m=m: run_baseline(m, root, truth, k, orb), m, "baseline"))
    rows = [method_row(r, truth) for r in runs]
    primary = next((r for r in runs if r.role == "model" and r.status == "ok"), None)
    return {
        "eval_root": str(os.path.abspath(root)),
        "k": k,
        "methods": rows,
        "misses": hardest_misses(primary, truth) if primary else None,
    }


def _guard(fn: Callable[[], MethodRun], name: str, role: str) -> MethodRun:
    """Run a method; an unexpected failure becomes a ``failed: ...`` row instead of ending the bench."""
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - one broken method must not hide the others
        log.exception("accuracy method %s failed", name)
        return MethodRun(name=name, kind="?", role=role, status=f"failed: {type(e).__name__}: {e}")
