"""The scan's two-stage logo scoring (regions -> re-embedded crops) agrees with the exact dense formula."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from ccu_vision.catalog import Catalog
from ccu_vision.embedder import Embedder, combine_logo_scores, dense_logo_scores
from ccu_vision.matcher import match_photo
from ccu_vision.references import add_paths


def _img(path: Path, seed: int, size=(64, 48)) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(path)
    return path


def test_two_stage_matches_dense_scores(tmp_path: Path, tiny_model_path: Path) -> None:
    emb = Embedder(tiny_model_path)
    logos = [_img(tmp_path / f"l{i}.png", i) for i in range(4)]
    with Catalog.open(tmp_path / "home", emb.info) as cat:
        ids = [ev.ref_id for i, p in enumerate(logos) for ev in add_paths(cat, emb, [p], f"B{i}", "logo")]
        vecs, vec_ids = cat.vectors("logo")
        listing = Image.open(_img(tmp_path / "q.png", 99, (200, 150)))
        listing.paste(Image.open(logos[2]), (60, 40))
        photo = emb.embed_photos([listing])[0]
        n = len(vecs)
        got = {m["ref_id"]: m["score"] for m in match_photo(photo, cat, top_k=10, region_k=n).matches
               if m["kind"] == "logo"}
        # map each stored vector to its reference through an exact search with itself
        hits = cat.search("logo", vecs, n)
        refs = [next(r for r, s, vid in h if vid == vec_ids[i]) for i, h in enumerate(hits)]
        names = sorted(set(refs))
        dense, _ = dense_logo_scores(photo, vecs, np.asarray([names.index(r) for r in refs]))
        by_ref = {r: float(dense[j]) for j, r in enumerate(names)}
        assert set(got) == set(by_ref)
        for ref, s in by_ref.items():
            assert abs(got[ref] - s) < 1e-5, (ref, got[ref], s)
        assert len(got) == len(ids)  # every reference scored, none twice


def test_combine_is_the_mean() -> None:
    assert np.allclose(combine_logo_scores(np.array([0.2, 1.0]), np.array([0.4, 0.0])), [0.3, 0.5])


def test_batched_crops_equal_per_photo(tmp_path: Path, tiny_model_path: Path) -> None:
    """The scan embeds the crops of a whole batch in one call; results equal photo-by-photo matching."""
    from ccu_vision.matcher import match_photos

    emb = Embedder(tiny_model_path)
    with Catalog.open(tmp_path / "home", emb.info) as cat:
        for i in range(5):
            list(add_paths(cat, emb, [_img(tmp_path / f"l{i}.png", i)], f"B{i}", "logo"))
        photos = emb.embed_photos([Image.open(_img(tmp_path / f"q{i}.png", 50 + i, (180, 120))) for i in range(3)])
        batched = match_photos(photos, cat, top_k=5, region_k=10)
        for p, b in zip(photos, batched, strict=True):
            one = match_photo(p, cat, top_k=5, region_k=10)
            assert [m["ref_id"] for m in one.matches] == [m["ref_id"] for m in b.matches]
            assert np.allclose([m["score"] for m in one.matches], [m["score"] for m in b.matches], atol=1e-5)
