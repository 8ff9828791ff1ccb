"""``ccu-vision demo``: the main job end to end on an embedded default.

Builds a catalog of real brand marks (simple-icons SVGs of the seed brands — BMW, Porsche, General
Motors, Puma, Under Armour, Hugo, Nike, Adidas and ~45 more; all held out of training) plus a few
official product shots, writes a listing dump with known truth (products carrying registered marks,
edited copies of official shots, listings with unregistered marks, clean listings), scans it,
writes the HTML report and prints precision and recall against the truth.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from . import synth
from .logos import DEMO_BRANDS, brands, get_brand, render_mask
from .photos import find_photo_dir, list_photos, load_photo, procedural_photos

log = logging.getLogger(__name__)

MARKER = "ccu-vision-demo.json"


def _photos(n: int, seed: int) -> tuple[list[np.ndarray], str]:
    src = find_photo_dir()
    if src is not None:
        paths = list_photos(src, "test")
        rng = np.random.default_rng(seed)
        rng.shuffle(paths)
        return [load_photo(p, 800) for p in paths[:n]], str(src)
    return procedural_photos(n, 640, seed), "procedural"


def build_demo(out: Path, seed: int = 7, n_logo: int = 150, n_copies: int = 50, n_unreg: int = 60,
               n_clean: int = 60, n_products: int = 25) -> dict:
    """Write reference files and a listing dump with truth under ``out``; returns the demo's description."""
    rng = np.random.default_rng(seed)
    demo_brands = [b for b in (get_brand(s) for s in DEMO_BRANDS) if b is not None]
    demo_slugs = {b.slug for b in demo_brands}
    unreg = [b for b in brands("heldout") if b.slug not in demo_slugs]
    photos, source = _photos(n_logo + n_copies + n_unreg + n_clean + n_products, seed)
    logo_dir, prod_dir, dump = out / "refs" / "logos", out / "refs" / "products", out / "listings"
    for d in (logo_dir, prod_dir, dump):
        d.mkdir(parents=True, exist_ok=True)
    for b in demo_brands:  # the real SVG marks, as a brand partner would upload them
        svg = b.svg.replace("<svg ", f'<svg fill="#{b.hex}" ', 1) if "fill=" not in b.svg[:200] else b.svg
        (logo_dir / f"{b.slug}.svg").write_text(svg, encoding="utf-8")
    masks = {b.slug: render_mask(b, 256) for b in demo_brands}
    pi = iter(range(len(photos)))
    truth: list[dict] = []
    products = []
    for i in range(n_products):  # official product shots: a product carrying the brand's mark
        b = demo_brands[int(rng.integers(len(demo_brands)))]
        base = photos[next(pi) % len(photos)]
        img, _ = synth.place_mark(base, masks[b.slug], int(min(base.shape[:2]) * 0.25), rng, b.rgb, style="print")
        name = f"{b.slug}-official-{i:02d}.jpg"
        Image.fromarray(img).save(prod_dir / name, quality=95)
        products.append((name, b))
    n = 0

    def save(im: Image.Image, row: dict) -> None:
        nonlocal n
        name = f"listing-{n:04d}.jpg"
        im.convert("RGB").save(dump / name, quality=88)
        truth.append({"image": name, **row})
        n += 1

    for _ in range(n_logo):
        b = demo_brands[int(rng.integers(len(demo_brands)))]
        base = photos[next(pi) % len(photos)]
        frac = float(np.exp(rng.uniform(np.log(0.12), np.log(0.45))))
        img, pl = synth.place_mark(base, masks[b.slug], int(min(base.shape[:2]) * frac), rng, b.rgb)
        im = Image.fromarray(img)
        if rng.random() < 0.3:
            im = synth.listing_chrome(im, rng)
        save(synth.photo_effects(im, rng, 0.6), {"truth": "logo", "brand": b.title, "style": pl.style,
                                                   "size_frac": round(frac, 3)})
    for _ in range(n_copies):
        name, b = products[int(rng.integers(len(products)))]
        ed, edits = synth.copy_edit(Image.open(prod_dir / name), rng, photos[:8])
        save(ed, {"truth": "near_duplicate", "brand": b.title, "product": name, "edits": edits})
    for _ in range(n_unreg):
        b = unreg[int(rng.integers(len(unreg)))]
        base = photos[next(pi) % len(photos)]
        img, _ = synth.place_mark(base, render_mask(b, 256), int(min(base.shape[:2]) * rng.uniform(0.12, 0.4)), rng, b.rgb)
        save(synth.photo_effects(Image.fromarray(img), rng, 0.6), {"truth": "clear", "kind": "unregistered mark", "mark": b.title})
    for _ in range(n_clean):
        base = photos[next(pi) % len(photos)]
        im = Image.fromarray(base)
        if rng.random() < 0.3:
            im = synth.listing_chrome(im, rng)
        save(synth.photo_effects(im, rng, 0.6), {"truth": "clear", "kind": "no mark"})
    with open(out / "truth.jsonl", "w") as f:
        for r in truth:
            f.write(json.dumps(r) + "\n")
    return {"brands": demo_brands, "products": products, "listings": n, "photos": source}


def score_demo(rows: list[dict], truth: list[dict]) -> dict:
    """Precision/recall of the scan's flags against the demo truth, per flag type and overall."""
    by_name = {Path(r["image"]).name: r for r in rows}
    out = {}
    for kind in ("logo", "near_duplicate"):
        tp = fp = fn = 0
        for t in truth:
            r = by_name.get(t["image"])
            flags = [f for f in (r or {}).get("flags", []) if f["type"] == kind]
            expected = t["truth"] == kind
            right = any(f["brand"] == t.get("brand") for f in flags) if expected else False
            if expected and right:
                tp += 1
            elif expected:
                fn += 1
            wrong = [f for f in flags if not (expected and f["brand"] == t.get("brand"))]
            fp += 1 if wrong and not right else 0
        out[kind] = {"tp": tp, "fp": fp, "fn": fn,
                     "precision": tp / (tp + fp) if tp + fp else 1.0, "recall": tp / (tp + fn) if tp + fn else 0.0}
    flagged = [r for r in rows if r.get("verdict") == "suspect"]
    should = {t["image"] for t in truth if t["truth"] != "clear"}
    tp = sum(1 for r in flagged if Path(r["image"]).name in should)
    out["listing"] = {"flagged": len(flagged), "should_flag": len(should),
                      "precision": tp / len(flagged) if flagged else 1.0, "recall": tp / len(should) if should else 0.0}
    return out


def run_demo(out_dir: Path, embedder, echo: Callable[[str], None] = print, progress: bool = True,
             **sizes: int) -> int:
    """Build the demo catalog and dump under ``out_dir``, scan, report, print the summary.

    ``sizes`` (n_logo, n_copies, n_unreg, n_clean, n_products) shrink the demo for tests.
    """
    from .catalog import Catalog
    from .references import add_paths
    from .report import write_report
    from .scan import collect_inputs, read_rows, run_scan, warm_text_keys

    out_dir = Path(out_dir)
    if out_dir.exists() and any(out_dir.iterdir()):
        if not (out_dir / MARKER).exists():
            echo(f"Error: {out_dir} exists and is not a ccu-vision demo folder; choose another --out")
            return 2
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text(json.dumps({"model": embedder.info.model_id}))
    echo(f"Building the demo under {out_dir} ...")
    desc = build_demo(out_dir, **sizes)
    home = out_dir / "catalog"
    errors = 0
    with Catalog.open(home, embedder.info, create=True) as cat:
        for b in desc["brands"]:
            for ev in add_paths(cat, embedder, [out_dir / "refs" / "logos" / f"{b.slug}.svg"], b.title, "logo"):
                errors += 0 if ev.ok else 1
        for name, b in desc["products"]:
            for ev in add_paths(cat, embedder, [out_dir / "refs" / "products" / name], b.title, "product"):
                errors += 0 if ev.ok else 1
        warm_text_keys(embedder, cat)  # the logos' lettering (text evidence), read once like `ref add` does
        echo(f"Catalog: {cat.count('logo')} logo and {cat.count('product')} product references "
             f"({len(desc['brands'])} brands) in {home}")
        results = out_dir / "results.jsonl"
        summary = run_scan(collect_inputs(out_dir / "listings"), results, embedder, cat, progress=progress)
        rows = read_rows(results)
        report = write_report(rows, out_dir / "report.html", cat)
    truth = [json.loads(line) for line in open(out_dir / "truth.jsonl")]
    sc = score_demo(rows, truth)
    (out_dir / "score.json").write_text(json.dumps(sc, indent=2))
    echo(f"Scanned {len(rows)} listings from {out_dir / 'listings'} "
         f"({getattr(summary, 'images_per_s', 0) or 0:.1f} images/s); photos: {desc['photos']}")
    for k in ("logo", "near_duplicate"):
        s = sc[k]
        echo(f"  {k:<15} flagged correctly {s['tp']:>3}, missed {s['fn']:>3}, wrong {s['fp']:>3}  "
             f"precision {s['precision']:.2f}  recall {s['recall']:.2f}")
    s = sc["listing"]
    echo(f"  listings        flagged {s['flagged']} of {len(rows)} (should: {s['should_flag']})  "
         f"precision {s['precision']:.2f}  recall {s['recall']:.2f}")
    echo(f"Results: {results}")
    echo(f"Report:  {report}")
    if errors:
        echo(f"{errors} reference(s) could not be added")
    return 0
