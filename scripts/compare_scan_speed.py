"""Scan throughput of several model files on the same listing dump and catalog contents, in one run.

    python scripts/compare_scan_speed.py --eval out/eval-test --model out/ccu-lite0-v2d.onnx \
        --model ccu_vision/models/ccu-lite0-v2.onnx --dump 200 --rounds 2

Each model gets its own small catalog (the evaluation set's logos and product photos); scans run in
fresh processes, alternating between the models round by round so that machine noise hits all of
them alike. Prints images/s per round and the median, and the ratio to the first model.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from ccu_vision.bench import speed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--eval", required=True, help="evaluation set folder (its photos make the dump)")
    ap.add_argument("--model", action="append", required=True)
    ap.add_argument("--dump", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        files = speed.make_dump(Path(args.eval), work / "dump", args.dump)
        homes = {}
        for i, m in enumerate(args.model):
            (work / f"m{i}").mkdir()
            homes[m], _ = speed.build_home(Path(m), Path(args.eval), work / f"m{i}", args.threads)
        rates: dict[str, list[float]] = {m: [] for m in args.model}
        for r in range(args.rounds):
            for i, m in enumerate(args.model):
                res = speed.scan_once(Path(m), homes[m], work / "dump", work / f"scan-{i}-{r}.jsonl", args.threads, args.batch)
                rates[m].append(res["images_per_s"])
                print(f"round {r + 1} {m}: {res['images_per_s']:.2f} images/s ({res['images']} images)", flush=True)
        base = statistics.median(rates[args.model[0]])
        print(f"\n{len(files)} listing JPEGs, {args.rounds} rounds, median images/s:")
        for m in args.model:
            med = statistics.median(rates[m])
            print(f"  {m}: {med:.2f} images/s  ({med / base:.2f}x of the first)")


if __name__ == "__main__":
    main()
