"""Benchmark: inference time of the default shipped architecture and training throughput.

    python benchmarks/bench_models.py [--threads 2] [--repeats 3] [--json out.json]

* inference: ``segment_volume`` on a 256 x 256 x 64 volume (1.5 x 1.5 x 3 mm, LPS-like
  storage so reorientation is exercised) with the default architecture of the shipped models
  (``training/configs/erm.yaml``: MONAI UNet (16, 32, 64, 128), 1 residual unit, spacing
  2 x 2 x 4 mm, 96 x 96 x 32 windows, overlap 0.5, Gaussian blending), split into
  preprocessing, sliding window and mapping back. Random weights: the time does not depend on
  them. Goal: <= 3 s on 2 CPU cores.
* training: optimiser steps per second (batch 2 of 96 x 96 x 32 patches, DiceCE, AdamW) for
  the plain network and with MaskGen inputs (image + 16 feature channels).

Timings are medians of ``--repeats`` runs after one warm-up run.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time

import numpy as np
import torch


def bench_inference(repeats: int, overlap: float | None = None) -> dict:
    from napari_pandg.models import ModelDescription, SegModel, build_model, segment_volume
    from napari_pandg.volume import Volume

    torch.manual_seed(0)
    desc = ModelDescription(name="bench")  # defaults = the shipped ERM architecture
    if overlap is not None:
        desc.inference["overlap"] = overlap
    model = SegModel(desc, build_model(desc).eval())
    rng = np.random.default_rng(0)
    arr = rng.normal(100, 20, (256, 256, 64)).astype(np.float32)
    aff = np.diag([-1.5, -1.5, 3.0, 1.0])
    vol = Volume(arr, aff)
    segment_volume(model, vol)  # warm-up
    totals, parts = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        seg = segment_volume(model, vol)
        totals.append(time.perf_counter() - t)
        parts.append(seg.metadata["timings_s"])
    return {
        "volume": [256, 256, 64],
        "input_spacing_mm": [1.5, 1.5, 3.0],
        "model_grid": list(seg.metadata["model_grid_shape"]),
        "architecture": f"{desc.architecture} {desc.arch_kwargs}",
        "overlap": desc.inference["overlap"],
        "total_s": statistics.median(totals),
        **{k + "_s": statistics.median(p[k] for p in parts) for k in parts[0]},
    }


def bench_training(steps: int, in_channels: int = 1) -> dict:
    from monai.losses import DiceCELoss

    from napari_pandg.models.networks import build_network
    from napari_pandg.train.config import ModelConfig

    torch.manual_seed(0)
    mc = ModelConfig()
    net = build_network(mc.architecture, mc.kwargs, in_channels, 2)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-3)
    loss_fn = DiceCELoss(include_background=False, to_onehot_y=True, softmax=True)
    x = torch.randn(2, in_channels, 96, 96, 32)
    y = (torch.rand(2, 1, 96, 96, 32) > 0.9).long()

    def step():
        opt.zero_grad()
        loss = loss_fn(net(x), y)
        loss.backward()
        opt.step()

    step()
    t = time.perf_counter()
    for _ in range(steps):
        step()
    dt = time.perf_counter() - t
    return {"in_channels": in_channels, "batch": 2, "patch": [96, 96, 32], "steps_per_s": steps / dt,
            "s_per_50_step_epoch": 50 * dt / steps}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--train-steps", type=int, default=5)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    out = {
        "machine": f"{platform.processor() or platform.machine()}, torch threads {args.threads}",
        "torch": torch.__version__,
        "inference": bench_inference(args.repeats),
        "training": bench_training(args.train_steps),
        "training_maskgen_17ch": bench_training(args.train_steps, in_channels=17),
    }
    print(json.dumps(out, indent=2))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(out, fh, indent=2)


if __name__ == "__main__":
    main()
