"""Speed benchmark of compute_maps (not a test).

    python benchmarks/bench_perfusion.py [--quick] [--methods oSVD,cSVD] [--cases a,b,c]

Cases (synthetic, brain mask = inscribed ellipsoid ≈ 52 % of the voxels):
  (a) DSC 128×128×25×60 float32 ΔR2*, Δt 1.5 s
  (b) CTP 256×256×32×40 float32 ΔHU, Δt 1 s
  (c) CTP 512×512×64×30 **int16** ΔHU, Δt 1.5 s (≈ 1 GB input; run without --quick)
Prints seconds (best of --repeat runs), voxels per second (mask voxels) and the peak memory
allocated during one more call (tracemalloc traces numpy allocations; the input itself is not
counted), also as a multiple of the float32 size of the input, and the process max RSS.
"""

from __future__ import annotations

import argparse
import pathlib
import resource
import sys
import time
import tracemalloc

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "StrokeMismatch"))

from StrokeMismatchLib.perfusion import compute_maps  # noqa: E402
from StrokeMismatchLib.phantom import simulate_curves  # noqa: E402

CASES = {
    "a": dict(label="DSC 128x128x25x60", shape=(25, 128, 128), frames=60, dt=1.5, dtype=np.float32, noise=1.0),
    "b": dict(label="CTP 256x256x32x40", shape=(32, 256, 256), frames=40, dt=1.0, dtype=np.float32, noise=3.0),
    "c": dict(label="CTP 512x512x64x30 int16", shape=(64, 512, 512), frames=30, dt=1.5, dtype=np.int16, noise=3.0),
}


def make_case(shape, frames, dt, dtype, noise, seed=0):
    """Tissue curves from a small phantom bank tiled over the volume, plus noise; AIF; brain mask."""
    rng = np.random.default_rng(seed)
    times = np.arange(frames) * dt
    t0 = 0.25 * times[-1]
    scale = 400.0  # AIF peak; grey matter then peaks near 10 units (CT-like CNR, PERFUSION.md §11.3)
    cs = simulate_curves(np.linspace(10, 70, 8)[:, None], np.array([2.0, 4.0, 8.0, 12.0])[None, :],
                         delay=0.0, times=times, t0=t0, aif_peak=scale)
    bank = cs.tissue.reshape(-1, frames).astype(np.float32)
    n = int(np.prod(shape))
    out = np.empty((n, frames), dtype=dtype)
    step = 1 << 20
    for lo in range(0, n, step):
        hi = min(lo + step, n)
        rows = bank[np.arange(lo, hi) % bank.shape[0]]
        rows = rows + rng.standard_normal(rows.shape, dtype=np.float32) * np.float32(noise)
        out[lo:hi] = np.rint(rows) if dtype == np.int16 else rows
    grids = np.meshgrid(*[np.linspace(-1, 1, s) for s in shape], indexing="ij")
    mask = sum(g**2 for g in grids) <= 1.0
    return out.reshape(shape + (frames,)), cs.aif, times, mask


def run(case, methods, repeat=2):
    spec = CASES[case]
    conc, aif, times, mask = make_case(spec["shape"], spec["frames"], spec["dt"], spec["dtype"], spec["noise"])
    n_mask = int(mask.sum())
    f32_bytes = conc.size * 4
    rows = []
    for method in methods:
        seconds = np.inf
        for _ in range(repeat):  # best of `repeat` (the machine is shared)
            start = time.perf_counter()
            compute_maps(conc, aif, times, method=method, mask=mask)
            seconds = min(seconds, time.perf_counter() - start)
        tracemalloc.start()  # separate run: tracemalloc slows numpy allocation down
        compute_maps(conc, aif, times, method=method, mask=mask)
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        rows.append((spec["label"], method, seconds, n_mask / seconds, peak / 2**20, peak / f32_bytes))
        print(f"{spec['label']:<26} {method:<9} {seconds:8.2f} s {n_mask / seconds:12.0f} vox/s "
              f"{peak / 2**20:9.0f} MiB peak ({peak / f32_bytes:.2f}x float32 input)  mask voxels {n_mask}",
              flush=True)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10
    print(f"{'':<26} process max RSS so far {rss:.0f} MiB (includes the input, "
          f"{conc.nbytes / 2**20:.0f} MiB as {conc.dtype})", flush=True)
    return rows


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="only case (a)")
    parser.add_argument("--methods", default="oSVD,cSVD,sSVD,Tikhonov")
    parser.add_argument("--cases", default="a,b,c")
    parser.add_argument("--repeat", type=int, default=2, help="timed runs per method (best is shown)")
    args = parser.parse_args(argv)
    cases = ["a"] if args.quick else args.cases.split(",")
    methods = args.methods.split(",")
    print(f"{'case':<26} {'method':<9} {'time':>10} {'throughput':>18} {'peak memory':>14}")
    for case in cases:
        run(case, methods, args.repeat)


if __name__ == "__main__":
    main()
