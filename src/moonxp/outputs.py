"""Output files written whole or not at all: a temporary file beside the target, then a rename.

A reader never sees half a file, an existing output is replaced atomically,
and a failure (disk full, no permission, Ctrl-C) leaves no temporary behind:
the temporary's name is recorded before the file is created, and removing it
can never hide the error that stopped the write. New files get the mode the
umask allows (0666 & ~umask), like any file a program creates.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import secrets
import struct
import tempfile
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Callable, Iterator

from .errors import OutputError

if TYPE_CHECKING:  # matplotlib loads only when a figure is drawn
    from matplotlib.figure import Figure

FILE_MODE = 0o666  # before the umask
_GETFLAGS = 0x80086601 if struct.calcsize("l") == 8 else 0x80046601  # Linux FS_IOC_GETFLAGS
_NO_RENAME = 0x00000010 | 0x00000020  # FS_IMMUTABLE_FL | FS_APPEND_FL: files there cannot be replaced


def output_directory(path: str | os.PathLike, option: str = "--out") -> Path:
    """Create `path` if needed and make sure files can be written and replaced there (before any long work).

    Raises
    ------
    OutputError
        A file is in the way, the directory cannot be created or written, or it is
        append-only or immutable (``chattr +a``/``+i``: a file there cannot be replaced).
    """
    directory = Path(path)
    if not str(path).strip():
        raise OutputError(f"{option} is empty: give a directory name")
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except FileExistsError as exc:
        raise OutputError(f"cannot use {str(directory)!r} as output directory: a file is in the way; "
                          f"choose another {option}") from exc
    except OSError as exc:
        raise OutputError(f"cannot write into {str(directory)!r}: {exc.strerror or exc}; "
                          f"choose another {option}") from exc
    _replaceable(directory, option)
    return directory


def writable(path: str | os.PathLike, option: str) -> None:
    """Make sure the file `path` (given as `option`) can be written, before any long work.

    Raises
    ------
    OutputError
        `path` is a directory, or its directory cannot be written or its files replaced.
    """
    directory = Path(path).parent
    if Path(path).is_dir():
        raise OutputError(f"cannot write {str(path)!r}: it is a directory; give {option} a file name")
    try:
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise OutputError(f"cannot write into {str(directory)!r}: {exc.strerror or exc}; choose another {option}") from exc
    _replaceable(directory, option)


def _replaceable(directory: Path, option: str) -> None:
    """Refuse an append-only or immutable directory, where a temporary file could be neither renamed nor removed."""
    if _flags(directory) & _NO_RENAME:
        raise OutputError(f"cannot replace files in {str(directory)!r}: it is append-only or immutable "
                          f"(lsattr -d); choose another {option}")


def _flags(directory: Path) -> int:
    """The directory's inode flags (Linux ``lsattr``), 0 where the system does not tell."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return 0
    try:
        return struct.unpack("l", fcntl.ioctl(fd, _GETFLAGS, struct.pack("l", 0)))[0]
    except OSError:
        return 0
    finally:
        os.close(fd)


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Hold an exclusive lock on `directory` (``flock`` on the directory itself: no lock file).

    Raises
    ------
    OutputError
        The directory cannot be opened (removed, or no permission).
    """
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError as exc:
        raise OutputError(f"cannot open {str(directory)!r}: {exc.strerror or exc}; choose another --out") from exc
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing releases the lock


def remove(path: Path) -> None:
    """Remove `path` if it is there.

    Raises
    ------
    OutputError
        It is there and cannot be removed.
    """
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot remove {str(path)!r}: {exc.strerror or exc}; remove it by hand") from exc


def _atomic(path: Path, write: Callable[[IO[bytes]], None], option: str, suffix: str = ".tmp") -> None:
    """Run `write` on a new temporary file beside `path` (its name ending in `suffix`), then rename it to
    `path`; `option` (the one that chose the path) is named in errors."""
    _replaceable(path.parent, option)
    temporary = path.parent / f".{path.name}.{secrets.token_hex(4)}{suffix}"
    try:
        # O_EXCL: never another writer's file. The name is known before the file exists,
        # so an interruption at any point below leaves it for the cleanup to remove.
        with open(temporary, "wb", opener=_exclusive) as handle:  # handle.name is the path (Pillow writes by path)
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):  # cleanup never masks the error that stopped the write
            temporary.unlink(missing_ok=True)
        if isinstance(exc, OSError):
            raise _unwritable(path, exc, option) from exc
        raise


def _exclusive(path: str, flags: int) -> int:
    return os.open(path, flags | os.O_EXCL, FILE_MODE)


def _unwritable(path: Path, exc: OSError, option: str) -> OutputError:
    fix = f"free disk space or choose another {option}" if exc.errno == errno.ENOSPC else f"choose another {option}"
    return OutputError(f"cannot write {str(path)!r}: {exc.strerror or exc}; it was left as it was; {fix}")


def write_json(path: Path, data: Any, option: str = "--out") -> None:
    """Write `data` as indented JSON (strict: no NaN), atomically; `option` is named in errors."""
    text = json.dumps(data, indent=2, allow_nan=False) + "\n"
    _atomic(path, lambda f: f.write(text.encode()), option)


def write_bytes(path: Path, data: bytes, option: str = "--out") -> None:
    """Write `data` as the whole file, atomically; `option` is named in errors."""
    _atomic(path, lambda f: f.write(data), option)


def write_figure(path: Path, figure: "Figure", dpi: int = 100, option: str = "--out") -> None:
    """Save a figure as PNG, atomically; `option` is named in errors."""
    _atomic(path, lambda f: figure.savefig(f, format="png", dpi=dpi), option)


def write_npz(path: Path, arrays: dict, option: str = "path") -> None:
    """Save host `arrays` (name -> NumPy array) uncompressed as .npz, atomically; `option` is named in errors."""
    import numpy as np
    _atomic(Path(path), lambda f: np.savez(f, **arrays), option)


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
    _atomic(Path(path), write, "--out", suffix=".gif")
