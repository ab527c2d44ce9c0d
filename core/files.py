"""Files written whole or not at all: a bundle on a USB stick, a key file, a CSV for Excel.

A stick pulled out, a full disk or Ctrl-C part-way must leave the file that
was there (or none), never half of a new one: the next reader would take a
half-written CSV for the whole export, and a half-written key file loses
the key.
"""

from __future__ import annotations

import io
import os
import tempfile
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import BinaryIO, Iterator, TextIO

from .errors import HemeiError, InvalidInput


class FileInUse(HemeiError):
    code = "file_in_use"
    status = 409


@contextmanager
def atomic_file(path: Path) -> Iterator[BinaryIO]:
    """A binary file that takes the place of ``path`` when the block ends without an error.

    Written beside the target (a rename within one folder is atomic, on
    Windows too) and flushed to the disk before the rename, so a stick
    pulled right after the command returns holds the whole file. On any
    failure the temporary file is removed and ``path`` left as it was.
    The file is readable by its owner only, from the first byte: keys, and
    exports that name people.
    """
    # A unique name (not the process id: Windows reuses ids, and a killed run's leftover would block).
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f"{path.name}.", suffix=".part")
    tmp = Path(name)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            out.flush()
            os.fsync(out.fileno())
        try:
            os.replace(tmp, path)
        except PermissionError:  # on Windows: the old file is open (a CSV in Excel)
            raise FileInUse(f"{path} cannot be replaced: close it if another program (Excel) has it open, and "
                            "check that this user may write there. Nothing was changed") from None
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


#: Files of a node home that an export must never replace: the node itself, and module keyrings.
_NODE_FILES = ("node.db", "node.db-wal", "node.db-shm", "node.db-journal", "node.key")


def export_target(out: str | Path, home: Path) -> Path:
    """Where an export may be written: a new file, or an older export, but never one of the node's own files.

    ``--out node.db`` or ``--out node.key`` typed in the home would otherwise
    replace the node itself with a CSV.
    """
    path = Path(out)
    if path.is_dir():
        raise InvalidInput(f"{out} is a folder: give a file name")
    if not path.absolute().parent.is_dir():
        raise InvalidInput(f"there is no folder {path.absolute().parent} (is the USB stick plugged in?)")
    # Whether or not it is there yet: SQLite deletes a journal it finds, and a module reads a *.keys file
    # written here as its damaged key file. In any node's home, not only this one's: a copy of another
    # office's home on the same PC (found in a walkthrough).
    name = path.name.rstrip(". ").casefold()  # Windows: NODE.DB-JOURNAL and node.db-journal. are that file
    folder = path.absolute().resolve().parent
    if (name in _NODE_FILES or name.endswith(".keys")) and (
            folder == Path(home).resolve() or (folder / "node.db").is_file()):
        what = "the node's own files" if folder == Path(home).resolve() else f"the files of the node in {folder}"
        raise InvalidInput(f"{out} is one of {what}: give another file name (it was left as it is)")
    return path


def text_export_target(out: str | Path, home: Path, begins: bytes) -> Path:
    """Where a text export may be written: as :func:`export_target`, replacing only an empty file or an
    earlier export of the same kind, which begins with ``begins`` (its byte order mark and first words).

    A bundle waiting on a shared USB stick, another node's database or a
    document under the name typed would otherwise be lost to a CSV (found in
    a walkthrough). An export saved again by another program (Excel's own
    CSV format) is not recognised, and is kept too.
    """
    path = export_target(out, home)
    if path.exists():
        with path.open("rb") as existing:
            start = existing.read(len(begins))
        if start and start != begins:
            raise InvalidInput(f"{out} is there already and is not an earlier export of this kind (it may be a "
                               "bundle, a database, a document, or an export saved again by another program): "
                               "give another file name (it was left as it is)")
    return path
