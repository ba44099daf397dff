"""Show where nest_ext stands against the installed NeMo; exit 1 on any mismatch.

    nest-compare-with-nemo --nemo-config NeMo/examples/asr/conf/ssl/nest   # configs, 5 sizes' parameter counts,
                                                                           # numbers (small)
    nest-compare-with-nemo --nemo-config DIR --config config/nest_demo.yaml --size medium --json
    python tools/compare_with_nemo.py --nemo-config DIR ...                # the same from a checkout

NeMo's original NEST configs do not come with the ``nemo_toolkit`` package: give their folder (``examples/asr/conf/
ssl/nest`` of a NeMo checkout of the installed version) with ``--nemo-config`` or ``NEST_EXT_NEMO_CONFIG_DIR``.
Options mirror :mod:`nest_ext.cli.nemo_comparison`.

Exit status: 0 when everything equals NeMo, 1 on a mismatch, 2 when NeMo's configs are not found.
"""
import json
import logging
import os

from nest_ext.cli import nemo_comparison as nc
from nest_ext.cli.conventions import EXIT_USAGE, error, make_parser, setup_logging
from nest_ext.parts.nest_sizes import NEST_SIZES


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


def build_parser():
    p = make_parser(__doc__)
    p.add_argument("--nemo-config", default=os.environ.get(nc.NEMO_CONFIG_ENV), metavar="DIR",
                   help=f"folder with NeMo's original NEST configs (*.yaml; default ${nc.NEMO_CONFIG_ENV})")
    p.add_argument("--our-config-dir", default=str(nc.REPO_ROOT / "config"), metavar="DIR",
                   help="folder with our configs (default: this checkout's config/)")
    p.add_argument("--config", action="append", default=[], metavar="YAML",
                   help="also compare the parameter counts of this config of ours (repeatable)")
    p.add_argument("--size", default="small", choices=list(NEST_SIZES), help="size for the numbers check")
    p.add_argument("--sizes", default=",".join(NEST_SIZES), metavar="LIST",
                   help="comma list of sizes for the parameter counts (default: all)")
    p.add_argument("--skip", default="", metavar="LIST", help="comma list of checks to skip: configs,params,numbers")
    p.add_argument("--atol", type=float, default=1e-4, metavar="TOL",
                   help="largest absolute difference of outputs and loss that counts as equal (default 1e-4)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of tables")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    setup_logging()
    nemo_logger = logging.getLogger("nemo_logger")
    level = nemo_logger.level
    if not args.json:
        nemo_logger.setLevel(logging.ERROR)  # NeMo's model-building info would bury the tables
    try:
        return _compare(args)
    except nc.NemoConfigNotFound as e:
        return error(e, EXIT_USAGE)
    finally:
        nemo_logger.setLevel(level)  # main() may run inside a longer program (tests): leave NeMo's logger as found


def _compare(args) -> int:
    if os.environ.get("USE_NEMO_CONFORMER"):
        logging.getLogger(__name__).info("USE_NEMO_CONFORMER is set, so 'ours' uses NeMo's encoder")
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


if __name__ == "__main__":  # python -m nest_ext.cli.compare_with_nemo
    raise SystemExit(main())
