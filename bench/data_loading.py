"""NEST batch pipeline throughput: nest_ext's datasets vs NeMo 3.0.0's, alternating in one process.

The pipeline is what NEST training runs per step before the model: dataset items (audio read, pad,
noise sampling) -> ``collate_fn`` -> the config's ``MultiSpeakerNoiseAugmentation``, through a
``torch.utils.data.DataLoader``. Both sides are built by ``get_audio_noise_dataset_from_config`` from the
same config (NeMo's NEST ``train_ds`` block) and run with the same seeds; items/s is printed for each and
the ratio of time ours / NeMo (below 1.0: ours is faster).

Data (synthesised once in a temp folder): ``--utts`` utterances of 2-6 s of speech-like audio and a noise
manifest of ``--noise-files`` files of ``--noise-seconds`` s. ``--noise-kind`` picks zero-mean noise (the
common case: NeMo re-reads half of the segments), DC-offset noise (NeMo reads each segment 100 times),
or a mix.

Sources (``--sources``): ``manifest`` (NeMo JSON manifest of WAV files) and ``tarred`` (the same
utterances in NeMo's tar-shard layout, ``audio__OP_0..N-1_CL_.tar``), so manifest vs tarred loading is
compared in one run; add a source by adding a builder to ``SOURCES``.

Usage::

    python bench/data_loading.py --quick
    python bench/data_loading.py --utts 64 --batch 8 --workers 0 --rounds 3 --noise-kind zero-mean
"""
import argparse
import json
import os
import random
import statistics
import sys
import tarfile
import tempfile
import time

import numpy as np
import soundfile as sf
import torch

SR = 16000
BATCH_AUGMENTOR = {  # NeMo's NEST config (nest_fast-conformer.yaml, train_ds.batch_augmentor)
    "_target_": "nemo.collections.asr.modules.ssl_modules.MultiSpeakerNoiseAugmentation",
    "prob": 0.5, "noise_ratio": 0.5, "min_r_speech": -5.0, "max_r_speech": 5.0, "min_r_noise": -5.0,
    "max_r_noise": 20.0, "min_mix_rate": 0.5, "max_mix_rate": 0.5, "min_num_segments": 1,
    "max_num_segments": 1, "min_num_speakers": 1, "max_num_speakers": 1,
}


def speech_like(seconds, rng):
    t = np.arange(int(seconds * SR)) / SR
    f0 = rng.uniform(90, 220) * (1 + 0.1 * np.sin(2 * np.pi * rng.uniform(0.5, 2) * t))
    phase = 2 * np.pi * np.cumsum(f0) / SR
    sig = sum(np.sin(k * phase) / k for k in range(1, 8)) * (0.5 + 0.5 * np.sin(2 * np.pi * 3 * t) ** 2)
    return (0.3 * sig / np.max(np.abs(sig)) + 0.01 * rng.standard_normal(t.shape)).astype(np.float32)


def make_data(folder, utts, noise_files, noise_seconds, noise_kind, seed=0):
    rng = np.random.default_rng(seed)
    entries = []
    for i in range(utts):
        dur = float(rng.uniform(2.0, 6.0))
        path = os.path.join(folder, f"utt{i:05d}.wav")
        sf.write(path, speech_like(dur, rng), SR, subtype="PCM_16")
        entries.append({"audio_filepath": path, "duration": sf.info(path).frames / SR})
    manifest = os.path.join(folder, "train.json")
    with open(manifest, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in entries)
    noise = []
    for j in range(noise_files):
        x = 0.05 * rng.standard_normal(int(noise_seconds * SR))
        x -= x.mean()
        if noise_kind == "dc-offset" or (noise_kind == "mixed" and j % 2):
            x -= 0.01
        path = os.path.join(folder, f"noise{j}.wav")
        sf.write(path, x.astype(np.float32), SR, subtype="PCM_16")
        noise.append({"audio_filepath": path, "duration": noise_seconds})
    noise_manifest = os.path.join(folder, "noise.json")
    with open(noise_manifest, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in noise)
    return entries, manifest, noise_manifest


def manifest_source(folder, entries, manifest, shards):
    return {"manifest_filepath": manifest}


def tarred_source(folder, entries, manifest, shards):
    """The same utterances packed in NeMo's tar-shard layout (round-robin over shards)."""
    tar_dir = os.path.join(folder, "tarred")
    os.makedirs(tar_dir, exist_ok=True)
    tars = [tarfile.open(os.path.join(tar_dir, f"audio_{s}.tar"), "w") for s in range(shards)]
    out = []
    for i, e in enumerate(entries):
        name = os.path.basename(e["audio_filepath"])
        tars[i % shards].add(e["audio_filepath"], arcname=name)
        out.append({"audio_filepath": name, "duration": e["duration"], "shard_id": i % shards})
    for t in tars:
        t.close()
    tman = os.path.join(tar_dir, "tarred_audio_manifest.json")
    with open(tman, "w") as f:
        f.writelines(json.dumps(e) + "\n" for e in out)
    return {"manifest_filepath": tman, "is_tarred": True, "shuffle_n": 0,
            "tarred_audio_filepaths": os.path.join(tar_dir, f"audio__OP_0..{shards - 1}_CL_.tar")}


SOURCES = {"manifest": manifest_source, "tarred": tarred_source}


def build_loader(build_dataset, cfg, workers):
    dataset = build_dataset(cfg.copy(), global_rank=0, world_size=1)
    collate = dataset.collate_fn
    shuffle = cfg["shuffle"] and not isinstance(dataset, torch.utils.data.IterableDataset)
    return torch.utils.data.DataLoader(
        dataset, batch_size=cfg["batch_size"], collate_fn=collate, shuffle=shuffle, num_workers=workers,
        drop_last=False, persistent_workers=False,
    )


def run_epoch(loader, seed):
    np.random.seed(seed)
    random.seed(seed)
    torch.manual_seed(seed)
    items = 0
    t0 = time.perf_counter()
    for batch in loader:
        items += batch.audio.shape[0]
    return items, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--utts", type=int, default=64)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--noise-files", type=int, default=4)
    p.add_argument("--noise-seconds", type=float, default=60.0)
    p.add_argument("--noise-kind", choices=["zero-mean", "dc-offset", "mixed"], default="zero-mean")
    p.add_argument("--sources", default="manifest,tarred")
    p.add_argument("--shards", type=int, default=2)
    p.add_argument("--threads", type=int, default=1,
                   help="torch threads in this process (DataLoader workers run with 1, as here by default)")
    p.add_argument("--quick", action="store_true", help="a run under ~60 s")
    args = p.parse_args(argv)
    if args.quick:
        args.utts, args.rounds, args.noise_files = 24, 2, 2
    torch.set_num_threads(args.threads)

    from omegaconf import OmegaConf

    from nemo.collections.asr.data import ssl_dataset as nemo_ssl
    from nemo.utils import logging as nemo_logging

    from nest_ext.data import ssl_dataset as ours

    nemo_logging.setLevel("ERROR")
    print(f"{args.utts} utterances of 2-6 s, batch {args.batch}, num_workers {args.workers}, "
          f"{args.noise_files} x {args.noise_seconds:.0f} s {args.noise_kind} noise, {args.rounds} alternating "
          f"rounds; torch {torch.__version__}, python {sys.version.split()[0]}, threads {torch.get_num_threads()}")
    print(f"{'source':<9} {'NeMo items/s':>13} {'ours items/s':>13} {'ratio (time ours/NeMo)':>24}")
    with tempfile.TemporaryDirectory() as d:
        entries, manifest, noise_manifest = make_data(d, args.utts, args.noise_files, args.noise_seconds,
                                                      args.noise_kind)
        for source in args.sources.split(","):
            cfg = OmegaConf.create({
                "noise_manifest": noise_manifest, "sample_rate": SR, "batch_size": args.batch, "shuffle": True,
                "max_duration": 60.0, "min_duration": 1.0, "batch_augmentor": BATCH_AUGMENTOR,
                **SOURCES[source](d, entries, manifest, args.shards),
            })
            loaders = {"nemo": build_loader(nemo_ssl.get_audio_noise_dataset_from_config, cfg, args.workers),
                       "ours": build_loader(ours.get_audio_noise_dataset_from_config, cfg, args.workers)}
            rates = {"nemo": [], "ours": []}
            for r in range(args.rounds):
                for name in ("nemo", "ours"):
                    items, seconds = run_epoch(loaders[name], seed=r)
                    rates[name].append(items / seconds)
            nemo_rate, ours_rate = statistics.median(rates["nemo"]), statistics.median(rates["ours"])
            print(f"{source:<9} {nemo_rate:>13.1f} {ours_rate:>13.1f} {nemo_rate / ours_rate:>24.3f}")


if __name__ == "__main__":
    main()
