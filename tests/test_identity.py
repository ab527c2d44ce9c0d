"""Node ids, keys and checkpoint signatures."""

from __future__ import annotations

import os
import stat
import sys

import pytest

from hemei.core.errors import ChainError, InvalidInput, NodeStateError
from hemei.core.identity import (node_id_from_public_key, parse_node_id, public_key_raw, read_private_key,
                                 sign_checkpoint, verify_checkpoint, write_private_key)


def test_node_id_is_grouped_base32_with_check_characters(tmp_path):
    key = write_private_key(tmp_path / "k")
    node_id = node_id_from_public_key(public_key_raw(key))
    groups = node_id.split("-")
    assert len(groups) == 8 and all(len(g) == 7 for g in groups)
    assert parse_node_id(node_id.lower().replace("-", "")) == node_id


def test_a_mistyped_node_id_is_caught_by_its_check_characters(tmp_path):
    node_id = node_id_from_public_key(public_key_raw(write_private_key(tmp_path / "k")))
    raw = node_id.replace("-", "")
    position = 3  # inside the first 13-character chunk
    wrong = raw[:position] + ("A" if raw[position] != "A" else "B") + raw[position + 1:]
    with pytest.raises(InvalidInput, match="check character"):
        parse_node_id(wrong)
    with pytest.raises(InvalidInput, match="not a node id"):
        parse_node_id("hello")


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_key_file_is_readable_only_by_its_owner(tmp_path):
    write_private_key(tmp_path / "k")
    assert stat.S_IMODE(os.stat(tmp_path / "k").st_mode) == 0o600


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_a_key_readable_by_others_is_refused(tmp_path):
    write_private_key(tmp_path / "k")
    os.chmod(tmp_path / "k", 0o644)
    with pytest.raises(NodeStateError, match="chmod 600"):
        read_private_key(tmp_path / "k")
    spaced = tmp_path / "府山 备份" / "node.key"  # the command it gives works when pasted, spaces and all
    spaced.parent.mkdir()
    write_private_key(spaced)
    os.chmod(spaced, 0o644)
    with pytest.raises(NodeStateError) as said:
        read_private_key(spaced)
    assert said.value.message.endswith(f"chmod 600 '{spaced}'")


def test_an_existing_key_is_never_overwritten(tmp_path):
    write_private_key(tmp_path / "k")
    before = (tmp_path / "k").read_bytes()
    with pytest.raises(FileExistsError):
        write_private_key(tmp_path / "k")
    assert (tmp_path / "k").read_bytes() == before


def test_checkpoint_signature_covers_id_size_and_head(tmp_path):
    key = write_private_key(tmp_path / "k")
    public = public_key_raw(key)
    node_id = node_id_from_public_key(public)
    head = bytes(range(32))
    sig = sign_checkpoint(key, node_id, 7, head)
    verify_checkpoint(public, node_id, 7, head, sig)
    with pytest.raises(ChainError, match="bad signature"):
        verify_checkpoint(public, node_id, 8, head, sig)
    with pytest.raises(ChainError, match="bad signature"):
        verify_checkpoint(public, node_id, 7, bytes(32), sig)
    other = public_key_raw(write_private_key(tmp_path / "k2"))
    with pytest.raises(ChainError, match="does not belong"):
        verify_checkpoint(other, node_id, 7, head, sig)


def test_a_damaged_key_file_gets_a_clear_error(tmp_path):
    path = tmp_path / "k"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, b"-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    os.close(fd)
    with pytest.raises(NodeStateError, match="damaged"):
        read_private_key(path)


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_the_database_is_owner_only_and_a_readable_one_is_refused(node):
    with node.writer("w") as w:
        w.insert("notes", {"title": "x"})
    for name in ("node.db", "node.db-wal"):
        assert stat.S_IMODE(os.stat(node.home / name).st_mode) == 0o600, name
    os.chmod(node.home / "node.db", 0o644)
    from hemei.core.node import Node
    with pytest.raises(NodeStateError, match="chmod 600"):
        Node.open(node.home)
