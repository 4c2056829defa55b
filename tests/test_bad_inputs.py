"""Bad input gets a clear error and loses nothing (issue 12, item 3).

Every case builds a malformed input in its own folder (tiny 24 x 24 x 8 volumes, a
random-weight tiny UNet) and checks three things:

(a) the exit code (2 for the ``pandg`` CLI, run in-process through ``main``) or the exception
    type (napari reader/writer, library functions), with no traceback for the user;
(b) the message names the offending file (or the config key and its file);
(c) no file in the case's folder changed: a hash snapshot of the folder (files, links and
    sub-folders) is the same before and after, so nothing was written, replaced or deleted.

Groups: ``pandg segment`` image inputs, ``pandg sam`` image inputs, the napari reader on the
same files, ``pandg segment`` outputs (output == input even with --overwrite, hard/symbolic
links, unwritable folders, manifest mode), checkpoints, ``pandg index``, manifest CSVs,
``pandg train`` configs and overrides, and the napari writer.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import pytest

from napari_pandg.cli import main
from napari_pandg.io import PandgIOError, load_volume, read_index, to_napari
from napari_pandg.io._reader import napari_get_reader
from napari_pandg.io._writer import write_image, write_labels

torch = pytest.importorskip("torch")
pytest.importorskip("monai")

SHAPE = (24, 24, 8)
SPACING = (2.0, 2.0, 3.0)
TINY = {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 0, "norm": "instance"}


# --------------------------------------------------------------------------- helpers
def snapshot(folder: Path) -> dict[str, str]:
    """Relative path -> content hash (``dir`` for folders, ``link:`` target for symlinks)."""
    out: dict[str, str] = {}
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_dir():
            out[rel] = "dir"
        else:
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    capsys.readouterr()
    try:
        code = main([str(a) for a in argv])
    except SystemExit as exc:  # argparse usage errors
        code = exc.code if isinstance(exc.code, int) else 1
    return code, capsys.readouterr().err


def assert_clear(code: int, err: str, command: str, names: list[str]) -> None:
    assert code == 2, err
    assert "Traceback" not in err
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"pandg {command}: error: "), err
    for name in names:
        assert str(name) in last, f"{name!r} not in {last!r}"
    assert "overwrite=True" not in last


def arr(seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random(SHAPE).astype(np.float32) * 100


def affine(spacing=SPACING) -> np.ndarray:
    return np.diag([*spacing, 1.0])


def save(path: Path, data: np.ndarray, aff: np.ndarray | None = None, **hdr: Any) -> Path:
    img = nib.Nifti1Image(data, affine() if aff is None else aff)
    for k, v in hdr.items():
        img.header[k] = v
    nib.save(img, str(path))
    return path


def good_image(folder: Path, name: str = "t1.nii.gz") -> Path:
    return save(folder / name, arr())


# --------------------------------------------------------------------------- bad NIfTI files
def _patch_float(p: Path, offset: int, value: float) -> Path:
    """Overwrite one float32 of a (little-endian) .nii header: nibabel refuses to write such files."""
    b = bytearray(p.read_bytes())
    struct.pack_into("<f", b, offset, value)
    p.write_bytes(bytes(b))
    return p


def _nan_sform(d: Path) -> Path:
    return _patch_float(save(d / "nan_affine.nii", arr()), 280, float("nan"))  # srow_x[0]


def _truncated(d: Path, name: str) -> Path:
    p = save(d / name, arr())
    data = p.read_bytes()
    p.write_bytes(data[: len(data) // 2])
    return p


def _rgb(d: Path) -> Path:
    rgb = np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")])
    return save(d / "rgb.nii.gz", rgb)


def _vector(d: Path) -> Path:
    img = nib.Nifti1Image(np.zeros((*SHAPE, 1, 3), np.float32), affine())
    img.header.set_intent("vector")
    nib.save(img, str(d / "vector.nii.gz"))
    return d / "vector.nii.gz"


def _meters(d: Path) -> Path:
    img = nib.Nifti1Image(arr(), affine((0.002, 0.002, 0.003)))
    img.header.set_xyzt_units("meter")
    nib.save(img, str(d / "meters.nii.gz"))
    return d / "meters.nii.gz"


def _degenerate(d: Path) -> Path:
    aff = np.eye(4)
    aff[:3, 1] = [1.0, 0.0, 0.0]  # axes 0 and 1 point the same way
    return save(d / "degenerate.nii.gz", arr(), aff)


def _nan_voxels(d: Path, value: float, name: str) -> Path:
    a = arr()
    a[3, 4, 5] = value
    return save(d / name, a)


def _folder(d: Path) -> Path:
    (d / "folder.nii.gz").mkdir()
    return d / "folder.nii.gz"


def _write(d: Path, name: str, data: bytes) -> Path:
    (d / name).write_bytes(data)
    return d / name


#: name -> builder(folder) -> the bad file (also used for the reader and sam groups)
BAD_IMAGES: dict[str, Callable[[Path], Path]] = {
    "missing": lambda d: d / "missing.nii.gz",
    "empty_file": lambda d: _write(d, "empty.nii.gz", b""),
    "garbage": lambda d: _write(d, "garbage.nii.gz", os.urandom(600)),
    "bad_gzip_stream": lambda d: _write(d, "badgz.nii.gz", b"\x1f\x8b\x08\x00" + b"junk" * 50),
    "truncated_gzip": lambda d: _truncated(d, "trunc.nii.gz"),
    "truncated_nii": lambda d: _truncated(d, "trunc.nii"),
    "not_nifti_name": lambda d: save(d / "image.nii", arr()).rename(d / "image.mha"),
    "folder_named_nii": _folder,
    "2d": lambda d: save(d / "flat.nii.gz", arr()[:, :, 0]),
    "4d_three_channels": lambda d: save(d / "multi.nii.gz", np.zeros((*SHAPE, 3), np.float32)),
    "5d_two_extra_dims": lambda d: save(d / "five.nii.gz", np.zeros((*SHAPE, 2, 3), np.float32)),
    "complex64": lambda d: save(d / "cplx64.nii.gz", (arr() + 1j * arr(1)).astype(np.complex64)),
    "complex128": lambda d: save(d / "cplx128.nii.gz", (arr() + 1j * arr(1)).astype(np.complex128)),
    "rgb24": _rgb,
    "vector_intent": _vector,
    "spacing_1e-6": lambda d: save(d / "tiny_vox.nii.gz", arr(), affine((1e-6, 1e-6, 1e-6))),
    "spacing_1e6": lambda d: save(d / "huge_vox.nii.gz", arr(), affine((1e6, 1e6, 1e6))),
    "spacing_zero_axis": lambda d: _patch_float(save(d / "zero_vox.nii", arr()), 320, 0.0),  # srow_z[2]
    "spacing_one_axis_100mm": lambda d: save(d / "slab.nii.gz", arr(), affine((2.0, 2.0, 100.0))),
    "units_meters": _meters,
    "nan_in_affine": _nan_sform,
    "degenerate_affine": _degenerate,
    "nan_voxels": lambda d: _nan_voxels(d, float("nan"), "nan_vox.nii.gz"),
    "inf_voxels": lambda d: _nan_voxels(d, float("inf"), "inf_vox.nii.gz"),
}

#: cases ``pandg sam`` must refuse before its model is loaded (it accepts NaN voxels and
#: multi-channel 4D is reported as "not a 3D image")
SAM_CASES = [k for k in BAD_IMAGES if k not in ("nan_voxels", "inf_voxels")]
#: paths napari_get_reader declines (returns None): not a NIfTI name
READER_DECLINES = {"not_nifti_name"}


# --------------------------------------------------------------------------- tiny model
def tiny_description(**kw: Any):
    from napari_pandg.models import ModelDescription

    base = dict(name="tiny", architecture="UNet", arch_kwargs=dict(TINY), spacing=SPACING,
                patch_size=(16, 16, 8), command="pytest")  # fmt: skip
    base.update(kw)
    return ModelDescription(**base)


def tiny_state_dict() -> dict[str, Any]:
    from napari_pandg.models import build_model

    torch.manual_seed(0)
    return {k: v.detach().clone() for k, v in build_model(tiny_description()).state_dict().items()}


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from napari_pandg.models import build_model, save_checkpoint

    torch.manual_seed(0)
    desc = tiny_description()
    return save_checkpoint(tmp_path_factory.mktemp("model") / "tiny.pt", desc, build_model(desc))


@pytest.fixture
def unwritable(tmp_path: Path) -> Path:
    """A folder where creating a file fails (chmod 0555; as root, which ignores modes, /sys)."""
    d = tmp_path / "readonly"
    d.mkdir()
    d.chmod(0o555)
    probe = d / "probe"
    try:
        probe.write_bytes(b"")
    except OSError:
        yield d
        d.chmod(0o755)
        return
    probe.unlink()
    d.chmod(0o755)
    d.rmdir()
    sysfs = Path("/sys")
    try:
        (sysfs / ".pandg-probe").write_bytes(b"")
    except OSError:
        yield sysfs
        return
    pytest.skip("no unwritable folder available (root on a writable /sys)")


# =========================================================================== 1. segment inputs
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_segment_bad_image(case: str, tmp_path: Path, tiny_ckpt: Path, capsys) -> None:
    bad = BAD_IMAGES[case](tmp_path)
    out = tmp_path / "mask.nii.gz"
    before = snapshot(tmp_path)
    code, err = run_cli(["segment", "--model", tiny_ckpt, "--input", bad, "--output", out], capsys)
    assert_clear(code, err, "segment", [bad])
    assert snapshot(tmp_path) == before


# =========================================================================== 2. sam inputs
@pytest.mark.parametrize("case", SAM_CASES)
def test_sam_bad_image(case: str, tmp_path: Path, capsys) -> None:
    bad = BAD_IMAGES[case](tmp_path)
    before = snapshot(tmp_path)
    # the checkpoint does not exist either: the image must be refused first
    argv = ["sam", "--checkpoint", tmp_path / "MedSAM2_latest.pt", "--input", bad, "--box", "4,2,2,10,10",
            "--output", tmp_path / "mask.nii.gz"]  # fmt: skip
    code, err = run_cli(argv, capsys)
    assert_clear(code, err, "sam", [bad])
    assert snapshot(tmp_path) == before


def test_sam_output_is_input(tmp_path: Path, capsys) -> None:
    img = good_image(tmp_path)
    before = snapshot(tmp_path)
    argv = ["sam", "--checkpoint", tmp_path / "none.pt", "--input", img, "--box", "4,2,2,10,10",
            "--output", img, "--overwrite"]  # fmt: skip
    code, err = run_cli(argv, capsys)
    assert_clear(code, err, "sam", [img, "never writes over an input"])
    assert snapshot(tmp_path) == before


def test_sam_output_exists_and_unwritable(tmp_path: Path, unwritable: Path, capsys) -> None:
    img = good_image(tmp_path)
    out = tmp_path / "mask.nii.gz"
    out.write_bytes(b"earlier result")
    before = snapshot(tmp_path)
    base = ["sam", "--checkpoint", tmp_path / "none.pt", "--input", img, "--box", "4,2,2,10,10"]
    code, err = run_cli([*base, "--output", out], capsys)
    assert_clear(code, err, "sam", [out, "--overwrite"])
    code, err = run_cli([*base, "--output", unwritable / "mask.nii.gz", "--overwrite"], capsys)
    assert_clear(code, err, "sam", [unwritable])
    code, err = run_cli([*base, "--output", tmp_path / "m.nii.gz", "--z-range", "6", "2"], capsys)
    assert_clear(code, err, "sam", ["--z-range"])
    assert snapshot(tmp_path) == before


# =========================================================================== 3. napari reader
@pytest.mark.parametrize("case", list(BAD_IMAGES))
def test_reader_bad_image(case: str, tmp_path: Path) -> None:
    bad = BAD_IMAGES[case](tmp_path)
    before = snapshot(tmp_path)
    reader = napari_get_reader(str(bad))  # never raises
    if case in READER_DECLINES:
        assert reader is None
    else:
        assert callable(reader)
        with pytest.raises(PandgIOError) as exc:
            reader(str(bad))
        assert str(bad) in str(exc.value)
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize(
    "case",
    ["missing_columns", "empty_csv", "header_only", "non_utf8", "escape_dotdot", "missing_image", "not_a_csv_dir"],
)
def test_reader_bad_manifest(case: str, tmp_path: Path) -> None:
    csv = MANIFESTS[case](tmp_path)
    before = snapshot(tmp_path)
    reader = napari_get_reader(str(csv))  # never raises
    if reader is not None:
        with pytest.raises(PandgIOError) as exc:
            reader(str(csv))
        assert str(csv) in str(exc.value)
    assert snapshot(tmp_path) == before


# =========================================================================== 4. segment outputs
def _hardlink(d: Path, img: Path) -> Path:
    os.link(img, d / "hard.nii.gz")
    return d / "hard.nii.gz"


def _symlink(d: Path, img: Path) -> Path:
    (d / "sym.nii.gz").symlink_to(img)
    return d / "sym.nii.gz"


def _dotdot(d: Path, img: Path) -> Path:
    (d / "sub").mkdir()
    return d / "sub" / ".." / img.name


def _existing(d: Path, img: Path) -> Path:
    (d / "old_mask.nii.gz").write_bytes(b"an earlier mask")
    return d / "old_mask.nii.gz"


def _out_folder(d: Path, img: Path) -> Path:
    (d / "masks.nii.gz").mkdir()
    return d / "masks.nii.gz"


#: name -> (output builder(folder, input), with --overwrite, substrings of the message)
OUTPUTS: dict[str, tuple[Callable[[Path, Path], Path], bool, list[str]]] = {
    "output_is_input_overwrite": (lambda d, img: img, True, ["never writes over an input"]),
    "output_is_input": (lambda d, img: img, False, ["never writes over an input"]),
    "output_hardlink_to_input": (_hardlink, True, ["never writes over an input"]),
    "output_symlink_to_input": (_symlink, True, ["never writes over an input"]),
    "output_dotdot_to_input": (_dotdot, True, ["never writes over an input"]),
    "output_exists": (_existing, False, ["--overwrite"]),
    "output_folder_missing": (lambda d, img: d / "nowhere" / "mask.nii.gz", False, ["does not exist"]),
    "output_is_folder": (_out_folder, True, ["is a folder"]),
    "output_bad_suffix": (lambda d, img: d / "mask.mha", False, [".nii"]),
}


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_segment_bad_output(case: str, tmp_path: Path, tiny_ckpt: Path, capsys) -> None:
    img = good_image(tmp_path)
    build, overwrite, words = OUTPUTS[case]
    out = build(tmp_path, img)
    before = snapshot(tmp_path)
    argv = ["segment", "--model", tiny_ckpt, "--input", img, "--output", out] + (["--overwrite"] if overwrite else [])
    code, err = run_cli(argv, capsys)
    name = out.parent if case == "output_folder_missing" else out
    assert_clear(code, err, "segment", [name, *words])
    assert snapshot(tmp_path) == before


def test_segment_unwritable_output_folder(tmp_path: Path, unwritable: Path, tiny_ckpt: Path, capsys) -> None:
    img = good_image(tmp_path)
    before = snapshot(tmp_path)
    argv = ["segment", "--model", tiny_ckpt, "--input", img, "--output", unwritable / "mask.nii.gz"]
    code, err = run_cli(argv, capsys)
    assert_clear(code, err, "segment", [unwritable, "cannot create files"])
    assert snapshot(tmp_path) == before


def _manifest(d: Path, rows: list[str], header: str = "subject,center,sequence,image,label") -> Path:
    (d / "manifest.csv").write_text("\n".join([header, *rows]) + "\n")
    return d / "manifest.csv"


def _collision(d: Path) -> tuple[Path, Path, list[str]]:
    """A dataset whose image sits exactly where its prediction would be written."""
    good_image(d, "S1_t1_seg.nii.gz")
    return _manifest(d, ["S1,A,t1,S1_t1_seg.nii.gz,"]), d, ["S1_t1_seg.nii.gz", "never"]


def _predictions_exist(d: Path) -> tuple[Path, Path, list[str]]:
    good_image(d, "img.nii.gz")
    (d / "out").mkdir()
    (d / "out" / "S1_t1_seg.nii.gz").write_bytes(b"earlier")
    return _manifest(d, ["S1,A,t1,img.nii.gz,"]), d / "out", ["--overwrite", "out"]


def _outdir_is_file(d: Path) -> tuple[Path, Path, list[str]]:
    good_image(d, "img.nii.gz")
    (d / "out").write_text("not a folder")
    return _manifest(d, ["S1,A,t1,img.nii.gz,"]), d / "out", ["out"]


def _manifest_bad_image(d: Path) -> tuple[Path, Path, list[str]]:
    save(d / "cplx.nii.gz", (arr() + 1j * arr(1)).astype(np.complex64))
    return _manifest(d, ["S1,A,t1,cplx.nii.gz,"]), d / "out", ["cplx.nii.gz", "complex"]


@pytest.mark.parametrize("case", ["collision_with_image", "predictions_exist", "out_dir_is_file", "complex_image_listed"])
def test_segment_manifest_outputs(case: str, tmp_path: Path, tiny_ckpt: Path, capsys) -> None:
    build = {"collision_with_image": _collision, "predictions_exist": _predictions_exist,
             "out_dir_is_file": _outdir_is_file, "complex_image_listed": _manifest_bad_image}[case]  # fmt: skip
    csv, out_dir, words = build(tmp_path)
    before = snapshot(tmp_path)
    extra = ["--overwrite"] if case == "collision_with_image" else []
    code, err = run_cli(["segment", "--model", tiny_ckpt, "--manifest", csv, "--out-dir", out_dir, *extra], capsys)
    assert_clear(code, err, "segment", words)
    assert snapshot(tmp_path) == before


def test_segment_manifest_unwritable_out_dir(tmp_path: Path, unwritable: Path, tiny_ckpt: Path, capsys) -> None:
    good_image(tmp_path, "img.nii.gz")
    csv = _manifest(tmp_path, ["S1,A,t1,img.nii.gz,"])
    before = snapshot(tmp_path)
    code, err = run_cli(["segment", "--model", tiny_ckpt, "--manifest", csv, "--out-dir", unwritable / "preds"], capsys)
    assert_clear(code, err, "segment", [unwritable])
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("argv", [["--input", "IMG"], ["--manifest", "CSV"], []], ids=["no_output", "no_out_dir", "nothing"])
def test_segment_usage_errors(argv: list[str], tmp_path: Path, tiny_ckpt: Path, capsys) -> None:
    img = good_image(tmp_path)
    csv = _manifest(tmp_path, ["S1,A,t1,t1.nii.gz,"])
    argv = [{"IMG": img, "CSV": csv}.get(a, a) for a in argv]
    before = snapshot(tmp_path)
    code, err = run_cli(["segment", "--model", tiny_ckpt, *argv], capsys)
    assert_clear(code, err, "segment", [str(argv[1])] if argv else ["--input"])
    assert snapshot(tmp_path) == before


# =========================================================================== 5. checkpoints
def _raw_ckpt(d: Path, name: str, description: Any = "DEFAULT", state: Any = "DEFAULT", **top: Any) -> Path:
    obj: dict[str, Any] = {"format": "napari-pandg/model", "format_version": 1}
    if description is not None:
        obj["description"] = tiny_description().to_dict() if description == "DEFAULT" else description
    if state is not None:
        obj["state_dict"] = tiny_state_dict() if isinstance(state, str) else state
    obj.update(top)
    torch.save(obj, d / name)
    return d / name


def _desc(**kw: Any) -> dict[str, Any]:
    d = tiny_description().to_dict()
    d.update(kw)
    return d


def _bad_weights(value: float) -> dict[str, Any]:
    sd = tiny_state_dict()
    key = next(k for k, v in sd.items() if v.is_floating_point() and v.ndim > 1)
    sd[key].view(-1)[3] = value
    return sd


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def _evil(d: Path) -> Path:
    torch.save({"format": "napari-pandg/model", "format_version": 1, "description": _Evil()}, d / "evil.pt")
    return d / "evil.pt"


def _folder_ckpt(d: Path) -> Path:
    (d / "run").mkdir()
    return d / "run"


def _mismatch(d: Path) -> Path:
    return _raw_ckpt(d, "mismatch.pt", _desc(arch_kwargs={**TINY, "channels": [8, 16, 32]}))


#: name -> (builder(folder) -> model argument, substrings of the message besides the file)
CHECKPOINTS: dict[str, tuple[Callable[[Path], Any], list[str]]] = {
    "nan_weights": (lambda d: _raw_ckpt(d, "nan.pt", state=_bad_weights(float("nan"))), ["not finite"]),
    "inf_weights": (lambda d: _raw_ckpt(d, "inf.pt", state=_bad_weights(float("inf"))), ["not finite"]),
    "absurd_patch": (lambda d: _raw_ckpt(d, "patch.pt", _desc(patch_size=[100000, 100000, 100000])), ["patch_size"]),
    "zero_patch": (lambda d: _raw_ckpt(d, "patch0.pt", _desc(patch_size=[0, 16, 8])), ["patch_size"]),
    "patch_two_dims": (lambda d: _raw_ckpt(d, "patch2.pt", _desc(patch_size=[16, 16])), ["patch_size"]),
    "patch_too_many_voxels": (lambda d: _raw_ckpt(d, "patchv.pt", _desc(patch_size=[512, 512, 512])), ["voxels"]),
    "patch_not_numbers": (lambda d: _raw_ckpt(d, "patchs.pt", _desc(patch_size=["a", "b", "c"])), ["patch_size"]),
    "spacing_1e-6": (lambda d: _raw_ckpt(d, "sp_small.pt", _desc(spacing=[1e-6, 1e-6, 1e-6])), ["spacing"]),
    "spacing_1e6": (lambda d: _raw_ckpt(d, "sp_big.pt", _desc(spacing=[1e6, 1e6, 1e6])), ["spacing"]),
    "spacing_nan": (lambda d: _raw_ckpt(d, "sp_nan.pt", _desc(spacing=[float("nan"), 2.0, 3.0])), ["spacing"]),
    "orientation": (lambda d: _raw_ckpt(d, "orient.pt", _desc(orientation="XYZ")), ["orientation"]),
    "architecture": (lambda d: _raw_ckpt(d, "arch.pt", _desc(architecture="Transformer9000")), ["architecture"]),
    "out_channels_zero": (lambda d: _raw_ckpt(d, "outch.pt", _desc(out_channels=0)), ["out_channels"]),
    "in_channels_text": (lambda d: _raw_ckpt(d, "inch.pt", _desc(in_channels="one")), ["in_channels"]),
    "label_map_gap": (lambda d: _raw_ckpt(d, "lmap.pt", _desc(label_map={0: 0, 2: 10})), ["label map"]),
    "normalization": (lambda d: _raw_ckpt(d, "norm.pt", _desc(normalization={"method": "magic"})), ["normalisation"]),
    "overlap": (lambda d: _raw_ckpt(d, "overlap.pt", _desc(inference={"overlap": 1.5})), ["overlap"]),
    "format_version": (lambda d: _raw_ckpt(d, "future.pt", format_version=99), ["format version"]),
    "no_description": (lambda d: _raw_ckpt(d, "nodesc.pt", description=None), ["description"]),
    "description_not_dict": (lambda d: _raw_ckpt(d, "descstr.pt", description="hello"), ["description"]),
    "no_state_dict": (lambda d: _raw_ckpt(d, "nostate.pt", state=None), ["state_dict"]),
    "architecture_mismatch": (_mismatch, ["do not fit"]),
    "bare_state_dict": (lambda d: torch.save(tiny_state_dict(), d / "bare.pt") or d / "bare.pt", ["bare state dict"]),
    "empty_file": (lambda d: _write(d, "empty.pt", b""), ["empty"]),
    "garbage": (lambda d: _write(d, "junk.pt", os.urandom(400)), []),
    "pickled_code": (_evil, ["not loaded for safety"]),
    "unknown_name": (lambda d: "no_such_model_xyz", ["known models"]),
    "missing_file": (lambda d: d / "gone.pt", ["does not exist"]),
    "folder_without_best": (_folder_ckpt, ["best.pt"]),
}


@pytest.mark.parametrize("case", list(CHECKPOINTS))
def test_segment_bad_checkpoint(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # a pickle that ran code would leave PWNED here
    build, words = CHECKPOINTS[case]
    model = build(tmp_path)
    img = good_image(tmp_path)
    before = snapshot(tmp_path)
    argv = ["segment", "--model", model, "--input", img, "--output", tmp_path / "mask.nii.gz"]
    code, err = run_cli(argv, capsys)
    assert_clear(code, err, "segment", [model, *words])
    assert snapshot(tmp_path) == before
    assert not (tmp_path / "PWNED").exists()


# =========================================================================== 6. pandg index
def _pandg_dataset(d: Path) -> Path:
    root = d / "data"
    (root / "images").mkdir(parents=True)
    save(root / "images" / "S1_t1.nii.gz", arr())
    (root / "manifest.csv").write_text("subject,center,sequence,image,label\nS1,A,t1,images/S1_t1.nii.gz,\n")
    return root


def _index_case(case: str, d: Path, unwritable: Path | None = None) -> tuple[list[Any], list[Any]]:
    root = _pandg_dataset(d)
    out = d / "index.csv"
    if case == "root_missing":
        return [d / "nope", "--out", out], [d / "nope"]
    if case == "root_empty":
        (d / "empty").mkdir()
        return [d / "empty", "--out", out], [d / "empty"]
    if case == "root_is_nifti_file":
        return [root / "images" / "S1_t1.nii.gz", "--out", out], ["S1_t1.nii.gz"]
    if case == "out_exists":
        out.write_text("old index")
        return [root, "--out", out], [out, "--overwrite"]
    if case == "out_is_manifest":
        return [root, "--out", root / "manifest.csv", "--overwrite"], ["manifest.csv", "never"]
    if case == "out_is_csv_root":
        return [root / "manifest.csv", "--out", root / "manifest.csv", "--overwrite"], ["manifest.csv", "never"]
    if case == "out_is_indexed_image":
        img = root / "images" / "S1_t1.nii.gz"
        return [root, "--out", img, "--overwrite"], [img, "never"]
    if case == "out_folder_missing":
        return [root, "--out", d / "nowhere" / "i.csv"], [d / "nowhere"]
    if case == "out_is_folder":
        return [root, "--out", root, "--overwrite"], [root, "folder"]
    if case == "out_unwritable":
        return [root, "--out", unwritable / "i.csv"], [unwritable]
    if case == "unknown_layout":
        return [root, "--out", out, "--layout", "dicom"], ["--layout", "dicom"]
    # broken manifests in a pandg-layout folder
    csv = root / "manifest.csv"
    text = {
        "manifest_dotdot": "subject,center,sequence,image,label\nS1,A,t1,../outside.nii.gz,\n",
        "manifest_missing_image": "subject,center,sequence,image,label\nS1,A,t1,images/gone.nii.gz,\n",
        "manifest_missing_label": "subject,center,sequence,image,label\nS1,A,t1,images/S1_t1.nii.gz,labels/gone.nii.gz\n",
        "manifest_missing_columns": "subject,image\nS1,images/S1_t1.nii.gz\n",
        "manifest_empty_image_cell": "subject,center,sequence,image,label\nS1,A,t1,,\n",
    }.get(case)
    if text is not None:
        csv.write_text(text)
        return [root, "--out", out], [csv]
    if case == "manifest_empty":
        csv.write_text("")
        return [root, "--out", out], [csv]
    if case == "manifest_non_utf8":
        csv.write_bytes("subject,center,sequence,image\nS\xe9,A,t1,x.nii.gz\n".encode("latin-1"))
        return [root, "--out", out], [csv, "UTF-8"]
    raise AssertionError(case)


INDEX_CASES = ["root_missing", "root_empty", "root_is_nifti_file", "out_exists", "out_is_manifest", "out_is_csv_root",
               "out_is_indexed_image", "out_folder_missing", "out_is_folder", "unknown_layout", "manifest_dotdot",
               "manifest_missing_image", "manifest_missing_label", "manifest_missing_columns",
               "manifest_empty_image_cell", "manifest_empty", "manifest_non_utf8"]  # fmt: skip


@pytest.mark.parametrize("case", INDEX_CASES)
def test_index_bad_input(case: str, tmp_path: Path, capsys) -> None:
    argv, names = _index_case(case, tmp_path)
    before = snapshot(tmp_path)
    code, err = run_cli(["index", *argv], capsys)
    if case == "unknown_layout":  # argparse: usage + one error line, exit 2
        assert code == 2 and "invalid choice: 'dicom'" in err and "Traceback" not in err
    else:
        assert_clear(code, err, "index", names)
    assert snapshot(tmp_path) == before


def test_index_unwritable_out(tmp_path: Path, unwritable: Path, capsys) -> None:
    argv, names = _index_case("out_unwritable", tmp_path, unwritable)
    before = snapshot(tmp_path)
    code, err = run_cli(["index", *argv], capsys)
    assert_clear(code, err, "index", names)
    assert snapshot(tmp_path) == before


# =========================================================================== 7. manifest CSVs
def _csv(d: Path, text: str | bytes, name: str = "manifest.csv") -> Path:
    p = d / name
    if isinstance(text, bytes):
        p.write_bytes(text)
    else:
        p.write_text(text)
    return p


def _with_image(d: Path, text: str) -> Path:
    good_image(d, "img.nii.gz")
    return _csv(d, text)


H = "subject,center,sequence,image,label\n"
MANIFESTS: dict[str, Callable[[Path], Path]] = {
    "missing_columns": lambda d: _with_image(d, "subject,image\nS1,img.nii.gz\n"),
    "missing_image": lambda d: _csv(d, H + "S1,A,t1,gone.nii.gz,\n"),
    "missing_label": lambda d: _with_image(d, H + "S1,A,t1,img.nii.gz,gone_seg.nii.gz\n"),
    "escape_dotdot": lambda d: _csv(d, H + "S1,A,t1,../../etc/img.nii.gz,\n"),
    "escape_nested_dotdot": lambda d: _with_image(d, H + "S1,A,t1,sub/../../img.nii.gz,\n"),
    "empty_csv": lambda d: _csv(d, ""),
    "header_only": lambda d: _csv(d, H),
    "non_utf8": lambda d: _csv(d, (H + "S\xe9,A,t1,img.nii.gz,\n").encode("latin-1")),
    "empty_image_cell": lambda d: _csv(d, H + "S1,A,t1,,\n"),
    "malformed_rows": lambda d: _csv(d, 'subject,center,sequence,image\nS1,A,t1,"img.nii.gz\n'),
    "not_a_csv_dir": lambda d: (d / "manifest.csv").mkdir() or d / "manifest.csv",
    "missing_csv": lambda d: d / "manifest.csv",
}


@pytest.mark.parametrize("case", list(MANIFESTS))
def test_read_index_bad_manifest(case: str, tmp_path: Path) -> None:
    csv = MANIFESTS[case](tmp_path)
    before = snapshot(tmp_path)
    with pytest.raises(PandgIOError) as exc:
        read_index(csv)
    msg = str(exc.value)
    assert str(csv) in msg
    if "escape" in case:
        assert "leaves the CSV's folder" in msg and "line 2" in msg
    if case.startswith("missing_") and case != "missing_columns" and case != "missing_csv":
        assert "line 2" in msg and "gone" in msg
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("case", ["missing_columns", "missing_image", "escape_dotdot", "empty_csv", "header_only", "non_utf8"])
def test_segment_bad_manifest(case: str, tmp_path: Path, tiny_ckpt: Path, capsys) -> None:
    csv = MANIFESTS[case](tmp_path)
    before = snapshot(tmp_path)
    code, err = run_cli(["segment", "--model", tiny_ckpt, "--manifest", csv, "--out-dir", tmp_path / "preds"], capsys)
    assert_clear(code, err, "segment", [csv])
    assert snapshot(tmp_path) == before  # the output folder was not even created


# =========================================================================== 8. train configs
@dataclass
class ConfigCase:
    yaml: str | bytes | None  # None: no file
    overrides: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # besides the config file


def _cfg(body: str) -> str:
    return "name: t\nout_dir: run\n" + body


CONFIGS: dict[str, ConfigCase] = {
    "bad_yaml_syntax": ConfigCase("name: [unclosed\n", names=["invalid YAML"]),
    "bad_yaml_tabs": ConfigCase("data:\n\tmanifest: x\n", names=["invalid YAML"]),
    "python_object_apply": ConfigCase('!!python/object/apply:os.system ["touch PWNED"]\n', names=["invalid YAML"]),
    "python_object_nested": ConfigCase(_cfg('optim:\n  lr: !!python/object/apply:os.system ["touch PWNED"]\n'),
                                       names=["python/object"]),  # fmt: skip
    "python_name": ConfigCase(_cfg("seed: !!python/name:os.system\n"), names=["python/name"]),
    "unknown_top_key": ConfigCase(_cfg("epochz: 3\n"), names=["epochz", "valid keys"]),
    "unknown_nested_key": ConfigCase(_cfg("optim:\n  lrr: 0.1\n"), names=["optim.lrr", "lr"]),
    "wrong_type_int": ConfigCase(_cfg("optim:\n  epochs: many\n"), names=["epochs"]),
    "wrong_type_float": ConfigCase(_cfg("optim:\n  lr: fast\n"), names=["lr"]),
    "wrong_type_bool": ConfigCase(_cfg("resume: maybe\n"), names=["resume"]),
    "wrong_list_element": ConfigCase(_cfg("data:\n  spacing: [a, 2, 3]\n"), names=["data.spacing[0]"]),
    "wrong_int_list_element": ConfigCase(_cfg("data:\n  patch_size: [16, 16, 8.5]\n"), names=["data.patch_size[2]"]),
    "list_gets_mapping": ConfigCase(_cfg("data:\n  train_centers: {a: 1}\n"), names=["train_centers"]),
    "text_gets_list": ConfigCase(_cfg("device: [cpu, cuda]\n"), names=["device"]),
    "label_map_text_keys": ConfigCase(_cfg("data:\n  label_map: {pancreas: 1}\n"), names=["label_map"]),
    "section_not_mapping": ConfigCase(_cfg("optim: 5\n"), names=["optim"]),
    "top_level_list": ConfigCase("- a\n- b\n", names=["mapping"]),
    "null_for_int": ConfigCase(_cfg("optim:\n  epochs: null\n"), names=["epochs"]),
    "non_utf8": ConfigCase("name: caf\xe9\n".encode("latin-1"), names=["UTF-8"]),
    "missing_file": ConfigCase(None, names=["does not exist"]),
    "override_no_equals": ConfigCase(_cfg(""), ["optim.lr"], names=["optim.lr", "key=value"]),
    "override_unknown_key": ConfigCase(_cfg(""), ["optim.lrr=1"], names=["optim.lrr"]),
    "override_wrong_type": ConfigCase(_cfg(""), ["optim.epochs=lots"], names=["epochs"]),
    "override_python_tag": ConfigCase(_cfg(""), ['optim.epochs=!!python/object/apply:os.system ["touch PWNED"]'],
                                      names=["epochs"]),  # fmt: skip
    "manifest_unset": ConfigCase(_cfg("data:\n  manifest: ''\n"), names=["data.manifest"]),
    "manifest_missing": ConfigCase(_cfg("data:\n  manifest: nowhere/manifest.csv\n"), names=["nowhere/manifest.csv"]),
    "manifest_escapes": ConfigCase(_cfg("data:\n  manifest: bad.csv\n"), names=["bad.csv", "leaves"]),
    "unknown_method": ConfigCase(_cfg("data:\n  manifest: ok.csv\nmethod:\n  name: magic\n"), names=["magic"]),
    "unknown_augment": ConfigCase(_cfg("data:\n  manifest: ok.csv\nmethod:\n  augment: heavy\n"), names=["heavy"]),
    "init_checkpoint_missing": ConfigCase(_cfg("data:\n  manifest: ok.csv\ninit_checkpoint: gone.pt\n"),
                                          names=["gone.pt"]),  # fmt: skip
}


@pytest.mark.parametrize("case", list(CONFIGS))
def test_train_bad_config(case: str, tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths (run/, manifests, PWNED) land in the case folder
    c = CONFIGS[case]
    cfg = tmp_path / "config.yaml"
    if isinstance(c.yaml, bytes):
        cfg.write_bytes(c.yaml)
    elif c.yaml is not None:
        cfg.write_text(c.yaml)
    good_image(tmp_path, "img.nii.gz")
    (tmp_path / "ok.csv").write_text(H + "S1,A,t1,img.nii.gz,\n")
    (tmp_path / "bad.csv").write_text(H + "S1,A,t1,../img.nii.gz,\n")
    before = snapshot(tmp_path)
    code, err = run_cli(["train", cfg, *c.overrides], capsys)
    assert_clear(code, err, "train", [cfg, *c.names])
    assert snapshot(tmp_path) == before  # no run folder, no config.yaml, nothing executed
    assert not (tmp_path / "PWNED").exists()


# =========================================================================== 9. napari writer
@pytest.fixture
def layer(tmp_path: Path) -> tuple[Path, np.ndarray, dict[str, Any]]:
    src = save(tmp_path / "src.nii.gz", arr(), np.diag([-2.0, -2.0, 3.0, 1.0]))
    data, kw = to_napari(load_volume(src))
    return src, data, {"metadata": kw["metadata"], "scale": kw["scale"], "translate": kw["translate"]}


def _labels(data: np.ndarray, dtype: Any = np.uint8, value: Any = 1) -> np.ndarray:
    out = np.zeros(data.shape, dtype=dtype)
    out[2:5, 3:6, 4:7] = value
    return out


#: name -> (writer, data(layer data), target(folder, source), substrings)
WRITER: dict[str, tuple[Callable, Callable[[np.ndarray], Any], Callable[[Path, Path], Path], list[str]]] = {
    "shape_mismatch": (write_labels, lambda a: np.zeros((4, 5, 6), np.uint8), lambda d, s: d / "m.nii.gz", ["shape"]),
    "non_integer_labels": (write_labels, lambda a: _labels(a, np.float32, 0.5), lambda d, s: d / "m.nii.gz",
                           ["non-integer"]),  # fmt: skip
    "label_above_uint16": (write_labels, lambda a: _labels(a, np.int64, 70000), lambda d, s: d / "m.nii.gz",
                           ["uint16"]),  # fmt: skip
    "negative_labels": (write_labels, lambda a: _labels(a, np.int16, -3), lambda d, s: d / "m.nii.gz", ["negative"]),
    "nan_labels": (write_labels, lambda a: _labels(a, np.float32, np.nan), lambda d, s: d / "m.nii.gz", ["NaN"]),
    "labels_2d": (write_labels, lambda a: np.zeros((24, 24), np.uint8), lambda d, s: d / "m.nii.gz", ["2D"]),
    "labels_4d": (write_labels, lambda a: np.zeros((2, *a.shape), np.uint8), lambda d, s: d / "m.nii.gz", ["4D"]),
    "complex_labels": (write_labels, lambda a: _labels(a, np.complex64), lambda d, s: d / "m.nii.gz", ["complex"]),
    "text_labels": (write_labels, lambda a: np.full(a.shape, "x"), lambda d, s: d / "m.nii.gz", ["integer ids"]),
    "labels_over_source_image": (write_labels, lambda a: _labels(a), lambda d, s: s, ["never writes over an input"]),
    "labels_folder_missing": (write_labels, lambda a: _labels(a), lambda d, s: d / "nowhere" / "m.nii.gz",
                              ["does not exist"]),  # fmt: skip
    "image_with_nan": (write_image, lambda a: np.where(_labels(a) > 0, np.nan, 1.0), lambda d, s: d / "i.nii.gz",
                       ["NaN"]),  # fmt: skip
    "image_complex": (write_image, lambda a: _labels(a, np.complex64), lambda d, s: d / "i.nii.gz", ["complex"]),
    "image_shape_mismatch": (write_image, lambda a: np.zeros((4, 5, 6), np.float32), lambda d, s: d / "i.nii.gz",
                             ["shape"]),  # fmt: skip
}


@pytest.mark.parametrize("case", list(WRITER))
def test_writer_bad_layer(case: str, tmp_path: Path, layer) -> None:
    src, data, meta = layer
    writer, make, target, words = WRITER[case]
    out = target(tmp_path, src)
    before = snapshot(tmp_path)
    with pytest.raises(PandgIOError) as exc:
        writer(str(out), make(data), meta)
    msg = str(exc.value)
    name = out.parent if case == "labels_folder_missing" else out
    assert str(name) in msg
    for word in words:
        assert word in msg, msg
    assert snapshot(tmp_path) == before


def test_writer_unwritable_folder(tmp_path: Path, unwritable: Path, layer) -> None:
    _, data, meta = layer
    before = snapshot(tmp_path)
    with pytest.raises(PandgIOError) as exc:
        write_labels(str(unwritable / "m.nii.gz"), _labels(data), meta)
    assert str(unwritable) in str(exc.value)
    assert snapshot(tmp_path) == before


def test_writer_still_writes_good_labels(tmp_path: Path, layer) -> None:
    """The checks do not refuse the normal case (and the result is on the source grid)."""
    src, data, meta = layer
    (out,) = write_labels(str(tmp_path / "mask.nii.gz"), _labels(data), meta)
    np.testing.assert_array_equal(nib.load(out).affine, nib.load(str(src)).affine)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mask.nii.gz", "src.nii.gz"]


# =========================================================================== totals
def test_case_count() -> None:
    """The fuzz set holds at least 100 cases (issue 12: >= 100, all clear, 0 files lost)."""
    n = (2 * len(BAD_IMAGES) + len(SAM_CASES) + 2 + 7 + len(OUTPUTS) + 1 + 4 + 1 + 3 + len(CHECKPOINTS)
         + len(INDEX_CASES) + 1 + len(MANIFESTS) + 6 + len(CONFIGS) + len(WRITER) + 1)  # fmt: skip
    assert n >= 100, n


def test_train_preflight_accepts_a_good_config(tmp_path: Path, monkeypatch) -> None:
    """The checks do not refuse a valid config, and they create nothing."""
    from napari_pandg.train.config import load_config
    from napari_pandg.train.trainer import preflight

    monkeypatch.chdir(tmp_path)
    good_image(tmp_path, "img.nii.gz")
    (tmp_path / "ok.csv").write_text(H + "S1,A,t1,img.nii.gz,\n")
    before = snapshot(tmp_path)
    preflight(load_config(None, ["data.manifest=ok.csv", "out_dir=run", "data.spacing=[2, 2.5, 3]"]))
    assert snapshot(tmp_path) == before
