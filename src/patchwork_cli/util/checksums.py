"""SHA-256 of files: how extractors and imported features are identified, and how an image file's
content is recorded (its first 8 bytes as one int64: a change of content is what it must tell,
not an adversary)."""

import hashlib
from pathlib import Path


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def content_digest(data: bytes) -> int:
    """A file's content as one int64: the first 8 bytes of its SHA-256."""
    return int.from_bytes(hashlib.sha256(data).digest()[:8], "little", signed=True)


def file_digest(path: str) -> int | None:
    """content_digest of the file at `path`; None when it cannot be read."""
    try:
        with open(path, "rb") as handle:
            return content_digest(handle.read())
    except OSError:
        return None
