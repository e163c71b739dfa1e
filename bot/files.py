"""Files that hold patron data or secrets: readable by their owner only, written whole or not at all."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path


def write_private(path: Path, data: bytes | str) -> None:
    """Write `data` to `path` (mode 0600): into a new file beside it, synced to disk, then renamed over
    it, so a reader never sees half a file and a crash or a full disk leaves the old one (or none)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.partial")
    content = data.encode("utf-8") if isinstance(data, str) else data
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(partial, path)
    except BaseException:
        with contextlib.suppress(OSError):
            partial.unlink()
        raise
