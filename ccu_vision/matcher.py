"""Turn a listing photo's descriptors into a scan row's ``matches``, ``flags`` and ``verdict``.

Two searches per photo against the catalog:

* **logo**: every regional descriptor is searched against the ``logo`` index; per reference the
  best score wins, and the box of the region that produced it says where the logo is;
* **near-duplicate**: the global descriptor (and, for models that carry verification settings,
  its sub-windows) is searched against the ``product`` index; the best candidates are then
  verified with keypoints (:mod:`ccu_vision.verify`), and their score is the fused one.

``matches`` are the top-k references per kind whatever the thresholds (higher score = more
similar, cosine); ``flags`` are the matches at or above the catalog's calibrated thresholds.

With a :class:`TextContext` (a model with ``ccu.text_scoring``, :mod:`ccu_vision.text`) and each
photo's OCR lines, a brand whose name or logo lettering the photo's text shows has its logo scores
raised (:func:`ccu_vision.text.combine`), a brand only the text found is listed too (its box is the
text's), such matches carry the text read (``text``, ``text_match``), and logo flags use the
``logo_text`` threshold calibrated for those scores. A model with ``ccu.logo_verify`` then also
verifies each photo's best logo candidates with keypoints (:mod:`ccu_vision.logo_verify`): their
scores rise by what the verified inliers add, and such matches carry ``inliers``.
The functions here are pure: the only thing they touch is the catalog's read-only search API.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from .embedder import REFINE_CROPS, PhotoEmbedding, combine_logo_scores
from .logo_verify import Features, LogoVerifier
from .logo_verify import verify_candidates as verify_logo_candidates
from .scoring import fuse
from .text import TextLine, TextScoring, brand_evidence, combine
from .verify import Verifier, verify_candidates

log = logging.getLogger(__name__)

DEFAULT_TOP_K = 5
DEFAULT_REGION_K = 5
FLAG_TYPES = {"logo": "logo", "product": "near_duplicate"}


@dataclass(frozen=True)
class TextContext:
    """What text evidence needs besides the photos' lines: the model's text scoring, each brand's
    keys, and the logo reference a text-only match is listed under (:mod:`ccu_vision.text_keys`)."""

    cfg: TextScoring
    keys: dict[str, list[str]]
    text_only: dict[str, str]


class CatalogLike(Protocol):
    """The part of :class:`ccu_vision.catalog.Catalog` the matcher needs."""

    @property
    def thresholds(self) -> dict: ...

    def search(self, kind: str, queries: np.ndarray, k: int) -> list[list[tuple[str, float, int]]]: ...

    def get(self, ref_id: str) -> Any: ...


@dataclass
class MatchResult:
    """What the matcher decided for one photo: the ``matches``/``flags``/``verdict`` of a scan row."""

    matches: list[dict] = field(default_factory=list)
    flags: list[dict] = field(default_factory=list)
    text: list[str] | None = None  # the lines OCR read (text evidence on), else None

    @property
    def verdict(self) -> str:
        return "suspect" if self.flags else "clear"

    def to_row(self) -> dict:
        """The row fields this result fills (``verdict``, ``flags``, ``matches``)."""
        row = {"verdict": self.verdict, "flags": self.flags, "matches": self.matches}
        if self.text is not None:
            row["text"] = self.text
        return row


def _box(b: np.ndarray | Sequence[float] | None) -> list[int] | None:
    return None if b is None else [int(round(float(v))) for v in b]


def _with_text(best: dict[str, tuple[float, np.ndarray]], lines: Sequence[TextLine], text: TextContext,
               brand_of: Callable[[str], str]) -> tuple[dict[str, tuple[float, Any]], dict[str, tuple[float, TextLine]]]:
    """One photo's logo scores with text evidence added, and the evidence per brand."""
    ev = brand_evidence(text.keys, lines, text.cfg.min_conf)
    if not ev:
        return best, ev
    new = combine({r: s for r, (s, _) in best.items()}, brand_of, {b: q for b, (q, _) in ev.items()},
                  text.text_only, text.cfg)
    return {r: (p, best[r][1] if r in best else ev[brand_of(r)][1].box) for r, p in new.items()}, ev


def _score(s: float) -> float:
    return round(float(s), 6)


def _refine_with_crops(photos: Sequence[PhotoEmbedding], catalog: CatalogLike,
                       logo_best: list[dict[str, tuple[float, np.ndarray]]], region_top: list[np.ndarray],
                       region_k: int, brand_of: Callable[[str], str]) -> float:
    """Second stage of logo scoring: re-embed each photo's best regions (and its learned mark
    proposals, :meth:`PhotoEmbedding.crop_candidates`) as crops, search them, and
    combine with the region scores (:func:`ccu_vision.embedder.combine_logo_scores`) in place.

    A reference found by only one stage gets the lowest score seen in the other stage's hits for
    that photo (a bound, so it is never favoured). For a model whose logo scoring fuses the
    evidence (:mod:`ccu_vision.scoring`), the best references are re-scored exactly against their
    stored vectors (when the catalog has ``ref_vectors``; otherwise a crop's similarity to a
    reference it did not return is bounded by its lowest hit) and only the fused candidates stay.
    Returns the seconds spent searching.
    """
    t_search = 0.0
    todo = [i for i, (p, best, top) in enumerate(zip(photos, logo_best, region_top, strict=True))
            if p.can_refine and len(top) and best]
    if not todo:
        return t_search
    # one embedder call and one index search for the crops of the whole batch
    plans = {i: photos[i].crop_plan(region_top[i]) for i in todo}  # best regions + learned proposals
    views = [photos[i].plan_views(*plans[i]) for i in todo]
    vecs = photos[todo[0]].embed_views(np.concatenate(views))
    t0 = time.perf_counter()
    all_hits = catalog.search("logo", np.ascontiguousarray(vecs, dtype=np.float32), region_k)
    t_search += time.perf_counter() - t0
    row = 0
    for i, v in zip(todo, views, strict=True):
        p, best, top = photos[i], logo_best[i], plans[i][0]
        boxes = p.candidate_boxes()
        hits = all_hits[row : row + len(v)]
        crop_vecs = vecs[row : row + len(v)]
        row += len(v)
        crop_best: dict[str, tuple[float, np.ndarray]] = {}
        for j, h in enumerate(hits):
            for ref_id, score, _vec_id in h:
                if ref_id not in crop_best or score > crop_best[ref_id][0]:
                    crop_best[ref_id] = (float(score), boxes[top[j]])
        if not crop_best:
            continue
        r_floor = min(v[0] for v in best.values())
        c_floor = min(v[0] for v in crop_best.values())
        merged = {}
        for ref_id in set(best) | set(crop_best):
            r, rbox = best.get(ref_id, (r_floor, None))
            c, cbox = crop_best.get(ref_id, (c_floor, None))
            merged[ref_id] = (float(combine_logo_scores(r, c)), rbox if rbox is not None else cbox)
        if p.scoring is not None and p.scoring.fused:
            merged = _fused(p, merged, best, r_floor, hits, brand_of, crop_vecs,
                            getattr(catalog, "ref_vectors", None))
        best.clear()
        best.update(merged)
    return t_search


def _fused(p: PhotoEmbedding, merged: dict[str, tuple[float, np.ndarray]],
           region: dict[str, tuple[float, np.ndarray]], r_floor: float,
           hits: list[list[tuple[str, float, int]]], brand_of: Callable[[str], str], crop_vecs: np.ndarray,
           ref_vectors: Callable[[list[str]], dict[str, np.ndarray]] | None) -> dict[str, tuple[float, np.ndarray]]:
    """The fused candidates of one photo (:func:`ccu_vision.scoring.fuse`) from its searched evidence,
    the candidates re-scored exactly against their stored vectors when ``ref_vectors`` is given."""
    assert p.scoring is not None and crop_vecs.shape[0] == len(hits), (crop_vecs.shape, len(hits))
    refs = sorted(merged)
    col = {r: j for j, r in enumerate(refs)}
    crop = np.empty((len(hits), len(refs)))
    for j, h in enumerate(hits):
        seen: dict[str, float] = {}
        for ref_id, score, _vec_id in h:
            seen[ref_id] = max(seen.get(ref_id, -np.inf), float(score))
        crop[j] = min((float(sc) for _, sc, _ in h), default=-np.inf)  # bound for references it did not return
        for ref_id, score in seen.items():
            crop[j, col[ref_id]] = score
    base = np.array([merged[r][0] for r in refs])
    reg = np.array([region[r][0] if r in region else r_floor for r in refs])
    cand = np.argsort(-base, kind="stable")[: p.scoring.candidates]
    exact = ref_vectors([refs[j] for j in cand]) if ref_vectors is not None else {}
    for j in cand:  # what the dense scorer computes, for the references that can be fused
        v = exact.get(refs[j])
        if v is None or not len(v):
            continue
        reg[j] = float((np.asarray(p.regions, np.float32) @ v.T).max())
        crop[:, j] = (crop_vecs @ v.T).max(1)
        base[j] = float(combine_logo_scores(reg[j], crop[:, j].max()))
    cand = cand[np.argsort(-base[cand], kind="stable")]
    brands = [brand_of(r) for r in refs]
    group = np.unique(brands, return_inverse=True)[1]
    fused = fuse(p.scoring, base, reg, crop, p.head_logit, group, cand)
    return {r: (float(fused[j]), merged[r][1]) for j, r in enumerate(refs) if np.isfinite(fused[j])}


def _near_duplicates(photos: Sequence[PhotoEmbedding], catalog: CatalogLike, dup_best: list[dict[str, float]],
                     top_k: int, verifier: Verifier | None) -> float:
    """CNN near-duplicate scores per photo (in place): the best of the global descriptor's hits and
    its sub-windows' hits minus the window penalty. Returns the seconds spent searching."""
    penalty = verifier.cfg.window_penalty if verifier is not None else 0.0
    rows, owner, shift = [], [], []
    for i, p in enumerate(photos):
        g = np.asarray(p.global_vec, np.float32).reshape(1, -1)
        w = p.dup_windows if verifier is not None and p.dup_windows is not None else g[:0]
        assert w.ndim == 2 and w.shape[1] == g.shape[1], (w.shape, g.shape)
        rows += [g, np.asarray(w, np.float32)]
        owner += [i] * (1 + len(w))
        shift += [0.0] + [penalty] * len(w)
    t0 = time.perf_counter()
    hits = catalog.search("product", np.ascontiguousarray(np.concatenate(rows)), top_k)
    t = time.perf_counter() - t0
    for i, pen, h in zip(owner, shift, hits, strict=True):
        best = dup_best[i]
        for ref_id, score, _vec_id in h:
            s = float(score) - pen
            if s > best.get(ref_id, -np.inf):
                best[ref_id] = s
    return t


def _verify(photos: Sequence[PhotoEmbedding], dup_best: list[dict[str, float]], dup_inliers: list[dict[str, int]],
            verifier: Verifier, threshold: float) -> None:
    """Keypoint-verify each photo's best near-duplicate candidates; fuse their scores in place."""
    for p, best, inl in zip(photos, dup_best, dup_inliers, strict=True):
        inl.update(verify_candidates(best, p.gray, verifier.refs.get, verifier.cfg, threshold))


def match_photos(
    photos: Sequence[PhotoEmbedding],
    catalog: CatalogLike,
    *,
    top_k: int = DEFAULT_TOP_K,
    region_k: int = DEFAULT_REGION_K,
    timings: dict[str, float] | None = None,
    refine: int = REFINE_CROPS,
    verifier: Verifier | None = None,
    text: TextContext | None = None,
    texts: Sequence[Sequence[TextLine]] | None = None,
    logo_verifier: LogoVerifier | None = None,
    logo_queries: Sequence[Callable[[], Features | None]] | None = None,
) -> list[MatchResult]:
    """Match a batch of photos against ``catalog``; one :class:`MatchResult` per photo.

    ``text`` and ``texts`` (each photo's OCR lines, in photo order) add text evidence; then logo
    flags use the catalog's ``logo_text`` threshold. With text evidence, a ``logo_verifier``
    (:func:`ccu_vision.logo_verify.for_catalog`) and ``logo_queries`` (per photo, a function giving its
    keypoints, :func:`ccu_vision.logo_verify.features` of its :func:`~ccu_vision.logo_verify.query_gray`),
    the best logo candidates are verified with keypoints after the text evidence is added.

    All regions of the batch go to the logo index in one search call, all global vectors to the
    product index in another. With a ``verifier`` (:func:`ccu_vision.verify.for_catalog`) the
    near-duplicate candidates are verified with keypoints. If ``timings`` is given, seconds spent
    searching are added to ``timings["search"]``, verifying to ``timings["verify"]`` and the rest
    (aggregation, thresholds) to ``timings["decide"]``.
    """
    t_start = time.perf_counter()
    t_search = 0.0
    n = len(photos)
    if n == 0:
        return []
    thresholds = catalog.thresholds or {}
    th_logo = float(thresholds.get("logo", np.inf))
    th_dup = float(thresholds.get("near_duplicate", np.inf))
    if text is not None:
        assert texts is not None and len(texts) == n, (n, None if texts is None else len(texts))
        th_logo = float(thresholds.get("logo_text", np.inf))
    if text is None:
        logo_verifier = None  # part of text evidence: the logo threshold is calibrated without it
    if logo_verifier is not None:
        assert logo_queries is not None and len(logo_queries) == n, (n, None if logo_queries is None else len(logo_queries))

    brands: dict[str, str] = {}

    def brand_of(ref_id: str) -> str:
        if ref_id not in brands:
            rec = catalog.get(ref_id)
            brands[ref_id] = rec.brand if rec is not None else ""
        return brands[ref_id]

    # per photo: ref_id -> (score, box or None), per kind
    logo_best: list[dict[str, tuple[float, np.ndarray]]] = [{} for _ in range(n)]
    dup_best: list[dict[str, float]] = [{} for _ in range(n)]

    # no count() pre-check: an empty index answers with empty lists, and counting can be O(refs)
    counts = [len(p.regions) for p in photos]
    queries = np.concatenate([np.asarray(p.regions, np.float32).reshape(-1, p.global_vec.shape[-1])
                              for p in photos])
    if len(queries):
        t0 = time.perf_counter()
        hits = catalog.search("logo", np.ascontiguousarray(queries), region_k)
        t_search += time.perf_counter() - t0
        row = 0
        region_top: list[np.ndarray] = []
        for i, (p, c) in enumerate(zip(photos, counts, strict=True)):
            best = logo_best[i]
            region_score = np.full(c, -np.inf)
            for r in range(c):
                for ref_id, score, _vec_id in hits[row + r]:
                    region_score[r] = max(region_score[r], float(score))
                    cur = best.get(ref_id)
                    if cur is None or score > cur[0]:
                        best[ref_id] = (float(score), p.boxes[r])
            region_top.append(np.argsort(-region_score, kind="stable")[: min(refine, c)])
            row += c
        if refine > 0:
            t_search += _refine_with_crops(photos, catalog, logo_best, region_top, region_k, brand_of)

    t_search += _near_duplicates(photos, catalog, dup_best, top_k, verifier)
    t_verify = 0.0
    dup_inliers: list[dict[str, int]] = [{} for _ in range(n)]
    if verifier is not None:
        t0 = time.perf_counter()
        _verify(photos, dup_best, dup_inliers, verifier, th_dup)
        t_verify = time.perf_counter() - t0

    results = []
    for i in range(n):
        res = MatchResult()
        best, ev = logo_best[i], {}
        logo_inl: dict[str, int] = {}
        if text is not None:
            best, ev = _with_text(best, texts[i], text, brand_of)
            res.text = [ln.text for ln in texts[i]]
        if logo_verifier is not None:
            t0 = time.perf_counter()
            scores = {r: s for r, (s, _) in best.items()}
            logo_inl = verify_logo_candidates(scores, logo_queries[i], logo_verifier.refs.get, logo_verifier.cfg,
                                              th_logo)
            best = {r: (scores[r], box) for r, (_, box) in best.items()}
            t_verify += time.perf_counter() - t0
        logos = sorted(best.items(), key=lambda kv: (-kv[1][0], kv[0]))[:top_k]
        dups = sorted(dup_best[i].items(), key=lambda kv: (-kv[1], kv[0]))[:top_k]
        for ref_id, (score, box) in logos:
            m = {"ref_id": ref_id, "brand": brand_of(ref_id), "kind": "logo", "score": _score(score),
                 "box": _box(box)}
            if m["brand"] in ev:
                q, line = ev[m["brand"]]
                m.update(text=line.text, text_match=round(q, 4))
            if ref_id in logo_inl:
                m["inliers"] = logo_inl[ref_id]
            res.matches.append(m)
            if score >= th_logo:
                res.flags.append({"type": "logo", "brand": m["brand"], "ref_id": ref_id, "score": m["score"],
                                  "threshold": th_logo, "box": m["box"],
                                  **{k: m[k] for k in ("text", "inliers") if k in m}})
        for ref_id, score in dups:
            m = {"ref_id": ref_id, "brand": brand_of(ref_id), "kind": "product", "score": _score(score)}
            if ref_id in dup_inliers[i]:
                m["inliers"] = dup_inliers[i][ref_id]
            res.matches.append(m)
            if score >= th_dup:
                res.flags.append({"type": "near_duplicate", "brand": m["brand"], "ref_id": ref_id,
                                  "score": m["score"], "threshold": th_dup,
                                  **({"inliers": m["inliers"]} if "inliers" in m else {})})
        res.flags.sort(key=lambda f: -f["score"])
        results.append(res)

    if timings is not None:
        total = time.perf_counter() - t_start
        timings["search"] = timings.get("search", 0.0) + t_search
        timings["verify"] = timings.get("verify", 0.0) + t_verify
        timings["decide"] = timings.get("decide", 0.0) + (total - t_search - t_verify)
    return results


def match_photo(photo: PhotoEmbedding, catalog: CatalogLike, *, top_k: int = DEFAULT_TOP_K,
                region_k: int = DEFAULT_REGION_K, verifier: Verifier | None = None) -> MatchResult:
    """Match one photo (see :func:`match_photos`)."""
    return match_photos([photo], catalog, top_k=top_k, region_k=region_k, verifier=verifier)[0]
