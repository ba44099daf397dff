"""keep_freed_memory: after it, a model's repeated inference stops paying page faults for fresh pages."""
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

CHILD = textwrap.dedent("""
    import json, resource, sys
    keep = sys.argv[1] == "kept"
    if keep:
        from nest_ext.parts.allocator import keep_freed_memory
        assert keep_freed_memory()
    import torch
    from nest_ext.modules.mossformer2 import MossFormer2
    torch.set_num_threads(1)
    torch.manual_seed(0)
    model = MossFormer2(num_spks=2, encoder_embedding_dim=128, mossformer_sequence_dim=128,
                        num_mossformer_layer=2).eval()
    x = torch.randn(1, 8000)
    with torch.inference_mode():
        model(x)
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        for _ in range(3):
            model(x)
        faults = (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / 3
    print(json.dumps(faults))
""")


def faults_per_call(side):
    out = subprocess.run([sys.executable, "-c", CHILD, side], capture_output=True, text=True, check=True,
                         cwd=ROOT, env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"}, timeout=300)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt: Linux only")
def test_keep_freed_memory_removes_most_page_faults_of_repeated_inference():
    default, kept = faults_per_call("default"), faults_per_call("kept")
    # the default allocator hands large activations back to the kernel and faults them in again each call
    assert default > 1000, default
    assert kept < default / 4, (kept, default)
