"""napari_pandg._triton_guard: libtriton is loaded with RTLD_DEEPBIND only next to another LLVM."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from napari_pandg import _triton_guard as guard


def test_foreign_llvm_detection(tmp_path: Path) -> None:
    maps = tmp_path / "maps"
    maps.write_text("7f00-7f01 r-xp 0 08:01 1 /usr/lib/x86_64-linux-gnu/libGL.so.1\n")
    assert not guard.foreign_llvm_loaded(str(maps))
    maps.write_text(maps.read_text() + "7f02-7f03 r-xp 0 08:01 2 /usr/lib/x86_64-linux-gnu/libLLVM-15.so.1\n")
    assert guard.foreign_llvm_loaded(str(maps))
    assert not guard.foreign_llvm_loaded(str(tmp_path / "missing"))


def test_installed_once_by_the_package_and_only_for_libtriton() -> None:
    code = (
        "import sys, napari_pandg, napari_pandg._triton_guard as g\n"
        "finders = [f for f in sys.meta_path if isinstance(f, g._TritonFinder)]\n"
        "g.install(); g.install()\n"
        "assert len([f for f in sys.meta_path if isinstance(f, g._TritonFinder)]) == len(finders) == 1\n"
        "assert finders[0].find_spec('json', None) is None\n"
        "print('ok')\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0 and "ok" in res.stdout, res.stderr


def test_triton_imports_after_a_foreign_llvm_is_mapped() -> None:
    """Simulate Mesa: map a system libLLVM first (as the GL driver does), then import torch."""
    import ctypes.util

    import pytest

    pytest.importorskip("triton")
    llvm = next((p for p in Path("/usr/lib/x86_64-linux-gnu").glob("libLLVM-*.so*")), None)
    if llvm is None or ctypes.util.find_library("c") is None:
        pytest.skip("no system libLLVM to clash with on this machine")
    code = (
        "import ctypes, os, sys\n"
        f"ctypes.CDLL({str(llvm)!r}, mode=os.RTLD_NOW | os.RTLD_GLOBAL)\n"
        "import napari_pandg, napari_pandg._triton_guard as g\n"
        "assert g.foreign_llvm_loaded()\n"
        "import triton, torch\n"
        "print('ok', triton.__version__)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0 and "ok" in res.stdout, (res.returncode, res.stderr[-2000:])
