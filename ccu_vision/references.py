"""Registering reference images: files, folders and manifests -> embeddings -> catalog.

Images are read and decoded (``ccu_vision.imageio``), embedded in batches, and each reference is
committed to the catalog on its own; its :class:`AddEvent` is yielded right after that commit, so
a caller printing events never reports a reference the catalog could lose. A file that cannot be
read or decoded becomes an ``ok=False`` event with the reason; the others are still added.

* logos: decoded with ``keep_alpha=True`` (transparency marks the logo's shape), embedded with
  :meth:`Embedder.embed_logos`: one vector per logo;
* products: decoded as RGB, embedded with :meth:`Embedder.embed_photos` (global descriptor), plus
  the global descriptor of the horizontally mirrored photo (listings often mirror official shots)
  unless both are the same vector.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from PIL import Image, ImageOps

from .catalog import REF_ID_LEN, REF_KINDS, Catalog, DuplicateRefError
from .errors import CatalogError, ImageError, ManifestError
from .preprocess import blank_reason

log = logging.getLogger(__name__)

BATCH_SIZE = 16
FLIP_PRODUCTS = True
MANIFEST_COLUMNS = ("path", "brand", "kind")


@dataclass
class AddEvent:
    """The outcome of registering one file (``ok`` events are committed before they are yielded)."""

    ok: bool
    path: str
    ref_id: str | None
    brand: str | None
    kind: str | None
    created: bool = False
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The CLI's JSON line for an ok event (``ref_id, path, brand, kind``), else all fields."""
        if self.ok:
            return {"ref_id": self.ref_id, "path": self.path, "brand": self.brand, "kind": self.kind}
        return asdict(self)


def embed_images(embedder: Any, kind: str, images: Sequence[Image.Image], flip: bool = FLIP_PRODUCTS) -> list[np.ndarray]:
    """The reference vectors of each image: ``[1 or 2, D]`` for a logo (its colours + a dark mono view), ``[1 or 2, D]`` for a product (+ its mirror)."""
    if not images:
        return []
    if kind == "logo":
        if hasattr(embedder, "embed_logo_views"):
            return [np.asarray(v, np.float32) for v in embedder.embed_logo_views(list(images))]
        vecs = np.asarray(embedder.embed_logos(list(images)), dtype=np.float32)
        return [vecs[i : i + 1] for i in range(len(images))]
    if kind != "product":
        raise ValueError(f"kind must be one of {', '.join(REF_KINDS)}, got {kind!r}")
    glob = [p.global_vec for p in embedder.embed_photos(list(images))]
    if not flip:
        return [np.asarray(g, np.float32)[None, :] for g in glob]
    mirrored = [p.global_vec for p in embedder.embed_photos([ImageOps.mirror(im) for im in images])]
    out = []
    for g, m in zip(glob, mirrored, strict=True):
        g, m = np.asarray(g, np.float32), np.asarray(m, np.float32)
        out.append(g[None, :] if float(g @ m) > 0.9999 else np.stack([g, m]))
    return out


@dataclass
class _Item:
    path: str
    brand: str
    kind: str
    error: str | None = None  # already failed (e.g. folder not found)


@dataclass
class _Ready:
    item: _Item
    data: bytes | None = None
    image: Image.Image | None = None
    existing: str | None = None
    error: str | None = None


def _check_kind(kind: object) -> str:
    k = str(kind).strip().lower() if kind is not None else ""
    if k not in REF_KINDS:
        raise ValueError(f"kind must be one of {', '.join(REF_KINDS)}, got {kind!r}")
    return k


def _expand(path: str | os.PathLike, brand: str, kind: str) -> Iterator[_Item]:
    from .imageio import iter_image_files

    try:
        found = False
        for p in iter_image_files(path):
            found = True
            yield _Item(str(p), brand, kind)
        if not found:
            log.warning("%s: no image files found", path)
    except ImageError as e:
        yield _Item(str(path), brand, kind, error=e.reason)


def add_paths(
    catalog: Catalog,
    embedder: Any,
    paths: Iterable[str | os.PathLike],
    brand: str,
    kind: str,
    *,
    batch_size: int = BATCH_SIZE,
) -> Iterator[AddEvent]:
    """Register image files and folders (recursive) as ``kind`` references of ``brand``.

    Yields one :class:`AddEvent` per file, in order; ok events only after their commit. Raises
    :class:`CatalogError` for an invalid brand/kind, a model mismatch, or a storage failure.
    """
    try:
        kind = _check_kind(kind)
        brand = Catalog._clean_brand(brand)
    except ValueError as e:
        raise CatalogError(str(e)) from None
    catalog.check_model(embedder.info)
    items = (item for p in paths for item in _expand(p, brand, kind))
    yield from _add_items(catalog, embedder, items, batch_size)


def import_manifest(
    catalog: Catalog,
    embedder: Any,
    manifest_path: str | os.PathLike,
    root: str | os.PathLike | None = None,
    *,
    batch_size: int = BATCH_SIZE,
) -> Iterator[AddEvent]:
    """Register the references listed in a CSV/JSONL manifest with columns ``path, brand, kind``.

    The whole manifest is validated first (columns, encoding, paths escaping ``root``, brand and
    kind values): any problem raises :class:`ManifestError` naming the lines and nothing is
    imported. Then each file is added as in :func:`add_paths` (unreadable images are error events).
    """
    from .manifest import read_manifest

    rows = read_manifest(manifest_path, required=MANIFEST_COLUMNS, root=root, path_column="path")
    problems: list[str] = []
    items: list[tuple[str, str, str]] = []
    for row in rows:
        line = row.get("_line", "?")
        try:
            kind = _check_kind(row["kind"])
            brand = Catalog._clean_brand(str(row["brand"]))
        except ValueError as e:
            problems.append(f"line {line}: {e}")
            continue
        items.append((str(row["path"]), brand, kind))
    if problems:
        more = f" (and {len(problems) - 20} more)" if len(problems) > 20 else ""
        raise ManifestError(f"{manifest_path}: " + "; ".join(problems[:20]) + more + "; nothing was imported")
    catalog.check_model(embedder.info)
    expanded = (item for p, b, k in items for item in _expand(p, b, k))
    yield from _add_items(catalog, embedder, expanded, batch_size)


def _add_items(catalog: Catalog, embedder: Any, items: Iterable[_Item], batch_size: int) -> Iterator[AddEvent]:
    batch: list[_Item] = []
    for item in items:
        batch.append(item)
        if len(batch) >= batch_size:
            yield from _add_batch(catalog, embedder, batch)
            batch = []
    if batch:
        yield from _add_batch(catalog, embedder, batch)


def _prepare(catalog: Catalog, embedder: Any, item: _Item) -> _Ready:
    from .imageio import load_image_bytes, read_image_bytes

    if item.error is not None:
        return _Ready(item, error=item.error)
    try:
        data = read_image_bytes(item.path)
    except ImageError as e:
        return _Ready(item, error=e.reason)
    sha = hashlib.sha256(data).hexdigest()
    rec = catalog.get(sha[:REF_ID_LEN])
    if rec is not None and rec.sha256 == sha and rec.brand == item.brand and rec.kind == item.kind:
        return _Ready(item, data=data, existing=rec.ref_id)  # idempotent re-add: no need to embed
    try:
        if item.kind == "logo":
            image = load_image_bytes(data, item.path, keep_alpha=True)
        else:
            image = load_image_bytes(data, item.path, draft_size=getattr(embedder, "query_size", None))
    except ImageError as e:
        return _Ready(item, error=e.reason)
    blank = blank_reason(image)
    if blank is not None:  # it would match the plain background of every listing
        return _Ready(item, error=f"{blank}; not added (it would match plain backgrounds in every listing)")
    return _Ready(item, data=data, image=image)


def _add_batch(catalog: Catalog, embedder: Any, batch: list[_Item]) -> Iterator[AddEvent]:
    ready = [_prepare(catalog, embedder, item) for item in batch]
    vectors: dict[int, np.ndarray] = {}
    for kind in REF_KINDS:
        todo = [i for i, r in enumerate(ready) if r.image is not None and r.item.kind == kind]
        if todo:
            embedded = embed_images(embedder, kind, [ready[i].image for i in todo])
            vectors.update(zip(todo, embedded, strict=True))
    for i, r in enumerate(ready):
        it = r.item
        if r.error is not None:
            yield AddEvent(False, it.path, None, it.brand, it.kind, error=r.error)
            continue
        if r.existing is not None:
            yield AddEvent(True, it.path, r.existing, it.brand, it.kind, created=False)
            continue
        assert r.image is not None and r.data is not None
        w, h = r.image.size
        try:
            ref_id, created = catalog.add_reference(r.data, it.path, it.brand, it.kind, vectors[i], w, h)
        except (DuplicateRefError, ValueError) as e:
            yield AddEvent(False, it.path, None, it.brand, it.kind, error=str(e).removeprefix(f"{it.path}: "))
            continue
        r.image = None  # free decoded pixels early
        yield AddEvent(True, it.path, ref_id, it.brand, it.kind, created=created)


def added_refs(events: Iterable[AddEvent]) -> list[str]:
    """The ref_ids of the ok events (a convenience for callers that just want ids)."""
    return [e.ref_id for e in events if e.ok and e.ref_id]


__all__ = ["AddEvent", "add_paths", "added_refs", "embed_images", "import_manifest"]
