"""Downloads are checksummed, extraction refuses path escapes, a missing corpus says how to fix it.

All URLs are file:// URLs or unroutable: no test touches the network."""

from __future__ import annotations

import io
import tarfile
import zipfile

import pytest

from nslm.data import bundle
from nslm.data.corpora import PennTreebank
from nslm.data.download import download, safe_extract
from nslm.errors import ChecksumError, CorpusNotFoundError, UnsafeArchiveError
from nslm.utils.hashing import sha256_file
from tests.helpers import REPO


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
    monkeypatch.setattr(bundle, "BUNDLE_DIR", tmp_path / "no-bundle")  # an install without the bundled copy
    with pytest.raises(CorpusNotFoundError) as info:
        PennTreebank(tmp_path / "data").split_files()
    message = str(info.value)
    assert str(tmp_path / "data" / "ptb") in message
    assert "NSLM_DATA_DIR" in message and "data=synthetic" in message and "copy" in message
    assert "\n" not in message


# The canonical Mikolov PTB files (Zaremba et al.'s release), as in the shared copy's SHA256SUMS
PTB_SHA256 = {
    "ptb.train.txt": "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf",
    "ptb.valid.txt": "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2",
    "ptb.test.txt": "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0",
}


def _no_network(calls: list):
    def fail(urls, dest, sha256, timeout_s=60.0):
        calls.append(dest.name)
        raise ConnectionError(f"{urls[0]}: no network (test)")

    return fail


def test_bundled_and_shared_sha256sums_are_the_canonical_ones():
    lists = [bundle.BUNDLE_DIR / "ptb" / "SHA256SUMS", REPO.parent / "shared" / "data" / "ptb" / "SHA256SUMS"]
    for sums in (path for path in lists if path.is_file()):
        listed = dict(reversed(line.split()) for line in sums.read_text().splitlines() if line.strip())
        assert listed == PTB_SHA256, sums
    assert {spec.name: spec.sha256 for spec in PennTreebank.FILES.values()} == PTB_SHA256


def test_ptb_without_network_comes_from_the_bundled_copy(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr("nslm.data.corpora.download", _no_network(calls))
    files = PennTreebank(tmp_path / "data").split_files(fallback_dir=tmp_path / "cache" / "corpora")
    assert calls == ["ptb.train.txt"]  # the first failure stops: one timeout without network, not three
    assert {path.parent for path in files.values()} == {tmp_path / "data" / "ptb"}  # the data dir is writable
    assert {path.name: sha256_file(path) for path in files.values()} == PTB_SHA256
    assert sorted(p.name for p in (tmp_path / "data" / "ptb").iterdir()) == sorted(PTB_SHA256)  # no temporaries


def test_read_only_data_dir_gets_the_bundled_copy_in_the_cache(tmp_path, monkeypatch):
    calls: list[str] = []
    monkeypatch.setattr("nslm.data.corpora.download", _no_network(calls))
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("")  # nothing can be created under a file, whoever runs the test (root included)
    cache = tmp_path / "cache" / "corpora"
    files = PennTreebank(blocker / "data").split_files(fallback_dir=cache)
    assert {path.parent for path in files.values()} == {cache / "ptb"}
    assert {path.name: sha256_file(path) for path in files.values()} == PTB_SHA256
    # the next run finds the unpacked copy: no download attempt, no second unpacking
    again = PennTreebank(blocker / "data").split_files(fallback_dir=cache)
    assert again == files and calls == ["ptb.train.txt"]


def test_a_damaged_bundled_file_is_refused_and_leaves_nothing(tmp_path):
    source = bundle.bundled_file("ptb", "ptb.valid.txt")
    with pytest.raises(ChecksumError, match="bundled"):
        bundle.unpack(source, tmp_path / "ptb.valid.txt", "0" * 64)
    assert list(tmp_path.iterdir()) == []
