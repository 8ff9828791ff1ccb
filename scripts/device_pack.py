"""Pack what a training run needs into ``.device/`` for a lent accelerator machine (it has no internet).

    python scripts/device_pack.py --photos ../shared/datasets/clothing-dataset-small

Writes (``.device/`` is git-ignored; name it in the device tool's ``carry``):
- ``whl/``: cp312 manylinux wheels of the data packages the GPU image lacks (resvg-py, simple-icons-pack);
- ``fonts/``: the training text faces (the lettered-mark font split applied to this machine's fonts;
  held-out serif faces stay behind, so the split there is the split here);
- ``photos/train/<class>/``: the training photos at the recipe's ``photo_max_side`` as WebP, so the whole
  folder fits the tool's 64 MiB transfer beside the repository (a lossy re-encode, stated in the model card).

Then, on the device machine: ``bash scripts/device_train.sh --init ... --config ...``.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import sys
from pathlib import Path

log = logging.getLogger("device_pack")

WHEELS = ("resvg_py==0.5.0", "simple-icons-pack==16.36.0")
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--photos", required=True, help="photo folder (its 'train' split is packed)")
    ap.add_argument("--out", default=".device")
    ap.add_argument("--quality", type=int, default=75, help="WebP quality of the packed photos")
    ap.add_argument("--max-side", type=int, default=256, help="the training recipe's photo_max_side")
    ap.add_argument("--no-wheels", action="store_true", help="skip the wheel download (photos and fonts only)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from PIL import Image

    from ccu_vision.photos import list_photos, load_photo, photo_class
    from ccu_vision.wordmarks import find_fonts, font_split

    out = Path(args.out)
    if out.exists():
        shutil.rmtree(out)
    (out / "whl").mkdir(parents=True)
    if not args.no_wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:",
                        "--python-version", "3.12", "--implementation", "cp",
                        *[a for p in PLATFORMS for a in ("--platform", p)], "-d", str(out / "whl"), *WHEELS],
                       check=True)
    fonts = [f for f in font_split(find_fonts(), "train") if f is not None]
    (out / "fonts").mkdir()
    for f in fonts:
        shutil.copy(f, out / "fonts" / Path(f).name)
    paths = list_photos(args.photos, "train")
    if not paths:
        raise SystemExit(f"{args.photos}: no photos found")
    for p in paths:
        dst = out / "photos" / "train" / photo_class(p) / (p.stem + ".webp")
        dst.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(load_photo(p, args.max_side)).save(dst, "WEBP", quality=args.quality, method=6)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    log.info("%s: %d wheels, %d fonts, %d photos, %.1f MB", out, len(list((out / "whl").glob("*.whl"))),
             len(fonts), len(paths), size / 1e6)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
