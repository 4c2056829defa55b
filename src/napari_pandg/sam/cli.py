"""``pandg sam``: MedSAM2 box/point prompting of a NIfTI volume from the command line.

Coordinates are voxel indices of the NIfTI array as stored: X = first axis, Y = second axis,
Z = third axis (what ``nibabel`` ``get_fdata()`` returns, not world / RAS coordinates).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np

from napari_pandg.sam.errors import SamPromptError


def _num(tok: str, what: str) -> float:
    try:
        return float(tok)
    except ValueError as exc:
        raise SamPromptError(f"{what}: {tok!r} is not a number") from exc


def _idx(tok: str, what: str) -> int:
    v = _num(tok, what)
    if v != int(v):
        raise SamPromptError(f"{what}: slice index {tok!r} must be an integer")
    return int(v)


def parse_box(box: str) -> tuple[int, tuple[float, float, float, float]]:
    """'Z,X0,Y0,X1,Y1' -> (z, (x0, y0, x1, y1))."""
    parts = [p.strip() for p in str(box).replace(" ", ",").split(",") if p.strip()]
    if len(parts) != 5:
        raise SamPromptError(f"--box must be 'Z,X0,Y0,X1,Y1' (5 numbers), got {box!r}")
    z = _idx(parts[0], "--box")
    x0, y0, x1, y1 = (_num(p, "--box") for p in parts[1:])
    return z, (x0, y0, x1, y1)


def parse_points(points: str) -> list[tuple[int, float, float, int]]:
    """'Z,X,Y,+;Z,X,Y,-' -> [(z, x, y, +1 / -1), ...]."""
    out = []
    for item in str(points).split(";"):
        item = item.strip()
        if not item:
            continue
        parts = [p.strip() for p in item.split(",")]
        if len(parts) != 4:
            raise SamPromptError(f"--points item {item!r} must be 'Z,X,Y,+' or 'Z,X,Y,-'")
        z = _idx(parts[0], "--points")
        x, y = _num(parts[1], "--points"), _num(parts[2], "--points")
        sign = parts[3]
        if sign in ("+", "+1", "1", "pos"):
            lab = 1
        elif sign in ("-", "-1", "0", "neg"):
            lab = -1
        else:
            raise SamPromptError(f"--points item {item!r}: the sign must be '+' or '-'")
        out.append((z, x, y, lab))
    if not out:
        raise SamPromptError(f"--points {points!r} holds no point")
    return out


def parse_object(spec: str) -> tuple[int, tuple[int, tuple[float, float, float, float]] | None, list]:
    """'LABEL:Z,X0,Y0,X1,Y1[:Z,X,Y,+;...]' (box may be empty: 'LABEL::Z,X,Y,+') ->
    (label id, (z, box) or None, [(z, x, y, +1 / -1), ...])."""
    parts = str(spec).split(":")
    if len(parts) not in (2, 3):
        raise SamPromptError(
            f"--object {spec!r} must be 'LABEL:Z,X0,Y0,X1,Y1' or 'LABEL:Z,X0,Y0,X1,Y1:Z,X,Y,+;...' "
            "(box part may be empty when points are given)"
        )
    lab_tok = parts[0].strip()
    try:
        label = int(lab_tok)
    except ValueError:
        raise SamPromptError(f"--object {spec!r}: label {lab_tok!r} is not an integer") from None
    if not 1 <= label <= 255:
        raise SamPromptError(f"--object {spec!r}: label must be in 1..255")
    box = parse_box(parts[1]) if parts[1].strip() else None
    points = parse_points(parts[2]) if len(parts) == 3 and parts[2].strip() else []
    if box is None and not points:
        raise SamPromptError(f"--object {spec!r} has neither a box nor points")
    return label, box, points


def _segment_object(seg, key_box, pts, z_range, cb, stop_after_empty: int):
    """Propagate from the box (or the first point's slice), then apply the other slices' points
    as corrections, one slice at a time in the given order."""
    key_z = key_box[0] if key_box else pts[0][0]
    key_points = [(x, y, s) for (z, x, y, s) in pts if z == key_z]
    mask = seg.propagate(
        key_z,
        box=key_box[1] if key_box else None,
        points=key_points or None,
        z_range=z_range,
        callback=cb,
        stop_after_empty=stop_after_empty,
    )
    corrections: dict[int, list] = {}
    for z, x, y, s in pts:
        if z != key_z:
            corrections.setdefault(z, []).append((x, y, s))
    for z, plist in corrections.items():
        mask = seg.correct(z, points=plist, callback=cb)
    return mask


def _nifti_suffix(path: Path) -> str:
    name = path.name.lower()
    for suf in (".nii.gz", ".nii"):
        if name.endswith(suf):
            return suf
    raise SamPromptError(f"output {path} must end with .nii or .nii.gz")


def write_mask_nifti(mask: np.ndarray, like, output_path: Path, overwrite: bool = False) -> Path:
    """Write a uint8 mask on the grid of the nibabel image ``like``, atomically."""
    import nibabel as nib

    from napari_pandg.io.safety import check_output_file

    output_path = Path(output_path)
    suffix = _nifti_suffix(output_path)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass --overwrite (overwrite=True in Python) to replace it")
    src = getattr(like, "get_filename", lambda: None)()
    check_output_file(output_path, overwrite=overwrite, inputs=[src], create_parent=True)
    output_path.parent.mkdir(parents=True, exist_ok=True)
    header = like.header.copy() if hasattr(like, "header") else None
    img = nib.Nifti1Image(np.asarray(mask, dtype=np.uint8), like.affine, header=header)
    img.set_data_dtype(np.uint8)
    img.header.set_slope_inter(1.0, 0.0)
    if hasattr(like, "header") and hasattr(like.header, "get_sform"):
        sform, scode = like.header.get_sform(coded=True)
        qform, qcode = like.header.get_qform(coded=True)
        if sform is not None:
            img.set_sform(sform, int(scode))
        if qform is not None:
            img.set_qform(qform, int(qcode))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-" + output_path.name.split(".")[0] + "-",
                               suffix=suffix, dir=output_path.parent)
    os.close(fd)
    try:
        nib.save(img, tmp)
        os.replace(tmp, output_path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return output_path


def run_sam_cli(
    checkpoint: str | Path | None,
    input_path: str | Path,
    output_path: str | Path,
    box: str | None,
    points: str | None = None,
    config: str = "auto",
    image_size: int = 512,
    device: str = "auto",
    overwrite: bool = False,
    *,
    modality: str = "mri",
    ct_window: str | None = None,
    z_range: tuple[int, int] | None = None,
    keep_largest: bool = True,
    random_init: bool = False,
    engine=None,
    progress=None,
    cache_dir: str | Path | None = None,
    stop_after_empty: int = 0,
    objects: list[str] | None = None,
) -> Path:
    """Segment ``input_path`` with MedSAM2 prompts and write a uint8 mask NIfTI.

    ``box``: 'Z,X0,Y0,X1,Y1' on the key slice Z. ``points``: 'Z,X,Y,+|-;...'. Points on the key
    slice are prompts together with the box; points on other slices are applied afterwards as
    corrections (one per slice, in the given order). Without a box, the key slice is the Z of
    the first point. The output has the input's shape, affine and header (uint8), is written
    via a temp file + ``os.replace``, and an existing file is refused unless ``overwrite``.
    ``engine``: an already built :class:`SamEngine` (tests); ``progress(z, done, total)``.
    ``cache_dir``: keep the slice features on disk there; a later run on the same image and
    model (e.g. with more correction points) then encodes no slice again.
    ``stop_after_empty``: end each propagation pass after that many empty slices (0: off).
    ``objects``: several objects instead of ``box`` / ``points``, each
    'LABEL:Z,X0,Y0,X1,Y1[:Z,X,Y,+;...]' (:func:`parse_object`); the output is then one label map
    with each object under its label (the object given first keeps overlapping voxels), and
    the slice features are computed once for all of them.
    """
    import nibabel as nib

    from napari_pandg.io.nifti import check_header
    from napari_pandg.io.safety import check_output_file
    from napari_pandg.sam.model import load_sam_model
    from napari_pandg.sam.segmenter import VolumeSegmenter

    input_path, output_path = Path(input_path), Path(output_path)
    _nifti_suffix(output_path)
    # the output never replaces the input, even with overwrite (checked before anything else)
    check_output_file(output_path, overwrite=True, inputs=[input_path], create_parent=True)
    if output_path.exists() and not overwrite:
        raise FileExistsError(f"{output_path} exists; pass --overwrite (overwrite=True in Python) to replace it")
    if not input_path.is_file():
        raise FileNotFoundError(f"input image not found: {input_path}")
    if z_range is not None:
        z_lo, z_hi = (int(v) for v in z_range)
        if z_lo > z_hi:
            raise SamPromptError(f"--z-range {z_lo} {z_hi}: the first slice must not be above the last")
    if objects and (box or points):
        raise SamPromptError("give either --object (one or more) or --box/--points, not both")
    if not box and not points and not objects:
        raise SamPromptError("give --box and/or --points, or one --object per object")
    specs = [parse_object(o) for o in objects or []]
    labels = [lab for lab, _, _ in specs]
    if len(set(labels)) != len(labels):
        raise SamPromptError(f"--object labels must differ, got {labels}")
    key_box = parse_box(box) if box else None
    pts = parse_points(points) if points else []

    try:
        img = nib.load(str(input_path))
    except Exception as exc:  # noqa: BLE001 - corrupt, truncated or foreign file
        raise SamPromptError(
            f"{input_path}: cannot read it as NIfTI ({type(exc).__name__}: {exc}); export it again"
        ) from None
    try:
        check_header(input_path, img)  # complex, RGB/vector voxels, implausible spacing
    except ValueError as exc:
        raise SamPromptError(str(exc)) from None
    try:
        data = np.asanyarray(img.dataobj)
    except Exception as exc:  # noqa: BLE001 - truncated data / bad gzip stream
        raise SamPromptError(
            f"{input_path}: cannot read the voxel data ({type(exc).__name__}: {exc}); the file is "
            "truncated or corrupt: export it again"
        ) from None
    while data.ndim > 3 and data.shape[-1] == 1:
        data = data[..., 0]
    if data.ndim != 3:
        raise SamPromptError(f"{input_path} is not a 3D image: shape {img.shape}")

    if engine is None:
        engine = load_sam_model(
            checkpoint, config=config, image_size=image_size, device=device,
            random_init=random_init,
        )
    seg = VolumeSegmenter(
        engine, modality=modality, window=ct_window, keep_largest=keep_largest, cache_dir=cache_dir
    )
    seg.set_volume(np.asarray(data))

    def cb(z, _m, done, total):
        if progress is not None:
            progress(z, done, total)

    if not specs:
        mask = _segment_object(seg, key_box, pts, z_range, cb, stop_after_empty)
        return write_mask_nifti(mask, img, output_path, overwrite=overwrite)
    for label, obj_box, obj_pts in specs:
        seg.select_object(label, create=True)
        _segment_object(seg, obj_box, obj_pts, z_range, cb, stop_after_empty)
    return write_mask_nifti(seg.objects_map(), img, output_path, overwrite=overwrite)


def add_sam_arguments(parser) -> None:
    """Add the ``pandg sam`` options to an ``argparse`` (sub)parser (see :func:`run_from_args`)."""
    parser.add_argument("--checkpoint", required=True, help="local MedSAM2 / SAM2.1 .pt file")
    parser.add_argument("--input", "-i", required=True, help="3D NIfTI image")
    parser.add_argument("--output", "-o", required=True, help="output mask (.nii or .nii.gz)")
    parser.add_argument(
        "--box", default=None,
        help="Z,X0,Y0,X1,Y1: box on key slice Z, voxel indices of the stored array",
    )
    parser.add_argument(
        "--points", default=None,
        help="'Z,X,Y,+;Z,X,Y,-': points; those off the key slice are applied as corrections",
    )
    parser.add_argument(
        "--object", action="append", default=None, dest="objects", metavar="LABEL:BOX[:POINTS]",
        help="one object of several (repeat the option): 'LABEL:Z,X0,Y0,X1,Y1' or "
        "'LABEL:Z,X0,Y0,X1,Y1:Z,X,Y,+;Z,X,Y,-' (box part may be empty); instead of --box/--points; "
        "the output is a label map with each object under its LABEL",
    )
    parser.add_argument(
        "--config", default="auto",
        help="auto (default: from the checkpoint's structure; MedSAM2 files are sam2.1_hiera_t) | "
        "sam2.1_hiera_t | sam2.1_hiera_s | sam2.1_hiera_b+ | sam2.1_hiera_l",
    )
    parser.add_argument("--image-size", type=int, default=512, help="model input size (MedSAM2: 512)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda")
    parser.add_argument(
        "--modality", default="mri", choices=["mri", "ct"],
        help="intensity normalisation to 0-255: mri (0.5-99.5 percentile clipping, default) or ct (--ct-window)",
    )
    parser.add_argument("--ct-window", default=None, help="CT preset (abdomen, lung, ...)")
    parser.add_argument(
        "--z-range", type=int, nargs=2, default=None, metavar=("ZLO", "ZHI"),
        help="propagate only between slices ZLO and ZHI (inclusive; default: the whole volume)",
    )
    parser.add_argument(
        "--stop-after-empty", type=int, default=0, metavar="K",
        help="early stop: end propagation in each direction once the mask has been empty on K "
        "consecutive slices; the slices beyond are not encoded (default 0: off)",
    )
    parser.add_argument(
        "--cache-dir", default=None,
        help="keep slice features (image embeddings) in this folder; reruns on the same image and "
        "checkpoint skip the encoder (~4.2 MB per slice at 512 px)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace an existing --output (never the --input image)"
    )


def run_from_args(args) -> Path:
    """Run :func:`run_sam_cli` from parsed :func:`add_sam_arguments` options."""
    return run_sam_cli(
        args.checkpoint, args.input, args.output, box=args.box, points=args.points,
        config=args.config, image_size=args.image_size, device=args.device,
        overwrite=args.overwrite, modality=args.modality, ct_window=args.ct_window,
        z_range=tuple(args.z_range) if args.z_range else None,
        cache_dir=getattr(args, "cache_dir", None),
        stop_after_empty=int(getattr(args, "stop_after_empty", 0) or 0),
        objects=getattr(args, "objects", None),
    )
