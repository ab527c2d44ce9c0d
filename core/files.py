"""Files written whole or not at all: a bundle on a USB stick, a key file, a CSV for Excel.

A stick pulled out, a full disk or Ctrl-C part-way must leave the file that
was there (or none), never half of a new one: the next reader would take a
half-written CSV for the whole export, and a half-written key file loses
the key.
"""

from __future__ import annotations

import io
import os
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Iterator, TextIO

from .errors import InvalidInput


@contextmanager
def atomic_file(path: Path, *, private: bool = False) -> Iterator[BinaryIO]:
    """A binary file that takes the place of ``path`` when the block ends without an error.

    Written beside the target (a rename within one folder is atomic, on
    Windows too) and flushed to the disk before the rename, so a stick
    pulled right after the command returns holds the whole file. On any
    failure the temporary file is removed and ``path`` left as it was.
    ``private``: readable by the owner only from the first byte (keys).
    """
    tmp = path.with_name(f"{path.name}.{os.getpid()}.part")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    fd = os.open(tmp, flags, 0o600 if private else 0o666)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink()
        raise


@contextmanager
def text_writer(binary: BinaryIO, *, encoding: str = "utf-8", newline: str | None = None) -> Iterator[TextIO]:
    """Text written to ``binary`` in ``encoding`` whatever the console's code page; ``binary`` stays open.

    For standard output too: on a Chinese Windows PC ``sys.stdout`` encodes
    in GBK, which has no code for some characters of people's names, and
    a CSV piped to a file should be the same bytes as one written with
    ``--out``.
    """
    text = io.TextIOWrapper(binary, encoding=encoding, newline=newline, write_through=False)
    try:
        yield text
        text.flush()
    finally:
        text.detach()


def export_target(out: str | Path, home: Path) -> Path:
    """Where an export may be written: a new file, or an older export, but never a file of the node home.

    ``--out node.db`` or ``--out node.key`` typed in the home would otherwise
    replace the node itself with a CSV.
    """
    path = Path(out)
    if path.is_dir():
        raise InvalidInput(f"{out} is a folder: give a file name")
    if path.exists() and path.resolve().parent == Path(home).resolve():
        raise InvalidInput(f"{out} is one of the node's own files: give another file name (it was left as it is)")
    return path
