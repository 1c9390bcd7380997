"""Output files written whole or not at all: a temporary file beside the target, then a rename.

A reader never sees half a file, an existing output is replaced atomically,
and a failure (disk full, no permission, Ctrl-C) leaves no temporary behind.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from pathlib import Path
from typing import IO, Any, Callable

from matplotlib.figure import Figure

from .errors import OutputError

FILE_MODE = 0o644


def output_directory(path: str | os.PathLike) -> Path:
    """Create `path` if needed and make sure files can be written there (before any long work)."""
    directory = Path(path)
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except FileExistsError:
        raise OutputError(f"cannot use {str(directory)!r} as output directory: a file is in the way; "
                          f"choose another --out") from None
    except OSError as exc:
        raise OutputError(f"cannot write into {str(directory)!r}: {exc.strerror or exc}; "
                          f"choose another --out") from None
    return directory


def _atomic(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    try:
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False)
    except OSError as exc:
        raise _unwritable(path, exc) from None
    try:
        with handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(handle.name, FILE_MODE)
        os.replace(handle.name, path)
    except BaseException as exc:
        Path(handle.name).unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc) from None
        raise


def _unwritable(path: Path, exc: OSError) -> OutputError:
    fix = "free disk space or choose another --out" if exc.errno == errno.ENOSPC else "choose another --out"
    return OutputError(f"cannot write {str(path)!r}: {exc.strerror or exc}; nothing was written; {fix}")


def write_json(path: Path, data: Any) -> None:
    """Write `data` as indented JSON (strict: no NaN), atomically."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()))


def write_bytes(path: Path, data: bytes) -> None:
    """Write `data` as the whole file, atomically."""
    _atomic(path, lambda f: f.write(data))


def write_figure(path: Path, figure: Figure, dpi: int = 100) -> None:
    """Save a figure as PNG, atomically."""
    _atomic(path, lambda f: figure.savefig(f, format="png", dpi=dpi))
