"""Training batches: marks in listing-like photos (logo task) and edited copies (near-duplicate task)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from .. import synth
from ..embedder import content_window, monochrome, region_windows, square_view
from ..logos import Brand, MaskBank, logo_rgba, reference_color
from ..preprocess import feature_grid, letterbox, prepare_logo

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    query_size: int = 160
    ref_size: int = 128
    copy_size: int = 160
    stride: int = 32
    logo_fill: float = 0.8
    mark_min: float = 0.12  # mark's long side as a share of the query crop
    mark_max: float = 0.7
    region_scales: tuple[int, ...] = (1, 2, 3, 4)
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    logos_per_batch: int = 64
    copies_per_batch: int = 24
    bg_regions: int = 2
    distractor_p: float = 0.35
    chrome_p: float = 0.25
    mark_crops: bool = False  # also return the scanner's second-stage view: a square crop around the mark (ref_size)
    redraw_p: float = 0.0  # share of query marks drawn differently from their reference (synth.redraw_mask)
    badge_p: float = 0.0  # share of samples whose reference is two-colour badge artwork, shown as a badge
    clutter_p: float = 0.0  # share of logo samples whose photo first gets packaging-like print (synth.graphic_clutter)
    styles: tuple[str, ...] = ()  # mark styles drawn uniformly from this list (repeat a name to weight it); () = synth.STYLES


def mark_crop(img: np.ndarray, box: tuple[float, float, float, float], size: int,
              rng: np.random.Generator) -> np.ndarray:
    """A square crop around a placed mark as the scanner's crop stage sees one (uint8 size x size x 3).

    At scan time the crop comes from a grid window (stride 32) that covers the mark loosely, plus a
    15 % margin (:meth:`ccu_vision.embedder.Embedder.crop_views`): the side is 1.1-1.9x the mark's long
    side and the centre is off by up to 15 % of the side; outside the image is black, as there.
    """
    x0, y0, x1, y1 = (float(v) for v in box)
    side = max(x1 - x0, y1 - y0, 4.0) * rng.uniform(1.1, 1.9)
    cx = (x0 + x1) / 2 + rng.uniform(-0.15, 0.15) * side
    cy = (y0 + y1) / 2 + rng.uniform(-0.15, 0.15) * side
    return square_view(Image.fromarray(img), cx, cy, side, size)


def reference_canvas(mask: np.ndarray, color: tuple[int, int, int], size: int, fill: float) -> np.ndarray:
    """A brand's mark drawn in ``color`` as the canonical reference view (uint8 size x size x 3)."""
    return prepare_logo(logo_rgba(mask, color), size, fill)


def best_window(box: tuple[float, float, float, float], windows: np.ndarray, stride: int) -> int:
    """Index of the window (cells) with the highest IoU with a pixel box."""
    x0, y0, x1, y1 = (v / stride for v in box)
    r0, c0, r1, c1 = (windows[:, i].astype(np.float64) for i in range(4))
    iw = np.clip(np.minimum(c1, x1) - np.maximum(c0, x0), 0, None)
    ih = np.clip(np.minimum(r1, y1) - np.maximum(r0, y0), 0, None)
    inter = iw * ih
    union = (c1 - c0) * (r1 - r0) + (x1 - x0) * (y1 - y0) - inter
    return int(np.argmax(inter / np.maximum(union, 1e-9)))


def bg_windows(box, windows: np.ndarray, stride: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """Up to ``n`` small windows that do not touch the box (background regions)."""
    x0, y0, x1, y1 = (v / stride for v in box)
    ok = (windows[:, 3] <= x0) | (windows[:, 1] >= x1) | (windows[:, 2] <= y0) | (windows[:, 0] >= y1)
    small = (windows[:, 2] - windows[:, 0]) <= 2
    idx = np.nonzero(ok & small)[0]
    if len(idx) == 0:
        return np.zeros((0, 4), np.int64)
    return windows[rng.choice(idx, size=min(n, len(idx)), replace=False)]


class BatchMaker:
    """Builds one training batch at a time from a mask bank and decoded photos."""

    def __init__(self, cfg: DataConfig, bank: MaskBank, photos: list[np.ndarray], classes: list[str] | None,
                 seed: int) -> None:
        self.cfg = cfg
        self.bank = bank
        self.photos = photos
        self.rng = np.random.default_rng(seed)
        self.grid = feature_grid(cfg.query_size, cfg.stride)
        self.windows = region_windows(self.grid, cfg.region_scales)
        self.styles = synth.check_styles(cfg.styles, "data.styles")
        self._ref_cache: dict[tuple[int, int], np.ndarray] = {}
        classes = classes or ["all"] * len(photos)
        self.by_class: dict[str, list[int]] = {}
        for i, c in enumerate(classes):
            self.by_class.setdefault(c, []).append(i)
        self.fonts: list[str | None] = [None]
        if cfg.clutter_p:  # clutter lettering in the training fonts (the held-out serif faces stay unseen)
            from ..wordmarks import find_fonts, font_split

            self.fonts = font_split(find_fonts(), "train")

    def _crop(self, photo: np.ndarray, size: int) -> np.ndarray:
        h, w = photo.shape[:2]
        s = int(min(h, w) * self.rng.uniform(0.45, 1.0))
        y, x = int(self.rng.integers(0, h - s + 1)), int(self.rng.integers(0, w - s + 1))
        im = Image.fromarray(photo[y : y + s, x : x + s]).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im)

    def logo_sample(self, label: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple]:
        """(query crop uint8, positive window [4], background windows [k,4], reference canvas uint8, mark box)."""
        cfg, rng = self.cfg, self.rng
        brand: Brand = self.bank.brands[label]
        photo = self._crop(self.photos[int(rng.integers(len(self.photos)))], cfg.query_size)
        if cfg.clutter_p and rng.random() < cfg.clutter_p:  # other print around the mark is background
            photo = synth.graphic_clutter(photo, rng, self.fonts)
        tex = self.photos[int(rng.integers(len(self.photos)))]
        size = int(cfg.query_size * np.exp(rng.uniform(np.log(cfg.mark_min), np.log(cfg.mark_max))))
        badge = bool(cfg.badge_p) and rng.random() < cfg.badge_p
        # badge samples: distractors are badges too (look inside them); a data.styles draw is shared likewise
        style = "badge" if badge else synth.draw_style(self.styles, rng)
        if rng.random() < cfg.distractor_p:  # another brand's mark elsewhere: a hard background
            j = int(rng.integers(len(self.bank)))
            if j != label:
                photo, _ = synth.place_mark(photo, self.bank.masks[j], max(12, size // 2), rng,
                                            self.bank.brands[j].rgb, texture=tex, style=style)
        mask = self.bank.masks[label]
        if cfg.redraw_p and rng.random() < cfg.redraw_p:  # the reference stays the brand's own drawing
            mask = synth.redraw_mask(mask, rng)
        img, pl = synth.place_mark(photo, mask, size, rng, brand.rgb, texture=tex, style=style)
        pim = Image.fromarray(img)
        if rng.random() < cfg.chrome_p:
            pim = synth.listing_chrome(pim, rng)
            if pim.size != (cfg.query_size, cfg.query_size):  # padding changed the geometry
                pim = Image.fromarray(img)
        pim = synth.photo_effects(pim, rng)
        win = self.windows[best_window(pl.box, self.windows, cfg.stride)]
        bgs = bg_windows(pl.box, self.windows, cfg.stride, cfg.bg_regions, rng)
        if badge:  # the brand's badge artwork, in its colours (3) or as the scan's dark view of it (4)
            key = (label, 3 if rng.random() < 0.75 else 4)
            ref = self._ref_cache.get(key)
            if ref is None:
                art = synth.badge_artwork(self.bank.masks[label], reference_color(brand))
                ref = prepare_logo(art if key[1] == 3 else monochrome(art), cfg.ref_size, cfg.logo_fill)
                self._ref_cache[key] = ref
            return np.asarray(pim.convert("RGB")), win, bgs, ref, pl.box
        r = rng.random()
        variant = 0 if r < 0.75 else 1 if r < 0.95 else 2
        key = (label, variant)
        ref = self._ref_cache.get(key)
        if ref is None:
            color = reference_color(brand) if variant == 0 else (0, 0, 0) if variant == 1 else tuple(
                int(v) for v in rng.integers(0, 160, 3))
            ref = reference_canvas(self.bank.masks[label], color, cfg.ref_size, cfg.logo_fill)
            if variant < 2:
                self._ref_cache[key] = ref
        return np.asarray(pim.convert("RGB")), win, bgs, ref, pl.box

    def copy_pair(self, idx: int, others: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(original canvas, its content window, edited canvas, its content window)."""
        cfg = self.cfg
        photo = Image.fromarray(self.photos[idx])
        edited, _ = synth.copy_edit(photo, self.rng, others)
        a, lba = letterbox(photo, cfg.copy_size)
        b, lbb = letterbox(edited, cfg.copy_size)
        g = feature_grid(cfg.copy_size, cfg.stride)
        return a, content_window(lba, g, cfg.stride)[0], b, content_window(lbb, g, cfg.stride)[0]

    def batch(self) -> dict[str, torch.Tensor]:
        cfg, rng = self.cfg, self.rng
        labels = rng.choice(len(self.bank), size=cfg.logos_per_batch, replace=False)
        q, wins, refs, bg, bg_owner, crops = [], [], [], [], [], []
        for i, lab in enumerate(labels):
            img, win, bgs, ref, box = self.logo_sample(int(lab))
            if cfg.mark_crops:
                crops.append(mark_crop(img, box, cfg.ref_size, rng))
            q.append(img)
            wins.append(win)
            refs.append(ref)
            for b in bgs:
                bg.append(b)
                bg_owner.append(i)
        out = {
            "query": torch.from_numpy(np.stack(q)),
            "query_win": torch.from_numpy(np.stack(wins)),
            "bg_win": torch.from_numpy(np.stack(bg) if bg else np.zeros((0, 4), np.int64)),
            "bg_owner": torch.as_tensor(bg_owner, dtype=torch.long),
            "ref": torch.from_numpy(np.stack(refs)),
            "label": torch.from_numpy(labels.astype(np.int64)),
        }
        if crops:
            out["mark_crop"] = torch.from_numpy(np.stack(crops))
        if cfg.copies_per_batch:
            cls = list(self.by_class)
            pool: list[int] = []
            while len(pool) < cfg.copies_per_batch:  # same-class photos: other products that look alike
                members = self.by_class[cls[int(rng.integers(len(cls)))]]
                take = rng.choice(members, size=min(len(members), cfg.copies_per_batch - len(pool)), replace=False)
                pool.extend(int(t) for t in take if int(t) not in pool)
            others = [self.photos[int(rng.integers(len(self.photos)))] for _ in range(4)]
            A, WA, B, WB = zip(*(self.copy_pair(i, others) for i in pool))
            out["copy_a"] = torch.from_numpy(np.stack(A))
            out["copy_a_win"] = torch.from_numpy(np.stack(WA))
            out["copy_b"] = torch.from_numpy(np.stack(B))
            out["copy_b_win"] = torch.from_numpy(np.stack(WB))
        return out


def to_input(u8: torch.Tensor, mean, std, dev: torch.device) -> torch.Tensor:
    """uint8 [N, H, W, 3] -> normalized float [N, 3, H, W] (channels_last), same as preprocess.normalize."""
    x = u8.to(dev).permute(0, 3, 1, 2).float().div_(255.0)
    m = torch.tensor(mean, device=dev).view(1, 3, 1, 1)
    s = torch.tensor(std, device=dev).view(1, 3, 1, 1)
    return ((x - m) / s).contiguous(memory_format=torch.channels_last)


class BatchStream(torch.utils.data.IterableDataset):
    """Endless batches; each DataLoader worker gets its own seed."""

    def __init__(self, cfg: DataConfig, brands: list[Brand], photos: list[np.ndarray], classes: list[str] | None,
                 seed: int, mask_size: int = 128) -> None:
        self.cfg, self.brands, self.photos, self.classes, self.seed = cfg, brands, photos, classes, seed
        self.mask_size = mask_size
        self.bank: MaskBank | None = None

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        if self.bank is None:
            self.bank = MaskBank(self.brands, self.mask_size)
        maker = BatchMaker(self.cfg, self.bank, self.photos, self.classes, self.seed * 1000 + wid)
        while True:
            yield maker.batch()
