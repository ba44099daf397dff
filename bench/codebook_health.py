#!/usr/bin/env python
"""Benchmark: what codebook-health monitoring costs in a NEST small training step (CPU).

Its work per training step is the model keeping the batch's targets (``_codebook_targets``: the loss's frame
mask of the masks) and :meth:`CodebookHealthMonitor.update` (one ``bincount``); once per window
``end_window`` (ratios, logging). This script

* times that work directly on a real NEST small batch (median of many repetitions) and compares it with the
  median CPU time of a whole training step (forward, loss, backward, AdamW): the share asked to stay <= 2%;
* times whole training steps with monitoring and without (the model's target bookkeeping switched off),
  alternating in one process, and prints the ratio (noisy on a shared machine: the direct share is the
  figure to trust).

    python bench/codebook_health.py            # batch 8 x 2-6 s, 4 alternating rounds
    python bench/codebook_health.py --quick
"""
import statistics

import torch

from quantizer import batch_parser, build_nest_small, make_batch, timed, train_step  # bench/ is the script's folder, on sys.path


def main(argv=None):
    p = batch_parser(__doc__, rounds=4)
    p.add_argument("--window", type=int, default=100, help="every_n_steps: end_window's cost is shared by this many steps")
    args = p.parse_args(argv)
    if args.quick:
        args.batch, args.rounds = 4, 2
    torch.set_num_threads(args.threads)
    from nest_ext.parts.codebook_health import CodebookHealthMonitor

    model = build_nest_small()
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    audio, lengths = make_batch(args.batch, args.seconds / 3, args.seconds)
    monitor = CodebookHealthMonitor(every_n_steps=args.window, min_coverage=None, min_perplexity=None)  # repeats one batch

    # direct cost of the monitoring work on this batch's real outputs
    with torch.no_grad():
        outputs = model(input_signal=audio, input_signal_length=lengths, noisy_input_signal=audio,
                        noisy_input_signal_length=lengths, apply_mask=True)
    _, enc_len, masks, tokens = outputs
    per_step = [timed(lambda: monitor.update(model._codebook_targets(tokens, enc_len, masks)))[1] for _ in range(200)]
    window = []
    for _ in range(5):
        monitor.update(model.ssl_targets)  # set by the training-mode forward above
        window.append(timed(monitor.end_window, None)[1])

    # whole steps with and without monitoring, alternating
    keep_targets = model._codebook_targets

    def step(monitored):
        model._codebook_targets = keep_targets if monitored else (lambda *a: None)
        train_step(model, optimizer, audio, lengths)
        if monitored:
            monitor.update(model.ssl_targets)

    step(True)  # warm-up
    times = {True: [], False: []}
    for _ in range(args.rounds):
        for monitored in (False, True):
            times[monitored].append(timed(step, monitored)[1])
    plain, watched = statistics.median(times[False]), statistics.median(times[True])
    work = statistics.median(per_step) + statistics.median(window) / args.window

    print(f"NEST small, batch {args.batch} (utterances {args.seconds / 3:g}-{args.seconds:g} s), {args.threads} threads, "
          f"window {args.window} steps")
    print(f"monitoring work per step: {1e3 * statistics.median(per_step):.2f} ms CPU (targets + bincount) "
          f"+ {1e3 * statistics.median(window):.2f} ms per window / {args.window}")
    print(f"training step CPU: {plain:.3f} s without, {watched:.3f} s with monitoring (ratio {watched / plain:.3f}, "
          f"median of {args.rounds} alternating rounds)")
    print(f"share of a training step: {100 * work / plain:.3f}% (goal <= 2%)")


if __name__ == "__main__":
    main()
