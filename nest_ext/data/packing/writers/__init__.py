"""Output formats of packing: :class:`ShardWriter` (the interface), ``FORMATS`` (name -> writer class,
filled by :func:`register_writer`) and the built-in formats: ``nemo``, ``lhotse-shar`` and ``wenet`` for
utterances (``pack_shards``), ``restoration-wav`` and ``restoration-tar`` for degraded/clean pairs
(``prepare_restoration_data``).

    >>> list(FORMATS)
    ['nemo', 'lhotse-shar', 'wenet', 'restoration-wav', 'restoration-tar']
"""
from nest_ext.data.packing.writers.base import (
    FORMATS, ShardWriter, TarShardWriter, add_tar_member, get_writer, register_writer,
)
from nest_ext.data.packing.writers.nemo import NemoShardWriter  # noqa: F401  (registers "nemo" first)
from nest_ext.data.packing.writers.lhotse_shar import SharShardWriter  # noqa: F401  (registers "lhotse-shar")
from nest_ext.data.packing.writers.wenet import WenetShardWriter  # noqa: F401  (registers "wenet")
from nest_ext.data.packing.writers.restoration import RestorationTarWriter, RestorationWavWriter  # noqa: F401

__all__ = ["FORMATS", "ShardWriter", "TarShardWriter", "add_tar_member", "get_writer", "register_writer",
           "NemoShardWriter", "RestorationTarWriter", "RestorationWavWriter", "SharShardWriter", "WenetShardWriter"]
