"""Downloads are checksummed, extraction refuses path escapes, a missing corpus says how to fix it.

All URLs are file:// URLs or unroutable: no test touches the network."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from nslm.data.corpora import PennTreebank
from nslm.data.download import download, safe_extract
from nslm.errors import ChecksumError, CorpusNotFoundError, UnsafeArchiveError
from nslm.utils.hashing import sha256_file


def test_download_verifies_sha256(tmp_path):
    source = tmp_path / "src.txt"
    source.write_text("hello\n")
    dest = tmp_path / "out" / "file.txt"
    download([source.as_uri()], dest, sha256_file(source))
    assert dest.read_text() == "hello\n"


def test_checksum_mismatch_removes_the_file_and_names_both_hashes(tmp_path):
    source = tmp_path / "src.txt"
    source.write_text("tampered\n")
    dest = tmp_path / "out" / "file.txt"
    with pytest.raises(ChecksumError) as info:
        download([source.as_uri()], dest, "0" * 64)
    assert "0" * 64 in str(info.value) and sha256_file(source) in str(info.value)
    assert not dest.exists() and list(dest.parent.iterdir()) == []


def test_zip_slip_is_refused(tmp_path):
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("ok/file.txt", "fine")
        zf.writestr("../../escaped.txt", "gotcha")
    with pytest.raises(UnsafeArchiveError, match="outside"):
        safe_extract(archive, tmp_path / "target")
    assert not (tmp_path / "target").exists() and not (tmp_path.parent / "escaped.txt").exists()


def test_tar_absolute_path_is_refused(tmp_path):
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        data = b"x"
        info = tarfile.TarInfo("/tmp/nslm-escaped.txt")
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))
    with pytest.raises(UnsafeArchiveError):
        safe_extract(archive, tmp_path / "target")


def test_safe_zip_extracts(tmp_path):
    archive = tmp_path / "good.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("wikitext-2/wiki.train.tokens", "a b\n")
    out = safe_extract(archive, tmp_path / "target")
    assert (out / "wikitext-2" / "wiki.train.tokens").read_text() == "a b\n"


def test_missing_corpus_without_network_says_where_and_how(tmp_path, monkeypatch):
    monkeypatch.setattr(PennTreebank, "_BASE", (tmp_path / "no-such-mirror").as_uri() + "/")
    with pytest.raises(CorpusNotFoundError) as info:
        PennTreebank(tmp_path / "data").split_files()
    message = str(info.value)
    assert str(tmp_path / "data" / "ptb") in message
    assert "NSLM_DATA_DIR" in message and "data=synthetic" in message and "copy" in message
    assert "\n" not in message
