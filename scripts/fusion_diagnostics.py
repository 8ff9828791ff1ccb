"""What the shipped fusion's 1 %-FPR threshold leaves out, and whether a per-reference "hubness"
feature would help it (information only; fusion-v2-plan.md's rule does not use it).

    python scripts/logo_fusion.py dump --model out/ccu-lite0-v15cdp.onnx --set calib --set calib2 ...
    python scripts/fusion_diagnostics.py --set calib2

From the dumps of ``scripts/logo_fusion.py`` (v15cdp's two stages, 15 crops): the shipped fusion (7
features, fitted on calib) scores the draw; printed are the negatives above its 1 %-FPR threshold
(which registered brand each is taken for) and, by style and size, how many registered marks are
ranked right but score below it. ``hub``: each brand's 99th percentile base score over a bank of
clean photos (half of each draw's clean listings, held apart and removed from the negatives that
are scored), as two more fusion features (hub, score - hub), against the seven on the same split.
"""

from __future__ import annotations

import argparse

import numpy as np
from logo_fusion import CANDIDATES, base_scores, features, fit_draws, fused_scores, labels, load, metrics

from ccu_vision.evalset import read_truth
from ccu_vision.train.logo_scoring import fit_logistic

SEVEN = list(range(7))


def size_bin(v: float) -> str:
    return "<12%" if v < 0.12 else "12-20%" if v < 0.2 else "20-30%" if v < 0.3 else ">=30%"


def left_out(name: str) -> None:
    d = load(name)
    rows = [t for t in read_truth(f"out/eval-{name}") if t["task"] == "logo"]
    assert [t["kind"] for t in rows] == list(d["kind"]), "dump and truth disagree"
    sc = fused_scores(d, True, fit_draws(["calib"], SEVEN), SEVEN)
    top, arg = sc.max(1), sc.argmax(1)
    neg = d["kind"] != "registered"
    thr = np.sort(top[neg])[::-1][int(0.01 * neg.sum())]
    hi = np.flatnonzero(neg & (top >= thr))
    kinds = dict(zip(*np.unique(d["kind"][hi], return_counts=True), strict=True))
    print(f"== {name}: 1 %-FPR threshold (fusion logit) {thr:.3f}; negatives at or above it "
          f"{ {str(k): int(v) for k, v in kinds.items()} } of {int(neg.sum())}")
    for i in hi[np.argsort(-top[hi])]:
        t = rows[i]
        print(f"  {top[i]:6.2f} {t['kind']:12s} taken for {d['slugs'][arg[i]]:20s} style {t.get('style', '-'):8s} "
              f"size {t.get('size_frac') or 0:.2f}  {t['query']}")
    pos = np.flatnonzero(~neg)
    right = d["slugs"][arg] == d["brand"]
    for key, vals in (("style", [rows[i]["style"] for i in pos]), ("size", [size_bin(rows[i]["size_frac"]) for i in pos])):
        vals = np.array(vals)
        for v in np.unique(vals):
            m = pos[vals == v]
            print(f"  {key} {v:8s} n={len(m):4d} R@1 {right[m].mean():.3f} flagged at 1% FPR "
                  f"{(right[m] & (top[m] >= thr)).mean():.3f} ranked right but below {(right[m] & (top[m] < thr)).mean():.3f}")
    print(f"  all registered: ranked right {right[pos].mean():.3f}, flagged {(right[pos] & (top[pos] >= thr)).mean():.3f}")


def split(d: dict, seed: int = 0) -> tuple[dict, dict]:
    """(bank, rest): half of the clean listings as the bank, the other queries to score."""
    n = len(d["kind"])
    clean = np.flatnonzero(d["kind"] == "clean")
    bank = np.random.default_rng(seed).permutation(clean)[: len(clean) // 2]
    keep = np.setdiff1d(np.arange(n), bank)
    part = lambda idx: {k: v[idx] if isinstance(v, np.ndarray) and v.ndim and len(v) == n else v for k, v in d.items()}  # noqa: E731
    return part(bank), part(keep)


def hub_features(d: dict, bank: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    f, cand, s = features(d, True)
    h = np.quantile(base_scores(bank, True), 0.99, axis=0)[cand]
    return np.concatenate([f[..., :7], h[..., None], (f[..., 0] - h)[..., None]], axis=2), cand, s


def hub(sets: list[str]) -> None:
    bank, rest = split(load("calib"))
    f, cand, _ = hub_features(rest, bank)
    y = labels(rest, cand).reshape(-1)
    scored = {}
    for name in sets:  # each draw split and featured once
        b2, r2 = split(load(name))
        scored[name] = (r2, *hub_features(r2, b2))
    for label, cols in (("seven", SEVEN), ("seven + hub, score-hub", list(range(9)))):
        m = fit_logistic(f[..., cols].reshape(-1, len(cols)), y)
        for name in sets:
            r2, f2, c2, s2 = scored[name]
            out = s2 - 100.0
            np.put_along_axis(out, c2, (f2[..., cols] - m["mean"]) / m["std"] @ m["w"] + m["b"], axis=1)
            r = metrics(r2, out)
            r.pop("ci95")
            print(f"hub: {label:24s} {name:18s} {r}")
    assert CANDIDATES == f.shape[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--set", action="append", default=None, help="draws (default calib2 and the special calibration draws)")
    args = ap.parse_args()
    sets = args.set or ["calib2", "lettered-calib", "clutter-calib", "lowcontrast-calib"]
    left_out(sets[0])
    hub(sets)


if __name__ == "__main__":
    main()
