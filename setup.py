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
    install_requires=[
        # A range, so GPU users keep their own CUDA build; the Makefile pins the CPU wheel first.
        "torch>=2.4",
        "nemo_toolkit[asr]>=3.0,<3.1",
        "lightning>=2.4",
        "hydra-core>=1.3",
        "omegaconf>=2.3",
        "lhotse>=1.30",
        "soundfile>=0.12",
        "torchmetrics>=1.4",
        "numpy",
    ],
    extras_require={
        "test": ["pytest>=7", "pytest-timeout"],
        # evaluate_separation.py: PNG report (matplotlib), PESQ and STOI columns when installed
        "eval": ["matplotlib", "pesq", "pystoi"],
        # restoration degradations: simulated room impulse responses (reverb step, simulator: pyroomacoustics)
        "restoration": ["pyroomacoustics>=0.7"],
    },
)
