"""Load triton's native library safely next to an OpenGL context (napari).

torch's CUDA builds ship triton, and torch imports it whenever ``torch._dynamo`` is imported
(torchvision, sam2 and MONAI pull that in). ``triton/_C/libtriton.so`` carries its own copy
of LLVM. Mesa's OpenGL drivers (llvmpipe under Xvfb, radeonsi, i965/iris with LLVM) load the
system ``libLLVM-*.so`` into the process as soon as napari creates its canvas. If libtriton is
loaded *after* that, its LLVM symbol references bind to Mesa's LLVM of another version and
the process dies with a segmentation fault inside ``import triton`` (seen here: napari 0.9,
PyQt6, Mesa 22 / libLLVM-15, torch 2.14.1 + triton 3.8; pressing *Segment* in a plain napari
session crashed the viewer).

Loading the extension with ``RTLD_DEEPBIND`` makes libtriton resolve its symbols in its own
copy first, which is what it was built for; nothing else changes. :func:`install` adds a
``sys.meta_path`` finder that does exactly that for the one module ``triton._C.libtriton``,
and only when another LLVM is already mapped into the process (otherwise the normal import
runs untouched). It is cheap (nothing is imported until triton itself is), idempotent, and
works whichever thread imports torch first. There is no library switch for this: torch
offers no way to skip triton on import, and blocking triton (``sys.modules["triton"] = None``)
would break torch.compile on a GPU for every other plugin in the same napari.
"""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import os
import sys
import threading
from types import ModuleType
from typing import Any

TARGET = "triton._C.libtriton"
_lock = threading.Lock()


def foreign_llvm_loaded(maps: str = "/proc/self/maps") -> bool:
    """True when a shared LLVM library (e.g. Mesa's ``libLLVM-15.so``) is mapped in this process."""
    try:
        with open(maps, encoding="utf-8", errors="replace") as fh:
            return any("libLLVM" in line for line in fh)
    except OSError:  # not Linux: nothing known to clash
        return False


class _DeepBindLoader(importlib.abc.Loader):
    """Wraps the extension loader of ``libtriton`` so that it is dlopen-ed with RTLD_DEEPBIND."""

    def __init__(self, inner: importlib.machinery.ExtensionFileLoader) -> None:
        self.inner = inner

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        with _lock:
            old = sys.getdlopenflags()
            sys.setdlopenflags(old | os.RTLD_DEEPBIND)
            try:
                return self.inner.create_module(spec)
            finally:
                sys.setdlopenflags(old)

    def exec_module(self, module: ModuleType) -> None:
        self.inner.exec_module(module)


class _TritonFinder(importlib.abc.MetaPathFinder):
    """Finds ``triton._C.libtriton`` with the other finders and swaps in :class:`_DeepBindLoader`."""

    def find_spec(self, fullname: str, path: Any, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != TARGET:
            return None
        spec = importlib.machinery.PathFinder.find_spec(fullname, path)
        if spec is None or not isinstance(spec.loader, importlib.machinery.ExtensionFileLoader):
            return None
        if foreign_llvm_loaded():
            spec.loader = _DeepBindLoader(spec.loader)
        return spec


def install() -> bool:
    """Put the finder in front of ``sys.meta_path`` (once). False if triton is already loaded
    (then it is too late to matter, and it was loaded safely) or the platform has no DEEPBIND."""
    if not hasattr(os, "RTLD_DEEPBIND") or TARGET in sys.modules:
        return False
    if not any(isinstance(f, _TritonFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _TritonFinder())
    return True
