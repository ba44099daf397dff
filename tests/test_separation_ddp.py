"""``python train.py --config-name mossformer2_libri2mix`` on separation shards with 2 CPU DDP ranks (gloo):
tarred (``is_tarred``) and lhotse Shar (``use_lhotse``). Each rank trains on its own shards (disjoint examples,
identified by the fingerprint of their whole mixture), the weights stay equal (gradients all-reduced), and the
validation metrics are reduced. A tiny network by overrides keeps it to a few steps on CPU."""
import sys

import numpy as np
import pytest

from conftest import ROOT
from nest_ext.data.packing import pack_shards
from test_ddp import RankProbe, _run_ddp, probe_env, read_probe
from test_pack_separation import separation_corpus

SR = 16000  # mossformer2_libri2mix's rate
TINY = ["model.encoder.embedding_dim=32", "model.decoder.embedding_dim=32", "model.masker.embedding_dim=32",
        "model.masker.sequence_dim=32", "model.masker.num_layers=1", "+model.masker.group_size=16",
        "+model.masker.query_key_dim=32", "+model.masker.fsmn_inner_dim=16"]


class ShardRankProbe(RankProbe):
    """RankProbe for iterable training data: records the dataset instead of walking a sampler (a lhotse stream has
    no end)."""

    def on_train_epoch_start(self, trainer, pl_module):
        ds = trainer.train_dataloader.dataset
        ds = getattr(ds, "dataset", ds)  # NeMo's lhotse wrapper holds ours
        self._write(trainer, event="data", type=type(ds).__name__, shards=getattr(ds, "urls", None))


def _env(tmp_path, probe):
    env = probe_env(tmp_path, probe, ["val_loss", "val_sisdri"])
    site = tmp_path / "probe_site" / "sitecustomize.py"
    site.write_text(site.read_text().replace("from test_ddp import RankProbe",
                                             "from test_separation_ddp import ShardRankProbe as RankProbe"))
    return env


def _examples(tmp_path):
    manifest, refs = separation_corpus(tmp_path / "data", n=8, sr=SR, bad=False, seed=7)
    val, _ = separation_corpus(tmp_path / "val", n=4, sr=SR, bad=False, seed=70)
    # an example is known by the sum of its mixture (what the probe fingerprints; padding adds zeros)
    prints = {round(float((r["mixture"].astype(np.float64) / 32768).sum()), 6): k for k, r in refs.items()}
    assert len(prints) == len(refs)
    return manifest, val, prints


def _check(probe, prints, data_type):
    seen = []
    for rank in (0, 1):
        records = read_probe(probe, rank)
        assert [r["type"] for r in records if r["event"] == "data"][0] == data_type
        batches = [r["fingerprint"] for r in records if r["event"] == "batch"]
        assert batches
        seen.append({prints[round(x, 6)] for b in batches for x in b})  # every item is a whole packed example
    assert seen[0] and seen[1] and not seen[0] & seen[1], seen  # the ranks read disjoint examples
    ends = [[r for r in read_probe(probe, rank) if r["event"] == "end"][0] for rank in (0, 1)]
    assert ends[0]["step"] == ends[1]["step"] > 0
    assert ends[0]["checksum"] == pytest.approx(ends[1]["checksum"], rel=1e-9, abs=1e-9)  # weights in sync
    vals = [[r["metrics"] for r in read_probe(probe, rank) if r["event"] == "val"] for rank in (0, 1)]
    assert vals[0] and vals[0][-1]["val_sisdri"] == pytest.approx(vals[1][-1]["val_sisdri"], rel=1e-6)
    return seen


def _cmd(tmp_path, val, *extra):
    return [sys.executable, str(ROOT / "train.py"), "--config-name", "mossformer2_libri2mix", *TINY,
            "model.train_ds.segment_seconds=null", "model.train_ds.batch_size=2", "model.train_ds.num_workers=0",
            "model.train_ds.pin_memory=false", f"model.validation_ds.manifest_filepath={val}",
            "model.validation_ds.batch_size=2", "model.validation_ds.num_workers=0", "model.validation_ds.pin_memory=false",
            "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp", "trainer.accumulate_grad_batches=1",
            "trainer.log_every_n_steps=1", "+trainer.enable_progress_bar=false", f"exp_manager.exp_dir={tmp_path / 'exp'}",
            "exp_manager.create_tensorboard_logger=false", "exp_manager.checkpoint_callback_params.always_save_nemo=false",
            *extra]


@pytest.mark.slow
def test_tarred_separation_ddp_two_cpu_ranks(tmp_path):
    manifest, val, prints = _examples(tmp_path)
    out = tmp_path / "shards"
    pack_shards(out_dir=str(out), manifest=manifest, task="separation", shard_size=2, progress=False)
    probe = tmp_path / "probe"
    _run_ddp(_cmd(tmp_path, val, "model.train_ds.is_tarred=true",
                  f"model.train_ds.manifest_filepath={out}/tarred_audio_manifest.json",
                  f"model.train_ds.tarred_audio_filepaths={out}/audio__OP_0..3_CL_.tar", "trainer.max_epochs=2"),
             tmp_path, _env(tmp_path, probe))
    seen = _check(probe, prints, "TarredSeparationDataset")
    assert sorted(seen[0] | seen[1]) == sorted(prints.values())  # between them, the whole set
    shards = [[r["shards"] for r in read_probe(probe, rank) if r["event"] == "data"][0] for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 2 and not set(shards[0]) & set(shards[1])
    steps = [r["step"] for r in read_probe(probe, 0) if r["event"] == "batch"]
    assert steps == [0, 1, 2, 3]  # 2 epochs x 4 examples per rank / batch 2


@pytest.mark.slow
def test_lhotse_shar_separation_ddp_two_cpu_ranks(tmp_path):
    manifest, val, prints = _examples(tmp_path)
    out = tmp_path / "shar"
    pack_shards(out_dir=str(out), manifest=manifest, task="separation", shard_size=2, format="lhotse-shar",
                progress=False)
    probe = tmp_path / "probe"
    _run_ddp(_cmd(tmp_path, val, "model.train_ds.use_lhotse=true", f"model.train_ds.shar_path={out}",
                  "+model.train_ds.shuffle_buffer_size=4", "trainer.max_steps=3", "+trainer.val_check_interval=3",
                  "trainer.max_epochs=-1"),
             tmp_path, _env(tmp_path, probe))
    _check(probe, prints, "LhotseSeparationDataset")
