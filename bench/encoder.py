"""Benchmark: nest_ext ConformerEncoder vs NeMo's ConformerEncoder, fp32 on CPU.

Both encoders hold the same weights (ours loads NeMo's state dict strictly) and get the same batch.
Timings alternate between the two in one process (NeMo, ours, NeMo, ours, ...) so machine load affects
both alike; the median of each is reported with the ratio ours / NeMo (below 1.0: ours is faster).

- forward+backward: train mode with the config's dropouts (what a training step does);
- forward only: eval mode under torch.inference_mode();
- peak memory of one forward+backward, from torch.profiler's allocation events (CPU has no allocator
  peak counter); the bytes of tensors saved for backward are printed too.

Usage::

    python bench/encoder.py                  # NEST small, batch 8 x 10 s, 5 rounds
    python bench/encoder.py --quick          # under a minute
    python bench/encoder.py --size large --batch 4 --seconds 20 --rounds 3 --threads 2
"""
import argparse
import statistics
import time

import torch

from nest_ext.parts.nest_sizes import NEST_SIZES, encoder_overrides



def encoder_config(size, layers=None):
    cfg = dict(
        feat_in=80,
        feat_out=-1,
        subsampling="dw_striding",
        subsampling_factor=8,
        subsampling_conv_channels=256,
        ff_expansion_factor=4,
        self_attention_model="rel_pos",
        att_context_size=[-1, -1],
        xscaling=True,
        untie_biases=True,
        pos_emb_max_len=5000,
        conv_norm_type="batch_norm",
        use_bias=True,
        dropout=0.1,
        dropout_pre_encoder=0.1,
        dropout_emb=0.0,
        dropout_att=0.1,
    )
    cfg.update(encoder_overrides(size))
    if layers:
        cfg["n_layers"] = layers
    return cfg


def build(cfg):
    from nemo.collections.asr.modules import ConformerEncoder as NemoEncoder

    from nest_ext.modules import ConformerEncoder

    torch.manual_seed(0)
    nemo = NemoEncoder(**cfg)
    ours = ConformerEncoder(**cfg)
    ours.load_state_dict(nemo.state_dict(), strict=True)
    return nemo, ours


def make_batch(batch, seconds, feat_in, seed=0):
    """Log-mel-like features at 100 frames/s; lengths spread from 60% to 100% of the longest."""
    gen = torch.Generator().manual_seed(seed)
    frames = int(seconds * 100)
    x = torch.randn(batch, feat_in, frames, generator=gen)
    lengths = torch.linspace(frames, int(frames * 0.6), batch).round().long()
    return x, lengths


def fwd_bwd(enc, x, lengths):
    enc.train()
    out, out_len = enc(audio_signal=x, length=lengths)
    out.square().mean().backward()
    enc.zero_grad(set_to_none=True)


def fwd(enc, x, lengths):
    enc.eval()
    with torch.inference_mode():
        enc(audio_signal=x, length=lengths)


def timed(fn, *args):
    """(wall seconds, CPU seconds of this process): on a shared machine the CPU time is the steadier one."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn(*args)
    return time.perf_counter() - wall, time.process_time() - cpu


def alternate(step, nemo, ours, x, lengths, rounds):
    """Medians of (wall, cpu) for NeMo and ours, run alternately."""
    step(nemo, x, lengths), step(ours, x, lengths)  # warm-up (allocator, oneDNN primitives)
    t_nemo, t_ours = [], []
    for _ in range(rounds):
        t_nemo.append(timed(step, nemo, x, lengths))
        t_ours.append(timed(step, ours, x, lengths))
    med = lambda ts, i: statistics.median(t[i] for t in ts)  # noqa: E731
    return (med(t_nemo, 0), med(t_nemo, 1)), (med(t_ours, 0), med(t_ours, 1))


def peak_memory(enc, x, lengths):
    """Peak of live CPU bytes over one forward+backward, from the profiler's allocation events."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fwd_bwd(enc, x, lengths)
    events = sorted(
        (e for e in prof.events() if e.self_cpu_memory_usage != 0), key=lambda e: e.time_range.start
    )
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return peak


def saved_bytes(enc, x, lengths):
    """Bytes of distinct storages autograd keeps for backward (the activation memory of training)."""
    seen = {}

    def pack(t):
        try:
            storage = t.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        except (RuntimeError, NotImplementedError):
            pass
        return t

    enc.train()
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out, _ = enc(audio_signal=x, length=lengths)
    out.square().mean().backward()
    enc.zero_grad(set_to_none=True)
    return sum(seen.values())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", choices=sorted(NEST_SIZES), default="small")
    parser.add_argument("--layers", type=int, default=None, help="override the number of layers")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seconds", type=float, default=10.0, help="longest utterance in the batch")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    parser.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    parser.add_argument("--quick", action="store_true", help="small run (batch 4 x 4 s, 3 rounds, 6 layers)")
    args = parser.parse_args(argv)
    if args.quick:
        args.batch, args.seconds, args.rounds, args.layers = 4, 4.0, 3, args.layers or 6
    if args.threads:
        torch.set_num_threads(args.threads)

    cfg = encoder_config(args.size, args.layers)
    nemo, ours = build(cfg)
    x, lengths = make_batch(args.batch, args.seconds, cfg["feat_in"])
    print(
        f"encoder {args.size} (d_model {cfg['d_model']}, {cfg['n_layers']} layers, "
        f"{sum(p.numel() for p in ours.parameters()):,} params), batch {args.batch} x {args.seconds:g} s, "
        f"{torch.get_num_threads()} threads, torch {torch.__version__}"
    )
    results = {}
    for name, step in (("forward+backward", fwd_bwd), ("forward only", fwd)):
        (w_nemo, c_nemo), (w_ours, c_ours) = alternate(step, nemo, ours, x, lengths, args.rounds)
        results[name] = dict(wall=w_ours / w_nemo, cpu=c_ours / c_nemo)
        print(f"{name:17s} wall: NeMo {w_nemo * 1e3:8.1f} ms  ours {w_ours * 1e3:8.1f} ms  ratio {w_ours / w_nemo:.3f}"
              f"   | cpu: NeMo {c_nemo * 1e3:8.1f} ms  ours {c_ours * 1e3:8.1f} ms  ratio {c_ours / c_nemo:.3f}")
    if not args.no_memory:
        p_nemo, p_ours = peak_memory(nemo, x, lengths), peak_memory(ours, x, lengths)
        s_nemo, s_ours = saved_bytes(nemo, x, lengths), saved_bytes(ours, x, lengths)
        print(f"peak memory fwd+bwd NeMo {p_nemo / 2**20:8.1f} MiB   ours {p_ours / 2**20:8.1f} MiB   "
              f"ratio {p_ours / p_nemo:.3f}")
        print(f"saved for backward  NeMo {s_nemo / 2**20:8.1f} MiB   ours {s_ours / 2**20:8.1f} MiB   "
              f"ratio {s_ours / s_nemo:.3f}")
    return results


if __name__ == "__main__":
    main()
