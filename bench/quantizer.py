#!/usr/bin/env python
"""Benchmark: nest_ext's RandomProjectionVectorQuantizer vs NeMo 3.0.0's, inside a NEST small training step (CPU).

Builds NEST small from our config (our quantizer) and NeMo's quantizer with the same weights, takes one batch
of speech-like audio (8 utterances of 2-6 s) through the preprocessor, and
times the two quantizers alternately on the same features (NeMo, ours, NeMo, ...): median wall and process
CPU time, ratio ours/NeMo, and the largest single tensor each allocates. Then it times whole training steps
(forward, loss, backward, AdamW) of NEST small and prints each quantizer's share of a step. Tokens are checked
equal on the benchmark batch.

    python bench/quantizer.py                  # batch 8 x 2-6 s, 5 rounds, 3 training steps
    python bench/quantizer.py --quick          # batch 4, 3 rounds, 1 step
    python bench/quantizer.py --seconds 20 --threads 1
"""
import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten


def batch_parser(doc: str, rounds: int) -> argparse.ArgumentParser:
    """The options both NEST-target benches share: the batch, the rounds, the threads, --quick."""
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seconds", type=float, default=6.0, help="longest utterance; the shortest is a third of it")
    p.add_argument("--rounds", type=int, default=rounds)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--quick", action="store_true")
    return p


def build_nest_small(size="nest_fast-conformer_small"):
    """Our NEST model from a config in config/ (no data), seeded."""
    from omegaconf import open_dict

    from nest_ext.models import EncDecDenoiseMaskedTokenPredModel
    from nest_ext.cli.nemo_comparison import load_our_config

    cfg = load_our_config(size).model
    with open_dict(cfg):
        cfg.train_ds = cfg.validation_ds = None
    torch.manual_seed(0)
    return EncDecDenoiseMaskedTokenPredModel(cfg=cfg)


def make_batch(batch=8, min_s=2.0, max_s=6.0, sample_rate=16000):
    """Speech-like utterances of evenly spread durations, zero-padded: audio [B, T], lengths [B]."""
    from nest_ext.cli.synth import speech_like

    clips = [speech_like(d, sample_rate, seed=i) for i, d in enumerate(np.linspace(min_s, max_s, batch))]
    audio = torch.zeros(batch, max(len(c) for c in clips))
    for i, c in enumerate(clips):
        audio[i, : len(c)] = torch.from_numpy(c)
    return audio, torch.tensor([len(c) for c in clips])


def train_step(model, optimizer, audio, lengths):
    """One NEST training step as NeMo's training_step does it (clean targets, noisy input = audio here)."""
    log_probs, enc_len, masks, tokens = model(input_signal=audio, input_signal_length=lengths,
                                              noisy_input_signal=audio, noisy_input_signal_length=lengths,
                                              apply_mask=True)
    loss = model.loss(masks=masks, decoder_outputs=log_probs, targets=tokens, decoder_lengths=enc_len)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def timed(fn, *args):
    """(wall s, process CPU s) of one call."""
    w, c = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - w, time.process_time() - c


class LargestTensor(TorchDispatchMode):
    """Records the largest storage (bytes) any op allocates while active."""

    largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for t in tree_flatten(out)[0]:
            if isinstance(t, torch.Tensor):
                self.largest = max(self.largest, t.untyped_storage().nbytes())
        return out


def largest_tensor(fn, *args):
    with torch.no_grad(), LargestTensor() as mode:
        fn(*args)
    return mode.largest


def main(argv=None):
    p = batch_parser(__doc__, rounds=5)
    p.add_argument("--steps", type=int, default=3, help="training steps timed for the share of a step")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.rounds, args.steps = 4, 3, 1
    torch.set_num_threads(args.threads)
    from nemo.collections.asr.modules import RandomProjectionVectorQuantizer as NeMoQuantizer

    model = build_nest_small()
    ours = model.quantizer
    q = ours
    nemo = NeMoQuantizer(feat_in=q.feat_in, code_dim=q.code_dim, num_classes=q.num_classes, num_books=q.num_books,
                         dist_fn=q.dist_fn, squeeze_single=q.squeeze_single, combine_time_steps=q.combine_time_steps)
    nemo.load_state_dict(ours.state_dict(), strict=True)
    audio, lengths = make_batch(args.batch, args.seconds / 3, args.seconds)
    with torch.no_grad():
        feats, _ = model.preprocessor(input_signal=audio, length=lengths)
        assert torch.equal(nemo(input_signal=feats)[1], ours(input_signal=feats)[1]), "tokens differ"

    def quantize(module):
        with torch.no_grad():
            module(input_signal=feats)

    times = {"nemo": [], "ours": []}
    for _ in range(args.rounds + 1):  # the first round warms up
        for name, module in (("nemo", nemo), ("ours", ours)):
            times[name].append(timed(quantize, module))
    med = {k: (statistics.median(t[0] for t in v[1:]), statistics.median(t[1] for t in v[1:])) for k, v in times.items()}
    big = {"nemo": largest_tensor(quantize, nemo), "ours": largest_tensor(quantize, ours)}

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    train_step(model, optimizer, audio, lengths)  # warm-up
    steps = [timed(train_step, model, optimizer, audio, lengths) for _ in range(args.steps)]
    step = (statistics.median(s[0] for s in steps), statistics.median(s[1] for s in steps))

    frames = int(feats.shape[-1]) // q.combine_time_steps * args.batch
    print(f"NEST small quantizer ({q.num_books} x {q.num_classes} codes, dim {q.code_dim}), batch {args.batch} "
          f"({frames} token frames), {args.threads} threads, {args.rounds} alternating rounds; tokens equal")
    print("| | NeMo | ours | ours/NeMo |\n|---|---|---|---|")
    print(f"| quantizer wall s | {med['nemo'][0]:.4f} | {med['ours'][0]:.4f} | {med['ours'][0] / med['nemo'][0]:.3f} |")
    print(f"| quantizer CPU s | {med['nemo'][1]:.4f} | {med['ours'][1]:.4f} | {med['ours'][1] / med['nemo'][1]:.3f} |")
    print(f"| largest tensor MiB | {big['nemo'] / 2**20:.1f} | {big['ours'] / 2**20:.1f} | {big['ours'] / big['nemo']:.3f} |")
    print(f"| share of a training step (CPU) | {100 * med['nemo'][1] / (step[1] - med['ours'][1] + med['nemo'][1]):.1f}% "
          f"| {100 * med['ours'][1] / step[1]:.1f}% | |")
    print(f"training step (ours): wall {step[0]:.2f} s, CPU {step[1]:.2f} s (median of {args.steps})")


if __name__ == "__main__":
    main()
