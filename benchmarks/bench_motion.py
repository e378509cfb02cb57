"""Timing and accuracy of rigid motion correction (``motion.correct_motion``). Not a test.

    python benchmarks/bench_motion.py [--repeats 3] [--modalities mr,ct]

For the demo phantoms (``make_volume_phantom(modality)``, 64×64×16, MR 60 / CT 60 frames) it
prints the best-of-N wall and CPU seconds of ``correct_motion`` on the still series (what the
demo runs) and on the same series with injected motion (a ramp to (2, 1.5, 1) mm and
(1, 2, 2.5)° from the bolus arrival plus a sudden extra jump on one frame, as in
Testing/test_motion.py), with the largest error of the estimated translations (mm) and
rotations (degrees). Target: ≤ ~1.5 s per series.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "StrokeMismatch"))
sys.path.insert(0, str(ROOT / "Testing"))

from StrokeMismatchLib.motion import correct_motion  # noqa: E402
from StrokeMismatchLib.phantom.volume import make_volume_phantom  # noqa: E402
from test_motion import inject_motion  # noqa: E402


def timed(signal, phantom, repeats):
    best_wall, best_cpu, trace = np.inf, np.inf, None
    for _ in range(repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        _, trace = correct_motion(signal, phantom.geometry, phantom.times)
        best_wall = min(best_wall, time.perf_counter() - wall)
        best_cpu = min(best_cpu, time.process_time() - cpu)
    return best_wall, best_cpu, trace


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", default="mr,ct")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    for modality in args.modalities.split(","):
        phantom = make_volume_phantom(modality)
        shape = phantom.series.signal.shape
        wall, cpu, trace = timed(phantom.series.signal, phantom, args.repeats)
        print(f"{modality.upper()} {shape} still:  {wall:.2f} s wall, {cpu:.2f} s CPU; "
              f"max displacement {trace.max_displacement_mm:.3f} mm")
        moved, true_t, true_r = inject_motion(phantom.series.signal, phantom.geometry)
        wall, cpu, trace = timed(moved, phantom, args.repeats)
        err_t = np.abs(trace.translations_mm - true_t).max()
        err_r = np.abs(trace.rotations_deg - true_r).max()
        print(f"{modality.upper()} {shape} moved:  {wall:.2f} s wall, {cpu:.2f} s CPU; "
              f"max error {err_t:.2f} mm, {err_r:.2f} deg; failed frames {trace.failed_frames}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
