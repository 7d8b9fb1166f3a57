"""The LightningDataModule: prepares a corpus once (download, vocabulary, token cache) and streams windows."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytorch_lightning as pl
from torch.utils.data import DataLoader

from nslm.data.corpora import Corpus, TextFiles
from nslm.data.token_cache import TokenCache, prepare_token_cache
from nslm.data.vocab import Vocabulary
from nslm.data.windows import StreamLayout, TokenWindowDataset
from nslm.errors import ConfigError

# Our IterableDataset's __len__ is exact with any num_workers (workers take interleaved windows).
warnings.filterwarnings("ignore", message=r".*IterableDataset.*has `__len__` defined.*")


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

    def prepare_data(self) -> None:
        self.cache  # noqa: B018 - builds the token cache (idempotent, safe across processes)

    @property
    def cache(self) -> TokenCache:
        if self._cache is None:
            self._cache = prepare_token_cache(
                self.corpus.name,
                self.corpus.split_files(),
                self.cache_dir,
                max_vocab_size=self.hparams.max_vocab_size,
                min_freq=self.hparams.min_freq,
            )
        return self._cache

    @property
    def vocab(self) -> Vocabulary:
        return self.cache.vocab

    def layout(self, split: str, batch_size: int) -> StreamLayout:
        rank, world = (self.trainer.global_rank, self.trainer.world_size) if self.trainer else (0, 1)
        return StreamLayout(len(self.cache.tokens(split)), batch_size, world_size=world, rank=rank)

    def dataset(self, split: str, batch_size: int) -> TokenWindowDataset:
        return TokenWindowDataset(self.cache.tokens(split), self.layout(split, batch_size), self.hparams.bptt)

    def _loader(self, split: str, batch_size: int) -> DataLoader:
        return DataLoader(
            self.dataset(split, batch_size),
            batch_size=None,  # each item already is a [bptt, batch] window
            num_workers=self.hparams.num_workers,
            pin_memory=self.hparams.pin_memory,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", self.hparams.batch_size)

    def val_dataloader(self) -> DataLoader:
        return self._loader("valid", self.hparams.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", self.hparams.eval_batch_size)


class TextFilesDataModule(LanguageModelDataModule):
    """`data=text_files`: the user's own three plain-text files (`data.train_path` etc.)."""

    def __init__(self, train_path: str, valid_path: str, test_path: str, **kwargs) -> None:
        super().__init__(corpus=TextFiles(train_path, valid_path, test_path), **kwargs)
