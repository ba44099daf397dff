"""LLM-based ASR on a NEST encoder (NeMo's SALM + LoRA), end to end on CPU with no downloads.

A tiny Llama-architecture LLM and a byte-level BPE tokenizer are built here (transformers ``LlamaConfig``,
``tokenizers``), a tiny NEST ``.nemo`` comes from ``config/nest_demo.yaml``; four synthetic utterances are the
data. Skipped, with the reason, when the ``llm`` extra is not installed.
"""
import io
import json
import math
import os
import subprocess
import sys
import tarfile
from types import SimpleNamespace

import pytest
import soundfile as sf
import torch

from conftest import ROOT, speech_like, write_manifest, write_wav
from nest_ext.parts.extras import EXTRAS, missing_packages

_MISSING = missing_packages(EXTRAS["llm"])
pytestmark = pytest.mark.skipif(bool(_MISSING), reason=f"the llm extra is not installed (missing: "
                                f"{', '.join(_MISSING)}); pip install -e '.[llm]'")

TEXTS = ["alpha bravo charlie", "delta echo", "foxtrot golf hotel", "india juliet"]
WORDS = "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima transcribe the audio".split()
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "gate_proj", "down_proj")


def make_tiny_llm(out_dir):
    """A 2-layer Llama (hidden 64) and a byte-level BPE tokenizer, saved as a Hugging Face directory. The large
    init range gives the frozen random LM head room for confident predictions, as a pretrained one has."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<unk>", "<s>", "</s>", "<pad>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator([" ".join(WORDS)] * 20 + ["[INST] [/INST] Transcribe the audio."] * 5, trainer)
    hf_tok = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>",
                                     pad_token="<pad>")
    hf_tok.save_pretrained(out_dir)
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=len(hf_tok), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                      bos_token_id=hf_tok.bos_token_id, eos_token_id=hf_tok.eos_token_id,
                      pad_token_id=hf_tok.pad_token_id, tie_word_embeddings=False, initializer_range=0.2)
    LlamaForCausalLM(cfg).save_pretrained(out_dir)
    return str(out_dir)


def make_tiny_nest(path):
    """A NEST .nemo of the demo size, saved by this package's model class (as tests/test_asr_finetune.py)."""
    from omegaconf import open_dict

    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel
    from nest_ext.parts.nemo_comparison import load_our_config

    cfg = load_our_config("nest_demo").model
    with open_dict(cfg):
        cfg.train_ds = None
        cfg.validation_ds = None
    torch.manual_seed(0)
    EncDecDenoiseMaskedTokenPredModel(cfg=cfg).save_to(str(path))
    return str(path)


def _pack(manifest, out_dir):
    from nest_ext.cli import pack_shards as tool

    assert tool.main(["--manifest", manifest, "--out-dir", str(out_dir), "--shard-size", "2", "--no-progress"]) == 0
    return str(out_dir)


@pytest.fixture(scope="module")
def assets(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny models: more threads only add overhead on a shared machine
    d = tmp_path_factory.mktemp("salm")
    rows = []
    wenet = d / "test_b"
    wenet.mkdir()
    with tarfile.open(wenet / "shards_000000000.tar", "w") as tar:
        for i, text in enumerate(TEXTS):
            dur = 0.6 + 0.3 * i  # distinct lengths and pitch: utterances a tiny model can tell apart
            audio = speech_like(dur, seed=i)
            rows.append({"audio_filepath": write_wav(d / "wav" / f"u{i}.wav", audio), "duration": dur,
                         "text": text.capitalize() + "."})  # scoring normalises case and punctuation
            for name, data in ((f"u{i}.wav", _wav_bytes(audio)), (f"u{i}.txt", text.encode())):
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    (wenet / "data.list").write_text("shards_000000000.tar\n")
    manifest = write_manifest(d / "test_a.json", rows)
    yield SimpleNamespace(dir=d, llm=make_tiny_llm(d / "llm"), nest=make_tiny_nest(d / "nest.nemo"),
                          manifest=manifest, wenet=str(wenet), packed=_pack(manifest, d / "packed"))
    torch.set_num_threads(threads)


def _wav_bytes(audio):
    buf = io.BytesIO()
    sf.write(buf, audio, 16000, format="WAV")
    return buf.getvalue()


def _overrides(a, data_path, *extra):
    return [f"model.pretrained_nest={a.nest}", f"model.pretrained_llm={a.llm}", "model.prompt_format=llama2",
            f"model.train_ds.data_path={data_path}", "model.train_ds.batch_size=4", "model.train_ds.num_workers=0",
            "model.train_ds.pin_memory=false", "model.validation_ds.num_workers=0",
            "model.perception.modality_adapter.hidden_dim=128", "model.optimizer.lr=1e-2", "~model.lr_scheduler",
            "trainer.accelerator=cpu", "trainer.devices=1", "trainer.precision=32", "trainer.strategy=auto",
            "trainer.accumulate_grad_batches=1", "trainer.log_every_n_steps=1", *extra]


def _compose(overrides):
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=str(ROOT / "config"), version_base=None):
        return compose(config_name="salm_nest_lora", overrides=list(overrides))


def _model(a, data_path=None):
    from lightning.pytorch import seed_everything

    from nest_ext.models.salm_nest import NestSALM

    seed_everything(0)
    return NestSALM(cfg=_compose(_overrides(a, data_path or a.manifest)).model)


def test_recipe_config_and_only_connector_and_lora_train(assets):
    cfg = _compose(["model.pretrained_nest=x.nemo", "model.pretrained_llm=llm", "model.train_ds.data_path=d"])
    lora = cfg.model.lora
    assert (lora.r, lora.lora_alpha, lora.lora_dropout, tuple(lora.target_modules)) == (64, 16, 0.05, LORA_TARGETS)
    assert (cfg.model.optimizer._target_, cfg.model.optimizer.lr, cfg.model.lr_scheduler.warmup_steps) == (
        "torch.optim.Adam", 1e-4, 1000)
    adapter = cfg.model.perception.modality_adapter
    assert (adapter.stack, adapter.hidden_dim) == (2, 2048) and cfg.trainer.precision.startswith("bf16")

    model = _model(assets)
    trainable = {n: p.numel() for n, p in model.named_parameters() if p.requires_grad}
    connector = {n: c for n, c in trainable.items() if n.startswith("perception.modality_adapter.")}
    lora_params = {n: c for n, c in trainable.items() if ".lora_" in n}
    assert set(trainable) == set(connector) | set(lora_params)
    # connector: stack 2 x d_enc 64 -> 128 -> ReLU -> LLM width 64 (d_enc read from the NEST .nemo)
    assert sum(connector.values()) == (2 * 64 * 128 + 128) + (128 * 64 + 64)
    # LoRA: r x (in + out) for every targeted projection of the LLM
    base = model.llm.get_base_model()
    expected = sum(64 * (m.base_layer.in_features + m.base_layer.out_features) for name, m in base.named_modules()
                   if name.split(".")[-1] in LORA_TARGETS)
    assert sum(lora_params.values()) == expected == 2 * 64 * (128 + 96 + 96 + 128 + 192 + 192 + 192)
    # frozen: the whole LLM, the embeddings, the NEST preprocessor and encoder
    frozen = [n for n, p in model.named_parameters() if not p.requires_grad]
    assert any(n.startswith("perception.encoder.") for n in frozen)
    assert any(n.startswith("embed_tokens") for n in frozen)
    assert model.token_equivalent_duration == pytest.approx(0.16)  # 10 ms hop x NEST 8 x stack 2


def test_training_conversation_and_decoding_prompt_agree(assets):
    """The data type turns a transcribed cut into SALM's conversation; its prompt is what decoding feeds."""
    from nemo.collections.common.data.prompt_fn import apply_prompt_format_fn
    from nemo.collections.common.prompts import PromptFormatter

    from nest_ext.data.asr_cuts import read_asr_cuts
    from nest_ext.data.salm_data import _to_conversation

    model = _model(assets)
    cut = next(iter(read_asr_cuts(assets.manifest)))
    conv = _to_conversation(cut, instruction=model.instruction, audio_locator_tag=model.audio_locator_tag,
                            token_equivalent_duration=model.token_equivalent_duration)
    formatter = PromptFormatter.resolve(model.cfg.prompt_format)(model.tokenizer)
    train = apply_prompt_format_fn(conv, formatter)
    decode = formatter.encode_dialog([{"role": "user", "content": f"{model.instruction} {model.audio_locator_tag}"}])
    n = len(decode["input_ids"])
    assert train["input_ids"][:n].tolist() == decode["input_ids"].tolist()
    target = train["input_ids"][train["mask"]].tolist()  # the loss targets: the transcript, then EOS
    assert target[-1] == model.text_eos_id
    assert model.tokenizer.ids_to_text(target[:-1]).strip() == "Alpha bravo charlie."
    assert not train["mask"][:n].any()


def test_dataset_reports_conversations_dropped_for_bad_audio(assets, tmp_path, caplog):
    """NeMo's SALMDataset silently drops a conversation whose audio fails to load; ours names the file."""
    import shutil

    from lhotse import CutSet
    from nemo.collections.common.data.prompt_fn import apply_prompt_format_fn
    from nemo.collections.common.prompts import PromptFormatter

    from nest_ext.data.asr_cuts import read_asr_cuts
    from nest_ext.data.reporting_salm_dataset import ReportingSALMDataset
    from nest_ext.data.salm_data import _to_conversation

    model = _model(assets)
    rows = [json.loads(line) for line in open(assets.manifest)][:2]
    for i, row in enumerate(rows):
        row["audio_filepath"] = str(shutil.copy(row["audio_filepath"], tmp_path / f"copy{i}.wav"))
    cuts = list(read_asr_cuts(write_manifest(tmp_path / "m.json", rows)))  # headers read: both files exist
    os.remove(tmp_path / "copy1.wav")  # gone before its batch is loaded
    formatter = PromptFormatter.resolve(model.cfg.prompt_format)(model.tokenizer)
    conversations = []
    for cut in cuts:
        conv = _to_conversation(cut, instruction=model.instruction, audio_locator_tag=model.audio_locator_tag,
                                token_equivalent_duration=model.token_equivalent_duration)
        encoded = apply_prompt_format_fn(conv, formatter)
        conv.input_ids, conv.mask = encoded["input_ids"], encoded["mask"]
        conversations.append(conv)
    dataset = ReportingSALMDataset(model.tokenizer)
    batch = dataset[CutSet(conversations)]
    assert batch["audios"].shape[0] == 1 and dataset.bad_audio.count == 1
    assert f"{tmp_path / 'copy1.wav'} (listed at conversation" in caplog.text and "missing file" in caplog.text


def _evaluate(ckpt, sets, out_dir, *extra):
    from nest_ext.cli.evaluate_llm_asr import main

    assert main(["--model", str(ckpt), "--test-sets", *sets, "--out-dir", str(out_dir), "--batch-size", "3",
                 "--max-new-tokens", "16", "--device", "cpu", *extra]) == 0
    return {r["set"]: r for r in json.loads((out_dir / "summary.json").read_text())}


@pytest.mark.slow
def test_train_evaluate_restore_and_merge(assets, tmp_path):
    import lightning.pytorch as pl
    from transformers import AutoModelForCausalLM

    from nest_ext.cli.merge_lora import main as merge_main
    from nest_ext.models.salm_nest import NestSALM

    model = _model(assets, data_path=assets.packed)  # trains straight from pack_shards.py output (NeMo tarred)
    before_ckpt = tmp_path / "untrained.ckpt"
    model.save_to(str(before_ckpt))
    sets = [assets.manifest, assets.wenet]
    before = _evaluate(before_ckpt, sets, tmp_path / "eval_before")

    losses = []

    class Losses(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses.append(float(outputs["loss"]))

    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=40, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, use_distributed_sampler=False,
                         num_sanity_val_steps=0, callbacks=[Losses()])
    trainer.fit(model)
    assert len(losses) == 40 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.2 * sum(losses[:5]) / 5, losses

    ckpt = tmp_path / "trained.ckpt"
    model.save_to(str(ckpt))
    saved = torch.load(ckpt, map_location="cpu", weights_only=False)
    assert set(saved["state_dict"]) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert saved["hyper_parameters"]["cfg"]["pretrained_nest"] == assets.nest

    out = tmp_path / "eval_after"
    after = _evaluate(ckpt, sets, out)
    assert set(after) == {"test_a", "test_b"}
    for name in ("test_a", "test_b"):
        assert after[name]["utterances"] == 4 and after[name]["metric"] == "WER"
        assert after[name]["rate"] < before[name]["rate"], (before[name], after[name])
        assert after[name]["rate"] <= 0.25, after[name]
        text = (out / name / "text").read_text().splitlines()
        assert [line.split(" ", 1)[0] for line in text] == [f"u{i}" for i in range(4)]
        ref = (out / name / "ref").read_text().splitlines()
        assert ref == [f"u{i} {t}" for i, t in enumerate(TEXTS)]  # lower case, no punctuation
        wer = (out / name / "wer").read_text()
        assert wer.startswith("%WER ") and "utt: u3" in wer and " ins, " in wer
    summary = (out / "summary.txt").read_text().splitlines()
    assert summary[0].split()[:3] == ["set", "metric", "%"]
    assert [line.split()[0] for line in summary[1:]] == ["test_a", "test_b"]
    with_missing = write_manifest(tmp_path / "test_c.json", [json.loads(line) for line in open(assets.manifest)]
                                  + [{"audio_filepath": str(tmp_path / "gone.wav"), "text": "x"}])
    cer = _evaluate(ckpt, [assets.manifest, with_missing], tmp_path / "eval_cer", "--cer", "--no-normalize",
                    "--beam-size", "2")
    assert (cer["test_c"]["utterances"], cer["test_c"]["skipped"]) == (4, 1)  # reported and left out
    assert cer["test_a"]["metric"] == "CER" and cer["test_a"]["n"] == sum(len(t.replace(" ", "")) + 1 for t in TEXTS)
    assert cer["test_a"]["rate"] <= 0.25  # beam search finds the trained transcripts too

    # the small checkpoint restores the trained model
    restored = NestSALM.restore_from(str(ckpt)).eval()
    for name, value in restored.trainable_state_dict().items():
        assert torch.equal(value, saved["state_dict"][name]), name
    model.eval()
    batch = _audio_batch(assets.manifest)
    assert restored.transcribe(*batch, max_new_tokens=16) == model.transcribe(*batch, max_new_tokens=16)

    # merged LLM = LLM with LoRA on
    with torch.no_grad():
        embeds = restored.embed_tokens(torch.randint(0, 290, (2, 9)))
        lora_logits = restored(embeds)["logits"]
    merged_dir = tmp_path / "merged"
    assert merge_main(["--model", str(ckpt), "--out-dir", str(merged_dir)]) == 0
    merged = AutoModelForCausalLM.from_pretrained(str(merged_dir)).eval()
    with torch.no_grad():
        merged_logits = merged(inputs_embeds=embeds).logits
    assert torch.allclose(merged_logits, lora_logits, atol=1e-4), (merged_logits - lora_logits).abs().max()
    assert not any("lora" in k for k in merged.state_dict())
    assert merge_main(["--model", str(ckpt), "--out-dir", str(merged_dir)]) == 2  # never overwrites


def _audio_batch(manifest):
    from lhotse import CutSet

    from nest_ext.data.asr_cuts import read_asr_cuts

    audio, lens = CutSet(list(read_asr_cuts(manifest))).load_audio(collate=True)
    return torch.as_tensor(audio), torch.as_tensor(lens)


@pytest.mark.slow
def test_train_py_two_process_cpu_ddp(assets, tmp_path):
    exp = tmp_path / "exp"
    cmd = [sys.executable, str(ROOT / "train.py"), "--config-name", "salm_nest_lora",
           *_overrides(assets, assets.manifest, f"model.validation_ds.data_path={assets.wenet}",
                       "model.train_ds.batch_size=2", "model.validation_ds.batch_size=2", "trainer.devices=2",
                       "trainer.strategy=ddp", "trainer.max_steps=2", "trainer.limit_train_batches=2",
                       f"exp_manager.exp_dir={exp}", "exp_manager.create_tensorboard_logger=false")]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", HYDRA_FULL_ERROR="1")
    run = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-5000:]
    assert "MEMBER: 1/2" in out and "MEMBER: 2/2" in out  # two ranks joined
    line = [x for x in run.stdout.splitlines() if x.startswith("Trained model (.ckpt):")]
    assert line, run.stdout[-3000:]
    final = torch.load(line[0].split(": ", 1)[1], map_location="cpu", weights_only=False)
    keys = set(final["state_dict"])
    assert keys and all(".lora_" in k or k.startswith("perception.modality_adapter.") for k in keys)
    # exp_manager's checkpoints hold the trainable weights only, too (plus optimizer state to resume)
    ckpts = sorted(p for p in exp.rglob("*.ckpt") if p.parent.name == "checkpoints")
    assert ckpts, sorted(exp.rglob("*"))
    lightning_ckpt = torch.load(ckpts[0], map_location="cpu", weights_only=False)
    assert set(lightning_ckpt["state_dict"]) == keys and lightning_ckpt["global_step"] == 2
    assert "val_loss" in out
    from nest_ext.models.salm_nest import NestSALM

    restored = NestSALM.restore_from(str(ckpts[0]))  # what evaluate_llm_asr / merge_lora take
    assert torch.equal(restored.trainable_state_dict()[sorted(keys)[0]], lightning_ckpt["state_dict"][sorted(keys)[0]])
