"""nest_ext: NeMo extension for NEST speech SSL pretraining and MossFormer2 speech separation."""
from setuptools import find_packages, setup

# NeMo 3.0's speechlm2 collection (SALM) imports all three; peft capped as in nemo_toolkit[speechlm2].
# Tested with peft 0.18.0, transformers 5.25.0, accelerate 1.16.0.
LLM = ["peft>=0.15,<=0.18.0", "transformers>=4.51", "accelerate>=1.0"]

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
        "soxr>=0.3",  # the one resampler (nest_ext.data.audio_io.resample); librosa's default, so NeMo brings it
        "torchmetrics>=1.4",
        "numpy",
    ],
    extras_require={
        # the llm packages too, so `make test` / CI run the LLM-based ASR tests; scipy: the tests' reference resampler
        "test": ["pytest>=7", "pytest-timeout", "scipy", *LLM],
        # evaluate_separation.py: PNG report (matplotlib, scipy spectrograms), PESQ and STOI columns when installed
        "eval": ["matplotlib", "scipy", "pesq", "pystoi"],
        # LLM-based ASR (NeMo's SALM with LoRA: config/salm_nest_lora.yaml); DeepSpeed is optional (ZeRO-2)
        "llm": LLM,
        "deepspeed": ["deepspeed"],
        # restoration degradations: simulated room impulse responses (reverb step, simulator: pyroomacoustics);
        # evaluate_restoration: DNSMOS (speechmos: Microsoft's ONNX models inside its wheel, run offline)
        "restoration": ["pyroomacoustics>=0.7", "speechmos>=0.0.1", "onnxruntime", "librosa", "requests"],
    },
    entry_points={
        "console_scripts": [
            "nest-evaluate-llm-asr=nest_ext.cli.evaluate_llm_asr:main",
            "nest-merge-lora=nest_ext.cli.merge_lora:main",
            "nest-prepare-restoration-data=nest_ext.cli.prepare_restoration_data:main",
            "nest-restore=nest_ext.cli.restore:main",
            "nest-evaluate-restoration=nest_ext.cli.evaluate_restoration:main",
            "nest-restoration-demo=nest_ext.cli.restoration_demo:main",
        ],
    },
)
