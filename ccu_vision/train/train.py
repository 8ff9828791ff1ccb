"""``ccu-vision train``: fine-tune the embedder on real marks in real photos (resumable).

    ccu-vision train --photos DIR --out runs/v1                 # defaults from train/default.json
    ccu-vision train --photos DIR --out runs/v1 --resume        # continue from runs/v1/last.pt
    ccu-vision train --photos DIR --out runs/v1 --device cuda   # same recipe on a GPU
    ccu-vision train --photos DIR --out runs/v3 --init ccu_vision/models/ccu-lite0-v2.onnx \
        --config ccu_vision/train/continue.json                 # train on from a shipped model

The config actually used is written to OUT/config.json; checkpoints to OUT/last.pt (tensors only,
loaded with ``weights_only=True``); progress to OUT/train.log.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import random
import sys
import time
from importlib import resources
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from ..logos import brands as brand_split
from ..photos import find_photo_dir, list_photos, load_photos, photo_class, procedural_photos
from .data import BatchStream, DataConfig, to_input
from .export import append_command, file_train_command
from .model import CcuNet, create_backbone, gem_global, gem_windows

log = logging.getLogger(__name__)


def load_config(path: str | None) -> dict:
    """The default config, updated with a user JSON file when given."""
    cfg = json.loads(resources.files("ccu_vision.train").joinpath("default.json").read_text())
    if path:
        user = json.loads(Path(path).read_text())
        data = {**cfg["data"], **user.pop("data", {})}
        cfg.update(user)
        cfg["data"] = data
    return cfg


def migrate_config(cfg: dict, source: str) -> dict:
    """Bring a run folder's saved config up to date, or fail naming the key that cannot be carried over.

    ``data.crop_ref_size`` (runs before the crop view was tied to the reference size) is dropped when it
    equals ``data.ref_size``, the only value it ever took in a shipped recipe.
    """
    data = dict(cfg.get("data", {}))
    if "crop_ref_size" in data:
        if data["crop_ref_size"] != data.get("ref_size"):
            raise ValueError(f"{source}: data.crop_ref_size={data['crop_ref_size']} differs from data.ref_size="
                             f"{data.get('ref_size')}; mark crops now always take the reference size")
        del data["crop_ref_size"]
    known = set(DataConfig.__dataclass_fields__)
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{source}: unknown data option(s) {', '.join(unknown)}")
    return {**cfg, "data": data}


def build_model(cfg: dict, cache_dir: Path) -> CcuNet:
    backbone = create_backbone(cfg["arch"], cfg["weights"], cache_dir)
    model = CcuNet(backbone, dim=cfg["dim"], project=True)
    model.freeze(cfg["freeze_blocks"])
    return model


def nce(a: torch.Tensor, b: torch.Tensor, t: float, extra_neg: torch.Tensor | None = None) -> torch.Tensor:
    """Symmetric InfoNCE between matched rows of a and b; extra_neg are negatives for b's rows."""
    logits = a @ b.t() / t
    target = torch.arange(len(a), device=a.device)
    loss_a = F.cross_entropy(logits, target)
    logits_b = logits.t()
    if extra_neg is not None and len(extra_neg):
        logits_b = torch.cat([logits_b, b @ extra_neg.t() / t], dim=1)
    return 0.5 * (loss_a + F.cross_entropy(logits_b, target))


def margin_loss(q: torch.Tensor, r: torch.Tensor, bg: torch.Tensor, m_pos: float,
                m_neg: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Absolute-margin contrastive term on cosine similarities (flags use one global threshold).

    The softmax losses only rank a query's references against each other; a threshold shared by all
    listings also needs a mark's similarity to its reference above ``m_pos`` and the best
    similarity of any *other* mark or background region to a reference below ``m_neg``: per
    reference its hardest in-batch negative (other marks' regions and background regions), per
    region or background its hardest wrong reference. Returns (loss, mean positive similarity,
    mean hardest-negative similarity); the last two are for the log.
    """
    assert q.shape == r.shape and bg.shape[1:] == q.shape[1:], (q.shape, r.shape, bg.shape)
    n = len(q)
    sim = q @ r.t()  # [B, B] regions x references
    pos = sim.diagonal()
    eye = torch.eye(n, dtype=torch.bool, device=q.device)
    neg = sim.masked_fill(eye, -2.0)
    if len(bg):
        neg = torch.cat([neg, bg @ r.t()], dim=0)  # [B + nb, B]
    per_ref = neg.max(0).values  # hardest negative region for each reference
    per_query = neg.max(1).values  # hardest wrong reference for each region / background
    loss = F.relu(m_pos - pos).mean() + 0.5 * (F.relu(per_ref - m_neg).mean() + F.relu(per_query - m_neg).mean())
    return loss, pos.detach().mean(), per_ref.detach().mean()


def step_losses(model: CcuNet, proxies: torch.Tensor, batch: dict, cfg: dict, dev: torch.device,
                teacher: CcuNet | None = None) -> dict:
    """One batch's losses. With a ``teacher`` (the ``--init`` model, frozen) and ``w_distill`` > 0, a
    distillation term keeps every embedding the task losses use close to the teacher's."""
    p, t = cfg["gem_p"], cfg["temperature"]
    d = cfg["data"]
    k = int(cfg.get("freeze_blocks", 0))
    pairs: list[tuple[torch.Tensor, torch.Tensor]] = []  # (student, teacher) embeddings to distill

    def inp(key: str) -> torch.Tensor:
        return to_input(batch[key], d.get("mean", (0.5, 0.5, 0.5)), d.get("std", (0.5, 0.5, 0.5)), dev)

    def local(key: str) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Student local map, and the teacher's (frozen trunk shared: it is the same weights)."""
        x = inp(key)
        if teacher is None:
            return model(x), None
        if k > 0:
            with torch.no_grad():
                f = model.trunk(x, k)
                t_local = teacher.top(f, k)
            return model.top(f, k), t_local
        with torch.no_grad():
            t_local = teacher(x)
        return model(x), t_local

    q_local, qt_local = local("query")
    q = gem_windows(q_local, batch["query_win"], p)
    bg = torch.zeros((0, q.shape[1]), device=dev)
    if len(batch["bg_win"]):
        bg = gem_windows(q_local[batch["bg_owner"].to(dev)], batch["bg_win"], p)
    r_local, rt_local = local("ref")
    r = gem_global(r_local, p)
    if teacher is not None:
        with torch.no_grad():
            pairs.append((q, gem_windows(qt_local, batch["query_win"], p)))
            pairs.append((r, gem_global(rt_local, p)))
            if len(batch["bg_win"]):
                pairs.append((bg, gem_windows(qt_local[batch["bg_owner"].to(dev)], batch["bg_win"], p)))
    labels = batch["label"].to(dev)
    W = F.normalize(proxies, dim=1)
    s = cfg["proxy_scale"]
    l_proxy = 0.5 * (F.cross_entropy(s * q @ W.t(), labels) + F.cross_entropy(s * r @ W.t(), labels))
    l_logo = nce(q, r, t, extra_neg=bg)
    out = {"proxy": l_proxy, "logo_nce": l_logo}
    total = cfg["w_proxy"] * l_proxy + cfg["w_logo_nce"] * l_logo
    if cfg.get("w_margin", 0.0) > 0:
        l_margin, pos, hard = margin_loss(q, r, bg, cfg["margin_pos"], cfg["margin_neg"])
        out.update(margin=l_margin, pos_sim=pos, hard_neg_sim=hard)
        total = total + cfg["w_margin"] * l_margin
    if "mark_crop" in batch and cfg.get("w_crop", 0.0) > 0:  # the scanner's second stage: crop -> reference
        c_local, ct_local = local("mark_crop")
        c = gem_global(c_local, p)
        if ct_local is not None:
            with torch.no_grad():
                pairs.append((c, gem_global(ct_local, p)))
        l_crop = 0.5 * F.cross_entropy(s * c @ W.t(), labels) + nce(c, r, t)
        out["crop"] = l_crop
        total = total + cfg["w_crop"] * l_crop
        with torch.no_grad():
            out["crop_acc"] = ((c @ r.t()).argmax(1) == torch.arange(len(c), device=dev)).float().mean()
    if "copy_a" in batch:
        a = gem_windows(model(inp("copy_a")), batch["copy_a_win"], p)
        b = gem_windows(model(inp("copy_b")), batch["copy_b_win"], p)
        l_copy = nce(a, b, t)
        out["copy_nce"] = l_copy
        total = total + cfg["w_copy_nce"] * l_copy
        with torch.no_grad():
            out["copy_acc"] = ((a @ b.t()).argmax(1) == torch.arange(len(a), device=dev)).float().mean()
    if teacher is not None and cfg.get("w_distill", 0.0) > 0:
        l_distill = torch.stack([(1.0 - (s_ * t_).sum(1)).mean() for s_, t_ in pairs]).mean()
        out["distill"] = l_distill
        total = total + cfg["w_distill"] * l_distill
    with torch.no_grad():
        out["logo_acc"] = ((q @ r.t()).argmax(1) == torch.arange(len(q), device=dev)).float().mean()
    out["total"] = total
    return out


def lr_factor(step: int, total: int, warmup: int, time_frac: float = 0.0) -> float:
    """Linear warm-up, then cosine decay over whichever runs out first: steps or the time budget."""
    if step < warmup:
        return (step + 1) / warmup
    prog = max((step - warmup) / max(1, total - warmup), time_frac)
    return 0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * min(1.0, prog)))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="ccu-vision train", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", help="JSON overrides of ccu_vision/train/default.json")
    ap.add_argument("--photos", help="folder of photos (class sub-folders optional); default $CCU_PHOTOS")
    ap.add_argument("--out", required=True, help="run folder (checkpoints, log, config)")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--resume", action="store_true", help="continue from OUT/last.pt")
    ap.add_argument("--steps", type=int, help="override the number of steps")
    ap.add_argument("--minutes", type=float, help="stop (and checkpoint) after this wall time")
    ap.add_argument("--export", help="write the ONNX model here when training ends")
    ap.add_argument("--seed", type=int)
    ap.add_argument("--init", help="start from the weights of an exported ccu-vision ONNX model "
                    "(proxies start at the training brands' reference embeddings)")
    args = ap.parse_args(argv)

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s",
                        handlers=[logging.StreamHandler(sys.stderr), logging.FileHandler(out / "train.log")])
    cfg = load_config(args.config)
    for k in ("steps", "minutes", "seed", "init"):
        if getattr(args, k) is not None:
            cfg[k] = getattr(args, k)
    resumed = args.resume and (out / "config.json").exists()  # the run folder's config, not --config
    if resumed:
        saved = json.loads((out / "config.json").read_text())
        saved["minutes"] = cfg["minutes"]
        if args.steps is not None:  # an explicit --steps extends (or shortens) the resumed run
            saved["steps"] = args.steps
        cfg = saved
    cfg = migrate_config(cfg, str(out / "config.json") if args.resume else (args.config or "default.json"))
    if cfg.get("w_distill", 0.0) > 0 and not cfg.get("init"):  # checked before any slow set-up
        raise SystemExit("w_distill needs --init: the teacher is the model the run starts from")
    # the file's own command chain: the --init file's (a fresh run from it), or the resumed run's
    prev = cfg.get("train_command", "")
    if cfg.get("init") and not resumed:
        prev = file_train_command(cfg["init"])
    cfg["train_command"] = append_command(prev, "ccu-vision train", sys.argv[1:] if argv is None else list(argv))
    (out / "config.json").write_text(json.dumps(cfg, indent=2))
    seed = cfg["seed"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.set_num_threads(cfg["threads"])
    dev = torch.device(args.device)

    train_brands = brand_split("train")
    photo_dir = find_photo_dir(args.photos)
    if photo_dir is None:
        log.warning("no photo folder found: using procedural backgrounds (pass --photos for real training)")
        photos, classes = procedural_photos(200, cfg["photo_max_side"], seed), None
    else:
        paths = list_photos(photo_dir, cfg["photos_split"])
        photos = load_photos(paths, cfg["photo_max_side"])
        classes = [photo_class(p) for p in paths][: len(photos)]
        log.info("photos: %d from %s", len(photos), photo_dir)
    log.info("training brands: %d", len(train_brands))

    from ..logos import MaskBank

    bank = MaskBank(train_brands)  # rendered once here, shared with the data worker by fork
    if cfg.get("lettered_marks", 0):  # brand names in training fonts, alone or beside the symbol
        from ..wordmarks import find_fonts, font_split, lettered_marks

        fonts = font_split(find_fonts(), "train")
        extra, extra_masks = lettered_marks(train_brands, bank.masks, fonts, int(cfg["lettered_marks"]), seed)
        bank.extend(extra, extra_masks)
        log.info("lettered marks: %d in %d training fonts", len(extra), len(fonts))
    ckpt = out / "last.pt"
    warm = bool(cfg.get("init")) and not (args.resume and ckpt.exists())
    # every backbone weight comes from --init (or the checkpoint): no ImageNet file is needed or read
    build_cfg = {**cfg, "weights": "none"} if cfg.get("init") else cfg
    model = build_model(build_cfg, out).to(dev).to(memory_format=torch.channels_last)
    if dev.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed input sizes: let cuDNN pick its fastest kernels
        log.info("device: %s", torch.cuda.get_device_name(dev))
    proxies = torch.nn.Parameter(torch.randn(len(bank), model.dim, device=dev) * 0.01)
    if warm:
        from ..logos import reference_color
        from .data import reference_canvas
        from .warmstart import imprint_proxies, load_onnx_weights

        meta = load_onnx_weights(model, cfg["init"])
        log.info("initialised from %s (%s)", cfg["init"], meta.get("ccu.model_id", "?"))
        d = cfg["data"]
        refs = np.stack([reference_canvas(mk, reference_color(b), d["ref_size"], d["logo_fill"])
                         for b, mk in zip(bank.brands, bank.masks)])
        proxies.data.copy_(imprint_proxies(model, refs, d.get("mean", (0.5,) * 3), d.get("std", (0.5,) * 3),
                                           cfg["gem_p"]))
        log.info("proxies imprinted from %d reference embeddings", len(refs))
    teacher = None
    if cfg.get("w_distill", 0.0) > 0:  # the --init model, frozen: rebuilt from the file (also on resume)
        from .warmstart import load_onnx_weights

        teacher = build_model(build_cfg, out).to(dev).to(memory_format=torch.channels_last)
        load_onnx_weights(teacher, cfg["init"])
        teacher.eval()
        for prm in teacher.parameters():
            prm.requires_grad = False
        log.info("distilling to %s (w_distill %g)", cfg["init"], cfg["w_distill"])
    head = list(model.proj.parameters())
    body = [p for n, p in model.named_parameters() if p.requires_grad and not n.startswith("proj.")]
    opt = torch.optim.AdamW([
        {"params": body, "lr": cfg["lr"]},
        {"params": head, "lr": cfg["head_lr"]},
        {"params": [proxies], "lr": cfg["proxy_lr"], "weight_decay": 0.0},
    ], weight_decay=cfg["weight_decay"])
    base_lrs = [g["lr"] for g in opt.param_groups]
    step = 0
    elapsed_before = 0.0  # training seconds spent before a resume (for the time-based schedule)
    if args.resume and ckpt.exists():
        state = torch.load(ckpt, map_location=dev, weights_only=True)
        model.load_state_dict(state["model"])
        proxies.data.copy_(state["proxies"])
        opt.load_state_dict(state["opt"])
        step = int(state["step"])
        elapsed_before = float(state.get("elapsed", torch.tensor(0.0)))
        log.info("resumed from %s at step %d", ckpt, step)

    dcfg = DataConfig(**{**cfg["data"], "region_scales": tuple(cfg["data"]["region_scales"])})
    stream = BatchStream(dcfg, train_brands, photos, classes, seed=seed + step)
    stream.bank = bank
    loader = torch.utils.data.DataLoader(stream, batch_size=None, num_workers=cfg["workers"],
                                         prefetch_factor=4 if cfg["workers"] else None,
                                         persistent_workers=bool(cfg["workers"]))
    total = cfg["steps"]
    t0 = time.time()
    step0 = step
    model.train()
    it = iter(loader)
    avg: dict[str, float] = {}
    while step < total:
        if cfg.get("minutes") and elapsed_before + time.time() - t0 > 60 * cfg["minutes"]:
            log.info("time budget reached at step %d", step)
            break
        batch = next(it)
        budget = 60 * cfg["minutes"] if cfg.get("minutes") else 0
        time_frac = (elapsed_before + time.time() - t0) / budget if budget else 0.0
        f = lr_factor(step, total, cfg["warmup"], time_frac)
        for g, b in zip(opt.param_groups, base_lrs):
            g["lr"] = b * f
        losses = step_losses(model, proxies, batch, cfg, dev, teacher)
        opt.zero_grad(set_to_none=True)
        losses["total"].backward()
        opt.step()
        step += 1
        for k, v in losses.items():
            fv = float(v.detach()) if torch.is_tensor(v) else float(v)
            avg[k] = 0.9 * avg.get(k, fv) + 0.1 * fv
        if step % cfg["log_every"] == 0:
            el = time.time() - t0
            log.info("step %d/%d %.2fs/step | %s", step, total, el / max(1, step - step0),
                     " ".join(f"{k}={v:.3f}" for k, v in avg.items()))
        if step % cfg["checkpoint_every"] == 0 or step == total:
            save_checkpoint(ckpt, model, proxies, opt, step, elapsed_before + time.time() - t0)
    save_checkpoint(ckpt, model, proxies, opt, step, elapsed_before + time.time() - t0)
    log.info("done: %d steps in %.1f min", step, (time.time() - t0) / 60)
    if args.export:
        from .export import export_onnx

        export_onnx(model.cpu().eval(), cfg, Path(args.export), train_info={"steps": step, "minutes": round((time.time() - t0) / 60, 1)})
    return 0


def save_checkpoint(path: Path, model: CcuNet, proxies: torch.Tensor, opt, step: int, elapsed: float) -> None:
    """Atomic checkpoint (tensors only)."""
    tmp = path.with_suffix(".tmp")
    torch.save({"model": model.state_dict(), "proxies": proxies.detach(), "opt": opt.state_dict(),
                "step": torch.tensor(step), "elapsed": torch.tensor(elapsed)}, tmp)
    tmp.replace(path)


if __name__ == "__main__":
    raise SystemExit(main())
