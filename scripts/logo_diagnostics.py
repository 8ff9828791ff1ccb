"""Diagnostics for the logo task: where does recall go, and can shape verification recover it?

    python scripts/logo_diagnostics.py --model ccu_vision/models/ccu-lite0-v2d.onnx --evalset out/eval-calib

Two measurements on the scan's exact two-stage logo scores (:func:`ccu_vision.embedder.dense_logo_scores`
arithmetic: mean of the best region and the best re-embedded crop similarity per reference):

* **oracle localisation** - each registered mark cropped at its *true* box (the scan's crop geometry:
  square, margin 0, 0.15 or 0.4, letterboxed to the reference size) and embedded: recall@1 of that
  crop alone and averaged with the scan's score, beside the scan's own recall@1. The gap says how
  much better proposals could buy; the oracle's own level is the embedding's ceiling.
* **template verification** - for the top-3 references of every listing, the best normalised
  cross-correlation (OpenCV ``TM_CCOEFF_NORMED``, 8 scales x 3 angles) between the reference's
  silhouette and the best crop, on intensities (either polarity) and on gradient magnitudes; its
  distribution for correct top-1 matches vs negatives, and the logo metrics when
  ``w * clip((ncc - t0) / (1 - t0), 0, 1)`` is added to those candidates' scores.

Decide on the calibration set; read the test set only to confirm.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from ccu_vision.embedder import REFINE_CROPS, Embedder, best_per_reference
from ccu_vision.evalset import read_truth
from ccu_vision.evaluate import eval_references, logo_metrics
from ccu_vision.preprocess import letterbox

K = 3  # candidates verified per listing
SIDES = (28, 36, 46, 58, 72, 88, 104, 120)  # template long side in px on the 128 px crop view
ANGLES = (-12, 0, 12)


def silhouette(im: Image.Image) -> np.ndarray:
    """The reference's alpha, trimmed to its ink (float32 0..1)."""
    a = np.asarray(im.convert("RGBA"))[:, :, 3].astype(np.float32) / 255
    ys, xs = np.nonzero(a > 0.1)
    return a[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]


def rotations(m: np.ndarray) -> list[np.ndarray]:
    out = []
    for ang in ANGLES:
        if not ang:
            out.append(m)
            continue
        h, w = m.shape
        d = int(np.hypot(h, w)) + 2
        c = np.zeros((d, d), np.float32)
        c[(d - h) // 2 : (d - h) // 2 + h, (d - w) // 2 : (d - w) // 2 + w] = m
        r = cv2.warpAffine(c, cv2.getRotationMatrix2D((d / 2, d / 2), ang, 1.0), (d, d))
        ys, xs = np.nonzero(r > 0.1)
        out.append(r[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1])
    return out


def _grad(x: np.ndarray) -> np.ndarray:
    return np.hypot(cv2.Sobel(x, cv2.CV_32F, 1, 0), cv2.Sobel(x, cv2.CV_32F, 0, 1))


def template_scores(view: np.ndarray, templates: list[np.ndarray]) -> tuple[float, float]:
    """Best |NCC| on intensities and best NCC on gradient magnitudes of a crop view vs a silhouette."""
    g = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY).astype(np.float32)
    gm = _grad(g)
    best_i = best_e = 0.0
    for t in templates:
        for side in SIDES:
            s = side / max(t.shape)
            tt = cv2.resize(t, (max(4, round(t.shape[1] * s)), max(4, round(t.shape[0] * s))),
                            interpolation=cv2.INTER_AREA)
            if tt.std() < 1e-3:
                continue
            best_i = max(best_i, float(np.abs(cv2.matchTemplate(g, tt, cv2.TM_CCOEFF_NORMED)).max()))
            te = _grad(tt)
            if te.std() >= 1e-3:
                best_e = max(best_e, float(cv2.matchTemplate(gm, te, cv2.TM_CCOEFF_NORMED).max()))
    return best_i, best_e


def metrics(rows: list[dict], slugs: list[str], score: np.ndarray) -> str:
    ranked = [[(slugs[j], float(score[q, j])) for j in np.argsort(-score[q])[:10]] for q in range(len(score))]
    m = logo_metrics(rows, ranked)
    return " ".join(f"{k}={m[k]:.3f}" for k in ("recall@1", "recall@5", "ap", "tpr@0.01fpr"))


def run(emb: Embedder, root: Path, verify: bool) -> None:
    slugs, refs, owner = eval_references(emb, root)
    n = len(slugs)
    templates = [rotations(silhouette(Image.open(root / "logos" / f"{s}.png"))) for s in slugs] if verify else []
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    S, C, NI, NE = [], [], [], []
    for i in range(0, len(rows), 32):
        for e in emb.embed_photos([Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + 32]]):
            sim = e.regions @ refs.T
            b, _ = best_per_reference(sim, owner, n)
            top = np.argsort(-sim.max(1), kind="stable")[:REFINE_CROPS]
            cv = e.crop_views(top)
            c, ca = best_per_reference(emb.embed_views(cv) @ refs.T, owner, n)
            s = 0.5 * (b + c)
            cand = np.argsort(-s)[:K]
            v = [template_scores(cv[ca[j]], templates[j]) for j in cand] if verify else [(0.0, 0.0)] * K
            S.append(s)
            C.append(cand)
            NI.append([x for x, _ in v])
            NE.append([y for _, y in v])
    S, C, NI, NE = np.array(S), np.array(C), np.array(NI), np.array(NE)
    print(f"== {root}: {len(rows)} logo queries, {n} registered brands")
    print(f"{'scan':<28}{metrics(rows, slugs, S)}")

    pos = [i for i, t in enumerate(rows) if t["kind"] == "registered"]
    tgt = np.array([slugs.index(rows[i]["brand"]) for i in pos])
    print(f"scan recall@1 on the {len(pos)} registered marks: {(S[pos].argmax(1) == tgt).mean():.3f}")
    for margin in (0.0, 0.15, 0.4):
        vs = []
        for i in pos:
            t = rows[i]
            im = Image.open(root / t["query"]).convert("RGB")
            x0, y0, x1, y1 = t["box"]
            side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
            cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
            box = (int(cx - side / 2), int(cy - side / 2), int(cx + side / 2), int(cy + side / 2))
            vs.append(letterbox(im.crop(box), emb.ref_size, emb.interp)[0])
        E = emb.embed_views(np.stack(vs))
        B = np.stack([best_per_reference(E[k : k + 1] @ refs.T, owner, n)[0] for k in range(len(pos))])
        print(f"oracle crop at the true box, margin {margin}: recall@1 {(B.argmax(1) == tgt).mean():.3f}; "
              f"averaged with the scan score {((0.5 * (B + S[pos])).argmax(1) == tgt).mean():.3f}")
    if not verify:
        return

    kind = np.array([t["kind"] for t in rows])
    corr = np.array([kind[q] == "registered" and slugs[C[q, 0]] == rows[q]["brand"] for q in range(len(rows))])
    neg = kind != "registered"
    styles = np.array([str(t.get("style")) for t in rows])
    for name, V in (("intensity", NI), ("gradient", NE)):
        v = V[:, 0]
        print(f"{name} NCC: correct top-1 q25/50/75 {np.quantile(v[corr], [0.25, 0.5, 0.75]).round(3)}, "
              f"negatives' top-1 q50/90/99 {np.quantile(v[neg], [0.5, 0.9, 0.99]).round(3)}; median by style "
              + ", ".join(f"{st} {np.median(v[corr & (styles == st)]):.3f}"
                          for st in ("print", "tone", "outline", "texture", "badge") if (corr & (styles == st)).any()))
    for name, V in (("intensity", NI), ("gradient", NE), ("max", np.maximum(NI, NE)), ("mean", (NI + NE) / 2)):
        for t0 in (0.3, 0.4, 0.5):
            for w in (0.1, 0.2, 0.4):
                sc = S.copy()
                for q in range(len(S)):
                    sc[q, C[q]] += w * np.clip((V[q] - t0) / (1 - t0), 0, 1)
                print(f"{f'+ {name} t0={t0} w={w}':<28}{metrics(rows, slugs, sc)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--evalset", action="append", required=True)
    ap.add_argument("--no-verify", action="store_true", help="only the oracle-localisation measurement")
    args = ap.parse_args()
    for model in args.model:
        print(f"### {model}")
        emb = Embedder(model)
        for root in map(Path, args.evalset):
            run(emb, root, not args.no_verify)


if __name__ == "__main__":
    main()
