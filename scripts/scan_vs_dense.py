"""Does the real scan (catalog + FAISS top-k search) give the logo scores the dense evaluation scorer
gives? Run on an evaluation set's logo listings, one model, both paths side by side.

    python scripts/scan_vs_dense.py --eval out/eval-calib --model ccu_vision/models/ccu-lite0-v15cdpf.onnx --n 150

The scan searches each region and crop for its 5 nearest references; the dense scorer compares with
every reference. Where a crop's hits miss a candidate, the scan bounds that similarity by the crop's
lowest hit, so small score differences are expected; this prints how often the top brand and the
flag decision (at the file's logo threshold) agree, and the score differences.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

from ccu_vision.bench.speed import build_home, scan_once, subset_manifest
from ccu_vision.embedder import Embedder, dense_logo_scores
from ccu_vision.evalset import read_truth
from ccu_vision.evaluate import eval_references


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--n", type=int, default=150, help="logo listings (the first n in truth order)")
    args = ap.parse_args()
    root = Path(args.eval)
    rows = [t for t in read_truth(root) if t["task"] == "logo"][: args.n]
    emb = Embedder(args.model)
    th = float(emb.info.thresholds.get("logo", np.inf))
    slugs, logos, owner = eval_references(emb, root)
    dense = {}
    for t in rows:
        e = emb.embed_photos([Image.open(root / t["query"]).convert("RGB")])[0]
        s, _ = dense_logo_scores(e, logos, owner)
        j = int(np.argmax(s))
        dense[str((root / t["query"]).resolve())] = (slugs[j], float(s[j]))
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        home, _ = build_home(Path(args.model), root, work, None)
        manifest = subset_manifest([root / t["query"] for t in rows], work / "inputs.jsonl")
        scan_once(Path(args.model), home, manifest, work / "out.jsonl", None, 16)
        out = [json.loads(line) for line in (work / "out.jsonl").read_text().splitlines()]
    same_top = same_flag = 0
    diffs = []
    for r in out:
        logos_m = [m for m in r["matches"] if m["kind"] == "logo"]
        d_brand, d_score = dense[str(Path(r["image"]).resolve())]
        s_brand, s_score = (logos_m[0]["brand"], logos_m[0]["score"]) if logos_m else ("", -np.inf)
        same_top += s_brand == d_brand
        same_flag += (s_score >= th) == (d_score >= th)
        if s_brand == d_brand:
            diffs.append(abs(s_score - d_score))
    n = len(out)
    print(f"{args.model} on {root} ({n} logo listings; logo threshold {th:.4f})")
    print(f"top-1 brand agrees: {same_top}/{n}; flag decision agrees: {same_flag}/{n}; "
          f"|scan - dense| on agreeing top-1s: median {np.median(diffs):.5f}, max {np.max(diffs):.5f}")


if __name__ == "__main__":
    main()
