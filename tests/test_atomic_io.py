"""nest_ext.parts.atomic_io: temporary names say whose they are; leftovers of dead writers are found and removed."""
import os
import subprocess
import sys
import time

import pytest

from conftest import ROOT
from nest_ext.parts import atomic_io
from nest_ext.parts.atomic_io import atomic_path, atomic_write, discard, publish, remove_temps, temp_path, temp_owner_gone


def _leave_temp(target):
    """A temporary of ``target`` made by a process that has exited (as a killed writer leaves it)."""
    code = f"from nest_ext.parts.atomic_io import temp_path; print(temp_path({str(target)!r}))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    return out.stdout.strip()


def test_temp_names_beside_target_with_host_and_pid(tmp_path):
    target = tmp_path / "audio_0.tar"
    tmp = temp_path(target, suffix=".nemo")
    name = os.path.basename(tmp)
    assert os.path.dirname(tmp) == str(tmp_path) and name.startswith(f".audio_0.tar.tmp.{atomic_io._HOST}.{os.getpid()}.")
    assert name.endswith(".nemo") and os.path.isfile(tmp)
    assert not temp_owner_gone(tmp)  # this process is alive
    with open(tmp, "w") as f:
        f.write("data")
    os.chmod(tmp, 0o600)
    publish(tmp, target)
    assert target.read_text() == "data" and os.listdir(tmp_path) == ["audio_0.tar"]
    assert target.stat().st_mode & 0o777 == atomic_io.default_mode()
    folder = temp_path(target, directory=True)
    open(os.path.join(folder, "x"), "w").close()
    discard(folder)
    assert os.listdir(tmp_path) == ["audio_0.tar"]


def test_remove_temps_only_orphans_keeps_live_writers(tmp_path):
    target = tmp_path / "data.list"
    dead = _leave_temp(target)
    live = temp_path(target)
    other = temp_path(tmp_path / "data.list2")  # another target's temporary: never touched
    foreign_new = tmp_path / ".data.list.tmp.otherhost.12.abc"  # another host: judged by age
    foreign_old = tmp_path / ".data.list.tmp.otherhost.13.abc"
    foreign_new.write_text("")
    foreign_old.write_text("")
    os.utime(foreign_old, (time.time() - 7200, time.time() - 7200))
    assert temp_owner_gone(dead) and not temp_owner_gone(live)
    remove_temps(target, only_orphans=True)
    assert sorted(os.listdir(tmp_path)) == sorted(os.path.basename(p) for p in (live, other, foreign_new))
    remove_temps(target)
    assert os.listdir(tmp_path) == [os.path.basename(other)]


def test_atomic_path_error_leaves_nothing_and_keeps_the_old_file(tmp_path):
    target = tmp_path / "m.json"
    atomic_write(target, "old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            open(tmp, "w").write("half")
            raise RuntimeError("killed")
    assert target.read_text() == "old" and os.listdir(tmp_path) == ["m.json"]
