"""Re-thresholding saved maps against a full analysis (issue 18). Not a test.

    python benchmarks/bench_rethreshold.py [--shape 32,256,256] [--modalities mr,ct] [--repeats 3]

For each modality: one full ``run_case`` (motion correction off, stability off) on a volume
phantom of the given shape, then ``rethreshold`` of its maps with Tmax 4 s (the midline reused,
as the CLI and the stability sweep do), from memory and from a result folder (load + analysis).
Prints the median times, the ratio to the full run, and whether the result equals a full run
with the same settings. Target: re-threshold ≤ 1 s for 256×256×32 on a 2-core machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "StrokeMismatch"))

from StrokeMismatchLib.outputs import write_case_outputs  # noqa: E402
from StrokeMismatchLib.phantom.volume import make_volume_phantom  # noqa: E402
from StrokeMismatchLib.pipeline import run_case  # noqa: E402
from StrokeMismatchLib.rethreshold import CaseMaps, load_case_maps, rethreshold  # noqa: E402
from StrokeMismatchLib.settings import CaseSettings, LesionSettings  # noqa: E402

TARGET_S = 1.0


def timed(function, repeats):
    times, value = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        value = function()
        times.append(time.perf_counter() - started)
    return statistics.median(times), value


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="32,256,256")
    parser.add_argument("--modalities", default="mr,ct")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    shape = tuple(int(v) for v in args.shape.split(","))
    new = LesionSettings(tmax_threshold=4.0)
    for modality in args.modalities.split(","):
        phantom = make_volume_phantom(modality, shape=shape, seed=0)
        settings = CaseSettings(motion_correction=False, verdict_stability=False)
        full_s, result = timed(lambda: run_case(phantom.series, adc=phantom.adc,
                                                adc_geometry=phantom.adc_geometry, settings=settings), 1)
        case = CaseMaps.from_result(result, summary={})
        memory_s, lesion = timed(lambda: rethreshold(case, new), args.repeats)
        with tempfile.TemporaryDirectory() as folder:
            write_case_outputs(result, Path(folder) / "out", report=False)
            disk_s, _ = timed(lambda: rethreshold(load_case_maps(Path(folder) / "out"), new), args.repeats)
        reference = run_case(phantom.series, adc=phantom.adc, adc_geometry=phantom.adc_geometry,
                             settings=CaseSettings(motion_correction=False, verdict_stability=False, lesion=new))
        same = all(np.array_equal(lesion.masks[k], reference.lesion.masks[k])
                   for k in ("core", "hypoperfusion", "penumbra"))
        print(f"{modality.upper()} {'×'.join(map(str, shape[::-1]))}: full analysis {full_s:.2f} s; "
              f"re-threshold (Tmax 4 s) {memory_s:.3f} s in memory ({memory_s / full_s:.3f}× the full run), "
              f"{disk_s:.3f} s from a result folder; target ≤ {TARGET_S:.0f} s: "
              f"{'met' if memory_s <= TARGET_S else 'NOT met'}; masks equal a full run with Tmax 4 s: {same}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
