"""nest_ext: NeMo extension for NEST speech SSL pretraining and MossFormer2 speech separation."""
from setuptools import find_packages, setup

setup(
    name="nest_ext",
    version="0.1.0",
    description="NeMo extension: NEST SSL pretraining and MossFormer2 speech separation",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    packages=find_packages(include=["nest_ext", "nest_ext.*"]),
    python_requires=">=3.10",
    # Every third-party import of the package is declared here (tests/test_dependencies.py checks it). Ranges are
    # nemo_toolkit 3.0's own (torch, lightning, hydra-core, omegaconf, lhotse, tqdm, numpy) or lie within them.
    install_requires=[
        # A range, so GPU users keep their own CUDA build; the Makefile installs the CPU wheel first.
        "torch>=2.6",  # NeMo 3.0's floor
        # asr: NEST, CTC, the Conformer; audio: nemo.collections.audio (MossFormer2 is an AudioToAudioModel)
        "nemo_toolkit[asr,audio]>=3.0,<3.1",
        "lightning>2.2.1,<=2.4.0",
        "hydra-core>1.3,<=1.3.2",
        "omegaconf>=2.2,<=2.3",
        "lhotse>=1.33",
        "soundfile>=0.12",
        "soxr>=0.3.2",  # the one resampler (nest_ext.data.audio_io.resample); librosa's, so NeMo brings it too
        "torchmetrics>=1.4",
        "tqdm>=4.41",  # progress of packing
        "numpy>=1.22",
    ],
    extras_require={
        # scipy: the tests' independent reference resampler
        "test": ["pytest>=7", "pytest-timeout", "scipy>=1.6"],
        # evaluate_separation.py: PNG report (matplotlib, scipy spectrograms), PESQ and STOI columns when installed
        # (nemo_toolkit[audio] names them too, except pesq on Intel macOS)
        "eval": ["matplotlib", "scipy>=1.6", "pesq", "pystoi"],
    },
)
