"""CPU benchmark of the MedSAM2 volume engine (random weights; timing does not depend on them).

Measures, for sam2.1 hiera-tiny at ``--image-size`` (MedSAM2: 512):

* fresh propagation from the middle slice (box prompt, both directions): seconds per slice,
  including the image encoder for every slice;
* re-propagation after a correction (cached features, no encoder): seconds per slice, with
  ``bounded=False, converge=None`` so that the whole volume is re-propagated and per-slice
  numbers compare;
* the default correction (bounded by the neighbouring anchors, stopped where the mask no longer
  changes) and the bounded-only correction: total seconds and slices visited;
* encoder-only seconds per slice; feature-cache size; peak RSS of the process;
* the on-disk embeddings (``cache_dir``): a fresh propagation that also writes every slice's
  features, then a new session on the same volume that reads them (no encoder), its seconds
  per slice, and the folder size (skip with ``--no-disk``).

Example::

    python benchmarks/bench_sam.py --slices 64 --image-size 512 --threads 2
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import sys
import time

import numpy as np


def _rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 1024.0 if sys.platform != "darwin" else peak / 1024.0 / 1024.0


def _current_rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            pages = int(f.read().split()[1])
        import os

        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def synthetic_volume(nx: int, ny: int, nz: int, seed: int = 0) -> np.ndarray:
    x, y, z = np.meshgrid(np.arange(nx), np.arange(ny), np.arange(nz), indexing="ij", sparse=True)
    rng = np.random.default_rng(seed)
    vol = 100.0 + 30.0 * rng.random((nx, ny, nz), dtype=np.float32)
    ell = ((x - nx / 2) / (nx / 5)) ** 2 + ((y - ny / 2) / (ny / 7)) ** 2 + (
        (z - nz / 2) / max(nz / 3, 1)
    ) ** 2 < 1
    vol[ell] += 500.0
    return vol


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--slices", type=int, default=64)
    ap.add_argument("--image-size", type=int, default=512)
    ap.add_argument("--inplane", type=int, nargs=2, default=(256, 256), metavar=("NX", "NY"))
    ap.add_argument("--config", default="sam2.1_hiera_t")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the results to this file")
    ap.add_argument("--no-disk", action="store_true", help="skip the on-disk embeddings measurement")
    args = ap.parse_args(argv)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from napari_pandg.sam import VolumeSegmenter, load_sam_model

    res: dict = {
        "image_size": args.image_size,
        "slices": args.slices,
        "inplane": list(args.inplane),
        "config": args.config,
        "threads": torch.get_num_threads(),
        "device": args.device,
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
    }
    rss0 = _current_rss_mb()
    t = time.perf_counter()
    torch.manual_seed(0)
    engine = load_sam_model(None, config=args.config, image_size=args.image_size,
                            device=args.device, random_init=True)
    res["build_s"] = round(time.perf_counter() - t, 3)

    nx, ny = args.inplane
    nz = args.slices
    vol = synthetic_volume(nx, ny, nz)
    seg = VolumeSegmenter(engine)
    t = time.perf_counter()
    seg.set_volume(vol)
    res["set_volume_s"] = round(time.perf_counter() - t, 3)
    key = nz // 2
    box = (nx * 0.28, ny * 0.34, nx * 0.72, ny * 0.66)

    # warm-up (first-call allocations, oneDNN kernels) on a separate small volume
    warm = VolumeSegmenter(engine)
    warm.set_volume(synthetic_volume(nx, ny, 2))
    warm.propagate(1, box=box)
    del warm

    n_enc = engine.encoder_calls
    t = time.perf_counter()
    seg.propagate(key, box=box)
    fresh = time.perf_counter() - t
    res["fresh_propagation_s_per_slice"] = round(fresh / nz, 4)
    res["fresh_encoder_calls"] = engine.encoder_calls - n_enc

    # correction on a slice away from the key slice, then full re-propagation from it
    n_enc = engine.encoder_calls
    zc = min(key + max(nz // 8, 1), nz - 1)
    visited = []
    t = time.perf_counter()
    seg.correct(zc, points=[(nx * 0.5, ny * 0.5, 1)], bounded=False, converge=None,
                callback=lambda z, *_: visited.append(z))
    corr = time.perf_counter() - t
    res["correction_slices"] = len(visited)
    res["repropagation_s_per_slice"] = round(corr / max(len(visited), 1), 4)
    res["repropagation_encoder_calls"] = engine.encoder_calls - n_enc
    res["speedup_cached"] = round(res["fresh_propagation_s_per_slice"] / res["repropagation_s_per_slice"], 2)
    res["fresh_propagation_total_s"] = round(fresh, 2)

    # the default correction: bounded by the neighbouring anchors, and each pass ends once
    # `converge` (3) consecutive slices agree with the previous mask (random weights make where
    # that happens arbitrary: read these two fields as one example, not as a typical figure)
    seg.undo()
    visited.clear()
    t = time.perf_counter()
    seg.correct(zc, points=[(nx * 0.5, ny * 0.5, 1)], callback=lambda z, *_: visited.append(z))
    res["default_correction_total_s"] = round(time.perf_counter() - t, 2)
    res["default_correction_slices"] = len(visited)
    res["default_correction_converged"] = dict(seg.last_converged)
    # bounded only (no convergence stop)
    seg.undo()
    visited.clear()
    t = time.perf_counter()
    seg.correct(zc, points=[(nx * 0.5, ny * 0.5, 1)], converge=None,
                callback=lambda z, *_: visited.append(z))
    res["bounded_correction_total_s"] = round(time.perf_counter() - t, 2)
    res["bounded_correction_slices"] = len(visited)

    # encoder alone
    img = seg._frames[key].unsqueeze(0)
    with torch.inference_mode():
        ts = []
        for _ in range(3):
            t = time.perf_counter()
            engine.model.forward_image(img)
            ts.append(time.perf_counter() - t)
    res["encoder_s_per_slice"] = round(float(np.median(ts)), 4)
    res["feature_cache_mb"] = round(seg.cache_nbytes / 2**20, 1)

    if not args.no_disk:
        import shutil
        import tempfile

        tmp = tempfile.mkdtemp(prefix="bench_sam_emb_")
        try:
            t = time.perf_counter()
            engine.fingerprint()
            res["weights_fingerprint_s"] = round(time.perf_counter() - t, 3)
            s1 = VolumeSegmenter(engine, cache_dir=tmp)
            s1.set_volume(vol)
            t = time.perf_counter()
            s1.propagate(key, box=box)
            res["fresh_propagation_writing_disk_s_per_slice"] = round((time.perf_counter() - t) / nz, 4)
            del s1
            s2 = VolumeSegmenter(engine, cache_dir=tmp)  # a later session: same volume and model
            t = time.perf_counter()
            s2.set_volume(vol)
            res["set_volume_with_disk_lookup_s"] = round(time.perf_counter() - t, 3)
            n_enc = engine.encoder_calls
            t = time.perf_counter()
            s2.propagate(key, box=box)
            res["propagation_from_disk_s_per_slice"] = round((time.perf_counter() - t) / nz, 4)
            res["propagation_from_disk_encoder_calls"] = engine.encoder_calls - n_enc
            res["speedup_from_disk"] = round(
                res["fresh_propagation_s_per_slice"] / res["propagation_from_disk_s_per_slice"], 2)
            res["disk_cache_mb"] = round(s2._cache.store.nbytes / 2**20, 1)
            del s2
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    res["rss_before_build_mb"] = round(rss0, 1)
    res["peak_rss_mb"] = round(_rss_mb(), 1)
    print(json.dumps(res, indent=2))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(res, f, indent=2)
    return res


if __name__ == "__main__":
    main()
