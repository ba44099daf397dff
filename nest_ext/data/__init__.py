"""nest_ext.data: datasets and data helpers.

NEST: :class:`AudioNoiseDataset`, :class:`TarredAudioNoiseDataset`, :class:`LhotseAudioNoiseDataset`,
:func:`get_audio_noise_dataset_from_config` (``nest_ext.data.ssl_dataset``) and :func:`load_noise_audio`,
:func:`sample_noise` (``nest_ext.data.noise_sampling``).

Separation: :class:`SeparationDataset` (manifests), :class:`TarredSeparationDataset`,
:class:`LhotseSeparationDataset` and :func:`get_separation_dataloader`, which picks one from a config.

Names are resolved lazily, so ``import nest_ext.data`` does not import NeMo.

Example::

    >>> from nest_ext.data import sample_noise
    >>> tuple(sample_noise([], 16000, 800)[0].shape)
    (800,)
"""
from nest_ext.parts.lazy_exports import lazy_exports

_EXPORTS = {
    "AudioNoiseBatch": "nest_ext.data.ssl_dataset",
    "AudioNoiseItem": "nest_ext.data.ssl_dataset",
    "AudioNoiseDataset": "nest_ext.data.ssl_dataset",
    "TarredAudioNoiseDataset": "nest_ext.data.ssl_dataset",
    "LhotseAudioNoiseDataset": "nest_ext.data.ssl_dataset",
    "get_audio_noise_dataset_from_config": "nest_ext.data.ssl_dataset",
    "get_collate_fn": "nest_ext.data.ssl_dataset",
    "load_noise_manifest": "nest_ext.data.ssl_dataset",
    "load_noise_audio": "nest_ext.data.noise_sampling",
    "sample_noise": "nest_ext.data.noise_sampling",
    "SeparationDataset": "nest_ext.data.separation_dataset",
    "TarredSeparationDataset": "nest_ext.data.tarred_separation_dataset",
    "LhotseSeparationDataset": "nest_ext.data.lhotse_separation_dataset",
    "get_separation_dataloader": "nest_ext.data.separation_data",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
