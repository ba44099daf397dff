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
        "tqdm>=4.41",  # progress of the command lines (nest_ext.parts.progress); NeMo brings it too
        "numpy>=1.22",
        "PyYAML>=5.1",  # degradation lists from YAML files (omegaconf's own dependency)
        "kaldialign",  # WER/CER alignments with S/D/I counts (nemo_toolkit[asr] names it too)
    ],
    extras_require={
        # the llm packages too, so `make test` / CI run the LLM-based ASR tests; scipy: the tests' reference resampler
        "test": ["pytest>=7", "pytest-timeout", "scipy>=1.6", *LLM],
        # evaluate_separation.py: PNG report (matplotlib, scipy spectrograms), PESQ and STOI columns when installed
        # (nemo_toolkit[audio] names them too, except pesq on Intel macOS)
        "eval": ["matplotlib", "scipy>=1.6", "pesq", "pystoi"],
        # LLM-based ASR (NeMo's SALM with LoRA: config/salm_nest_lora.yaml); DeepSpeed is optional (ZeRO-2)
        "llm": LLM,
        "deepspeed": ["deepspeed"],
        # restoration degradations: simulated room impulse responses (reverb step, simulator: pyroomacoustics)
        "restoration": ["pyroomacoustics>=0.7"],
    },
    # The command lines (nest_ext/cli/<module>.py, main(argv) -> exit status); tools/<module>.py runs the same main.
    entry_points={
        "console_scripts": [
            "nest-build-tokenizer=nest_ext.cli.build_tokenizer:main",
            "nest-compare-with-nemo=nest_ext.cli.compare_with_nemo:main",
            "nest-convert-mossformer2=nest_ext.cli.convert_mossformer2_checkpoint:main",
            "nest-evaluate-asr=nest_ext.cli.evaluate_asr:main",
            "nest-evaluate-llm-asr=nest_ext.cli.evaluate_llm_asr:main",
            "nest-evaluate-separation=nest_ext.cli.evaluate_separation:main",
            "nest-make-demo-data=nest_ext.cli.make_demo_data:main",
            "nest-merge-lora=nest_ext.cli.merge_lora:main",
            "nest-pack-shards=nest_ext.cli.pack_shards:main",
            "nest-prepare-separation-data=nest_ext.cli.prepare_separation_data:main",
            "nest-run-demo=nest_ext.cli.run_demo:main",
            "nest-separate=nest_ext.cli.separate:main",
        ],
    },
)
