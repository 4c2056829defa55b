"""The ``pandg`` command line: help texts, synth, index, refusal to overwrite."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from napari_pandg.cli import build_parser, main


def test_console_script_installed_and_helps() -> None:
    exe = shutil.which("pandg") or str(Path(sys.executable).parent / "pandg")
    res = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True)
    for word in ("synth", "index", "demo"):
        assert word in res.stdout


@pytest.mark.parametrize("command", ["synth", "index", "demo", "sam", "train", "train-features", "segment", "models", "benchmark"])
def test_each_subcommand_explains_itself(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert len(text.splitlines()) > 3
    assert "usage: pandg " + command in text


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 0
    assert "pandg" in capsys.readouterr().out


def test_synth_writes_manifest_and_refuses_nonempty(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "ds"
    argv = ["synth", "--out", str(out), "--subjects", "1", "--centers", "C", "--sequences", "t2,op", "--seed", "5"]
    assert main(argv) == 0
    df = pd.read_csv(out / "manifest.csv")
    assert set(df["sequence"]) == {"t2", "op"}
    assert set(df["center"]) == {"C"}
    for col in ("subject", "center", "sequence", "field_strength", "image", "label"):
        assert col in df.columns
    assert all((out / p).is_file() for p in df["image"]) and all((out / p).is_file() for p in df["label"])
    before = {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}
    capsys.readouterr()
    assert main(argv) == 2  # non-empty folder without --overwrite
    err = capsys.readouterr().err
    assert "--overwrite" in err and str(out) in err
    assert before == {p: p.stat().st_mtime_ns for p in out.rglob("*.nii.gz")}  # nothing touched
    assert main([*argv, "--overwrite"]) == 0


def test_synth_rejects_unknown_center(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match="unknown center"):
        main(["synth", "--out", str(tmp_path / "x"), "--centers", "Z"])


def test_index_detects_phantom_layout(phantom_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "index.csv"
    assert main(["index", str(phantom_dir), "--out", str(out)]) == 0
    assert "pandg" in capsys.readouterr().out
    df = pd.read_csv(out)
    assert len(df) == 10  # 2 centers x 1 subject x 5 sequences
    assert set(df["center"]) == {"A", "B"}
    assert main(["index", str(phantom_dir), "--out", str(out)]) == 2  # exists, no --overwrite
    assert main(["index", str(phantom_dir), "--out", str(out), "--overwrite"]) == 0


def test_index_error_names_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "empty").mkdir()
    assert main(["index", str(tmp_path / "empty"), "--out", str(tmp_path / "i.csv")]) == 2
    assert "empty" in capsys.readouterr().err


def test_parser_lists_only_real_commands() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"synth", "synth-eval", "index", "demo", "sam", "train", "train-features", "segment", "models", "benchmark", "shift-auroc", "embed"} == set(sub.choices)


def test_sam_missing_checkpoint_is_a_clear_error(phantom_index, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    row = phantom_index.iloc[0]
    argv = ["sam", "--checkpoint", str(tmp_path / "nope.pt"), "--input", row["image"], "--box", "10,20,20,40,40",
            "--output", str(tmp_path / "m.nii.gz")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "nope.pt" in err
    assert not (tmp_path / "m.nii.gz").exists()


# --------------------------------------------------------------------------- issue 12, item 4
def _walk(parser, path=("pandg",)):
    import argparse

    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sp in action.choices.items():
                yield from _walk(sp, (*path, name))
        elif not isinstance(action, argparse._HelpAction):
            yield " ".join(path), action


def test_every_option_has_help() -> None:
    missing = [f"{cmd} {'/'.join(a.option_strings) or a.dest}" for cmd, a in _walk(build_parser())
               if not (a.help or "").strip()]  # fmt: skip
    assert not missing, missing
    assert any(cmd == "pandg demo" and "--seed" in a.option_strings for cmd, a in _walk(build_parser()))


def test_help_segment_example_uses_the_dg_model(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        main(["--help"])
    seg = [line for line in capsys.readouterr().out.splitlines() if "pandg segment" in line]
    assert seg and all("synth_A_t1fs_venous" in line and "erm_" not in line for line in seg)


def test_cli_says_overwrite_flag_not_keyword(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from napari_pandg.cli import cli_wording

    assert cli_wording("x exists; pass overwrite=True (CLI: --overwrite) to replace it") == "x exists; pass --overwrite to replace it"
    assert cli_wording("x exists; pass --overwrite (overwrite=True in Python) to replace it") == "x exists; pass --overwrite to replace it"
    assert "overwrite=True" in cli_wording("pass overwrite=True", has_overwrite=False)
    out = tmp_path / "i.csv"
    out.write_text("old")
    (tmp_path / "data").mkdir()
    assert main(["index", str(tmp_path / "data"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--overwrite" in err and "overwrite=True" not in err and out.read_text() == "old"


def test_models_lists_without_torch_or_networks() -> None:
    """`pandg models` reads descriptions without torch, monai or building a network."""
    code = (
        "import sys; from napari_pandg.cli import main; rc = main(['models']); "
        "bad = [m for m in ('torch', 'monai', 'napari_pandg.models.networks', 'napari_pandg.phantom', "
        "'napari_pandg.evalsim') if m in sys.modules]; "
        "print('HEAVY', bad); sys.exit(rc)"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in res.stdout, res.stdout + res.stderr
    assert "synth_A_t1fs_venous" in res.stdout


def test_fast_description_equals_torch_description(tmp_path: Path) -> None:
    pytest.importorskip("torch")
    from napari_pandg.models import list_models, read_description, read_description_fast

    df = list_models()
    assert len(df) and not df["error"].astype(bool).any()
    for path in df["path"]:
        fast = read_description_fast(path)
        assert fast is not None and fast.to_dict() == read_description(path).to_dict()
    (tmp_path / "legacy.pt").write_bytes(b"\x80\x02}q\x00.")  # not a zip: left to torch.load
    assert read_description_fast(tmp_path / "legacy.pt") is None


def test_models_reports_bad_user_checkpoint(tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch) -> None:
    torch = pytest.importorskip("torch")
    from napari_pandg.models import ModelDescription

    d = ModelDescription(name="bad", patch_size=(16, 16, 8)).to_dict()
    d["patch_size"] = [100000, 100000, 100000]
    torch.save({"format": "napari-pandg/model", "format_version": 1, "description": d, "state_dict": {}},
               tmp_path / "absurd.pt")  # fmt: skip
    monkeypatch.setenv("PANDG_MODELS", str(tmp_path))
    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert "absurd" in out and "patch_size" in out
