"""Exception types shared across ccu-vision. The CLI turns each into a one-line error."""

from __future__ import annotations


class CcuError(Exception):
    """Base class for every error ccu-vision reports to a user."""


class ImageError(CcuError):
    """An input image could not be read or decoded. Carries the path and the reason."""

    def __init__(self, path: object, reason: str) -> None:
        self.path = str(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ModelError(CcuError):
    """The embedding model file is missing, malformed or does not describe itself."""


class CatalogError(CcuError):
    """The reference catalog ("home") is missing, locked, tampered with or mismatched."""


class ModelMismatchError(CatalogError):
    """The catalog was built with a different embedding model than the one in use."""


class ManifestError(CcuError):
    """A CSV/JSONL manifest is malformed (missing columns, bad encoding, bad path)."""
