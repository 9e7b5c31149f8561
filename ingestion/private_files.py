"""Files that hold PHI or secrets (the warehouse, landed exports, the client's key) are the owner's alone."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

PRIVATE_UMASK = 0o077


@contextmanager
def private_umask() -> Iterator[None]:
    """Files created in the block are 0600 and folders 0700, whatever the caller's umask."""
    previous = os.umask(PRIVATE_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def tighten(path: Path) -> bool:
    """Take group and other permissions off an existing file or folder (one made before this policy, or by
    another tool); True when it had any. A path that does not exist, or is not ours to change, is left."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
        if not mode & 0o077:
            return False
        os.chmod(path, mode & ~0o077)
    except (FileNotFoundError, PermissionError):
        return False
    return True
