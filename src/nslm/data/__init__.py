"""Corpora, vocabulary, memory-mapped token cache and the streaming LightningDataModule."""

from nslm.data.datamodule import LanguageModelDataModule, SyntheticDataModule, TextFilesDataModule

__all__ = ["LanguageModelDataModule", "SyntheticDataModule", "TextFilesDataModule"]
