"""Deterministic evaluation sets on held-out brands and held-out photos, written as plain files.

Because the set is files on disk (reference logos as PNG, listing photos as JPEG, a truth.jsonl),
every method — ccu-vision, the un-fine-tuned backbone, perceptual hashes, keypoint matching — is
scored on exactly the same images.

Layout of ``out/``::

    logos/<slug>.png            registered reference marks (RGBA, brand colour)
    products/<id>.jpg           registered official product photos
    queries/logo/<id>.jpg       listing photos: registered mark / unregistered mark / no mark
    queries/dup/<id>.jpg        edited copies of product photos, and look-alike photos (distractors)
    truth.jsonl                 one row per query: task, file, expected brand or product, size, style, edits
    set.json                    how the set was made (seed, counts, photo source)
"""

from __future__ import annotations

import json
import logging
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from . import synth
from .logos import brands as split_brands
from .logos import logo_rgba, reference_color, render_mask
from .photos import find_photo_dir, list_photos, load_photo, photo_class, procedural_photos
from .wordmarks import draw_mark, find_fonts, font_split, mark_spec

log = logging.getLogger(__name__)


@dataclass
class EvalConfig:
    n_brands: int = 300  # registered brands
    pos_per_brand: int = 2  # listing photos carrying each registered brand
    n_unregistered: int = 300  # listing photos with a mark of a brand that is NOT registered
    n_clean: int = 200  # listing photos with no mark
    n_products: int = 150  # registered official product photos
    edits_per_product: int = 2  # edited copies per product photo (queries)
    n_lookalikes: int = 200  # other photos of the same kind of product (distractor queries)
    size_min: float = 0.08  # mark long side as share of the photo's short side
    size_max: float = 0.45
    max_side: int = 800
    split: str = "test"
    seed: int = 1234
    marks: str = "icons"  # "icons": simple-icons symbols; "lettered": wordmarks/lockups in held-out fonts
    brand_split: str = "heldout"  # whose marks: held-out brands (evaluation) or "train" (fitting post-processing)
    ref_style: str = "plain"  # "plain": the mark in its colour; "badge": two-colour badge artwork, shown as badges
    clutter: float = 0.0  # share of logo listings printed with packaging-like clutter (held-out fonts) first
    styles: tuple[str, ...] = ()  # registered/unregistered marks drawn in these styles only; () = synth.STYLES mix

    def to_json(self) -> dict:
        """The config as ``set.json`` stores it (tuples become lists)."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def tiny(cls) -> EvalConfig:
        return cls(n_brands=12, pos_per_brand=1, n_unregistered=6, n_clean=4, n_products=6,
                   edits_per_product=1, n_lookalikes=4, max_side=320)


def build_eval_set(out: str | Path, cfg: EvalConfig | None = None, photos_dir: str | Path | None = None) -> Path:
    """Write an evaluation set to ``out`` (idempotent: an existing complete set is reused)."""
    cfg = cfg or EvalConfig()
    out = Path(out)
    if (out / "set.json").exists():
        prev = json.loads((out / "set.json").read_text())
        if {**EvalConfig().to_json(), **prev.get("config", {})} == cfg.to_json():  # an older set: new options' defaults
            return out
    if cfg.marks not in ("icons", "lettered"):
        raise ValueError(f"unknown marks {cfg.marks!r} (expected 'icons' or 'lettered')")
    if cfg.ref_style not in ("plain", "badge"):
        raise ValueError(f"unknown ref_style {cfg.ref_style!r} (expected 'plain' or 'badge')")
    styles = synth.check_styles(cfg.styles, "EvalConfig.styles")
    if not 0.0 <= cfg.clutter <= 1.0:
        raise ValueError(f"clutter must be a share in [0, 1], got {cfg.clutter!r}")
    # the held-out serif faces (training never sees them), scanned once for lettered marks and clutter;
    # a set of training brands (for fitting, never an evaluation) uses the training faces instead
    face_split = "train" if cfg.brand_split == "train" else "heldout"
    faces = font_split(find_fonts(), face_split) if cfg.marks == "lettered" or cfg.clutter else []
    fonts: list = []
    if cfg.marks == "lettered":
        fonts = faces
        if not fonts:
            which = "training" if face_split == "train" else "held-out (serif)"
            raise ValueError(f"no {which} fonts found for lettered marks; point CCU_FONTS at a font folder")
    clutter_fonts: list = []
    if cfg.clutter:  # clutter lettering in those faces (Pillow's face without them)
        clutter_fonts = faces or [None]
    rng = np.random.default_rng(cfg.seed)
    for d in ("logos", "products", "queries/logo", "queries/dup"):
        (out / d).mkdir(parents=True, exist_ok=True)
    src = find_photo_dir(photos_dir)
    if src is not None:
        paths = list_photos(src, cfg.split)
        rng.shuffle(paths)
        photos = [load_photo(p, cfg.max_side) for p in paths]
        classes = [photo_class(p) for p in paths]
    else:
        log.warning("no photo folder: evaluation set uses procedural photos")
        photos = procedural_photos(max(60, cfg.n_products * 2), cfg.max_side, cfg.seed)
        classes = ["procedural"] * len(photos)
    held = split_brands(cfg.brand_split)
    order = rng.permutation(len(held))
    registered = [held[i] for i in order[: cfg.n_brands]]
    unregistered = [held[i] for i in order[cfg.n_brands :]]
    if not unregistered:
        unregistered = registered[-1:]
        registered = registered[:-1]
    truth = []
    masks = {}

    def mask(b):
        if b.slug not in masks:
            masks[b.slug] = render_mask(b, 256)
            if cfg.marks == "lettered":  # the brand's name in an evaluation typeface, alone or with its symbol
                masks[b.slug] = draw_mark(mark_spec(b, fonts, cfg.seed), b.title, masks[b.slug])
        return masks[b.slug]

    for b in registered:
        art = synth.badge_artwork if cfg.ref_style == "badge" else logo_rgba
        art(mask(b), reference_color(b)).save(out / "logos" / f"{b.slug}.png")

    def listing(photo_idx: int, brand=None) -> tuple[Image.Image, dict]:
        base = photos[photo_idx]
        info: dict = {}
        if cfg.clutter and rng.random() < cfg.clutter:
            base = synth.graphic_clutter(base, rng, clutter_fonts)
            info["clutter"] = True
        img = base
        if brand is not None:
            short = min(base.shape[:2])
            frac = float(np.exp(rng.uniform(np.log(cfg.size_min), np.log(cfg.size_max))))
            tex = photos[int(rng.integers(len(photos)))]
            style = "badge" if cfg.ref_style == "badge" else synth.draw_style(styles, rng)
            img, pl = synth.place_mark(base, mask(brand), max(10, int(short * frac)), rng, brand.rgb, texture=tex,
                                       style=style)
            info = {**info, "size_frac": round(frac, 4), "style": pl.style, "box": list(pl.box)}
        pim = Image.fromarray(img)
        if rng.random() < 0.3:
            pim = synth.listing_chrome(pim, rng)
            if "box" in info and pim.size != base.shape[1::-1]:  # white padding centred the photo on a square
                dx, dy = (pim.width - base.shape[1]) // 2, (pim.height - base.shape[0]) // 2
                x0, y0, x1, y1 = info["box"]
                info["box"] = [x0 + dx, y0 + dy, x1 + dx, y1 + dy]
        pim = synth.photo_effects(pim, rng, strength=0.7)
        return pim, info

    n = 0
    for b in registered:
        for _ in range(cfg.pos_per_brand):
            im, info = listing(int(rng.integers(len(photos))), b)
            name = f"queries/logo/q{n:05d}.jpg"
            im.save(out / name, quality=90)
            truth.append({"task": "logo", "query": name, "brand": b.slug, "title": b.title, "kind": "registered", **info})
            n += 1
    for i in range(cfg.n_unregistered):
        b = unregistered[i % len(unregistered)]
        im, info = listing(int(rng.integers(len(photos))), b)
        name = f"queries/logo/q{n:05d}.jpg"
        im.save(out / name, quality=90)
        truth.append({"task": "logo", "query": name, "brand": None, "mark": b.slug, "kind": "unregistered", **info})
        n += 1
    for _ in range(cfg.n_clean):
        im, info = listing(int(rng.integers(len(photos))))
        name = f"queries/logo/q{n:05d}.jpg"
        im.save(out / name, quality=90)
        truth.append({"task": "logo", "query": name, "brand": None, "kind": "clean", **info})
        n += 1

    # near-duplicates: products are the first n_products photos; look-alikes come from the rest, same classes
    prod_idx = list(range(min(cfg.n_products, len(photos) // 2)))
    rest = list(range(len(prod_idx), len(photos)))
    for i in prod_idx:
        Image.fromarray(photos[i]).save(out / "products" / f"p{i:05d}.jpg", quality=95)
    m = 0
    for i in prod_idx:
        for _ in range(cfg.edits_per_product):
            others = [photos[int(j)] for j in rng.choice(rest, size=min(4, len(rest)), replace=False)] if rest else None
            ed, edits = synth.copy_edit(Image.fromarray(photos[i]), rng, others)
            name = f"queries/dup/d{m:05d}.jpg"
            ed.convert("RGB").save(out / name, quality=90)
            truth.append({"task": "dup", "query": name, "product": f"p{i:05d}", "kind": "copy", "edits": edits,
                          "class": classes[i]})
            m += 1
    prod_classes = {classes[i] for i in prod_idx}
    look = [j for j in rest if classes[j] in prod_classes][: cfg.n_lookalikes]
    for j in look:
        im = synth.photo_effects(Image.fromarray(photos[j]), rng, strength=0.5)
        name = f"queries/dup/d{m:05d}.jpg"
        im.save(out / name, quality=90)
        truth.append({"task": "dup", "query": name, "product": None, "kind": "lookalike", "class": classes[j]})
        m += 1

    with open(out / "truth.jsonl", "w") as f:
        for row in truth:
            f.write(json.dumps(row) + "\n")
    (out / "set.json").write_text(json.dumps({
        "config": cfg.to_json(), "photos": str(src) if src else "procedural", "registered": len(registered),
        "logo_queries": n, "dup_queries": m, "products": len(prod_idx),
    }, indent=2))
    return out


def read_truth(root: str | Path) -> list[dict]:
    """The truth rows of an evaluation set."""
    with open(Path(root) / "truth.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]
