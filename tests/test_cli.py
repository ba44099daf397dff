"""The command-line layer behaves alike (nest_ext/cli/__init__.py): console scripts and tools/ wrappers run the
same main, every option has help, one --out-dir (old spellings still work), --device, errors that name flags,
progress lines off a terminal."""
import argparse
import importlib
import logging
import re
import subprocess
import sys

import pytest

from conftest import ROOT, speech_like, write_wav

SCRIPTS = dict(re.findall(r'"(nest-[\w-]+)=(nest_ext\.cli\.\w+:main)"', (ROOT / "setup.py").read_text()))
MODULES = sorted(v.split(":")[0].rsplit(".", 1)[1] for v in SCRIPTS.values())


def _module(name):
    return importlib.import_module(f"nest_ext.cli.{name}")


def test_every_tool_is_a_console_script_and_a_thin_wrapper():
    tools = sorted(p.stem for p in (ROOT / "tools").glob("*.py"))
    assert MODULES == tools and len(SCRIPTS) == len(tools)
    for script, target in SCRIPTS.items():
        module, func = target.split(":")
        name = module.rsplit(".", 1)[1]
        assert script == "nest-" + {"convert_mossformer2_checkpoint": "convert_mossformer2"}.get(name, name).replace(
            "_", "-")
        assert callable(getattr(importlib.import_module(module), func))
        wrapper = (ROOT / "tools" / f"{name}.py").read_text()
        assert f"from nest_ext.cli.{name} import main" in wrapper and "raise SystemExit(main())" in wrapper
        assert "sys.path" not in wrapper and len(wrapper.splitlines()) < 10


def test_no_path_hacks_left():
    files = [ROOT / "train.py", *(ROOT / "tools").glob("*.py"), *(ROOT / "bench").glob("*.py"),
             *(ROOT / "tests").glob("*.py"), *(ROOT / "nest_ext").rglob("*.py")]
    hacks = [str(p) for p in files if p.name != "test_cli.py" and re.search(
        r"sys\.path\.(insert|append)|spec_from_file_location", p.read_text())]
    assert not hacks


@pytest.mark.parametrize("name", MODULES)
def test_help_works_and_every_option_has_help(name, capsys):
    module = _module(name)
    parser = module.build_parser()
    assert isinstance(parser, argparse.ArgumentParser)
    with pytest.raises(SystemExit) as exit_info:
        module.main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage:") and max(len(line) for line in out.splitlines()[:4]) <= 130  # a readable usage
    for action in parser._actions:
        assert action.help and action.help != argparse.SUPPRESS, (name, action.option_strings or action.dest)


# (module, arguments besides the output folder, the old spelling that must keep working or None)
OUT_DIR_CASES = [
    ("build_tokenizer", ["--manifest", "m.json"], None),
    ("convert_mossformer2_checkpoint", ["--official", "c.pt"], None),  # --out FILE is the other choice
    ("evaluate_asr", ["--model", "m.nemo", "--manifest", "t.json"], None),
    ("evaluate_llm_asr", ["--model", "m.ckpt", "--test-sets", "t.json"], None),
    ("evaluate_separation", ["--model", "m.nemo", "--manifest", "t.json"], "--out"),
    ("make_demo_data", [], "--out"),
    ("merge_lora", ["--model", "m.ckpt"], None),
    ("pack_shards", ["--wav-scp", "wav.scp"], None),
    ("prepare_separation_data", ["root"], None),  # the old spelling is the second positional argument
    ("run_demo", [], None),
    ("separate", ["--model", "m.nemo", "mix.wav"], "--output-dir"),
]


def test_out_dir_cases_cover_every_tool_that_writes():
    assert sorted(c[0] for c in OUT_DIR_CASES) == sorted(set(MODULES) - {"compare_with_nemo"})  # it prints only


@pytest.mark.parametrize("name,args,alias", OUT_DIR_CASES, ids=[c[0] for c in OUT_DIR_CASES])
def test_out_dir_and_its_old_spelling(name, args, alias):
    parser = _module(name).build_parser()
    assert parser.parse_args(args + ["--out-dir", "OUT"]).out_dir == "OUT"
    if alias:
        assert parser.parse_args(args + [alias, "OUT"]).out_dir == "OUT"


# (module, argv, the flags the error must name)
MISSING = [
    ("pack_shards", ["--out-dir", "o"], ["--wav-scp", "--manifest"]),
    ("pack_shards", ["--wav-scp", "w"], ["--out-dir"]),
    ("pack_shards", ["--wav-scp", "w", "--manifest", "m", "--out-dir", "o"], ["--wav-scp", "--manifest"]),
    ("pack_shards", ["--manifest", "m", "--text", "t", "--out-dir", "o"], ["--text", "--wav-scp"]),
    ("pack_shards", ["--wav-scp", "w", "--out-dir", "o", "--shard-idx", "2", "--shard-count", "2"],
     ["--shard-idx", "--shard-count"]),
    ("pack_shards", ["--wav-scp", "w", "--out-dir", "o", "--sample-rate", "0"], ["--sample-rate"]),
    ("separate", ["--model", "m", "mix.wav"], ["--out-dir"]),
    ("separate", ["--out-dir", "o", "mix.wav"], ["--model"]),
    ("evaluate_separation", ["--model", "m", "--manifest", "t"], ["--out-dir"]),
    ("evaluate_asr", ["--manifest", "t"], ["--model"]),
    ("evaluate_llm_asr", ["--model", "m", "--out-dir", "o"], ["--test-sets"]),
    ("merge_lora", ["--model", "m"], ["--out-dir"]),
    ("build_tokenizer", ["--out-dir", "o"], ["--manifest"]),
    ("convert_mossformer2_checkpoint", ["--official", "c.pt"], ["--out-dir", "--out"]),
    ("convert_mossformer2_checkpoint", ["--out-dir", "o"], ["--official"]),
    ("prepare_separation_data", ["root"], ["--out-dir"]),
    ("prepare_separation_data", ["root", "a", "--out-dir", "b"], ["--out-dir", "OUT_DIR"]),
]


@pytest.mark.parametrize("name,argv,flags", MISSING, ids=[f"{c[0]}-{'-'.join(c[2])}" for c in MISSING])
def test_argument_errors_name_the_flags(name, argv, flags, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _module(name).main(argv)
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert "usage:" in err and all(flag in err for flag in flags), err
    message = err.split("error:", 1)[1]
    assert not re.search(r"\b(wav_scp|out_dir|shard_idx|sample_rate|output_dir)\b", message), message


def test_device_flag():
    import torch

    from nest_ext.cli.conventions import CliError, resolve_device

    assert resolve_device(None) == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    with pytest.raises(CliError, match="--device 'nonsense'"):
        resolve_device("nonsense")
    if not torch.cuda.is_available():
        with pytest.raises(CliError, match="--device cuda: CUDA is not available"):
            resolve_device("cuda")
    for name in ("separate", "evaluate_separation", "evaluate_asr", "evaluate_llm_asr"):
        assert _module(name).build_parser().get_default("device") is None  # resolved at run time
    # evaluate_llm_asr's older spellings
    args = _module("evaluate_llm_asr").build_parser().parse_args(
        ["--model", "m", "--test-sets", "t", "--out-dir", "o", "--device", "auto", "--log-every", "5"])
    assert args.device == "auto" and args.progress_every == 5.0


def test_errors_are_one_line_on_stderr_with_status(tmp_path, capsys):
    from nest_ext.cli.separate import main

    assert main(["--model", str(tmp_path / "no.nemo"), "--out-dir", str(tmp_path), str(tmp_path / "no.wav")]) == 1
    captured = capsys.readouterr()
    assert captured.err.startswith("error: ") and "no.wav" in captured.err and not captured.out


def _kaldi_dir(root, n):
    lines = []
    for i in range(n):
        path = write_wav(root / f"u{i}.wav", speech_like(0.2, seed=i))
        lines.append(f"utt{i} {path}\n")
    (root / "wav.scp").write_text("".join(lines))
    return root / "wav.scp"


PROGRESS_LINE = r"{desc}: (\d+)/{total} {unit} \(\d+%\), ETA \d+ s, [\d.]+ {unit}/s"


def test_pack_shards_logs_progress_when_stderr_is_not_a_terminal(tmp_path):
    scp = _kaldi_dir(tmp_path, 6)
    r = subprocess.run([sys.executable, str(ROOT / "tools" / "pack_shards.py"), "--wav-scp", str(scp),
                        "--out-dir", str(tmp_path / "out"), "--shard-size", "2", "--progress-every", "0"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    done = [int(m.group(1)) for m in re.finditer(PROGRESS_LINE.format(desc="packing", total=6, unit="utt"), r.stderr)]
    assert done[-1] == 6 and len(done) >= 6 and done == sorted(done), r.stderr  # per item, then the final line
    assert re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+ INFO nest_ext", r.stderr)  # the one log format
    quiet = subprocess.run([sys.executable, "-m", "nest_ext.cli.pack_shards", "--wav-scp", str(scp),
                            "--out-dir", str(tmp_path / "q"), "--no-progress"], capture_output=True, text=True,
                           timeout=300)
    assert quiet.returncode == 0 and "ETA" not in quiet.stderr


def test_prepare_and_evaluate_separation_log_progress(tmp_path, caplog):
    from nest_ext.cli.evaluate_separation import evaluate
    from nest_ext.cli.prepare_separation_data import prepare_separation_manifests

    split = tmp_path / "wsj" / "tt"
    names = [f"01{k}a010b_0.6_20{k}o010t_-0.6.wav" for k in range(3)]
    for k, name in enumerate(names):
        srcs = [speech_like(0.3, 8000, seed=10 * k + s) for s in range(2)]
        for s, src in enumerate(srcs):
            write_wav(split / f"s{s + 1}" / name, src, 8000)
        write_wav(split / "mix" / name, sum(srcs), 8000)
    with caplog.at_level(logging.INFO, logger="nest_ext"):
        report = prepare_separation_manifests(str(tmp_path / "wsj"), str(tmp_path / "m"), progress_every_s=0)
        assert report.splits["tt"].num_written == 3
        summary = evaluate(lambda mix: mix.expand(2, -1), str(tmp_path / "m" / "tt.json"), str(tmp_path / "e"),
                           report=False, extra_metrics=False, progress_every_s=0)
        assert summary["num_evaluated"] == 3
    messages = "\n".join(r.getMessage() for r in caplog.records)
    for desc, unit in (("checking tt", "mixtures"), ("evaluating", "utt")):
        done = [int(m.group(1)) for m in re.finditer(PROGRESS_LINE.format(desc=desc, total=3, unit=unit), messages)]
        assert done[-1] == 3 and len(done) >= 3, messages


def test_converter_out_dir_names_the_file_after_the_checkpoint(tmp_path, capsys):
    from conftest import shared_reference
    from nest_ext.cli.convert_mossformer2_checkpoint import main

    official = shared_reference("mossformer2", "official_tiny_2spk.pt")
    assert main(["--official", str(official), "--out-dir", str(tmp_path / "models")]) == 0
    assert (tmp_path / "models" / "official_tiny_2spk.nemo").is_file()
    assert "official_tiny_2spk.nemo" in capsys.readouterr().out


def test_compare_with_nemo_without_nemo_configs_names_the_flag(monkeypatch, capsys):
    from nest_ext.cli.compare_with_nemo import main

    monkeypatch.delenv("NEST_EXT_NEMO_CONFIG_DIR", raising=False)
    level = logging.getLogger("nemo_logger").level
    assert main(["--skip", "params,numbers"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "--nemo-config" in err and "NEST_EXT_NEMO_CONFIG_DIR" in err
    assert logging.getLogger("nemo_logger").level == level  # quietened for its tables only, then restored
