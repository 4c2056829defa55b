"""Sliding-window inference of a trained model on a :class:`~napari_pandg.Volume`.

:func:`segment_volume` runs the whole pipeline the model was trained with:

1. intensity normalisation (``description.normalization``) on the input grid;
2. reorientation to ``description.orientation`` and resampling to ``description.spacing``;
3. MONAI ``sliding_window_inference`` with ``description.patch_size`` windows and the
   description's overlap/blending (volumes smaller than a window are padded);
4. argmax, nearest-neighbour mapping back onto the input grid (the input's affine and
   shape), then output indices -> AMOS ids through ``description.label_map``.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from napari_pandg.models.checkpoint import SegModel, load_checkpoint
from napari_pandg.models.errors import ModelError, SegmentationCancelled
from napari_pandg.models.networks import size_divisor
from napari_pandg.models.preprocess import (
    check_finite,
    normalize_intensity,
    resample_nearest,
    to_model_grid,
)
from napari_pandg.labels import PANCREAS
from napari_pandg.models.shift import BottleneckProbe, ShiftSignals, bottleneck_name, image_signals, shift_report
from napari_pandg.postprocess import apply_postprocess
from napari_pandg.volume import Volume

Progress = Callable[[int, int, str], Any]
Cancel = Callable[[], bool]


def pick_device(device: str | torch.device | None = "auto") -> torch.device:
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ModelError("device 'cuda' was requested but no CUDA GPU is available; use --device cpu")
    return dev


def as_model(model: SegModel | str | os.PathLike, device: str | torch.device | None = None) -> SegModel:
    """A :class:`SegModel` from a loaded model, a checkpoint path or a registered model name."""
    if isinstance(model, SegModel):
        if device is not None:
            model.to(pick_device(device))
        return model
    from napari_pandg.models.registry import resolve_model

    path = resolve_model(model)
    return load_checkpoint(path, device=pick_device(device or "auto"))


def shift_layer(model: SegModel) -> str | None:
    """The bottleneck module of ``model`` the shift score pools (recorded in its reference);
    None for a network without 3D feature maps."""
    name = (model.description.shift or {}).get("layer")
    if name:
        if str(name) not in dict(model.network.named_modules()):
            raise ModelError(f"{model.path or model.name}: the shift-score reference names layer {name!r}, which "
                             "this network does not have (a reference fitted for another model?)")  # fmt: skip
        return str(name)
    cached = getattr(model, "_shift_layer", "")
    if cached == "":
        d = model.description
        # the network is always called with the 1-channel image (see predict_logits)
        cached = bottleneck_name(model.network, _roi(d.patch_size, size_divisor(d.architecture, d.arch_kwargs)), 1)
        model._shift_layer = cached  # type: ignore[attr-defined]
    return cached


def _n_windows(shape: Sequence[int], roi: Sequence[int], overlap: float) -> int:
    n = 1
    for s, r in zip(shape, roi, strict=True):
        s = max(s, r)
        interval = max(int(r * (1 - overlap)), 1) if r < s else r
        n *= math.ceil((s - r) / interval) + 1 if s > r else 1
    return n


def _roi(desc_patch: Sequence[int], divisor: int) -> tuple[int, int, int]:
    return tuple(int(math.ceil(p / divisor) * divisor) for p in desc_patch)  # type: ignore[return-value]


@torch.no_grad()
def predict_logits(
    model: SegModel,
    image: np.ndarray,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    overlap: float | None = None,
    sw_batch_size: int | None = None,
    probe: Any = None,
) -> torch.Tensor:
    """Sliding-window logits (1, C, X, Y, Z) for a preprocessed image (X, Y, Z) on the model grid."""
    from monai.inferers import sliding_window_inference

    desc = model.description
    inf = desc.inference
    overlap = float(inf.get("overlap", 0.5) if overlap is None else overlap)
    sw = int(inf.get("sw_batch_size", 2) if sw_batch_size is None else sw_batch_size)
    roi = _roi(desc.patch_size, size_divisor(desc.architecture, desc.arch_kwargs))
    total = math.ceil(_n_windows(image.shape, roi, overlap) / sw)
    done = [0]
    net = model.network
    net.eval()

    def predictor(x: torch.Tensor) -> torch.Tensor:
        if cancel is not None and cancel():
            raise SegmentationCancelled("segmentation cancelled")
        y = net(x)
        done[0] += 1
        if progress is not None:
            progress(min(done[0], total), total, "sliding window")
        return y

    x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(model.device)
    if probe is not None:
        with probe:
            return sliding_window_inference(
                x, roi_size=roi, sw_batch_size=sw, predictor=predictor, overlap=overlap,
                mode=str(inf.get("mode", "gaussian")), padding_mode="constant",
                cval=float(x.min()) if x.numel() else 0.0,
            )  # fmt: skip
    return sliding_window_inference(
        x,
        roi_size=roi,
        sw_batch_size=sw,
        predictor=predictor,
        overlap=overlap,
        mode=str(inf.get("mode", "gaussian")),
        padding_mode="constant",
        cval=float(x.min()) if x.numel() else 0.0,
    )


def segment_volume(
    model: SegModel | str | os.PathLike,
    vol: Volume,
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    device: str | torch.device | None = None,
) -> Volume:
    """Segment ``vol``; returns a label :class:`Volume` on the input grid with AMOS ids.

    ``model`` is a loaded :class:`SegModel`, a checkpoint path or a registered model name.
    ``progress(done, total, what)`` is called per sliding-window batch; ``cancel()``
    returning True aborts with :class:`SegmentationCancelled`.
    """
    model = as_model(model, device)
    desc = model.description
    what = str(vol.source_path or vol.subject or "image")
    if vol.is_label:
        raise ModelError(f"{what} is a label map; segment an image")
    arr = np.asarray(vol.array)
    check_finite(arr.astype(np.float32, copy=False), what)
    if cancel is not None and cancel():
        raise SegmentationCancelled("segmentation cancelled")
    if progress is not None:
        progress(0, 1, "preprocessing")
    t0 = time.perf_counter()
    norm = normalize_intensity(arr, desc.normalization, what)
    img, model_aff = to_model_grid(norm, vol.affine, desc.spacing, desc.orientation, "bilinear")
    t1 = time.perf_counter()
    layer = shift_layer(model)
    probe = BottleneckProbe(model.network, layer) if layer else None
    logits = predict_logits(model, img, progress, cancel, probe=probe)
    t2 = time.perf_counter()
    prob = torch.softmax(logits[0].float(), dim=0)
    conf, idx_t = prob.max(dim=0)
    idx = idx_t.to(torch.uint8).cpu().numpy()
    if desc.postprocess:
        idx = apply_postprocess(idx, desc.postprocess)
    fg = idx > 0
    confidence = float(conf.cpu().numpy()[fg].mean()) if fg.any() else float("nan")
    del prob, conf, idx_t
    back = resample_nearest(idx, model_aff, vol.affine, vol.shape)
    lut = np.zeros(max(256, desc.out_channels), dtype=np.uint16)
    for k, v in desc.label_map.items():
        lut[k] = v
    out = lut[back]
    out = out.astype(np.uint8 if out.max(initial=0) <= 255 else np.uint16)
    fg_frac, constant = image_signals(norm, arr)
    voxel_ml = float(np.prod(vol.spacing)) / 1000.0
    target = PANCREAS if PANCREAS in desc.label_map.values() else None
    n_fg = int(np.count_nonzero(out == target)) if target is not None else int(np.count_nonzero(out))
    signals = ShiftSignals(probe.descriptor().tolist() if probe else [], confidence, n_fg * voxel_ml, fg_frac, constant)
    report = shift_report(desc.shift or None, signals)
    t3 = time.perf_counter()
    meta = dict(vol.metadata)
    meta.update(
        {
            "model": desc.name,
            "model_path": str(model.path) if model.path else "",
            "timings_s": {
                "preprocess": round(t1 - t0, 3),
                "sliding_window": round(t2 - t1, 3),
                "postprocess": round(t3 - t2, 3),
            },
            "model_grid_shape": tuple(int(s) for s in img.shape),
            "shift": report.to_dict(),
            "shift_signals": signals.to_dict(),
        }
    )
    return Volume(
        array=out,
        affine=vol.affine.copy(),
        subject=vol.subject,
        center=vol.center,
        sequence=vol.sequence,
        is_label=True,
        source_path=None,
        header=vol.header,
        metadata=meta,
    )


# --------------------------------------------------------------------------- files
def _prediction_name(row: dict[str, Any], image: Path) -> str:
    from napari_pandg.io.nifti import nifti_stem

    subj, seq = str(row.get("subject") or ""), str(row.get("sequence") or "")
    if subj and seq:
        base = f"{subj}_{seq}"
    elif subj:
        base = f"{subj}_{nifti_stem(image)}"
    else:
        base = nifti_stem(image)
    safe = "".join(c if (c.isalnum() or c in "-_.") else "_" for c in base)
    return f"{safe}_seg.nii.gz"


def segment_files(
    model: SegModel | str | os.PathLike,
    input: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    device: str | torch.device | None = "auto",
    progress: Progress | None = None,
    cancel: Cancel | None = None,
    centers: Sequence[str] | None = None,
    sequences: Sequence[str] | None = None,
) -> list[Path]:
    """Segment one file (``input`` -> ``output``) or every image of a ``manifest`` into ``out_dir``.

    With a manifest, predictions are written as ``OUT_DIR/<subject>_<sequence>_seg.nii.gz``
    plus ``OUT_DIR/predictions.csv`` (the manifest rows with a ``prediction`` column), which
    ``napari_pandg.metrics.evaluate_manifest`` reads. Existing outputs are refused (before
    anything is computed) unless ``overwrite``.
    """
    from napari_pandg.io import load_volume, save_volume

    if manifest is None:
        if input is None or output is None:
            raise ModelError("give input and output files, or a manifest and an output folder")
        output = _check_single(input, output, overwrite)
        vol = load_volume(input)  # validated (dtype, spacing, NaN) before the model is loaded
        m = as_model(model, device)
        seg = segment_volume(m, vol, progress=progress, cancel=cancel)
        written = save_volume(seg, output, overwrite=overwrite, like=vol)
        write_shift_sidecar(seg, written, input)
        return [written]

    if out_dir is None:
        raise ModelError("segmenting a manifest needs an output folder (out_dir / --out-dir)")
    df, rows, targets = _check_manifest(manifest, out_dir, overwrite, centers, sequences)
    out_dir = Path(out_dir)
    m = as_model(model, device)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    scores: list[tuple[float, bool]] = []
    for i, (row, target) in enumerate(zip(rows, targets, strict=True)):
        if cancel is not None and cancel():
            raise SegmentationCancelled("segmentation cancelled")
        vol = load_volume(row["image"], subject=str(row.get("subject", "")), center=str(row.get("center", "")), sequence=str(row.get("sequence", "")))
        seg = segment_volume(m, vol, cancel=cancel)
        written.append(save_volume(seg, target, overwrite=overwrite, like=vol))
        write_shift_sidecar(seg, written[-1], row["image"])
        shift = seg.metadata["shift"]
        scores.append((shift["score"], shift["flagged"]))
        if progress is not None:
            progress(i + 1, len(rows), f"{row.get('subject', '')} {row.get('sequence', '')}")
    out = df.copy()
    out["prediction"] = [str(p) for p in written]
    out["model"] = m.name
    out["shift_score"] = [sc for sc, _ in scores]
    out["shift_flagged"] = [fl for _, fl in scores]
    pred_csv = out_dir / "predictions.csv"
    tmp = pred_csv.with_suffix(".csv.tmp")
    out.to_csv(tmp, index=False)
    os.replace(tmp, pred_csv)
    return written


def _check_single(input: str | os.PathLike, output: str | os.PathLike, overwrite: bool) -> Path:
    """Before any work: the input is a usable image, the output is new (or ``overwrite``),
    never the input (even with ``overwrite``), and its folder is writable."""
    from napari_pandg.io.nifti import NIFTI_SUFFIXES, check_image_file
    from napari_pandg.io.safety import check_output_file

    output = check_output_file(output, overwrite=overwrite, inputs=[input], suffixes=NIFTI_SUFFIXES,
                               what="output mask")  # fmt: skip
    check_output_file(shift_sidecar(output), overwrite=overwrite, inputs=[input], what="shift-score file")
    check_image_file(input)
    return output


def shift_sidecar(mask: str | os.PathLike) -> Path:
    """The shift-score JSON written next to a mask: ``case_seg.nii.gz`` -> ``case_seg.shift.json``."""
    from napari_pandg.io.nifti import nifti_stem

    mask = Path(mask)
    return mask.with_name(f"{nifti_stem(mask)}.shift.json")


def write_shift_sidecar(seg: Volume, mask: str | os.PathLike, image: str | os.PathLike | None = None) -> Path:
    """Write the segmentation's shift report (and the model and files it concerns) atomically."""
    import json

    from napari_pandg.io.safety import atomic_write_text

    meta = seg.metadata
    doc = {"image": str(image) if image else None, "mask": str(mask), "model": meta.get("model"),
           "model_path": meta.get("model_path"), **meta["shift"],
           "signals": {k: v for k, v in meta["shift_signals"].items() if k != "features"}}  # fmt: skip
    return atomic_write_text(shift_sidecar(mask), json.dumps(json_safe(doc), indent=2, allow_nan=False) + "\n")


def json_safe(v: Any) -> Any:
    """JSON-ready copy: NaN/inf -> null (e.g. no pancreas found: no confidence), paths -> str."""
    if isinstance(v, Mapping):
        return {str(k): json_safe(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [json_safe(x) for x in v]
    if isinstance(v, (bool, int, str)) or v is None:
        return v
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(float(v)) else None
    if isinstance(v, np.integer):
        return int(v)
    return str(v)


def _check_manifest(
    manifest: str | os.PathLike,
    out_dir: str | os.PathLike,
    overwrite: bool,
    centers: Sequence[str] | None = None,
    sequences: Sequence[str] | None = None,
) -> tuple[Any, list[dict[str, Any]], list[Path]]:
    """Before any work: every listed image exists and is usable, ``out_dir`` can be written,
    and no prediction (nor predictions.csv) would replace a listed file or, without
    ``overwrite``, an earlier prediction."""
    from napari_pandg.io import read_index
    from napari_pandg.io.nifti import check_image_file
    from napari_pandg.io.safety import check_output_folder, check_outputs_not_inputs

    df = read_index(manifest)
    if centers:
        df = df[df["center"].isin(list(centers))]
    if sequences:
        df = df[df["sequence"].isin(list(sequences))]
    if df.empty:
        raise ModelError(f"{manifest}: no images left after filtering centers={centers} sequences={sequences}")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ModelError(f"{out_dir}: the output folder is a file")
    rows = df.to_dict("records")
    targets = [out_dir / _prediction_name(r, Path(r["image"])) for r in rows]
    if len(set(targets)) != len(targets):
        raise ModelError(f"{manifest}: several images map to the same output name in {out_dir}")
    inputs = [manifest, *(r["image"] for r in rows), *(r.get("label") for r in rows)]
    sidecars = [shift_sidecar(t) for t in targets]
    check_outputs_not_inputs([*targets, *sidecars, out_dir / "predictions.csv"], inputs, "prediction")
    # a prediction exists when its mask or its .shift.json does; count predictions, not files
    existing = [t for t, sc in zip(targets, sidecars, strict=True) if t.exists() or sc.exists()]
    if existing and not overwrite:
        raise FileExistsError(
            f"{len(existing)} output(s) already exist in {out_dir} (e.g. {existing[0].name}); "
            "pass overwrite=True (CLI: --overwrite) to replace them"
        )
    check_output_folder(out_dir)
    for r in rows:
        check_image_file(r["image"])
    return df, rows, targets


def run_segment_cli(
    model: str | os.PathLike,
    input: str | os.PathLike | None = None,
    output: str | os.PathLike | None = None,
    manifest: str | os.PathLike | None = None,
    out_dir: str | os.PathLike | None = None,
    overwrite: bool = False,
    device: str = "auto",
) -> list[Path]:
    """``pandg segment``: prints what it does; returns the written files."""
    t0 = time.perf_counter()
    # refuse bad inputs and outputs before loading the model (segment_files checks again)
    if manifest is None:
        if input is None or output is None:
            raise ModelError("give --input and --output, or --manifest and --out-dir")
        _check_single(input, output, overwrite)
    else:
        if out_dir is None:
            raise ModelError("segmenting a manifest needs --out-dir")
        _check_manifest(manifest, out_dir, overwrite)
    m = as_model(model, device)
    print(m.description.summary(), flush=True)

    def prog(done: int, total: int, what: str) -> None:
        print(f"[{done}/{total}] {what}", flush=True)

    paths = segment_files(
        m, input, output, manifest=manifest, out_dir=out_dir, overwrite=overwrite, device=None,
        progress=prog if manifest is not None else None,
    )
    print(f"wrote {len(paths)} segmentation(s) in {time.perf_counter() - t0:.1f} s"
          + (f" to {out_dir}" if manifest is not None else f": {paths[0]}"), flush=True)
    print(shift_summary(paths), flush=True)
    return paths


def shift_summary(masks: Sequence[Path]) -> str:
    """The shift reports of written masks (their sidecars), for the terminal."""
    import json

    from napari_pandg.models.shift import ShiftReport

    lines = []
    flagged = 0
    for mask in masks:
        rep = ShiftReport.from_dict(json.loads(shift_sidecar(mask).read_text()))
        flagged += rep.flagged
        if len(masks) == 1:
            lines.append(f"{rep.summary()}\n  (written to {shift_sidecar(mask)})")
        elif rep.flagged:
            lines.append(f"WARNING {mask.name}: {rep.summary()}")
    if len(masks) > 1:
        lines.append(f"shift score: {flagged} of {len(masks)} volumes outside the training domain "
                     "(shift_score / shift_flagged in predictions.csv, one .shift.json per mask)")  # fmt: skip
    return "\n".join(lines)
