"""Benchmark: one phantom subject, all five sequences, target_shape (256, 256, 64).

Usage: python benchmarks/bench_phantom.py [--center A] [--repeats 3] [--fine-spacing 1.5]
Prints the median wall time and the peak resident memory (ru_maxrss) of the process.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--center", default="A")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fine-spacing", type=float, default=1.5)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    from napari_pandg.phantom import SEQUENCES, generate_subject

    times = []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        s = generate_subject("BENCH", args.center, SEQUENCES, seed=args.seed + r,
                             fine_spacing=args.fine_spacing, target_shape=(256, 256, 64))
        times.append(time.perf_counter() - t0)
        print(f"run {r + 1}: {times[-1]:.2f} s  (pancreas {s.pancreas_volume_ml:.1f} mL)", flush=True)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(f"center {args.center}, fine spacing {args.fine_spacing} mm, 5 sequences at 256x256x64: "
          f"median {statistics.median(times):.2f} s (min {min(times):.2f}, max {max(times):.2f}); "
          f"peak RSS {peak_mb:.0f} MB; load average {load:.2f}; cpus {os.cpu_count()}")


if __name__ == "__main__":
    main()
