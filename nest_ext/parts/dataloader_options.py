"""DataLoader worker options read from a dataset config, shared by every nest_ext model.

NeMo's configs carry ``num_workers`` and ``pin_memory``; ``persistent_workers`` and ``prefetch_factor`` are
passed on when set (``+model.train_ds.prefetch_factor=4``). They only exist with worker processes, so they
are dropped when ``num_workers`` is 0 (the DataLoader would raise).

Example::

    >>> dataloader_kwargs({"num_workers": 2, "pin_memory": True, "prefetch_factor": 4})
    {'num_workers': 2, 'pin_memory': True, 'prefetch_factor': 4}
    >>> dataloader_kwargs({"num_workers": 0, "persistent_workers": True})
    {'num_workers': 0, 'pin_memory': False}
"""
from typing import Dict


def dataloader_kwargs(config) -> Dict:
    """``torch.utils.data.DataLoader`` keyword arguments for the worker options of ``config``."""
    num_workers = int(config.get("num_workers", 0) or 0)
    kwargs = dict(num_workers=num_workers, pin_memory=bool(config.get("pin_memory", False)))
    if num_workers > 0:
        if config.get("persistent_workers", None) is not None:
            kwargs["persistent_workers"] = bool(config["persistent_workers"])
        if config.get("prefetch_factor", None) is not None:
            kwargs["prefetch_factor"] = int(config["prefetch_factor"])
    return kwargs
