"""Each widget in a plain napari process, as a user starts it (no test-suite import workarounds).

``tests/conftest.py`` imports ``torch._dynamo`` before PyQt6 for the in-process tests, which
hides the crash these tests exist for: libtriton loaded after napari's OpenGL context
segfaulted the viewer when a widget's worker first imported torch (see
``napari_pandg._triton_guard``). Here every widget runs in its own fresh process through
``tests/qt/user_session.py``; the test fails on a crash (negative exit code) or when the widget
did not produce its result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).with_name("user_session.py")


def _session(which: str, data: Path, work: Path, timeout: int = 900) -> dict:
    env = dict(os.environ)
    env.update(PANDG_MODELS=str(work / "models"), NAPARI_CONFIG=str(work / "napari_settings.yaml"),
               PANDG_CACHE=str(work / "cache"), MPLBACKEND="Agg")  # fmt: skip
    env.pop("QT_QPA_PLATFORM", None)
    res = subprocess.run([sys.executable, str(SCRIPT), which, str(data), str(work)], capture_output=True,
                         text=True, env=env, timeout=timeout)  # fmt: skip
    tail = (res.stdout + res.stderr)[-3000:]
    assert res.returncode >= 0, f"napari crashed (signal {-res.returncode}) in the {which} session:\n{tail}"
    lines = [ln for ln in res.stdout.splitlines() if ln.startswith("{")]
    assert lines, f"no result from the {which} session (exit {res.returncode}):\n{tail}"
    out = json.loads(lines[-1])
    assert out["preloaded"] == [], out  # nothing heavy before napari, as in a user session
    assert res.returncode == 0 and out["ok"], f"{which} session: {out}\n{tail}"
    assert "torch" in out["heavy_loaded"]  # the widget really imported torch after the GL context
    return out


def test_segment_in_a_plain_napari_session(phantom_dir: Path, tmp_path: Path) -> None:
    out = _session("segment", phantom_dir, tmp_path)
    assert out["pancreas_voxels"] > 500, out  # the shipped DG model finds the sample's pancreas


def test_sam_widget_in_a_plain_napari_session(phantom_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("sam2")
    from napari_pandg.sam import load_sam_model, save_checkpoint

    engine = load_sam_model(None, image_size=64, device="cpu", random_init=True)
    save_checkpoint(engine, tmp_path / "sam.pt", wrap=True)
    del engine
    _session("sam", phantom_dir, tmp_path)


def test_finetune_widget_in_a_plain_napari_session(phantom_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("monai")
    from napari_pandg.models import ModelDescription, build_model, save_checkpoint

    tiny = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}
    desc = ModelDescription(name="tiny_base", arch_kwargs=tiny, spacing=(4.0, 4.0, 6.0), patch_size=(32, 32, 16),
                            domains={"centers": ["A"], "sequences": ["t1fs_venous"]}, command="pytest")  # fmt: skip
    save_checkpoint(tmp_path / "base.pt", desc, build_model(desc).eval())
    out = _session("finetune", phantom_dir, tmp_path)
    assert out["epochs"] == 1, out


def test_umap_widget_in_a_plain_napari_session(phantom_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("umap")
    out = _session("umap", phantom_dir, tmp_path)
    assert out["points"] > 10, out
