"""Learned mark proposals: fit a light head on a model's local map, and measure what its boxes buy.

    python scripts/proposal_head.py fit --model ccu_vision/models/ccu-lite0-v15cd.onnx \
        --trainset out/proposal-train --out out/proposal-head.npz
    python scripts/proposal_head.py eval --model ccu_vision/models/ccu-lite0-v15cd.onnx \
        --head out/proposal-head.npz --evalset out/rebuild/eval-calib

The head (plan: notebooks/results/experiments/proposal-head-plan.md) sees the frozen model's local map
[D, h, w], standardised per channel: 3x3 conv D->64, ReLU, 1x1 conv 64->5; per cell a mark logit and a
box (centre offset from the cell centre, log width, log height; all in cells). ``fit`` trains it on a
listing set of *training* brands and photos (built by :func:`ccu_vision.evalset.build_eval_set` with
``brand_split="train", split="train"``); ``eval`` scores the logo queries of evaluation sets with the
scan's formula (mean of the best region and the best re-embedded crop similarity per reference) for
crop stages fed by similarity windows, head boxes or both, plus each one's proposal recall.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
from PIL import Image

from ccu_vision.embedder import Embedder, best_per_reference
from ccu_vision.evalset import read_truth
from ccu_vision.evaluate import eval_references, logo_metrics

HIDDEN = 64
KEYS = ("recall@1", "recall@5", "ap", "tpr@0.01fpr")


# ----------------------------------------------------------------------------- data


def local_maps(emb: Embedder, root: Path, rows: list[dict], batch: int = 32):
    """Local maps [N, D, h, w] (float16) and letterboxes of the rows' query images."""
    maps, lbs = [], []
    for i in range(0, len(rows), batch):
        ims = [Image.open(root / t["query"]).convert("RGB") for t in rows[i : i + batch]]
        canvases, boxes = emb.photo_canvases(ims)
        maps.append(emb._run(canvases).astype(np.float16))
        lbs += boxes
    return np.concatenate(maps), lbs


def canvas_box(lb, box: list[float]) -> np.ndarray:
    x0, y0, x1, y1 = box
    return np.array([x0 * lb.scale + lb.ox, y0 * lb.scale + lb.oy, x1 * lb.scale + lb.ox, y1 * lb.scale + lb.oy])


def targets(boxes: list[np.ndarray | None], grid: int, stride: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per image and cell: mark target [N, g, g], box target [N, 4, g, g], box-loss mask [N, g, g]."""
    n = len(boxes)
    obj = np.zeros((n, grid, grid), np.float32)
    reg = np.zeros((n, 4, grid, grid), np.float32)
    pos = np.zeros((n, grid, grid), bool)
    cc = np.arange(grid) + 0.5
    for i, b in enumerate(boxes):
        if b is None:
            continue
        x0, y0, x1, y1 = b / stride
        inside = ((cc[None, :] >= x0) & (cc[None, :] <= x1)) & ((cc[:, None] >= y0) & (cc[:, None] <= y1))
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        inside[min(grid - 1, max(0, int(cy))), min(grid - 1, max(0, int(cx)))] = True
        obj[i], pos[i] = inside, inside
        reg[i, 0] = cx - cc[None, :]
        reg[i, 1] = cy - cc[:, None]
        reg[i, 2] = np.log(max(x1 - x0, 0.1))
        reg[i, 3] = np.log(max(y1 - y0, 0.1))
    return obj, reg, pos


# ----------------------------------------------------------------------------- the head in numpy


def head_forward(head: dict, local: np.ndarray) -> np.ndarray:
    """[5, g, g] head output for one local map [D, g, g] (numpy; the same arithmetic as the torch fit)."""
    d, g, _ = local.shape
    x = (local.astype(np.float32) - head["mean"][:, None, None]) / head["std"][:, None, None]
    xp = np.zeros((d, g + 2, g + 2), np.float32)
    xp[:, 1:-1, 1:-1] = x
    cols = np.stack([xp[:, dy : dy + g, dx : dx + g] for dy in range(3) for dx in range(3)], axis=1)  # [D, 9, g, g]
    cols = cols.reshape(d * 9, g * g)
    w1 = head["w1"].reshape(HIDDEN, d * 9)  # torch [out, in, kh, kw] -> [out, in*9]
    h = np.maximum(w1 @ cols + head["b1"][:, None], 0)
    out = head["w2"].reshape(5, HIDDEN) @ h + head["b2"][:, None]
    return out.reshape(5, g, g)


def decode(out: np.ndarray, stride: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Top-``k`` head boxes (canvas px, [k, 4]) at 3x3 local maxima of the mark logit, and their logits."""
    logit = out[0]
    g = logit.shape[0]
    pad = np.pad(logit, 1, constant_values=-np.inf)
    nb = np.max(np.stack([pad[dy : dy + g, dx : dx + g] for dy in range(3) for dx in range(3)]), axis=0)
    peaks = np.argwhere(logit >= nb)
    order = np.argsort(-logit[peaks[:, 0], peaks[:, 1]], kind="stable")[:k]
    boxes, scores = [], []
    for r, c in peaks[order]:
        cx, cy = np.clip(c + 0.5 + out[1, r, c], 0, g), np.clip(r + 0.5 + out[2, r, c], 0, g)
        w, h = np.exp(np.clip(out[3:5, r, c], np.log(0.5), np.log(g)))  # half a cell .. the whole map
        boxes.append([(cx - w / 2) * stride, (cy - h / 2) * stride, (cx + w / 2) * stride, (cy + h / 2) * stride])
        scores.append(logit[r, c])
    return np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores)


def iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes [n, 4] with one box [4]."""
    ix = np.clip(np.minimum(a[:, 2], b[2]) - np.maximum(a[:, 0], b[0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[3]) - np.maximum(a[:, 1], b[1]), 0, None)
    inter = ix * iy
    area = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / np.maximum(area, 1e-9)


# ----------------------------------------------------------------------------- fit


def fit(args: argparse.Namespace) -> None:
    import torch

    torch.manual_seed(args.seed)
    emb = Embedder(args.model)
    root = Path(args.trainset)
    rows = [t for t in read_truth(root) if t["task"] == "logo"]
    t0 = time.time()
    cache = root / f"local-{emb.info.model_id}-{emb.info.preprocess_hash}.npy"
    if cache.exists():  # the frozen model's maps of this set: computed once
        maps, lbs = np.load(cache), emb.photo_canvases([Image.open(root / t["query"]) for t in rows])[1]
    else:
        maps, lbs = local_maps(emb, root, rows)
        np.save(cache, maps)
    print(f"{len(rows)} training listings, local maps {maps.shape} in {time.time() - t0:.0f} s", flush=True)
    boxes = [canvas_box(lb, t["box"]) if "box" in t else None for t, lb in zip(rows, lbs)]
    obj, reg, pos = targets(boxes, emb.grid, emb.stride)
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(rows))
    n_val = len(rows) // 10
    val, tr = order[:n_val], order[n_val:]
    x = maps.astype(np.float32)
    mean = x[tr].mean(axis=(0, 2, 3))
    std = x[tr].std(axis=(0, 2, 3)) + 1e-6
    xs = torch.from_numpy((x - mean[None, :, None, None]) / std[None, :, None, None])
    net = torch.nn.Sequential(torch.nn.Conv2d(x.shape[1], HIDDEN, 3, padding=1), torch.nn.ReLU(),
                              torch.nn.Conv2d(HIDDEN, 5, 1))
    opt = torch.optim.AdamW(net.parameters(), lr=args.lr, weight_decay=1e-4)
    to = torch.from_numpy(obj)
    tg = torch.from_numpy(reg)
    tp = torch.from_numpy(pos)
    pw = torch.tensor(float((1 - obj[tr].mean()) / max(obj[tr].mean(), 1e-6)) ** 0.5)
    steps = args.epochs * int(np.ceil(len(tr) / args.batch))
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=steps)
    for ep in range(args.epochs):
        net.train()
        perm = rng.permutation(tr)
        tot = 0.0
        for i in range(0, len(perm), args.batch):
            idx = torch.from_numpy(perm[i : i + args.batch])
            xb = xs[idx]
            if rng.random() < 0.5:  # flips keep the task; box offsets flip sign
                xb, ob, gb, pb = xb.flip(-1), to[idx].flip(-1), tg[idx].flip(-1).clone(), tp[idx].flip(-1)
                gb[:, 0] = -gb[:, 0]
            else:
                ob, gb, pb = to[idx], tg[idx], tp[idx]
            out = net(xb)
            l_obj = torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], ob, pos_weight=pw)
            m = pb.unsqueeze(1).expand_as(gb)
            l_box = (out[:, 1:] - gb).abs()[m].mean() if m.any() else out.sum() * 0
            loss = l_obj + l_box
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            tot += float(loss.detach()) * len(idx)
        net.eval()
        with torch.no_grad():
            iv = torch.from_numpy(val)
            out = net(xs[iv])
            v_obj = float(torch.nn.functional.binary_cross_entropy_with_logits(out[:, 0], to[iv], pos_weight=pw))
            m = tp[iv].unsqueeze(1).expand_as(tg[iv])
            v_box = float((out[:, 1:] - tg[iv]).abs()[m].mean())
        print(f"epoch {ep + 1}/{args.epochs} loss {tot / len(tr):.4f}  held-back mark {v_obj:.4f} box {v_box:.4f}",
              flush=True)
    sd = {k: v.detach().numpy() for k, v in net.state_dict().items()}
    head = {"mean": mean.astype(np.float32), "std": std.astype(np.float32), "w1": sd["0.weight"], "b1": sd["0.bias"],
            "w2": sd["2.weight"], "b2": sd["2.bias"]}
    # validation: proposal recall of the numpy head on held-back training listings
    with torch.no_grad():
        ref = net(xs[torch.from_numpy(val[:4])]).numpy()
    for j, i in enumerate(val[:4]):
        assert np.allclose(head_forward(head, maps[i]), ref[j], atol=1e-3), "numpy head differs from torch"
    hits = {1: [], 3: [], 6: []}
    for i in val:
        if boxes[i] is None:
            continue
        pb_, _ = decode(head_forward(head, maps[i]), emb.stride, 6)
        ious = iou(pb_, boxes[i]) if len(pb_) else np.zeros(0)
        for k in hits:
            hits[k].append(bool((ious[:k] >= 0.5).any()))
    print("held-back training listings: head proposal recall (IoU >= 0.5) "
          + ", ".join(f"top-{k} {np.mean(v):.3f}" for k, v in hits.items()), flush=True)
    np.savez(args.out, **head, meta=json.dumps({"model": str(args.model), "trainset": str(root), "seed": args.seed,
                                                "epochs": args.epochs, "lr": args.lr}))
    print(f"wrote {args.out}")


# ----------------------------------------------------------------------------- eval


VARIANTS = {"base": (6, 0), "s3h3": (3, 3), "s6h3": (6, 3), "h6": (0, 6)}


def evaluate(args: argparse.Namespace) -> None:
    emb = Embedder(args.model)
    z = np.load(args.head)
    head = {k: z[k] for k in ("mean", "std", "w1", "b1", "w2", "b2")}
    for root in map(Path, args.evalset):
        t0 = time.time()
        slugs, refs, owner = eval_references(emb, root)
        n = len(slugs)
        rows = [t for t in read_truth(root) if t["task"] == "logo"]
        scores = {v: [] for v in VARIANTS}
        recall = {v: [] for v in VARIANTS}
        t_head = 0.0
        for i in range(0, len(rows), 32):
            batch = rows[i : i + 32]
            canvases, lbs = emb.photo_canvases([Image.open(root / t["query"]).convert("RGB") for t in batch])
            local, gfeat = emb._run(canvases, with_global=True)
            for j, t in enumerate(batch):
                pe, cboxes = emb._pool_photo(local[j], lbs[j], None if gfeat is None else gfeat[j])
                sim = pe.regions @ refs.T
                b, _ = best_per_reference(sim, owner, n)
                top = np.argsort(-sim.max(1), kind="stable")[:6]
                th = time.perf_counter()
                hb, _ = decode(head_forward(head, local[j]), emb.stride, 6)
                t_head += time.perf_counter() - th
                allb = np.concatenate([cboxes[top].astype(np.float64), hb])
                c_all = emb.embed_views(emb.crop_views(canvases[j], allb)) @ refs.T  # [6 + k, V]
                true = canvas_box(lbs[j], t["box"]) if "box" in t and t["kind"] == "registered" else None
                for v, (ks, kh) in VARIANTS.items():
                    sel = list(range(min(ks, len(top)))) + [len(top) + q for q in range(min(kh, len(hb)))]
                    c, _ = best_per_reference(c_all[sel], owner, n)
                    scores[v].append(0.5 * (b + c))
                    if true is not None:
                        recall[v].append(bool((iou(allb[sel], true) >= 0.5).any()))
        print(f"== {root}: {len(rows)} logo queries, {n} registered brands, scored in {time.time() - t0:.0f} s; "
              f"head {1000 * t_head / len(rows):.2f} ms per photo (numpy)")
        for v, (ks, kh) in VARIANTS.items():
            s = np.array(scores[v])
            ranked = [[(slugs[k], float(s[q, k])) for k in np.argsort(-s[q])[:10]] for q in range(len(s))]
            m = logo_metrics(rows, ranked)
            print(f"{v:<6} ({ks} windows + {kh} head boxes, {ks + kh} crops) "
                  + " ".join(f"{k}={m[k]:.3f}" for k in KEYS)
                  + f"  proposal recall (IoU>=0.5) {np.mean(recall[v]):.3f}", flush=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fit")
    f.add_argument("--model", required=True)
    f.add_argument("--trainset", required=True)
    f.add_argument("--out", required=True)
    f.add_argument("--epochs", type=int, default=30)
    f.add_argument("--batch", type=int, default=64)
    f.add_argument("--lr", type=float, default=3e-3)
    f.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("eval")
    e.add_argument("--model", required=True)
    e.add_argument("--head", required=True)
    e.add_argument("--evalset", action="append", required=True)
    args = ap.parse_args()
    fit(args) if args.cmd == "fit" else evaluate(args)


if __name__ == "__main__":
    main()
