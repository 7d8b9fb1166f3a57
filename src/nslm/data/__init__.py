"""Corpora, vocabulary, memory-mapped token cache and the streaming LightningDataModule."""

from nslm.data.datamodule import LanguageModelDataModule, TextFilesDataModule

__all__ = ["LanguageModelDataModule", "TextFilesDataModule"]
