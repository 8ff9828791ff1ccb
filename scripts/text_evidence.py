"""Text evidence (OCR) beside the shipped logo scoring, measured offline on named draws.

    python scripts/text_evidence.py ocr --set lettered-calib       # OCR of queries and logos -> out/ocr-<set>.json
    python scripts/text_evidence.py rank --set lettered-calib      # the shipped scan's logo ranking -> out/rank-<set>.json
    python scripts/text_evidence.py eval --fit calib --fit lettered-calib --decide lettered-calib2 \\
        --no-harm clutter-calib
    git show 22f5095:ccu_vision/models/ccu-lite0-v15cdpf.onnx > out/ccu-lite0-v15cdpf.onnx
    python scripts/text_evidence.py attach --fit calib --fit lettered-calib --calib calib --calib lettered-calib \\
        --calib clutter-calib --calib lettered-calib2 --model out/ccu-lite0-v15cdpf.onnx \\
        --out ccu_vision/models/ccu-lite0-v15cdpft.onnx --model-id ccu-lite0-v15cdpft
    # v15cdpft2 (ocr-speed-plan.md): photos read at 736 px without the angle classifier, scoring as v15cdpft
    python scripts/text_evidence.py ocr --set calib --photo L736n      # (and each draw below)
    python scripts/text_evidence.py attach --fixed --ocr L736n --calib calib --calib lettered-calib \
        --calib clutter-calib --calib lettered-calib2 --model out/ccu-lite0-v15cdpf.onnx \
        --out out/ccu-lite0-v15cdpft2.onnx --model-id ccu-lite0-v15cdpft2   # default until v15cdpft3

(``ocr`` and ``rank`` of each named draw first; ``rank`` with ``--model out/ccu-lite0-v15cdpf.onnx``
gives the same rankings as the shipped file, whose network and fused scoring are the same.)

Plan and rule: ``notebooks/results/experiments/text-evidence-plan.md``. The combination is
``logit(p) + beta * m`` for the scan's fused candidates (``p`` their fused probability, ``m`` the text
match quality of the brand, :func:`ccu_vision.text.match_quality`) and ``gamma + beta * m`` for a brand
the listing's text matches but the scan did not list; ``beta`` and ``gamma`` come from a grid on the
fit draws (best mean AP). A brand's keys are its registered name (the draw's slug, as the evaluation
catalog names it) and the lettering OCR reads in its reference logo.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from compare_models import DEFAULT_MODEL, KEYS, SETS  # scripts/ is on sys.path when run as a script
from PIL import Image

from ccu_vision.embedder import Embedder, dense_logo_scores
from ccu_vision.evalset import build_eval_set, read_truth
from ccu_vision.evaluate import eval_references, logo_metrics
from ccu_vision.text import (
    LEGACY_PHOTO,
    PhotoOCR,
    TextLine,
    TextReader,
    TextScoring,
    brand_keys,
    brand_matches,
    rerank,
)

BETAS = tuple(float(b) for b in np.arange(0.0, 10.01, 0.5))
GAMMAS = tuple(float(g) for g in np.arange(-10.0, 0.01, 0.5))


def shipped_scoring() -> tuple[float, float]:
    """The shipped model's (beta, gamma), what ``--fixed`` holds (read from the file, not copied here)."""
    cfg = Embedder(DEFAULT_MODEL).text_scoring
    assert cfg is not None, f"{DEFAULT_MODEL} has no text scoring"
    return cfg.beta, cfg.gamma


# how listing photos are read (ocr-speed-plan.md); "v0" is the shipped reading, stored as out/ocr-<set>.json
PHOTO_VARIANTS = {
    "v0": LEGACY_PHOTO,
    "v0r": LEGACY_PHOTO,  # v0 read again (its timing beside the others; must equal v0)
    "L736": PhotoOCR(736, True, True),
    "L640": PhotoOCR(640, True, True),
    "L736n": PhotoOCR(736, True, False),
    "L512": PhotoOCR(512, True, True),  # added after the first timings, before any accuracy was read
}


def ocr_path(name: str, variant: str = "v0") -> Path:
    return Path(f"out/ocr-{name}.json" if variant == "v0" else f"out/ocr-{name}@{variant}.json")


def _root(name: str, photos: str) -> Path:
    return build_eval_set(f"out/eval-{name}", SETS[name], photos)


def cmd_ocr(args: argparse.Namespace) -> None:
    root = _root(args.set, args.photos)
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    reader = TextReader()
    out = ocr_path(args.set, args.photo)
    t0 = time.time()
    if args.photo != "v0" and ocr_path(args.set).exists():  # a photo variant: the logos as v0 read them
        logos = json.loads(ocr_path(args.set).read_text())["logos"]
    else:
        logos = {p.stem: [ln.to_list() for ln in reader.read_logo(Image.open(p))]
                 for p in sorted((root / "logos").glob("*.png"))}
    t1 = time.time()
    if args.logos_only:  # re-read the logos, keep the stored query text
        queries = json.loads(out.read_text())["queries"]
    else:
        how = PHOTO_VARIANTS[args.photo]
        reader.read(Image.open(root / rows[0]["query"]), how)  # engine start-up is not per-photo time
        t1 = time.time()
        queries = [[ln.to_list() for ln in reader.read(Image.open(root / t["query"]), how)] for t in rows]
    t2 = time.time()
    out.write_text(json.dumps({"logos": logos, "queries": queries}))
    print(f"{args.set}: OCR ({args.photo}) of {len(logos)} logos {1000 * (t1 - t0) / max(len(logos), 1):.0f} ms each, "
          f"{len(rows)} queries {1000 * (t2 - t1) / max(len(rows), 1):.0f} ms each -> {out}")


def cmd_rank(args: argparse.Namespace) -> None:
    root = _root(args.set, args.photos)
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    emb = Embedder(args.model)
    slugs, refs, owner = eval_references(emb, root)
    ranked = []
    t0 = time.time()
    for i in range(0, len(rows), 32):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i:i + 32]]
        for e in emb.embed_photos(ims):
            best, _ = dense_logo_scores(e, refs, owner)
            order = np.argsort(-best)[:10]
            ranked.append([(slugs[j], float(best[j])) for j in order if np.isfinite(best[j])])
    out = Path(f"out/rank-{args.set}.json")
    out.write_text(json.dumps({"model": str(args.model), "ranked": ranked}))
    print(f"{args.set}: {len(rows)} queries ranked in {time.time() - t0:.0f} s -> {out}")


def _lines(raw: list) -> list[TextLine]:
    return [TextLine(t, c) for t, c in raw]


def load_draw(name: str, photos: str, variant: str = "v0") -> dict:
    """Truth, the shipped ranking, and each query's text match quality per brand (only the non-zero
    ones), the photos read as ``variant`` reads them."""
    root = _root(name, photos)
    truth = read_truth(root)
    ocr = json.loads(ocr_path(name, variant).read_text())
    ranked = json.loads(Path(f"out/rank-{name}.json").read_text())["ranked"]
    keys = {slug: brand_keys(slug, _lines(lines)) for slug, lines in ocr["logos"].items()}
    matches = [brand_matches(keys, _lines(raw)) for raw in ocr["queries"]]
    return {"name": name, "truth": truth, "ranked": ranked, "matches": matches, "keys": keys}


def combine(draw: dict, beta: float, gamma: float) -> list[list[tuple[str, float]]]:
    """Each query's ranking after adding text evidence, by the product's :func:`ccu_vision.text.rerank`
    (what ``rank_with_embedder(text=True)`` and the scan do)."""
    cfg = TextScoring(beta, gamma)
    return [rerank(ranked, m, cfg) for ranked, m in zip(draw["ranked"], draw["matches"])]


def metrics(draw: dict, ranked: list, threshold: float | None = None) -> dict:
    """The draw's logo metrics; with ``threshold``, also the flags it raises (precision, recall, FPR)."""
    lm = logo_metrics(draw["truth"], ranked, n_boot=0)
    out = {k: round(lm[k], 4) for k in KEYS}
    if threshold is not None:
        rows = [t for t in draw["truth"] if t["task"] == "logo"]
        top = [r[0] if r else ("", -1.0) for r in ranked]
        flag = [s >= threshold for _, s in top]
        right = [f and t["kind"] == "registered" and b == t["brand"] for f, t, (b, _) in zip(flag, rows, top)]
        n_neg = sum(t["kind"] != "registered" for t in rows)
        out.update(threshold=threshold, flagged=int(sum(flag)),
                   precision=round(sum(right) / max(sum(flag), 1), 4),
                   recall=round(sum(right) / max(len(rows) - n_neg, 1), 4),
                   fpr=round(sum(f and t["kind"] != "registered" for f, t in zip(flag, rows)) / max(n_neg, 1), 4))
    return out


def fit(draws: list[dict]) -> tuple[float, float, float]:
    """(beta, gamma, mean AP): the grid point with the best mean AP over ``draws`` (first best wins)."""
    best = None
    for b in BETAS:
        for g in GAMMAS:
            ap = float(np.mean([logo_metrics(d["truth"], combine(d, b, g), n_boot=0)["ap"] for d in draws]))
            if best is None or ap > best[2] + 1e-9:
                best = (b, g, ap)
            if b == 0.0:
                break  # gamma has no effect without text weight
    return best


def cmd_eval(args: argparse.Namespace) -> None:
    fit_draws = [load_draw(n, args.photos, args.ocr) for n in args.fit]
    for d in fit_draws:
        rows = [t for t in d["truth"] if t["task"] == "logo"]
        n_pos = sum(t["kind"] == "registered" for t in rows)
        read = sum(t["kind"] == "registered" and t["brand"] in m for t, m in zip(rows, d["matches"]))
        false = sum(t["kind"] != "registered" and bool(m) for t, m in zip(rows, d["matches"]))
        print(f"{d['name']}: {read}/{n_pos} registered marks have a text match to their brand; "
              f"{false}/{len(rows) - n_pos} negatives match some registered brand's text")
    if args.fixed:
        (beta, gamma), ap = shipped_scoring(), float("nan")
        print(f"shipped scoring held fixed: beta {beta}, gamma {gamma}; photos read as {args.ocr}")
    else:
        beta, gamma, ap = fit(fit_draws)
        print(f"fit on {'+'.join(args.fit)}: beta {beta}, gamma {gamma} (mean AP {ap:.4f}); photos read as {args.ocr}")
    th = Embedder(args.model).info.thresholds if args.flags else {}  # flags at the model's stored thresholds
    for name in [*args.fit, *args.decide, *args.no_harm, *args.read]:
        d = next((f for f in fit_draws if f["name"] == name), None) or load_draw(name, args.photos, args.ocr)
        role = ("fit" if name in args.fit else "decide" if name in args.decide else
                "no-harm" if name in args.no_harm else "read")
        base, new = metrics(d, d["ranked"], th.get("logo")), metrics(d, combine(d, beta, gamma), th.get("logo_text"))
        print(f"{role:8s} {name:18s} base {json.dumps(base)}\n{'':27s} text {json.dumps(new)}")


def cmd_attach(args: argparse.Namespace) -> None:
    """Fit beta/gamma, calibrate the ``logo_text`` threshold on the pooled --calib draws (the rule of
    ``ccu_vision.train.calibrate``: precision 0.95 and at most 1 % of negatives at 95 % confidence), and
    write the model with ``ccu.text_scoring`` and that threshold under a new model id."""
    from ccu_vision.train.text_scoring import attach

    if args.fixed:
        (beta, gamma), ap = shipped_scoring(), float("nan")
    else:
        beta, gamma, ap = fit([load_draw(n, args.photos, args.ocr) for n in args.fit])
    truth, ranked = [], []
    for name in args.calib:
        d = load_draw(name, args.photos, args.ocr)
        truth += d["truth"]
        ranked += combine(d, beta, gamma)
    th, recall, n_neg, lm = pooled_threshold(truth, ranked)
    import sys

    attach(args.model, TextScoring(beta, gamma, photo=PHOTO_VARIANTS[args.ocr]), args.out, model_id=args.model_id, logo_text=th,
           calibration={"recall_at_threshold": {"logo_text": round(recall, 4)},
                        "negatives": {"logo_text": n_neg}, "text_calibrated_on": list(args.calib)},
           command=sys.argv[1:])
    print(f"beta {beta} gamma {gamma} ({'held fixed' if args.fixed else f'fit mean AP {ap:.4f}'}); logo_text threshold {th:.5f} on "
          f"{n_neg} pooled negatives (recall there {recall:.4f}); pooled "
          f"{json.dumps({k: round(lm[k], 4) for k in KEYS})} -> {args.out}")


def pooled_threshold(truth: list[dict], ranked: list) -> tuple[float, float, int, dict]:
    """The ``logo_text`` threshold of pooled draws by the rule of ``ccu_vision.train.calibrate``
    (precision 0.95 and at most 1 % of negatives at 95 % confidence): (threshold, recall there,
    number of negatives, the pool's logo metrics)."""
    from ccu_vision.thresholds import negative_quantile

    lm = logo_metrics(truth, ranked, n_boot=0)
    rows = [t for t in truth if t["task"] == "logo"]
    neg = [r[0][1] for t, r in zip(rows, ranked) if t["kind"] != "registered" and r]
    th = max(lm["threshold@p95"], negative_quantile(neg, 0.01, 0.95))
    hit = [bool(r) and r[0][0] == t["brand"] and r[0][1] >= th for t, r in zip(rows, ranked) if t["kind"] == "registered"]
    return float(th), float(np.mean(hit)), len(neg), lm


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", default="../shared/datasets/clothing-dataset-small")
    sub = ap.add_subparsers(dest="cmd", required=True)
    for name in ("ocr", "rank"):
        p = sub.add_parser(name)
        p.add_argument("--set", required=True, choices=sorted(SETS))
        p.add_argument("--model", default=DEFAULT_MODEL)
        p.add_argument("--logos-only", action="store_true", help="ocr: re-read only the logos")
        p.add_argument("--photo", default="v0", choices=sorted(PHOTO_VARIANTS),
                       help="ocr: how photos are read (ocr-speed-plan.md); v0 also reads the logos")
    p = sub.add_parser("eval")
    p.add_argument("--fit", action="append", default=[], choices=sorted(SETS))
    p.add_argument("--decide", action="append", default=[], choices=sorted(SETS))
    p.add_argument("--no-harm", action="append", default=[], choices=sorted(SETS))
    p.add_argument("--read", action="append", default=[], choices=sorted(SETS),
                   help="draws read once after the decision (test draws)")
    p.add_argument("--flags", action="store_true",
                   help="also the flags at --model's stored logo / logo_text thresholds")
    p.add_argument("--model", default=DEFAULT_MODEL)
    p = sub.add_parser("attach")
    p.add_argument("--fit", action="append", default=[], choices=sorted(SETS))
    p.add_argument("--calib", action="append", required=True, choices=sorted(SETS))
    p.add_argument("--model", default=DEFAULT_MODEL)
    p.add_argument("--model-id", required=True)
    p.add_argument("--out", required=True)
    for p in (sub.choices["eval"], sub.choices["attach"]):
        p.add_argument("--ocr", default="v0", choices=sorted(PHOTO_VARIANTS), help="which photo reading's dumps")
        p.add_argument("--fixed", action="store_true", help=f"hold beta, gamma at {DEFAULT_MODEL}'s (no fit)")
    args = ap.parse_args()
    if args.cmd in ("eval", "attach") and not args.fixed and not args.fit:
        ap.error("give --fit draws or --fixed")
    {"ocr": cmd_ocr, "rank": cmd_rank, "eval": cmd_eval, "attach": cmd_attach}[args.cmd](args)


if __name__ == "__main__":
    main()
