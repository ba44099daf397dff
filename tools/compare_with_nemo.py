#!/usr/bin/env python
"""Show where nest_ext stands against the installed NeMo; exit 1 on any mismatch.

    python tools/compare_with_nemo.py                     # configs, 5 sizes' parameter counts, numbers (small)
    python tools/compare_with_nemo.py --nemo-config DIR   # NeMo's original configs (default ../shared/reference/nemo)
    python tools/compare_with_nemo.py --config config/nest_demo.yaml --size medium --json

Options mirror :mod:`nest_ext.parts.nemo_comparison`.
"""
import argparse
import json
import logging
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nest_ext.parts import nemo_comparison as nc  # noqa: E402


def _table(rows):
    lines = []
    for row in rows:
        keys = list(row["nemo"])
        lines.append(f"{row['name']}: {'OK' if row['ok'] else 'MISMATCH'}")
        lines.append(f"  {'module':<20}{'ours':>16}{'nemo':>16}")
        for k in keys + [k for k in row["ours"] if k not in row["nemo"]]:
            o, n = row["ours"].get(k, "-"), row["nemo"].get(k, "-")
            mark = "" if o == n else "  <--"
            lines.append(f"  {k:<20}{o:>16,}{n:>16,}{mark}" if isinstance(o, int) and isinstance(n, int)
                         else f"  {k:<20}{str(o):>16}{str(n):>16}{mark}")
    return "\n".join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--nemo-config", default=str(nc.DEFAULT_NEMO_CONFIG_DIR),
                   help="folder with NeMo's original NEST configs (*.yaml)")
    p.add_argument("--our-config-dir", default=str(nc.REPO_ROOT / "config"))
    p.add_argument("--config", action="append", default=[],
                   help="also compare the parameter counts of this config of ours (repeatable)")
    p.add_argument("--size", default="small", choices=list(nc.NEST_SIZES), help="size for the numbers check")
    p.add_argument("--sizes", default=",".join(nc.NEST_SIZES), help="sizes for the parameter counts")
    p.add_argument("--skip", default="", help="comma list of checks to skip: configs,params,numbers")
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    args = p.parse_args(argv)

    if os.environ.get("USE_NEMO_CONFORMER"):
        print("note: USE_NEMO_CONFORMER is set, so 'ours' uses NeMo's encoder", file=sys.stderr)
    if not args.json:
        logging.getLogger("nemo_logger").setLevel(logging.ERROR)
    skip = {s for s in args.skip.split(",") if s}
    report = {}
    if "configs" not in skip:
        report["configs"] = nc.compare_configs(args.our_config_dir, args.nemo_config)
    if "params" not in skip:
        sizes = [s for s in args.sizes.split(",") if s]
        report["param_counts"] = nc.compare_param_counts(sizes, args.config, args.our_config_dir, args.nemo_config)
    if "numbers" not in skip:
        report["numbers"] = nc.compare_numbers(args.size, args.our_config_dir, args.nemo_config, atol=args.atol)
    report["ok"] = all(section["ok"] for section in report.values())

    if args.json:
        print(json.dumps(report, indent=1, default=str))
    else:
        if "configs" in report:
            print("== configs (ours vs NeMo's originals) ==")
            for c in report["configs"]["configs"]:
                print(f"{c['config']}: {'OK' if c['ok'] else 'DIFFERENT'}")
                if "error" in c:
                    print(f"  {c['error']}")
                for d in c.get("differences", []):
                    print(f"  {d['key']}: {d['kind']}: ours={d.get('ours', '-')!r} nemo={d.get('nemo', '-')!r}")
                for m in c.get("mapped_targets", []):
                    print(f"  (mapped) {m['key']}: {m['nemo']} -> {m['ours']}")
        if "param_counts" in report:
            print("== parameter counts (ours vs NeMo's) ==")
            print(_table(report["param_counts"]["rows"]))
        if "numbers" in report:
            n = report["numbers"]
            print(f"== numbers ({n['size']}, NeMo's weights in ours, encoder {n['encoder_class']}) ==")
            for k in ("encoded_max_abs_diff", "log_probs_max_abs_diff", "loss_abs_diff"):
                print(f"  {k}: {n[k]:.3g} (atol {n['atol']})")
            print(f"  loss ours {n['loss_ours']:.6f} nemo {n['loss_nemo']:.6f}; lengths/masks/tokens equal: "
                  f"{n['lengths_equal']}/{n['masks_equal']}/{n['tokens_equal']}; masked frames {n['masked_frames']}")
        print("ALL EQUAL" if report["ok"] else "MISMATCH")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
