"""Output formats of packing: :class:`ShardWriter` (the interface), ``FORMATS`` (name -> writer class,
filled by :func:`register_writer`) and the built-in formats ``nemo``, ``lhotse-shar`` and ``wenet``.

    >>> list(FORMATS)
    ['nemo', 'lhotse-shar', 'wenet']
"""
from nest_ext.data.packing.writers.base import (
    FORMATS, ShardWriter, TarShardWriter, add_tar_member, get_writer, register_writer,
)
from nest_ext.data.packing.writers.nemo import NemoShardWriter  # noqa: F401  (registers "nemo" first)
from nest_ext.data.packing.writers.lhotse_shar import SharShardWriter  # noqa: F401  (registers "lhotse-shar")
from nest_ext.data.packing.writers.wenet import WenetShardWriter  # noqa: F401  (registers "wenet")

__all__ = ["FORMATS", "ShardWriter", "TarShardWriter", "add_tar_member", "get_writer", "register_writer",
           "NemoShardWriter", "SharShardWriter", "WenetShardWriter"]
