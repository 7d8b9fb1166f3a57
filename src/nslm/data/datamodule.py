"""The LightningDataModule: prepares a corpus once (download, vocabulary, token cache) and streams windows."""

from __future__ import annotations

import functools
import json
import logging
import math
import warnings
from pathlib import Path

import pytorch_lightning as pl
import torch

from nslm.data.corpora import Corpus, TextFiles
from nslm.data.synthetic import SourceSettings, SyntheticCorpus
from nslm.data.token_cache import TokenCache
from nslm.data.vocab import Vocabulary
from nslm.data.windows import StreamLayout, TokenWindowDataset, WindowLoader
from nslm.errors import ConfigError

log = logging.getLogger(__name__)

# Our IterableDataset's __len__ is exact with any num_workers (workers take interleaved windows).
warnings.filterwarnings("ignore", message=r".*IterableDataset.*has `__len__` defined.*")
# Resuming mid-epoch does continue at the checkpoint's window (train_dataloader skips the windows done),
# which Lightning cannot see, so its "your dataloader is not resumable" warning would be wrong here.
warnings.filterwarnings("ignore", message=r".*resuming from a checkpoint that ended before the epoch ended.*")


class LanguageModelDataModule(pl.LightningDataModule):
    """Streams `bptt`-token windows of `batch_size` parallel streams per rank (see `nslm.data.windows`).

    Training and evaluation windows are yielded in order, never shuffled: the model carries its LSTM state
    from one window to the next. The dataset is iterable, so Lightning does not wrap it in a
    DistributedSampler; each rank's slice comes from `StreamLayout` instead.
    """

    def __init__(
        self,
        corpus: Corpus,
        cache_dir: str | Path,
        batch_size: int = 20,
        eval_batch_size: int = 10,
        bptt: int = 35,
        max_vocab_size: int | None = None,
        min_freq: int = 1,
        num_workers: int = 0,
        pin_memory: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("batch_size", batch_size), ("eval_batch_size", eval_batch_size), ("bptt", bptt)):
            if value < 1:
                raise ConfigError(f"data.{name} must be a positive integer, got {value}")
        self.save_hyperparameters(ignore=["corpus"], logger=False)
        self.corpus = corpus
        self.cache_dir = Path(cache_dir)
        self._cache: TokenCache | None = None
        self._skip: tuple[int, int] | None = None  # (epoch, windows) a resumed run has already trained

    def prepare_data(self) -> None:
        self.cache  # noqa: B018 - builds the token cache (idempotent, safe across processes)

    @property
    def cache(self) -> TokenCache:
        if self._cache is None:
            self._cache = self.corpus.prepare(self.cache_dir, self.hparams.max_vocab_size, self.hparams.min_freq)
        return self._cache

    @property
    def vocab(self) -> Vocabulary:
        return self.cache.vocab

    def _rank_and_world(self) -> tuple[int, int]:
        return (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)

    def layout(self, split: str, batch_size: int) -> StreamLayout:
        rank, world = self._rank_and_world()
        return StreamLayout(len(self.cache.tokens(split)), batch_size, world_size=world, rank=rank)

    def dataset(self, split: str, batch_size: int) -> TokenWindowDataset:
        return TokenWindowDataset(self.cache.tokens(split), self.layout(split, batch_size), self.hparams.bptt)

    def _loader(self, split: str, batch_size: int) -> WindowLoader:
        return WindowLoader(
            self.dataset(split, batch_size),
            batch_size=None,  # each item already is a [bptt, batch] window
            num_workers=self.hparams.num_workers,
            pin_memory=self.hparams.pin_memory,
            # its own generator: creating an iterator then draws nothing from the global RNG, so a run
            # resumed from a checkpoint sees the same dropout masks and negatives as an uninterrupted one
            generator=torch.Generator().manual_seed(0),
        )

    def eval_streams_per_rank(self) -> int:
        """`eval_batch_size` counts streams over all ranks: evaluation then lays the split out the same
        way on 1 or N devices, and exact val/test ppl does not depend on the number of devices."""
        world = self._rank_and_world()[1]
        streams = self.hparams.eval_batch_size
        if streams % world:
            log.warning(
                "data.eval_batch_size=%d is not a multiple of the %d ranks: each evaluates %d streams, so val/test "
                "ppl is not comparable with runs on another number of devices",
                streams,
                world,
                math.ceil(streams / world),
            )
        return math.ceil(streams / world)

    def skip_train_windows(self, epoch: int, count: int) -> None:
        """Resuming: the first `count` training windows of `epoch` were trained before the checkpoint; the
        next train loader starts after them if the run resumes inside that epoch."""
        self._skip = (epoch, count)

    def train_dataloader(self) -> WindowLoader:
        loader = self._loader("train", self.hparams.batch_size)
        skip, self._skip = self._skip, None
        epoch = self.trainer.current_epoch if self.trainer else 0  # Lightning builds it after restoring loops
        if skip is not None and skip[0] == epoch and 0 < skip[1] < len(loader.dataset):
            loader.skip_windows(skip[1])
        return loader

    def val_dataloader(self) -> WindowLoader:
        return self._loader("valid", self.eval_streams_per_rank())

    def test_dataloader(self) -> WindowLoader:
        return self._loader("test", self.eval_streams_per_rank())


class TextFilesDataModule(LanguageModelDataModule):
    """`data=text_files`: the user's own three plain-text files (`data.train_path` etc.)."""

    def __init__(self, train_path: str, valid_path: str, test_path: str, **kwargs) -> None:
        super().__init__(corpus=TextFiles(train_path, valid_path, test_path), **kwargs)


class SyntheticDataModule(LanguageModelDataModule):
    """`data=synthetic`: a corpus generated from a known source, with its oracle perplexity."""

    def __init__(
        self,
        vocab_size: int = 10_000,
        num_classes: int = 64,
        classes_per_word: int = 2,
        zipf_exponent: float = 1.0,
        seed: int = 0,
        train_tokens: int = 2_000_000,
        valid_tokens: int = 100_000,
        test_tokens: int = 100_000,
        **kwargs,
    ) -> None:
        settings = SourceSettings(vocab_size, num_classes, classes_per_word, zipf_exponent, seed)
        split_tokens = {"train": train_tokens, "valid": valid_tokens, "test": test_tokens}
        super().__init__(corpus=SyntheticCorpus(settings, split_tokens), **kwargs)

    @functools.cached_property
    def oracle_ppl(self) -> dict[str, float]:
        """{"val": ppl, "test": ppl} of the true source on those splits (`oracle.json` beside the tokens)."""
        splits = json.loads((self.cache.directory / "oracle.json").read_text())["splits"]
        return {"val": splits["valid"]["ppl"], "test": splits["test"]["ppl"]}
