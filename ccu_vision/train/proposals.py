"""Fit a learned mark-proposal head on a frozen model's local map and attach it to the model file.

    python -m ccu_vision.train.proposals fit --model ccu_vision/models/ccu-lite0-v15cd.onnx \\
        --photos ../shared/datasets/clothing-dataset-small --trainset out/proposal-train --out out/proposal-head.npz
    python -m ccu_vision.train.proposals attach --model ccu_vision/models/ccu-lite0-v15cd.onnx \\
        --head out/proposal-head.npz --out out/ccu-lite0-v15cdp.onnx --model-id ccu-lite0-v15cdp

``fit`` builds (or reuses) a listing set of *training* brands on *training* photos with
:func:`ccu_vision.evalset.build_eval_set` (``brand_split="train", split="train"``; held-out brands and
validation/test photos stay unseen), takes the model's local maps of its logo listings and trains
3x3 conv D->64, ReLU, 1x1 conv 64->5 on the standardised map: BCE on the mark logit (a cell is
positive when its centre lies in a mark's box or it holds the box centre; registered and unregistered
marks alike) + L1 on the box terms (centre offset, log width/height, in cells) at positive cells.
``attach`` appends the head to the ONNX graph as the output ``proposals`` and describes it in the
metadata (``ccu.proposals``); the logo and near-duplicate outputs are untouched. Decoding:
:mod:`ccu_vision.proposals`. Plan and measurements:
``notebooks/results/experiments/proposal-head-plan.md``.
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

from ..embedder import Embedder
from ..evalset import EvalConfig, build_eval_set, read_truth
from ..proposals import CHANNELS, FORMAT, decode, head_forward, iou

log = logging.getLogger(__name__)

HIDDEN = 64
TRAINSET = EvalConfig(n_brands=1200, pos_per_brand=2, n_unregistered=600, n_clean=400, n_products=0,
                      n_lookalikes=0, split="train", brand_split="train", seed=901)


def targets(boxes: list[np.ndarray | None], grid: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and cell: mark target [N, g, g], box target [N, 4, g, g], box-loss mask [N, g, g]
    from canvas-pixel boxes (None: no mark)."""
    n = len(boxes)
    obj = np.zeros((n, grid, grid), np.float32)
    reg = np.zeros((n, 4, grid, grid), np.float32)
    pos = np.zeros((n, grid, grid), bool)
    cc = np.arange(grid) + 0.5
    for i, b in enumerate(boxes):
        if b is None:
            continue
        x0, y0, x1, y1 = np.asarray(b, np.float64) / stride
        inside = ((cc[None, :] >= x0) & (cc[None, :] <= x1)) & ((cc[:, None] >= y0) & (cc[:, None] <= y1))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inside[min(grid - 1, max(0, int(cy))), min(grid - 1, max(0, int(cx)))] = True
        obj[i], pos[i] = inside, inside
        reg[i, 0] = cx - cc[None, :]
        reg[i, 1] = cy - cc[:, None]
        reg[i, 2] = np.log(max(x1 - x0, 0.1))
        reg[i, 3] = np.log(max(y1 - y0, 0.1))
    return obj, reg, pos


def local_maps(emb: Embedder, root: Path, rows: list[dict], batch: int = 32) -> tuple[np.ndarray, list]:
    """Local maps [N, D, h, w] (float16) and letterboxes of the rows' query images."""
    maps, lbs = [], []
    for i in range(0, len(rows), batch):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + batch]]
        canvases, boxes = emb.photo_canvases(ims)
        maps.append(emb._run(canvases).astype(np.float16))
        lbs += boxes
    return np.concatenate(maps), lbs


def fit_head(maps: np.ndarray, boxes: list[np.ndarray | None], grid: int, stride: int, *, epochs: int = 30,
             batch: int = 64, lr: float = 3e-3, seed: int = 0, holdout: float = 0.1) -> tuple[dict, dict]:
    """Train the head on local maps [N, D, g, g] with canvas boxes; returns (head arrays, report)."""
    import torch

    assert maps.ndim == 4 and maps.shape[2:] == (grid, grid) and len(boxes) == len(maps), (maps.shape, len(boxes))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    obj, reg, pos = targets(boxes, grid, stride)
    order = rng.permutation(len(maps))
    n_val = int(len(maps) * holdout)
    val, tr = order[:n_val], order[n_val:]
    x = maps.astype(np.float32)
    mean = x[tr].mean(axis=(0, 2, 3))
    std = x[tr].std(axis=(0, 2, 3)) + 1e-6
    xs = torch.from_numpy((x - mean[None, :, None, None]) / std[None, :, None, None])
    net = torch.nn.Sequential(torch.nn.Conv2d(x.shape[1], HIDDEN, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(HIDDEN, CHANNELS, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=1e-4)
    to, tg, tp = torch.from_numpy(obj), torch.from_numpy(reg), torch.from_numpy(pos)
    share = max(float(obj[tr].mean()), 1e-6)
    pw = torch.tensor(((1 - share) / share) ** 0.5)
    steps = epochs * int(np.ceil(len(tr) / batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=max(1, steps))

    def losses(out, ob, gb, pb):
        l_obj = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], ob, pos_weight=pw)
        m = pb.unsqueeze(1).expand_as(gb)
        l_box = (out[:, 1:] - gb).abs()[m].mean() if bool(m.any()) else out.sum() * 0
        return l_obj, l_box

    for ep in range(epochs):
        net.train()
        perm = rng.permutation(tr)
        tot = 0.0
        for i in range(0, len(perm), batch):
            idx = torch.from_numpy(perm[i : i + batch])
            xb, ob, gb, pb = xs[idx], to[idx], tg[idx], tp[idx]
            if rng.random() < 0.5:  # a mirrored listing is a listing; the centre's x offset changes sign
                xb, ob, gb, pb = xb.flip(-1), ob.flip(-1), gb.flip(-1).clone(), pb.flip(-1)
                gb[:, 0] = -gb[:, 0]
            l_obj, l_box = losses(net(xb), ob, gb, pb)
            loss = l_obj + l_box
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        msg = f"epoch {ep + 1}/{epochs} loss {tot / max(1, len(tr)):.4f}"
        if len(val):
            net.eval()
            with torch.no_grad():
                iv = torch.from_numpy(val)
                v_obj, v_box = losses(net(xs[iv]), to[iv], tg[iv], tp[iv])
            msg += f"  held-back mark {float(v_obj):.4f} box {float(v_box):.4f}"
        log.info(msg)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in net.state_dict().items()}
    head = {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "w1": sd["0.weight"], "b1": sd["0.bias"],
            "w2": sd["2.weight"], "b2": sd["2.bias"]}
    hits: dict[int, list[bool]] = {1: [], 3: [], 6: []}
    for i in val:
        if boxes[i] is None:
            continue
        pb_, _ = decode(head_forward(head, maps[i]), stride, 6)
        ious = iou(pb_, np.asarray(boxes[i])) if len(pb_) else np.zeros(0)
        for k in hits:
            hits[k].append(bool((ious[:k] >= 0.5).any()))
    report = {"listings": len(maps), "held_back": int(n_val), "epochs": epochs, "batch": batch, "lr": lr, "seed": seed,
              "recall_iou50": {f"top{k}": round(float(np.mean(v)), 4) if v else None for k, v in hits.items()}}
    return head, report


def fit(model: str | Path, trainset: str | Path, photos: str | Path | None = None, clutter: float = 0.0,
        **kw) -> tuple[dict, dict]:
    """Build/reuse the training listing set (``clutter``: share of listings printed with packaging
    clutter first), take ``model``'s local maps and fit the head."""
    cfg = replace(TRAINSET, clutter=clutter)
    root = build_eval_set(trainset, cfg, photos)
    emb = Embedder(model)
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    t0 = time.time()
    maps, lbs = local_maps(emb, root, rows)
    log.info("%d training listings, local maps %s in %.0f s", len(rows), maps.shape, time.time() - t0)
    boxes = [lb.to_canvas(np.asarray([t["box"]]))[0] if "box" in t else None for t, lb in zip(rows, lbs, strict=True)]
    head, report = fit_head(maps, boxes, emb.grid, emb.stride, **kw)
    report["trainset"] = cfg.to_json()
    return head, report


def attach(model: str | Path, head: dict, out: str | Path, *, model_id: str, boxes: int = 3,
           report: dict | None = None, command: list[str] | None = None) -> Path:
    """Write ``model`` with the head appended (ONNX output ``proposals`` [N, 5, h, w]) to ``out``.

    The new file needs its own ``model_id`` and has no thresholds until it is calibrated
    (:mod:`ccu_vision.train.calibrate`): the base model's belong to its own scoring. Its
    ``ccu.train_command`` grows by the fit's command (``report["argv"]``) and ``command``."""
    import onnx
    from onnx import helper, numpy_helper

    from .export import save_with_metadata

    m = onnx.load(str(model))
    g = m.graph
    if any(o.name == "proposals" for o in g.output):
        raise ValueError(f"{model}: already has a proposal head")
    if not any(o.name == "local" for o in g.output):
        raise ValueError(f"{model}: not a ccu-vision embedder graph (no output named 'local')")
    if not model_id or model_id == next((p.value for p in m.metadata_props if p.key == "ccu.model_id"), None):
        raise ValueError(f"{model}: give the model with a head its own model id (catalogs pin the id, and the "
                         f"head changes the logo scores)")
    d = head["w1"].shape[1]
    consts = {
        "prop_mean": head["mean"].reshape(1, d, 1, 1), "prop_std": head["std"].reshape(1, d, 1, 1),
        "prop_w1": head["w1"], "prop_b1": head["b1"], "prop_w2": head["w2"], "prop_b2": head["b2"],
    }
    for name, arr in consts.items():
        g.initializer.append(numpy_helper.from_array(np.ascontiguousarray(arr, np.float32), name))
    g.node.extend([
        helper.make_node("Sub", ["local", "prop_mean"], ["prop_centred"]),
        helper.make_node("Div", ["prop_centred", "prop_std"], ["prop_x"]),
        helper.make_node("Conv", ["prop_x", "prop_w1", "prop_b1"], ["prop_h"], kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["prop_h"], ["prop_hr"]),
        helper.make_node("Conv", ["prop_hr", "prop_w2", "prop_b2"], ["proposals"], kernel_shape=[1, 1]),
    ])
    g.output.append(helper.make_tensor_value_info("proposals", onnx.TensorProto.FLOAT, ["batch", CHANNELS, "h", "w"]))
    meta = {p.key: p.value for p in m.metadata_props}
    meta["ccu.model_id"] = model_id
    meta["ccu.thresholds"] = "{}"  # the base model's thresholds belong to its scoring: calibrate this file
    meta["ccu.proposals"] = json.dumps({"format": FORMAT, "boxes": int(boxes), "hidden": int(head["w1"].shape[0]),
                                        **({"fit": report} if report else {})})
    onnx.checker.check_model(m)
    argvs = ([(report or {})["argv"]] if (report or {}).get("argv") else []) + ([command] if command else [])
    return save_with_metadata(m, meta, out, "python -m ccu_vision.train.proposals", argvs)


def save_head(path: str | Path, head: dict, report: dict) -> None:
    np.savez(path, **head, report=json.dumps(report))


def load_head(path: str | Path) -> tuple[dict, dict]:
    z = np.load(path)
    head = {k: z[k] for k in ("mean", "std", "w1", "b1", "w2", "b2")}
    return head, json.loads(str(z["report"])) if "report" in z else {}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m ccu_vision.train.proposals", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit", help="fit the head on a training listing set")
    f.add_argument("--model", required=True, help="the ccu-vision ONNX model whose local map the head reads")
    f.add_argument("--trainset", required=True, help="folder of the training listing set (built when missing)")
    f.add_argument("--photos", help="photo folder (its 'train' split); default $CCU_PHOTOS or the clothing dataset")
    f.add_argument("--out", required=True, help="head weights (.npz)")
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument("--lr", type=float, default=3e-3)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--clutter", type=float, default=0.0,
                   help="share of training listings printed with packaging clutter (lettering in training fonts)")
    a = sub.add_parser("attach", help="append a fitted head to a model file")
    a.add_argument("--model", required=True)
    a.add_argument("--head", required=True)
    a.add_argument("--out", required=True)
    a.add_argument("--model-id", required=True, help="the new file's model id (catalogs pin it)")
    a.add_argument("--boxes", type=int, default=3, help="head boxes re-embedded per photo (default 3)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    argv_list = sys.argv[1:] if argv is None else list(argv)
    if args.cmd == "fit":
        head, report = fit(args.model, args.trainset, args.photos, clutter=args.clutter, epochs=args.epochs,
                           lr=args.lr, seed=args.seed)
        report["argv"] = argv_list
        save_head(args.out, head, report)
        log.info("held-back training listings: proposal recall at IoU >= 0.5 %s; wrote %s",
                 report["recall_iou50"], args.out)
        return 0
    head, report = load_head(args.head)
    attach(args.model, head, args.out, boxes=args.boxes, model_id=args.model_id, report=report, command=argv_list)
    log.info("wrote %s", args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
