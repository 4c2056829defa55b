"""Checks that run before anything is computed or written: nothing the user owns is lost.

* :func:`same_file` -- two paths name the same file (equal resolved paths, or the same inode:
  hard links, bind mounts);
* :func:`check_not_input` / :func:`check_outputs_not_inputs` -- an output never replaces an
  input, **even with** ``overwrite=True`` (``--overwrite`` allows replacing an earlier
  *output*, never the image being segmented);
* :func:`check_writable_folder` -- the output folder exists and a file can be created in it
  (a real probe: ``os.access`` says yes for root even on a read-only file system);
* :func:`check_output_file` / :func:`check_output_folder` -- all of the above for one output
  file or an output folder.

Every problem is a :class:`~napari_pandg.io.errors.PandgIOError` naming the path (or a
``FileExistsError`` for an existing output without ``overwrite``).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from napari_pandg.io.errors import PandgFileNotFoundError, PandgIOError

PathLike = str | os.PathLike


def _resolved(path: PathLike) -> Path:
    p = Path(path).expanduser()
    try:
        return p.resolve()
    except (OSError, RuntimeError):  # symlink loop, permission on a parent
        return Path(os.path.abspath(p))


def _inode(path: PathLike) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def same_file(a: PathLike, b: PathLike) -> bool:
    """True when ``a`` and ``b`` are the same file (resolved path, or inode when both exist)."""
    if _resolved(a) == _resolved(b):
        return True
    ia, ib = _inode(a), _inode(b)
    return ia is not None and ia == ib


def exists_message(path: PathLike, what: str = "") -> str:
    """The one wording for an existing output (the CLI shows ``--overwrite`` only)."""
    return f"{what + ' ' if what else ''}{path} exists; pass overwrite=True (CLI: --overwrite) to replace it"


def check_not_input(output: PathLike, inputs: Iterable[PathLike | None], what: str = "output") -> None:
    """Refuse writing ``output`` over any of ``inputs`` (whatever ``overwrite`` says)."""
    for src in inputs:
        if src is None or str(src) == "":
            continue
        if same_file(output, src):
            raise PandgIOError(
                f"{output}: the {what} is the input file {src}; napari-pandg never writes over "
                "an input, even with --overwrite: choose another output path"
            )


def check_outputs_not_inputs(
    outputs: Iterable[PathLike], inputs: Iterable[PathLike | None], what: str = "output"
) -> None:
    """:func:`check_not_input` for many outputs at once (sets of paths and inodes)."""
    ins = [Path(p) for p in inputs if p is not None and str(p) != ""]
    by_path = {_resolved(p): p for p in ins}
    by_inode = {ino: p for p in ins if (ino := _inode(p)) is not None}
    for out in outputs:
        src = by_path.get(_resolved(out))
        if src is None and (ino := _inode(out)) is not None:
            src = by_inode.get(ino)
        if src is not None:
            raise PandgIOError(
                f"{out}: the {what} would replace the input file {src}; napari-pandg never "
                "writes over an input, even with --overwrite: choose another output folder"
            )


def check_writable_folder(folder: PathLike, what: str = "output folder") -> Path:
    """The folder exists, is a folder, and a file can be created in it (probe file, removed)."""
    folder = Path(folder).expanduser()
    if str(folder) == "":
        folder = Path(".")
    if not folder.exists():
        raise PandgFileNotFoundError(f"{folder}: {what} does not exist; create it first")
    if not folder.is_dir():
        raise PandgIOError(f"{folder}: the {what} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".pandg-write-check-", dir=folder)
    except OSError as exc:
        raise PandgIOError(
            f"{folder}: cannot create files in the {what} ({exc.strerror or exc}); choose "
            "another folder or make this one writable"
        ) from None
    os.close(fd)
    os.unlink(probe)
    return folder


def _existing_ancestor(folder: Path) -> Path:
    p = folder
    while not p.exists() and p != p.parent:
        p = p.parent
    return p


def check_output_file(
    path: PathLike,
    *,
    overwrite: bool = False,
    inputs: Iterable[PathLike | None] = (),
    suffixes: tuple[str, ...] | None = None,
    what: str = "output",
    create_parent: bool = False,
) -> Path:
    """Everything that must hold before computing an output file; returns the path.

    ``suffixes``: accepted endings (lower case), e.g. ``(".nii.gz", ".nii")``.
    ``create_parent``: the folder may be missing (it will be created), then its nearest
    existing ancestor must be writable.
    """
    path = Path(path).expanduser()
    if suffixes and not path.name.lower().endswith(suffixes):
        raise PandgIOError(f"{path}: the {what} must end with {' or '.join(suffixes)}")
    if path.is_dir():
        raise PandgIOError(f"{path}: the {what} is a folder; give a file name")
    check_not_input(path, inputs, what)
    if (path.exists() or path.is_symlink()) and not overwrite:
        raise FileExistsError(exists_message(path))
    parent = path.parent if str(path.parent) else Path(".")
    if create_parent and not parent.exists():
        anc = _existing_ancestor(parent)
        if not anc.is_dir():
            raise PandgIOError(f"{path}: cannot create the folder {parent}: {anc} is a file")
        check_writable_folder(anc, f"folder that would hold {parent}")
    else:
        check_writable_folder(parent, f"folder of the {what}")
    return path


def check_output_folder(folder: PathLike, what: str = "output folder") -> Path:
    """An output folder that exists (writable) or can be created (nearest ancestor writable)."""
    folder = Path(folder).expanduser()
    if folder.exists():
        return check_writable_folder(folder, what)
    anc = _existing_ancestor(folder)
    if not anc.is_dir():
        raise PandgIOError(f"{folder}: cannot create the {what}: {anc} is a file")
    check_writable_folder(anc, f"folder that would hold the {what} {folder}")
    return folder


def atomic_write_with(path: PathLike, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` on a temporary file next to ``path``, then ``os.replace`` it onto
    ``path`` (readers never see half a file; a failed write leaves ``path`` as it was)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file normal permissions
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_write_text(path: PathLike, text: str) -> Path:
    """Write ``text`` atomically (see :func:`atomic_write_with`)."""
    return atomic_write_with(path, lambda t: t.write_text(text, encoding="utf-8"))
