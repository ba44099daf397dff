"""bench/mossformer2.py --floor: every matrix product of an inference is recorded and timed."""
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_floor_records_the_matrix_products_of_an_inference():
    out = subprocess.run(
        [sys.executable, "bench/mossformer2.py", "--model", "tiny", "--seconds", "0.5", "--floor", "--threads", "1",
         "--rtf-seconds", "0.5", "--rounds", "1"],
        cwd=ROOT, capture_output=True, text=True, check=True, timeout=300, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    ).stdout
    # the tiny model's FLOPs are matrix products except its encoder/decoder and depthwise convolutions
    recorded = float(re.search(r"recorded matrix products: ([\d.]+)% of the FLOPs", out).group(1))
    assert 80.0 < recorded <= 100.0, out
    rows = re.findall(r"^\s+(linear|matmul|baddbmm_|addmm|bmm|mm)\s+\[.*\]\s+(\d+)\s+([\d.]+)\s+([\d.]+)$", out, re.M)
    assert {r[0] for r in rows} >= {"linear", "matmul", "baddbmm_"}, out
    assert all(float(ms) > 0 for _, _, ms, _ in rows), out
    floor = float(re.search(r"matrix products alone, at their shapes: ([\d.]+) s", out).group(1))
    assert floor > 0
