"""The reference catalog ("home"): metadata, stored embeddings, FAISS indices and a pinned model.

Layout of a home folder::

    catalog.db        SQLite (WAL): meta, refs, vectors -- the source of truth, stored embeddings included
    refs/<ref_id>.<ext>  a copy of every reference's bytes (content addressed; used by reports and reindex)
    index/logo.faiss, index/product.faiss  FAISS indices keyed by vec_id (a cache of the stored vectors)
    manifest.json     format, pinned model fingerprint, thresholds, index kind, each index file's
                      sha256 / vector count / DB generation, and a checksum of the manifest itself
    .lock             writers hold an exclusive ``fcntl.flock`` on it while they write

Durability and crash safety:

* Every write (add, remove, thresholds, reindex) is one SQLite transaction (``synchronous=FULL``)
  that also bumps a *generation* counter. A reference's bytes are written (tmp + fsync + rename)
  before its row is committed, so once :meth:`Catalog.add_reference` returns it survives kill -9.
* Index files are caches: written once per :meth:`Catalog.flush` / :meth:`Catalog.close` to a temp
  file and atomically renamed, then recorded in the manifest. On open, an index whose checksum,
  vector count, ids or generation disagrees with the DB is not trusted: it is caught up with the
  vectors added since (when nothing was removed) or rebuilt from the stored vectors.
* Writers serialize on the lock per write operation (embedding happens outside it), and first
  catch up with what other writers committed, so two ``ref add`` processes can run at once.
  Readers take no lock: they read one SQLite snapshot and rebuild in memory whatever is stale.
* A read-only or full disk surfaces as :class:`CatalogError` with a clear message; the failed
  operation's transaction is rolled back and its files removed, so the catalog is unchanged.

Brand names and ids never become file names: stored files are named ``<ref_id>.<ext>`` where the
ref_id is hex from the content's sha256 and ext comes from a fixed list.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import json
import logging
import os
import re
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import quote

import numpy as np

from . import index as ix
from .errors import CatalogError, ModelMismatchError
from .imageio import sniff_format

log = logging.getLogger(__name__)

FORMAT = "ccu-vision-home/1"
DB_NAME = "catalog.db"
MANIFEST_NAME = "manifest.json"
LOCK_NAME = ".lock"
REFS_DIR = "refs"
INDEX_DIR = "index"
REF_KINDS = ("logo", "product")
INDEX_KINDS = ("auto", *ix.KINDS)
REF_ID_LEN = 16
DEFAULT_LOCK_TIMEOUT = 300.0
MAX_BRAND_LEN = 200

_REF_ID = re.compile(rf"^[0-9a-f]{{{REF_ID_LEN}}}$")
_STORED_NAME = re.compile(rf"^[0-9a-f]{{{REF_ID_LEN}}}\.[a-z0-9]{{1,5}}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_EXTENSIONS = {".jpg", ".jpeg", ".png", ".webp", ".gif", ".svg", ".bmp", ".tif", ".tiff"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS refs(
    ref_id TEXT PRIMARY KEY,
    brand TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('logo', 'product')),
    source_path TEXT NOT NULL,
    sha256 TEXT NOT NULL UNIQUE,
    added_at TEXT NOT NULL,
    width INTEGER NOT NULL,
    height INTEGER NOT NULL,
    stored_name TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS refs_brand ON refs(brand COLLATE NOCASE);
CREATE TABLE IF NOT EXISTS vectors(
    vec_id INTEGER PRIMARY KEY AUTOINCREMENT,
    ref_id TEXT NOT NULL REFERENCES refs(ref_id),
    kind TEXT NOT NULL,
    vector BLOB NOT NULL
);
CREATE INDEX IF NOT EXISTS vectors_ref ON vectors(ref_id);
CREATE INDEX IF NOT EXISTS vectors_kind ON vectors(kind, vec_id);
"""


class DuplicateRefError(CatalogError):
    """The same image content is already registered under another brand or kind."""


@dataclass(frozen=True)
class RefRecord:
    """One registered reference image."""

    ref_id: str
    brand: str
    kind: str
    source_path: str
    sha256: str
    added_at: str
    width: int
    height: int
    stored_path: Path

    def to_dict(self) -> dict:
        """JSON-ready dict (``stored_path`` as a string)."""
        return {
            "ref_id": self.ref_id,
            "brand": self.brand,
            "kind": self.kind,
            "source_path": self.source_path,
            "sha256": self.sha256,
            "added_at": self.added_at,
            "width": self.width,
            "height": self.height,
            "stored_path": str(self.stored_path),
        }


# ----------------------------------------------------------------------------------- small helpers


def ref_id_for(data: bytes) -> str:
    """The ref_id of some content: the first 16 hex digits of its sha256."""
    return hashlib.sha256(data).hexdigest()[:REF_ID_LEN]


def is_ref_id(value: object) -> bool:
    """Whether ``value`` has the shape of a ref_id (never a path)."""
    return isinstance(value, str) and bool(_REF_ID.match(value))


_FORMAT_EXT = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp", "TIFF": ".tif"}


def _sniff_ext(data: bytes, source_path: str) -> str:
    fmt = sniff_format(data[:64])
    if fmt:
        return _FORMAT_EXT[fmt]
    ext = os.path.splitext(source_path)[1].lower()
    if ext in _EXTENSIONS:
        return ".jpg" if ext == ".jpeg" else ".tif" if ext == ".tiff" else ext
    if b"<svg" in data[:4096].lower():
        return ".svg"
    return ".bin"


def _storable_path(path: object) -> str:
    """``path`` as text SQLite can store: a non-UTF-8 file name keeps its odd bytes as ``\\xNN``."""
    p = str(path)
    try:
        p.encode("utf-8")
    except UnicodeEncodeError:
        try:
            p = p.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        except UnicodeEncodeError:  # a surrogate that is no escaped byte
            p = p.encode("utf-8", "backslashreplace").decode("utf-8")
    return p


def is_catalog_file(home: str | os.PathLike, path: str | os.PathLike) -> bool:
    """Whether ``path`` is (or would be) one of the catalog's own files in ``home``.

    Other files in the home folder (a results file, say) are not the catalog's and are allowed.
    """
    home_real, real = os.path.realpath(home), os.path.realpath(path)
    if real == home_real:
        return True
    rel = os.path.relpath(real, home_real)
    if rel == os.pardir or rel.startswith(os.pardir + os.sep):
        return False
    top = rel.split(os.sep, 1)[0]
    return top in (LOCK_NAME, REFS_DIR, INDEX_DIR) or top.startswith((DB_NAME, MANIFEST_NAME)) or (
        top.startswith(".") and top.endswith(".tmp"))


SQL_IN_CHUNK = 500  # keys per "IN (...)" list, well inside SQLite's bound-variable limit


def _in_chunks(keys: Sequence[Any]) -> Iterator[tuple[list[Any], str]]:
    """``keys`` in chunks of :data:`SQL_IN_CHUNK`, each with the ``?,?,...`` placeholders of its ``IN`` list."""
    for i in range(0, len(keys), SQL_IN_CHUNK):
        chunk = list(keys[i : i + SQL_IN_CHUNK])
        yield chunk, ",".join("?" * len(chunk))


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def _checksum(manifest: dict) -> str:
    return hashlib.sha256(_canonical({k: v for k, v in manifest.items() if k != "checksum"})).hexdigest()


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temp file in the same folder, fsync, rename, fsync the folder.

    Readers see the old or the new content, never a mix. The temp file is removed on failure.
    """
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _reason(e: BaseException) -> str:
    """A user-facing reason for a storage failure."""
    if isinstance(e, sqlite3.Error):
        msg = str(e)
        low = msg.lower()
        if "readonly" in low or "read-only" in low:
            return "the catalog database is read-only"
        if "full" in low:
            return "disk full (database or disk is full)"
        if "unable to open" in low:
            return "cannot open the catalog database (read-only or missing folder?)"
        if "locked" in low or "busy" in low:
            return "the catalog database is busy (locked by another process)"
        return f"database error: {msg}"
    if isinstance(e, OSError):
        names = {
            errno.ENOSPC: "disk full (no space left on device)",
            errno.EDQUOT: "disk quota exceeded",
            errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied",
            errno.EPERM: "operation not permitted",
        }
        return names.get(e.errno or 0) or e.strerror or str(e)
    return str(e) or type(e).__name__


# ---------------------------------------------------------------------------------------- the lock


class _HomeLock:
    """Exclusive ``flock`` on ``home/.lock`` (released by the kernel if the holder dies)."""

    def __init__(self, path: Path, timeout: float) -> None:
        self.path = path
        self.timeout = timeout
        self.fd: int | None = None
        self.warned = False

    def acquire(self) -> None:
        if self.fd is None:
            try:
                self.fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as e:
                raise CatalogError(
                    f"cannot write to catalog {self.path.parent}: {_reason(e)}; the catalog was left unchanged"
                ) from None
        deadline = time.monotonic() + self.timeout
        delay = 0.02
        while True:
            try:
                fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                pid = self._holder()
                if not self.warned:
                    self.warned = True
                    log.warning("waiting for catalog lock %s held by pid %s", self.path, pid or "?")
                if time.monotonic() >= deadline:
                    raise CatalogError(
                        f"catalog {self.path.parent} is locked by another writer (pid {pid or '?'}); "
                        f"gave up after {self.timeout:g} s"
                    ) from None
                time.sleep(delay)
                delay = min(0.25, delay * 1.5)
        with contextlib.suppress(OSError):
            os.ftruncate(self.fd, 0)
            os.pwrite(self.fd, f"{os.getpid()}\n".encode(), 0)

    def _holder(self) -> str:
        try:
            return os.pread(self.fd, 32, 0).decode("ascii", "replace").strip() if self.fd is not None else ""
        except OSError:
            return ""

    def release(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                fcntl.flock(self.fd, fcntl.LOCK_UN)

    def close(self) -> None:
        if self.fd is not None:
            with contextlib.suppress(OSError):
                os.close(self.fd)
            self.fd = None


# ------------------------------------------------------------------------------------- the catalog


class Catalog:
    """A reference catalog in a home folder. Use :meth:`Catalog.open`; close it (or use ``with``).

    >>> with Catalog.open(home, model=embedder.info) as cat:
    ...     ref_id, created = cat.add_reference(data, "nike.png", "Nike", "logo", vecs, 400, 300)
    ...     hits = cat.search("logo", queries, k=5)    # [[(ref_id, score, vec_id), ...], ...]
    """

    def __init__(self, home: Path, *, readonly: bool, lock_timeout: float, index_kind: str) -> None:
        self.home = home
        self.readonly = readonly
        self.index_kind = index_kind
        self._db_path = home / DB_NAME
        self._lock = _HomeLock(home / LOCK_NAME, lock_timeout)
        self._lock_depth = 0
        self._mutex = threading.RLock()
        self._db: sqlite3.Connection | None = None
        self._db_writable = not readonly
        self._model_fp: dict | None = None
        self._cleaned = False
        self._closed = False
        # in-memory state (one DB snapshot, kept up to date by this writer / by _sync)
        self._meta: dict[str, Any] = {}
        self._gen = 0
        self._remove_gen = 0
        self._refs: dict[str, RefRecord] = {}
        self._vec_ref: dict[int, str] = {}
        self._vec_kind: dict[int, str] = {}
        self._per_ref: dict[str, int] = {}
        self._max_per: dict[str, int] = {}
        self._file_sha: dict[str, str] = {}
        self._loaded_sha: dict[str, str] = {}
        self._max_vec_id = 0
        self._index: dict[str, Any] = {}
        self._dirty: set[str] = set()
        self._manifest: dict | None = None

    # ------------------------------------------------------------------------------- open/close

    @classmethod
    def open(
        cls,
        home: str | os.PathLike,
        model: Any | None = None,
        create: bool = True,
        readonly: bool = False,
        *,
        index_kind: str = "auto",
        lock_timeout: float | None = None,
    ) -> Catalog:
        """Open (or create) the catalog in ``home``.

        ``model`` (a :class:`ccu_vision.embedder.ModelInfo`) is pinned when the catalog is created
        and checked afterwards: a different fingerprint raises :class:`ModelMismatchError` (open
        with ``model=None`` to list, remove or :meth:`reindex`). ``readonly`` opens without ever
        writing (no lock; stale indices are rebuilt in memory). ``index_kind`` ("auto", "flat",
        "hnsw", "ivfpq") is recorded at creation; ``lock_timeout`` defaults to
        ``$CCU_LOCK_TIMEOUT`` or 300 s. Raises :class:`CatalogError` when the home is missing
        (and ``create`` is false or ``readonly``), tampered with, or unusable.
        """
        if index_kind not in INDEX_KINDS:
            raise ValueError(f"index_kind must be one of {', '.join(INDEX_KINDS)}, got {index_kind!r}")
        if lock_timeout is None:
            try:
                lock_timeout = float(os.environ.get("CCU_LOCK_TIMEOUT", "") or DEFAULT_LOCK_TIMEOUT)
            except ValueError:
                lock_timeout = DEFAULT_LOCK_TIMEOUT
        home = Path(os.path.abspath(Path(home).expanduser()))
        cat = cls(home, readonly=readonly, lock_timeout=lock_timeout, index_kind=index_kind)
        try:
            cat._open(model, create)
        except BaseException:
            cat._close_handles()
            raise
        return cat

    def _open(self, model: Any | None, create: bool) -> None:
        home = self.home
        if home.exists() and not home.is_dir():
            raise CatalogError(f"catalog home {home} is not a folder")
        if not self._db_path.exists():
            if (home / MANIFEST_NAME).exists():
                raise CatalogError(f"catalog {home} is damaged: {MANIFEST_NAME} exists but {DB_NAME} is missing")
            if self.readonly or not create:
                raise CatalogError(
                    f"no ccu-vision catalog in {home}; create one by adding references (`ccu-vision ref add`)"
                )
            if model is None:
                raise CatalogError(f"no catalog in {home} yet: a model is needed to create one")
            created = self._create(model)
        else:
            created = False
        manifest = self._read_manifest()
        self._connect()
        with self._read_txn() as db:
            self._meta = self._read_meta(db)
        if model is not None:
            self._model_fp = dict(model.fingerprint)
            self._check_model(self._model_fp)
        self._load(manifest, use_files=True)
        self._manifest = manifest
        if manifest is None or not self._manifest_matches(manifest):
            writable = not self.readonly and self._db_writable
            if not created:
                log.warning(
                    "catalog %s: manifest is missing or out of date%s", home,
                    "; rewriting it from the database" if writable else " (read-only: not rewritten)",
                )
            if writable:
                try:
                    with self._writing():
                        self._write_manifest()
                except CatalogError as e:
                    log.warning("%s", e)

    def _create(self, model: Any) -> bool:
        info = {
            "model_id": model.model_id,
            "sha256": getattr(model, "sha256", ""),
        }
        try:
            self.home.mkdir(parents=True, exist_ok=True)
            (self.home / REFS_DIR).mkdir(exist_ok=True)
            (self.home / INDEX_DIR).mkdir(exist_ok=True)
        except OSError as e:
            raise CatalogError(f"cannot create catalog {self.home}: {_reason(e)}") from None
        self._lock.acquire()
        try:
            if self._db_path.exists():  # another process created it while we waited
                return False
            tmp = self.home / f".{DB_NAME}.{os.getpid()}.tmp"
            with contextlib.suppress(OSError):
                tmp.unlink()
            try:
                db = sqlite3.connect(str(tmp), isolation_level=None)
                try:
                    db.execute("PRAGMA journal_mode=WAL")
                    db.execute("BEGIN IMMEDIATE")
                    for stmt in filter(str.strip, SCHEMA.split(";")):
                        db.execute(stmt)
                    meta = {
                        "format": FORMAT,
                        "created_at": _now(),
                        "generation": "0",
                        "remove_generation": "0",
                        "fingerprint": json.dumps(dict(model.fingerprint), sort_keys=True),
                        "model": json.dumps(info, sort_keys=True),
                        "thresholds": json.dumps(dict(model.thresholds), sort_keys=True),
                        "index_kind": self.index_kind,
                    }
                    db.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", sorted(meta.items()))
                    db.execute("COMMIT")
                    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                finally:
                    db.close()
                with open(tmp, "rb") as f:
                    os.fsync(f.fileno())
                os.replace(tmp, self._db_path)  # the catalog exists once its complete DB is in place
                _fsync_dir(self.home)
                self._meta = {
                    **meta, "generation": 0, "remove_generation": 0,
                    "fingerprint": dict(model.fingerprint), "model": info, "thresholds": dict(model.thresholds),
                }
                self._write_manifest({})
            except (OSError, sqlite3.Error) as e:
                for p in (tmp, Path(f"{tmp}-wal"), Path(f"{tmp}-shm")):
                    with contextlib.suppress(OSError):
                        p.unlink()
                raise CatalogError(f"cannot create catalog {self.home}: {_reason(e)}") from None
            log.info("created catalog %s pinned to model %s", self.home, model.model_id)
            return True
        finally:
            self._lock.release()

    def _connect(self) -> None:
        path = str(self._db_path)
        errors: list[str] = []
        if not self.readonly:
            try:
                db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
                db.execute("PRAGMA synchronous=FULL")
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                self._db = db
                return
            except sqlite3.Error as e:
                errors.append(_reason(e))
                with contextlib.suppress(Exception):
                    db.close()
            self._db_writable = False
        modes = ["mode=ro"]
        if not os.access(self.home, os.W_OK):  # nobody can write here: safe to read it as immutable
            modes.append("mode=ro&immutable=1")
        for params in modes:
            try:
                db = sqlite3.connect(
                    f"file:{quote(path)}?{params}", uri=True, isolation_level=None, check_same_thread=False, timeout=30
                )
                db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                self._db = db
                if not self.readonly:
                    log.warning("catalog %s is read-only (%s): opened for reading only", self.home, errors[0])
                return
            except sqlite3.Error as e:
                errors.append(_reason(e))
                with contextlib.suppress(Exception):
                    db.close()
        raise CatalogError(f"cannot open catalog {self.home}: {errors[-1]}")

    def close(self) -> None:
        """Write pending index files (once, for the whole session) and release everything."""
        if self._closed:
            return
        try:
            if not self.readonly and self._db_writable and self._needs_flush():
                try:
                    self.flush()
                except CatalogError as e:  # the DB holds everything; the index is rebuilt on next open
                    log.warning("%s (the index will be rebuilt from the database on next open)", e)
        finally:
            self._close_handles()

    def _close_handles(self) -> None:
        self._closed = True
        if self._db is not None:
            with contextlib.suppress(sqlite3.Error):
                self._db.close()
            self._db = None
        self._lock.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Catalog({str(self.home)!r}, refs={len(self._refs)}, generation={self._gen})"

    # --------------------------------------------------------------------------------- database

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            raise CatalogError(f"catalog {self.home} is closed")
        return self._db

    @contextlib.contextmanager
    def _read_txn(self) -> Iterator[sqlite3.Connection]:
        db = self.db
        db.execute("BEGIN")
        try:
            yield db
        finally:
            with contextlib.suppress(sqlite3.Error):
                db.execute("COMMIT")

    @contextlib.contextmanager
    def _write_txn(self, action: str) -> Iterator[sqlite3.Connection]:
        db = self.db
        try:
            db.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as e:
            raise CatalogError(f"cannot {action} in catalog {self.home}: {_reason(e)}") from None
        try:
            yield db
            db.execute("COMMIT")
        except BaseException as e:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if isinstance(e, sqlite3.Error | OSError):
                raise CatalogError(
                    f"cannot {action} in catalog {self.home}: {_reason(e)}; the catalog was left unchanged"
                ) from None
            raise

    def _read_meta(self, db: sqlite3.Connection) -> dict[str, Any]:
        try:
            raw = dict(db.execute("SELECT key, value FROM meta").fetchall())
        except sqlite3.DatabaseError as e:
            raise CatalogError(f"{self._db_path}: not a ccu-vision catalog database ({e})") from None
        if raw.get("format") != FORMAT:
            raise CatalogError(f"{self._db_path}: unsupported catalog format {raw.get('format')!r} (expected {FORMAT})")
        try:
            return {
                "format": raw["format"],
                "created_at": raw.get("created_at", ""),
                "generation": int(raw["generation"]),
                "remove_generation": int(raw["remove_generation"]),
                "fingerprint": json.loads(raw["fingerprint"]),
                "model": json.loads(raw.get("model", "{}")),
                "thresholds": json.loads(raw["thresholds"]),
                "index_kind": raw.get("index_kind", "auto"),
            }
        except (KeyError, ValueError) as e:
            raise CatalogError(f"{self._db_path}: damaged catalog metadata ({e})") from None

    def _record(self, row: Sequence[Any]) -> RefRecord:
        ref_id, brand, kind, source_path, sha, added_at, width, height, stored_name = row
        if not is_ref_id(ref_id) or not _STORED_NAME.match(str(stored_name)) or kind not in REF_KINDS:
            raise CatalogError(f"{self._db_path}: damaged reference row {ref_id!r}")
        return RefRecord(
            ref_id, brand, kind, source_path, sha, added_at, int(width), int(height),
            self.home / REFS_DIR / stored_name,
        )

    _REF_COLS = "ref_id, brand, kind, source_path, sha256, added_at, width, height, stored_name"

    def _decode_vectors(self, rows: Iterable[tuple[int, bytes]], dim: int) -> tuple[np.ndarray, np.ndarray]:
        rows = list(rows)
        ids = np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows))
        if not rows:
            return np.zeros((0, dim), np.float32), ids
        blob = b"".join(r[1] for r in rows)
        if len(blob) != len(rows) * dim * 4:
            raise CatalogError(f"{self._db_path}: stored vectors do not have the pinned dim {dim}")
        return np.frombuffer(blob, dtype=np.float32).reshape(len(rows), dim).copy(), ids

    # ------------------------------------------------------------------------- loading / indices

    @property
    def dim(self) -> int:
        """Embedding dim pinned by the catalog."""
        return int(self._meta["fingerprint"]["embed_dim"])

    def _load(self, manifest: dict | None, use_files: bool) -> None:
        """Load metadata and per-kind indices from one consistent DB snapshot."""
        with self._read_txn() as db:
            meta = self._read_meta(db)
            dim = int(meta["fingerprint"]["embed_dim"])
            refs = {r.ref_id: r for r in map(self._record, db.execute(f"SELECT {self._REF_COLS} FROM refs ORDER BY rowid"))}
            vec_ref: dict[int, str] = {}
            vec_kind: dict[int, str] = {}
            per_ref: dict[str, int] = {}
            for vid, rid, kind in db.execute("SELECT vec_id, ref_id, kind FROM vectors"):
                vec_ref[vid] = rid
                vec_kind[vid] = kind
                per_ref[rid] = per_ref.get(rid, 0) + 1
            index: dict[str, Any] = {}
            dirty: set[str] = set()
            self._loaded_sha = {}
            for kind in REF_KINDS:
                ids = np.sort(np.fromiter((v for v, k in vec_kind.items() if k == kind), dtype=np.int64))
                entry = ((manifest or {}).get("index") or {}).get("files", {}).get(kind) if use_files else None
                loaded, caught_up = self._load_index_file(db, kind, entry, meta, dim, ids) if entry else (None, False)
                if loaded is None:
                    if use_files and len(ids):
                        log.warning("catalog %s: rebuilding the %s index from %d stored vectors", self.home, kind, len(ids))
                    loaded = self._build_from_db(db, kind, dim, meta["index_kind"])
                if caught_up or kind not in self._loaded_sha:
                    dirty.add(kind)  # the file on disk is not what we hold: rewrite it at the next flush
                index[kind] = loaded
        self._meta = meta
        self._gen = meta["generation"]
        self._remove_gen = meta["remove_generation"]
        self._refs, self._vec_ref, self._vec_kind, self._per_ref = refs, vec_ref, vec_kind, per_ref
        self._max_per = {k: max((n for r, n in per_ref.items() if refs[r].kind == k), default=1) for k in REF_KINDS}
        self._max_vec_id = max(vec_ref, default=0)
        self._index = index
        self._dirty = dirty
        self._file_sha = {k: v for k, v in self._loaded_sha.items() if k not in dirty}
        self._check_consistency()

    def _load_index_file(
        self, db: sqlite3.Connection, kind: str, entry: Any, meta: dict, dim: int, ids: np.ndarray
    ) -> tuple[Any | None, bool]:
        """``(index, caught_up)``: the index file for ``kind`` if it can be trusted, with the vectors
        committed after it was written added (``caught_up``); ``(None, False)`` if not trusted."""
        path = self.home / INDEX_DIR / f"{kind}.faiss"
        try:
            sha, count, gen, max_id = entry["sha256"], int(entry["count"]), int(entry["generation"]), int(entry["max_vec_id"])
        except (KeyError, TypeError, ValueError):
            log.warning("catalog %s: manifest entry for the %s index is malformed", self.home, kind)
            return None, False
        try:
            data = path.read_bytes()
        except OSError as e:
            log.warning("catalog %s: cannot read %s (%s)", self.home, path, _reason(e))
            return None, False
        actual = hashlib.sha256(data).hexdigest()
        if actual != sha:
            # a writer may have replaced the file (and then the manifest) since we read the manifest
            try:
                fresh = ((self._read_manifest() or {}).get("index") or {}).get("files", {}).get(kind) or {}
                gen, max_id, count = int(fresh["generation"]), int(fresh["max_vec_id"]), int(fresh["count"])
                ok = fresh.get("sha256") == actual
            except (CatalogError, KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                log.warning("catalog %s: %s does not match its manifest checksum (tampered or interrupted write); "
                            "not trusting it", self.home, path)
                return None, False
            sha = actual
        if gen > meta["generation"] or meta["remove_generation"] > gen:
            log.info("catalog %s: %s index is from generation %d, database is at %d", self.home, kind, gen, meta["generation"])
            return None, False
        try:
            index = ix.deserialize(data)
            have = ix.index_ids(index)
        except Exception as e:  # noqa: BLE001 - any FAISS failure means: rebuild
            log.warning("catalog %s: cannot load %s (%s)", self.home, path, e)
            return None, False
        expected = ids[ids <= max_id]
        if index.d != dim or len(have) != count or not np.array_equal(have, expected):
            log.warning("catalog %s: %s disagrees with the database (ids or dim); not trusting it", self.home, path)
            return None, False
        newer = ids[ids > max_id]
        if len(newer):
            log.info("catalog %s: adding %d vectors committed after the %s index was written", self.home, len(newer), kind)
            vecs, vids = self._decode_vectors(
                db.execute("SELECT vec_id, vector FROM vectors WHERE kind = ? AND vec_id > ? ORDER BY vec_id", (kind, max_id)),
                dim,
            )
            ix.add(index, vecs, vids)
        self._tune(index)
        self._loaded_sha[kind] = sha
        return index, bool(len(newer))

    def _desired_kind(self, n: int, configured: str) -> str:
        kind = ix.choose_kind(n) if configured == "auto" else configured
        if kind == "ivfpq" and n < ix.IVFPQ_MIN_TRAIN:
            kind = "flat"
        return kind

    def _build_from_db(self, db: sqlite3.Connection, kind: str, dim: int, configured: str) -> Any:
        vecs, ids = self._decode_vectors(
            db.execute("SELECT vec_id, vector FROM vectors WHERE kind = ? ORDER BY vec_id", (kind,)), dim
        )
        index = ix.build_index(vecs, ids, self._desired_kind(len(ids), configured))
        self._tune(index)
        return index

    @staticmethod
    def _tune(index: Any) -> None:
        ix.set_search_params(
            index,
            ef_search=int(os.environ.get("CCU_EF_SEARCH", ix.DEFAULT_EF_SEARCH)),
            nprobe=int(os.environ.get("CCU_NPROBE", ix.DEFAULT_NPROBE)),
        )

    def _check_consistency(self) -> None:
        for kind, index in self._index.items():
            n = sum(1 for k in self._vec_kind.values() if k == kind)
            if index.ntotal != n:  # cannot happen unless a bug slipped in: fail loudly, never serve garbage
                raise CatalogError(f"catalog {self.home}: {kind} index holds {index.ntotal} vectors, database {n}")

    # ---------------------------------------------------------------------------------- manifest

    def _read_manifest(self) -> dict | None:
        path = self.home / MANIFEST_NAME
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise CatalogError(f"cannot read {path}: {_reason(e)}") from None
        try:
            manifest = json.loads(raw.decode("utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError("not a JSON object")
        except (UnicodeDecodeError, ValueError) as e:
            raise CatalogError(f"{path} is corrupt ({e}); refusing to use catalog {self.home}") from None
        if manifest.get("checksum") != _checksum(manifest):
            raise CatalogError(
                f"{path} failed its checksum (edited or tampered with); refusing to use catalog {self.home}"
            )
        if manifest.get("format") != FORMAT:
            raise CatalogError(f"{path}: unsupported catalog format {manifest.get('format')!r} (expected {FORMAT})")
        return manifest

    def _manifest_matches(self, manifest: dict) -> bool:
        m = self._meta
        return (
            manifest.get("model", {}).get("fingerprint") == m["fingerprint"]
            and manifest.get("thresholds") == m["thresholds"]
            and manifest.get("index", {}).get("kind") == m["index_kind"]
        )

    def _manifest_dict(self, files: dict[str, dict]) -> dict:
        m = self._meta
        manifest = {
            "format": FORMAT,
            "created_at": m["created_at"],
            "generation": self._gen,
            "model": {**m["model"], "fingerprint": m["fingerprint"]},
            "thresholds": m["thresholds"],
            "index": {"kind": m["index_kind"], "files": files},
        }
        manifest["checksum"] = _checksum(manifest)
        return manifest

    def _write_manifest(self, files: dict[str, dict] | None = None) -> None:
        """Rewrite manifest.json (under the lock). Keeps existing index entries unless given."""
        if files is None:
            try:
                old = self._read_manifest() or {}
            except CatalogError:
                old = {}
            files = (old.get("index") or {}).get("files") or {}
        manifest = self._manifest_dict(files)
        try:
            atomic_write(self.home / MANIFEST_NAME, json.dumps(manifest, indent=2, sort_keys=True).encode() + b"\n")
        except OSError as e:
            raise CatalogError(f"cannot write {self.home / MANIFEST_NAME}: {_reason(e)}") from None
        self._manifest = manifest

    # ------------------------------------------------------------------------------------ writing

    def _ensure_writable(self) -> None:
        if self._closed:
            raise CatalogError(f"catalog {self.home} is closed")
        if self.readonly:
            raise CatalogError(f"catalog {self.home} was opened read-only")
        if not self._db_writable:
            raise CatalogError(f"cannot write to catalog {self.home}: it is read-only; the catalog was left unchanged")

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        """Hold the home's write lock (re-entrant) and catch up with other writers first."""
        self._ensure_writable()
        with self._mutex:
            if self._lock_depth == 0:
                self._lock.acquire()
                try:
                    self._sync()
                    if not self._cleaned:
                        self._cleanup()
                except BaseException:
                    self._lock.release()
                    raise
            self._lock_depth += 1
            try:
                yield
            finally:
                self._lock_depth -= 1
                if self._lock_depth == 0:
                    self._lock.release()

    def _sync(self) -> None:
        """Catch up with what other writers committed since our snapshot (we hold the lock)."""
        with self._read_txn() as db:
            meta = self._read_meta(db)
            if meta["generation"] == self._gen:
                return
            full = meta["remove_generation"] > self._gen or meta["fingerprint"] != self._meta["fingerprint"]
            if not full:
                dim = int(meta["fingerprint"]["embed_dim"])
                rows = db.execute(
                    "SELECT vec_id, ref_id, kind, vector FROM vectors WHERE vec_id > ? ORDER BY vec_id", (self._max_vec_id,)
                ).fetchall()
                new_refs = sorted({r[1] for r in rows} - self._refs.keys())
                recs = []
                for chunk, marks in _in_chunks(new_refs):
                    recs += db.execute(f"SELECT {self._REF_COLS} FROM refs WHERE ref_id IN ({marks}) ORDER BY rowid", chunk).fetchall()
        if full:
            log.info("catalog %s changed under us (removal or reindex): reloading", self.home)
            self._load(None, use_files=False)
            if self._model_fp is not None:
                self._check_model(self._model_fp)
            return
        for rec in map(self._record, recs):
            self._refs[rec.ref_id] = rec
        for kind in REF_KINDS:
            sel = [r for r in rows if r[2] == kind]
            if sel:
                vecs, vids = self._decode_vectors(((r[0], r[3]) for r in sel), dim)
                ix.add(self._index[kind], vecs, vids)
                self._dirty.add(kind)
        for vid, rid, kind, _ in rows:
            self._vec_ref[vid] = rid
            self._vec_kind[vid] = kind
            self._per_ref[rid] = self._per_ref.get(rid, 0) + 1
            self._max_per[kind] = max(self._max_per.get(kind, 1), self._per_ref[rid])
            self._max_vec_id = max(self._max_vec_id, vid)
        self._meta = meta
        self._gen = meta["generation"]

    def _cleanup(self) -> None:
        """Remove leftovers of killed writers (temp files, copies never committed). Under the lock."""
        self._cleaned = True
        known = {r.stored_path.name for r in self._refs.values()}
        for folder in (self.home, self.home / REFS_DIR, self.home / INDEX_DIR):
            try:
                names = os.listdir(folder)
            except OSError:
                continue
            for name in names:
                stale = name.startswith(".") and name.endswith(".tmp")
                orphan = folder.name == REFS_DIR and folder != self.home and _STORED_NAME.match(name) and name not in known
                if stale or orphan:
                    log.info("catalog %s: removing leftover %s", self.home, folder / name)
                    with contextlib.suppress(OSError):
                        os.unlink(folder / name)

    def _bump(self, db: sqlite3.Connection, removal: bool = False) -> int:
        gen = self._gen + 1
        db.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(gen),))
        if removal:
            db.execute("UPDATE meta SET value = ? WHERE key = 'remove_generation'", (str(gen),))
        return gen

    def check_model(self, model: Any) -> None:
        """Raise :class:`ModelMismatchError` unless ``model`` (a ModelInfo or a fingerprint dict) is the
        model this catalog is pinned to."""
        self._check_model(dict(model if isinstance(model, dict) else model.fingerprint))

    def _check_model(self, fp: dict) -> None:
        pinned = self._meta["fingerprint"]
        if dict(fp) == pinned:
            return
        diffs = ", ".join(
            f"{k} {pinned.get(k)!r} vs {fp.get(k)!r}" for k in sorted(set(pinned) | set(fp)) if pinned.get(k) != fp.get(k)
        )
        raise ModelMismatchError(
            f"catalog {self.home} was built with model {pinned.get('model_id')!r} but the model in use is "
            f"{fp.get('model_id')!r} ({diffs}); run `ccu-vision reindex` to re-embed the stored references "
            "with the current model"
        )

    @staticmethod
    def _clean_brand(brand: object) -> str:
        if not isinstance(brand, str):
            raise ValueError(f"brand must be a string, got {type(brand).__name__}")
        b = " ".join(brand.split())
        if not b:
            raise ValueError("brand must not be empty")
        if len(b) > MAX_BRAND_LEN or _CONTROL.search(b):
            raise ValueError(f"invalid brand name {brand[:40]!r}: at most {MAX_BRAND_LEN} printable characters")
        return b

    def _clean_vectors(self, vectors: np.ndarray) -> np.ndarray:
        v = np.asarray(vectors, dtype=np.float32)
        if v.ndim == 1:
            v = v[None, :]
        if v.ndim != 2 or v.shape[1] != self.dim or len(v) == 0:
            raise ValueError(f"vectors must have shape [m>=1, {self.dim}], got {list(np.shape(vectors))}")
        if not np.isfinite(v).all():
            raise ValueError("vectors contain NaN or infinity")
        norms = np.linalg.norm(v, axis=1, keepdims=True)
        if (norms < 1e-6).any():
            raise ValueError("vectors must not be zero")
        return np.ascontiguousarray(v / norms, dtype=np.float32)

    def add_reference(
        self,
        data: bytes,
        source_path: str,
        brand: str,
        kind: str,
        vectors: np.ndarray,
        width: int,
        height: int,
    ) -> tuple[str, bool]:
        """Register one reference image and its embedding(s); return ``(ref_id, created)``.

        ``ref_id`` derives from the content's sha256: the same bytes again return the same id with
        ``created=False`` and store nothing (:class:`DuplicateRefError` if they were registered
        under another brand or kind). The bytes are copied into the home and the rows committed
        durably before this returns. Raises :class:`CatalogError` on storage failures (read-only
        home, disk full, lock timeout), leaving the catalog unchanged.
        """
        if kind not in REF_KINDS:
            raise ValueError(f"kind must be one of {', '.join(REF_KINDS)}, got {kind!r}")
        brand = self._clean_brand(brand)
        if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
            raise ValueError("reference data must be non-empty bytes")
        data = bytes(data)
        vecs = self._clean_vectors(vectors)
        width, height = int(width), int(height)
        if width <= 0 or height <= 0:
            raise ValueError(f"image size must be positive, got {width}x{height}")
        source_path = _storable_path(source_path)
        sha = hashlib.sha256(data).hexdigest()
        ref_id = sha[:REF_ID_LEN]
        with self._writing():
            if self._model_fp is not None:
                self._check_model(self._model_fp)
            existing = self._refs.get(ref_id)
            if existing is not None:
                return ref_id, self._existing(existing, sha, data, source_path, brand, kind)
            stored = self.home / REFS_DIR / f"{ref_id}{_sniff_ext(data, source_path)}"
            try:
                stored.parent.mkdir(exist_ok=True)
                atomic_write(stored, data)
            except OSError as e:
                raise CatalogError(
                    f"cannot add {source_path} to catalog {self.home}: {_reason(e)}; the catalog was left unchanged"
                ) from None
            rec = RefRecord(ref_id, brand, kind, source_path, sha, _now(), width, height, stored)
            try:
                with self._write_txn(f"add {source_path}") as db:
                    db.execute(
                        f"INSERT INTO refs({self._REF_COLS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                        (ref_id, brand, kind, source_path, sha, rec.added_at, width, height, stored.name),
                    )
                    vids = [
                        db.execute(
                            "INSERT INTO vectors(ref_id, kind, vector) VALUES (?, ?, ?)", (ref_id, kind, v.tobytes())
                        ).lastrowid
                        for v in vecs
                    ]
                    gen = self._bump(db)
            except BaseException:
                with contextlib.suppress(OSError):
                    stored.unlink()
                raise
            self._gen = self._meta["generation"] = gen
            self._refs[ref_id] = rec
            for vid in vids:
                self._vec_ref[vid] = ref_id
                self._vec_kind[vid] = kind
                self._max_vec_id = max(self._max_vec_id, vid)
            self._per_ref[ref_id] = len(vids)
            self._max_per[kind] = max(self._max_per.get(kind, 1), len(vids))
            ix.add(self._index[kind], vecs, np.asarray(vids, dtype=np.int64))
            self._dirty.add(kind)
        return ref_id, True

    def _existing(self, rec: RefRecord, sha: str, data: bytes, source_path: str, brand: str, kind: str) -> bool:
        if rec.sha256 != sha:
            raise CatalogError(f"{source_path}: ref_id {rec.ref_id} collides with a different stored image")
        if rec.brand != brand or rec.kind != kind:
            raise DuplicateRefError(
                f"{source_path}: the same image is already registered as {rec.ref_id} "
                f"(brand {rec.brand!r}, kind {rec.kind}); remove it first to register it as {brand!r} {kind}"
            )
        if not rec.stored_path.is_file():  # repair a deleted stored copy while we have the bytes
            with contextlib.suppress(OSError):
                atomic_write(rec.stored_path, data)
        return False

    def remove(self, ref_ids: Iterable[str]) -> int:
        """Remove references (unknown ids are ignored); return how many were removed."""
        wanted = [r for r in dict.fromkeys(ref_ids) if is_ref_id(r)]
        with self._writing():
            gone = [self._refs[r] for r in wanted if r in self._refs]
            if not gone:
                return 0
            ids = [r.ref_id for r in gone]
            with self._write_txn("remove references") as db:
                for chunk, marks in _in_chunks(ids):
                    db.execute(f"DELETE FROM vectors WHERE ref_id IN ({marks})", chunk)
                    db.execute(f"DELETE FROM refs WHERE ref_id IN ({marks})", chunk)
                gen = self._bump(db, removal=True)
            self._gen = self._remove_gen = gen
            self._meta["generation"] = self._meta["remove_generation"] = gen
            dropped = set(ids)
            by_kind: dict[str, list[int]] = {k: [] for k in REF_KINDS}
            for vid, rid in list(self._vec_ref.items()):
                if rid in dropped:
                    by_kind[self._vec_kind.pop(vid)].append(vid)
                    del self._vec_ref[vid]
            for kind, vids in by_kind.items():
                if vids:
                    self._index[kind] = ix.remove_ids(self._index[kind], vids)
                    self._dirty.add(kind)
            for rec in gone:
                del self._refs[rec.ref_id]
                self._per_ref.pop(rec.ref_id, None)
                with contextlib.suppress(OSError):
                    rec.stored_path.unlink()
        return len(gone)

    def set_thresholds(self, thresholds: dict[str, float]) -> None:
        """Update (merge) the calibrated thresholds pinned in the catalog."""
        clean: dict[str, float] = {}
        for k, v in dict(thresholds).items():
            if not isinstance(k, str) or not isinstance(v, int | float) or isinstance(v, bool) or not np.isfinite(v):
                raise ValueError(f"threshold {k!r} must be a finite number, got {v!r}")
            clean[k] = float(v)
        with self._writing():
            new = {**self._meta["thresholds"], **clean}
            with self._write_txn("set thresholds") as db:
                db.execute("UPDATE meta SET value = ? WHERE key = 'thresholds'", (json.dumps(new, sort_keys=True),))
                gen = self._bump(db)
            self._gen = self._meta["generation"] = gen
            self._meta["thresholds"] = new
            self._write_manifest()

    def _needs_flush(self) -> bool:
        return bool(self._dirty) or self._manifest is None or self._manifest.get("generation") != self._gen

    def flush(self) -> None:
        """Write changed index files (temp file + atomic rename) and the manifest recording them."""
        with self._writing():
            files: dict[str, dict] = {}
            try:
                old = (self._read_manifest() or {}).get("index", {}).get("files", {})
            except CatalogError:
                old = {}
            for kind in REF_KINDS:
                index = self._index[kind]
                n = index.ntotal
                want = self._desired_kind(n, self._meta["index_kind"])
                if ix.index_kind(index) != want:
                    log.info("catalog %s: switching the %s index to %s for %d vectors", self.home, kind, want, n)
                    with self._read_txn() as db:
                        index = self._index[kind] = self._build_from_db(db, kind, self.dim, self._meta["index_kind"])
                    self._dirty.add(kind)
                ids = ix.index_ids(index)
                entry = old.get(kind)
                if (
                    kind not in self._dirty
                    and isinstance(entry, dict)
                    and entry.get("count") == n
                    and entry.get("sha256") == self._file_sha.get(kind)
                ):
                    files[kind] = {**entry, "generation": self._gen}
                    continue
                data = ix.serialize(index)
                path = self.home / INDEX_DIR / f"{kind}.faiss"
                try:
                    path.parent.mkdir(exist_ok=True)
                    atomic_write(path, data)
                except OSError as e:
                    raise CatalogError(f"cannot write {path}: {_reason(e)}") from None
                self._file_sha[kind] = hashlib.sha256(data).hexdigest()
                files[kind] = {
                    "file": f"{INDEX_DIR}/{kind}.faiss",
                    "kind": ix.index_kind(index),
                    "sha256": self._file_sha[kind],
                    "count": int(n),
                    "max_vec_id": int(ids[-1]) if len(ids) else 0,
                    "generation": self._gen,
                    "dim": self.dim,
                }
            self._write_manifest(files)
            self._dirty.clear()

    # ------------------------------------------------------------------------------------ reindex

    def reindex(self, embedder: Any, batch_size: int = 16) -> int:
        """Re-embed every stored reference with ``embedder`` and pin its model (and thresholds).

        Everything is embedded first; then all vectors are swapped in one transaction, so a failure
        or kill leaves the catalog on the old model. Returns the number of references re-embedded.
        """
        from .imageio import load_image_bytes
        from .references import embed_images

        info = embedder.info
        with self._writing():
            refs = list(self._refs.values())
            new_rows: list[tuple[str, str, bytes]] = []
            problems: list[str] = []
            for kind in REF_KINDS:
                todo = [r for r in refs if r.kind == kind]
                for i in range(0, len(todo), batch_size):
                    batch, images = [], []
                    for rec in todo[i : i + batch_size]:
                        try:
                            data = rec.stored_path.read_bytes()
                            if hashlib.sha256(data).hexdigest() != rec.sha256:
                                raise CatalogError("stored copy does not match its checksum")
                            images.append(load_image_bytes(data, rec.source_path, keep_alpha=kind == "logo"))
                            batch.append(rec)
                        except Exception as e:  # noqa: BLE001 - collected and reported below
                            problems.append(f"{rec.ref_id} ({rec.source_path}): {getattr(e, 'reason', None) or _reason(e)}")
                    for rec, vecs in zip(batch, embed_images(embedder, kind, images), strict=True):
                        v = np.asarray(vecs, dtype=np.float32)
                        v = v / np.linalg.norm(v, axis=1, keepdims=True)
                        new_rows += [(rec.ref_id, kind, row.tobytes()) for row in v]
            if problems:
                raise CatalogError(
                    f"cannot reindex catalog {self.home}: {len(problems)} stored reference(s) could not be re-embedded: "
                    + "; ".join(problems[:10])
                    + " -- remove them with `ccu-vision ref remove` and run reindex again; the catalog was left unchanged"
                )
            fp = dict(info.fingerprint)
            with self._write_txn("reindex") as db:
                db.execute("DELETE FROM vectors")
                db.executemany("INSERT INTO vectors(ref_id, kind, vector) VALUES (?, ?, ?)", new_rows)
                for key, value in (
                    ("fingerprint", json.dumps(fp, sort_keys=True)),
                    ("model", json.dumps({"model_id": info.model_id, "sha256": getattr(info, "sha256", "")}, sort_keys=True)),
                    ("thresholds", json.dumps(dict(info.thresholds), sort_keys=True)),
                ):
                    db.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))
                self._bump(db, removal=True)
            self._load(None, use_files=False)
            self._model_fp = fp
            self.flush()
            log.info("catalog %s re-embedded %d references with model %s", self.home, len(refs), info.model_id)
        return len(refs)

    # ------------------------------------------------------------------------------------ reading

    @property
    def thresholds(self) -> dict:
        """The calibrated thresholds pinned in the catalog (``logo``, ``near_duplicate``, ...)."""
        return dict(self._meta["thresholds"])

    @property
    def model_fingerprint(self) -> dict:
        """The embedding model fingerprint the catalog is pinned to."""
        return dict(self._meta["fingerprint"])

    @property
    def model_id(self) -> str:
        return str(self._meta["fingerprint"].get("model_id", ""))

    @property
    def generation(self) -> int:
        """The database generation this catalog's snapshot reflects."""
        return self._gen

    def get(self, ref_id: str) -> RefRecord | None:
        """The reference with ``ref_id``, or None."""
        return self._refs.get(ref_id) if is_ref_id(ref_id) else None

    def list_refs(self, brand: str | None = None) -> list[RefRecord]:
        """All references in insertion order, optionally of one brand (case-insensitive)."""
        if brand is None:
            return list(self._refs.values())
        b = " ".join(brand.split()).casefold()
        return [r for r in self._refs.values() if r.brand.casefold() == b]

    def count(self, kind: str | None = None) -> int:
        """Number of references (of one kind)."""
        if kind is None:
            return len(self._refs)
        return sum(1 for r in self._refs.values() if r.kind == kind)

    def ref_image_path(self, ref_id: str) -> Path:
        """The stored copy of a reference's bytes inside the home."""
        rec = self.get(ref_id)
        if rec is None:
            raise CatalogError(f"unknown reference {ref_id!r} in catalog {self.home}")
        return rec.stored_path

    def search(self, kind: str, queries: np.ndarray, k: int) -> list[list[tuple[str, float, int]]]:
        """Per query, up to ``k`` references as ``(ref_id, score, vec_id)``, best score per reference,
        sorted by descending score (cosine similarity)."""
        if kind not in REF_KINDS:
            raise ValueError(f"kind must be one of {', '.join(REF_KINDS)}, got {kind!r}")
        q = np.asarray(queries)
        if q.ndim != 2 or q.shape[1] != self.dim:
            raise ValueError(f"queries must have shape [n, {self.dim}], got {list(q.shape)}")
        q = np.ascontiguousarray(q, dtype=np.float32)
        if k <= 0:
            raise ValueError(f"k must be positive, got {k}")
        index = self._index[kind]
        if index.ntotal == 0 or len(q) == 0:
            return [[] for _ in range(len(q))]
        kk = min(k * max(1, self._max_per.get(kind, 1)), index.ntotal)
        rerank = self._lookup_vectors if ix.index_kind(index) == "ivfpq" else None
        scores, ids = ix.search(index, q, kk, rerank=rerank)
        out: list[list[tuple[str, float, int]]] = []
        for srow, irow in zip(scores, ids, strict=True):
            seen: set[str] = set()
            hits: list[tuple[str, float, int]] = []
            for s, vid in zip(srow.tolist(), irow.tolist(), strict=True):
                if vid < 0:
                    break
                rid = self._vec_ref.get(vid)
                if rid is None or rid in seen:
                    continue
                seen.add(rid)
                hits.append((rid, float(s), int(vid)))
                if len(hits) == k:
                    break
            out.append(hits)
        return out

    def _lookup_vectors(self, ids: np.ndarray) -> np.ndarray:
        """Exact stored vectors for ``ids`` (sorted unique), for re-ranking IVF-PQ candidates."""
        found: dict[int, bytes] = {}
        with self._mutex:
            for chunk, marks in _in_chunks([int(i) for i in ids]):
                found.update(self.db.execute(f"SELECT vec_id, vector FROM vectors WHERE vec_id IN ({marks})", chunk))
        zero = np.zeros(self.dim, np.float32).tobytes()  # removed meanwhile: scores 0, sorts last
        return np.frombuffer(b"".join(found.get(int(i), zero) for i in ids), np.float32).reshape(len(ids), self.dim)

    def ref_vectors(self, ref_ids: Sequence[str]) -> dict[str, np.ndarray]:
        """The stored vectors [views, D] of each of ``ref_ids`` (missing ids are left out): what exact
        re-scoring of a few candidates needs (:mod:`ccu_vision.matcher`)."""
        ids = list(dict.fromkeys(ref_ids))
        rows: dict[str, list[bytes]] = {}
        with self._mutex, self._read_txn() as db:
            for chunk, marks in _in_chunks(ids):
                for rid, vec in db.execute(f"SELECT ref_id, vector FROM vectors WHERE ref_id IN ({marks}) ORDER BY vec_id",
                                           chunk):
                    rows.setdefault(rid, []).append(vec)
        return {rid: np.frombuffer(b"".join(v), np.float32).reshape(len(v), self.dim) for rid, v in rows.items()}

    def vectors(self, kind: str) -> tuple[np.ndarray, np.ndarray]:
        """All stored vectors of ``kind`` from the database: ``(vectors [n, D], vec_ids [n])``."""
        with self._mutex, self._read_txn() as db:
            return self._decode_vectors(
                db.execute("SELECT vec_id, vector FROM vectors WHERE kind = ? ORDER BY vec_id", (kind,)), self.dim
            )

    def check(self) -> list[str]:
        """Consistency problems between the database, the in-memory indices and the stored copies
        (empty when all is well): every indexed id is a stored vector and vice versa, every
        reference has vectors and an intact stored copy."""
        problems: list[str] = []
        with self._mutex, self._read_txn() as db:
            rows = db.execute("SELECT vec_id, ref_id, kind FROM vectors").fetchall()
            refs = {r.ref_id: r for r in map(self._record, db.execute(f"SELECT {self._REF_COLS} FROM refs"))}
        for kind in REF_KINDS:
            db_ids = np.sort(np.asarray([r[0] for r in rows if r[2] == kind], dtype=np.int64))
            idx_ids = ix.index_ids(self._index[kind])
            if not np.array_equal(db_ids, idx_ids):
                extra = np.setdiff1d(idx_ids, db_ids)[:5].tolist()
                missing = np.setdiff1d(db_ids, idx_ids)[:5].tolist()
                problems.append(f"{kind} index disagrees with the database: extra ids {extra}, missing ids {missing}")
        with_vecs = {r[1] for r in rows}
        for vid, rid, _ in rows:
            if rid not in refs:
                problems.append(f"vector {vid} belongs to unknown reference {rid}")
        for rid, rec in refs.items():
            if rid not in with_vecs:
                problems.append(f"reference {rid} has no vectors")
            try:
                if hashlib.sha256(rec.stored_path.read_bytes()).hexdigest() != rec.sha256:
                    problems.append(f"stored copy of {rid} does not match its checksum")
            except OSError as e:
                problems.append(f"stored copy of {rid} is unreadable: {_reason(e)}")
        return problems
