"""NeMo's GAN discriminators, run one by one so that their scores can be reported per discriminator.

The restoration GAN's ``discriminator`` is any NeMo discriminator: the audio-codec ones
(``nemo.collections.tts.modules.audio_codec_modules``: ``MultiPeriodDiscriminator``,
``MultiResolutionDiscriminatorSTFT``, or several of them in its ``Discriminator`` wrapper) or the HiFi-GAN ones
(``nemo.collections.tts.modules.hifigan_modules``: ``MultiPeriodDiscriminator``, ``MultiScaleDiscriminator``,
whose ``debug=True`` variants are tiny). Both families return per sub-discriminator scores and feature maps;
:func:`discriminate` gives them one layout (scores ``[B, C, T']``) for NeMo's audio-codec GAN losses.

Example:
    >>> import torch
    >>> from nemo.collections.tts.modules.audio_codec_modules import Discriminator, MultiResolutionDiscriminatorSTFT
    >>> from nemo.collections.tts.modules.hifigan_modules import MultiPeriodDiscriminator
    >>> disc = Discriminator([MultiPeriodDiscriminator(debug=True),
    ...                       MultiResolutionDiscriminatorSTFT(resolutions=[[128, 32, 128]], stft_bands=[[0.0, 1.0]])])
    >>> [name for name, _ in named_discriminators(disc)]
    ['mpd', 'mrsd']
    >>> real, fake = torch.randn(2, 1600), torch.randn(2, 1600)
    >>> s_real, s_fake, f_real, f_fake = discriminate(named_discriminators(disc)[0][1], real, fake)
    >>> len(s_real), s_real[0].dim(), len(f_real) == len(s_real)
    (5, 3, True)
"""
from typing import List, Tuple

import torch
from torch import nn

__all__ = ["discriminate", "named_discriminators"]

_SHORT_NAMES = {
    "MultiPeriodDiscriminator": "mpd",
    "MultiResolutionDiscriminatorSTFT": "mrsd",
    "MultiScaleDiscriminator": "msd",
}


def named_discriminators(discriminator: nn.Module) -> List[Tuple[str, nn.Module]]:
    """The discriminators inside NeMo's ``Discriminator`` wrapper (or the one given), with short unique names."""
    from nemo.collections.tts.modules.audio_codec_modules import Discriminator

    parts = list(discriminator.discriminators) if isinstance(discriminator, Discriminator) else [discriminator]
    names = [_SHORT_NAMES.get(type(p).__name__, type(p).__name__.lower()) for p in parts]
    return [(name if names.count(name) == 1 else f"{name}{i}", part) for i, (name, part) in enumerate(zip(names, parts))]


def discriminate(part: nn.Module, real: torch.Tensor, fake: torch.Tensor):
    """``real, fake [B, T] -> (scores_real, scores_fake, fmaps_real, fmaps_fake)``, one entry per sub-discriminator,
    scores ``[B, C, T']``."""
    if "y" in part.input_types:  # HiFi-GAN family: [B, 1, T] in, scores [B, T'] out
        scores_real, scores_fake, fmaps_real, fmaps_fake = part(y=real.unsqueeze(1), y_hat=fake.unsqueeze(1))
        scores_real = [s.unsqueeze(1) for s in scores_real]
        scores_fake = [s.unsqueeze(1) for s in scores_fake]
    else:
        scores_real, scores_fake, fmaps_real, fmaps_fake = part(audio_real=real, audio_gen=fake)
    return list(scores_real), list(scores_fake), list(fmaps_real), list(fmaps_fake)
