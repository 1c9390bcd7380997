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
from typing import IO, TYPE_CHECKING, Any, Callable

from .errors import OutputError

if TYPE_CHECKING:  # matplotlib loads only where a figure is drawn
    from matplotlib.figure import Figure

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


def writable(path: str | os.PathLike, option: str) -> None:
    """Make sure the file `path` (given as `option`) can be written, before any long work."""
    directory = Path(path).parent
    if Path(path).is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it is a directory; give {option} a file name")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write into {str(directory)!r}: {exc.strerror or exc}; choose another {option}") from None


def _atomic(path: Path, write: Callable[[IO[bytes]], None], suffix: str = ".tmp") -> None:
    """Run `write` on a temporary file beside `path` (named with `suffix`), then rename it to `path`."""
    try:
        handle = tempfile.NamedTemporaryFile(dir=path.parent, prefix=f".{path.name}.", suffix=suffix, delete=False)
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


def write_figure(path: Path, figure: "Figure", dpi: int = 100) -> None:
    """Save a figure as PNG, atomically."""
    _atomic(path, lambda f: figure.savefig(f, format="png", dpi=dpi))


def write_npz(path: Path, arrays: dict) -> None:
    """Save host `arrays` (name -> NumPy array) uncompressed as .npz, atomically."""
    import numpy as np
    _atomic(Path(path), lambda f: np.savez(f, **arrays))


def write_animation(path: Path, figure: "Figure", draw: Callable[[int], None], frames: int, fps: float,
                    dpi: int = 100) -> None:
    """Save `frames` frames of `figure` as a GIF (Pillow, through matplotlib), atomically; `draw(k)` draws frame k."""
    from matplotlib.animation import PillowWriter

    def write(handle: IO[bytes]) -> None:
        # Pillow picks the format from the name and writes the file by path: the temporary ends in .gif
        # (not `writer.saving`: its cleanup would write a GIF of no frames over the error of a failed frame)
        writer = PillowWriter(fps=fps)
        writer.setup(figure, handle.name, dpi)
        for k in range(frames):
            draw(k)
            writer.grab_frame()
        writer.finish()
    _atomic(Path(path), write, suffix=".gif")
