"""CT perfusion at clinical noise and resolution: accuracy table and full-analyze speed (issue 15).

    python benchmarks/bench_ct_accuracy.py [--cases ct256,ct512,healthy,speed] [--seeds 3]
                                           [--healthy-seeds 10] [--legacy] [--healthy-matrix 512]

Not a test (slow; run it sparingly on a shared machine). Each lesion case simulates the digital
phantom (phantom/volume.py) with an adult-sized brain (semi-axes 68 × 84 × 60 mm) in a 230 mm
field of view, a 16 × 5 mm slab, 45 frames at 1 s, vessels of 1.9 mm radius, and a core of
≈ 10 mL or ≈ 80 mL (``core_scale`` 0.52 / 1.04), runs :func:`pipeline.run_case` (motion
correction off: the phantom does not move) and compares the masks, brought back onto the
acquisition grid, with the truth:

- ct256: 256² at 0.9 mm, 5 HU per voxel and frame; ct512: 512² at 0.45 mm, 15 HU;
  targets: core volume within 15 % (or 3 mL), core Dice ≥ 0.80, Tmax > 6 s Dice ≥ 0.90,
  DEFUSE 3 verdict equal to the truth's, on every seed;
- healthy: no lesion at 15 HU (default 512² at 0.45 mm), ``--healthy-seeds`` seeds; target core
  and Tmax > 6 s ≤ 2 mL and never "eligible";
- speed: full ``stroke-mismatch analyze`` (subprocess: reading, analysis, outputs with report)
  of a 512 × 512 × 64 × 30 CTP written as NIfTI; target ≤ 60 s and peak memory ≤ 4 × the float32
  input; prints each stage's time.

``--legacy`` runs the pre-issue-15 settings (acquisition grid, no denoising, rCBF reference the
mean including vessels) for the "before" column.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from StrokeMismatchLib.analysis import LesionSettings
from StrokeMismatchLib.denoise import block_mean, upsample_to_grid
from StrokeMismatchLib.phantom import make_volume_phantom
from StrokeMismatchLib.pipeline import CaseSettings, run_case

BRAIN_RADII_MM = (68.0, 84.0, 60.0)
CORE_SCALES = {"10 mL": 0.52, "80 mL": 1.04}
CASES = {
    "ct256": {"shape": (16, 256, 256), "spacing": (0.9, 0.9, 5.0), "noise_hu": 5.0},
    "ct512": {"shape": (16, 512, 512), "spacing": (0.45, 0.45, 5.0), "noise_hu": 15.0},
}
TIMES = np.arange(45.0)


OVERRIDES: dict = {}  # --set name=value (CaseSettings) or lesion.name=value (LesionSettings)


def settings(legacy: bool) -> CaseSettings:
    case = {k: v for k, v in OVERRIDES.items() if not k.startswith("lesion.")}
    lesion = {k[7:]: v for k, v in OVERRIDES.items() if k.startswith("lesion.")}
    if legacy:
        case = {"ct_analysis_resolution_mm": 0.0, "denoise": "none", **case}
        lesion = {"rcbf_statistic": "mean", "rcbf_exclude_vessels": False,
                  "cbf_smoothing_fwhm_mm": 4.0, "fill_holes_max_mm2": 0.0, **lesion}
    return CaseSettings(motion_correction=False, lesion=LesionSettings(**lesion), **case)


def on_input_grid(mask, result, shape):
    grid = result.analysis_grid or {}
    if not grid.get("applied"):
        return np.asarray(mask, dtype=bool)
    return upsample_to_grid(mask, grid["factors_ij"], shape).astype(bool)


def dice(a, b):
    total = a.sum() + b.sum()
    return float("nan") if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def defuse3(core_ml, hypo_ml):
    ratio = float("inf") if core_ml == 0 else hypo_ml / core_ml
    return core_ml < 70.0 and ratio >= 1.8 and hypo_ml - core_ml >= 15.0


def run_one(case, core, seed, legacy, lesion=True):
    spec = CASES[case]
    phantom = make_volume_phantom("ct", shape=spec["shape"], spacing=spec["spacing"],
                                  noise_hu=spec["noise_hu"], times=TIMES, seed=seed, lesion=lesion,
                                  brain_radii_mm=BRAIN_RADII_MM,
                                  core_scale=CORE_SCALES.get(core, 1.0))
    started = time.perf_counter()
    result = run_case(phantom.series, settings=settings(legacy))
    wall = time.perf_counter() - started
    shape = phantom.geometry.shape
    voxel_ml = phantom.geometry.voxel_volume_ml
    found_core = on_input_grid(result.lesion.masks["core"], result, shape)
    found_hypo = on_input_grid(result.lesion.masks["hypoperfusion"], result, shape)
    core_ml, hypo_ml = found_core.sum() * voxel_ml, found_hypo.sum() * voxel_ml
    true_core_ml = phantom.volumes_ml["core_ml"]
    true_hypo_ml = phantom.volumes_ml["hypoperfusion_ml"]
    rule = next(r for r in result.lesion.criteria if r.rule.upper().startswith("DEFUSE"))
    # AIF voxels inside the artery (a block holding any artery voxel counts)
    grid = result.analysis_grid or {}
    artery = phantom.artery_mask
    if grid.get("applied"):
        artery = block_mean(artery.astype(np.float32), grid["factors_ij"]) > 0
    voxels = np.asarray(result.aif.voxels, dtype=int).reshape(-1, 3)
    in_artery = float(artery[tuple(voxels.T)].mean()) if voxels.size else 0.0
    row = {"case": case, "core": core if lesion else "healthy", "seed": seed, "wall_s": wall,
           "core_ml": core_ml, "true_core_ml": true_core_ml, "hypo_ml": hypo_ml,
           "true_hypo_ml": true_hypo_ml, "dice_core": dice(found_core, phantom.true_core),
           "dice_hypo": dice(found_hypo, phantom.true_hypoperfusion),
           "defuse3": rule.eligible, "defuse3_truth": defuse3(true_core_ml, true_hypo_ml),
           "reference": (result.lesion.reference or {}).get("value"),
           "aif_peak": (result.aif.quality or {}).get("peak_height"), "aif_in_artery": in_artery}
    del phantom, result
    return row


def lesion_ok(row):
    tol = max(0.15 * row["true_core_ml"], 3.0)
    return (abs(row["core_ml"] - row["true_core_ml"]) <= tol and row["dice_core"] >= 0.80
            and row["dice_hypo"] >= 0.90 and row["defuse3"] == row["defuse3_truth"])


def print_header():
    print(f"{'case':6} {'core':8} {'seed':>4} {'core mL':>8} {'truth':>7} {'Dice':>5} "
          f"{'Tmax>6 mL':>9} {'truth':>7} {'Dice':>5} {'DEFUSE3':>8} {'truth':>6} {'ok':>3} {'s':>5} {'AIF in artery':>13}")


def print_rows(rows, healthy=False):
    for r in rows:
        ok = ((r["core_ml"] <= 2 and r["hypo_ml"] <= 2 and r["defuse3"] is not True) if healthy
              else lesion_ok(r))
        print(f"{r['case']:6} {r['core']:8} {r['seed']:4d} {r['core_ml']:8.1f} {r['true_core_ml']:7.1f} "
              f"{r['dice_core']:5.2f} {r['hypo_ml']:9.1f} {r['true_hypo_ml']:7.1f} {r['dice_hypo']:5.2f} "
              f"{str(r['defuse3']):>8} {str(r['defuse3_truth']):>6} {'yes' if ok else 'NO':>3} "
              f"{r['wall_s']:5.1f} {100 * r['aif_in_artery']:12.0f}%", flush=True)


def speed(workdir=None):
    keep = workdir is not None
    folder = Path(workdir) if keep else Path(tempfile.mkdtemp(prefix="bench-ct-speed-"))
    folder.mkdir(parents=True, exist_ok=True)
    try:
        path = folder / "ctp.nii.gz"
        input_gb = 512 * 512 * 64 * 30 * 4 / 1e9
        if path.exists():
            print(f"speed: reusing {path}")
        else:
            write_speed_input(path)
        shutil.rmtree(folder / "out", ignore_errors=True)
        exe = Path(sys.executable).with_name("stroke-mismatch")
        cmd = [str(exe), "analyze", "--perfusion", str(path), "--modality", "ct", "--out",
               str(folder / "out"), "--quiet"]
        started = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ, MPLBACKEND="Agg"))
        wall = time.perf_counter() - started
        peak_gb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024 / 1e9
        if proc.returncode != 0:
            print(f"speed: FAILED: {proc.stderr.strip()[-400:]}")
            return
        summary = json.loads((folder / "out" / "summary.json").read_text())
        timings = (summary.get("analysis") or {}).get("timings_s") or summary.get("timings_s", {})
        steps = ", ".join(f"{k} {v:.1f}" for k, v in timings.items())
        rest = wall - sum(timings.values())
        print(f"speed 512×512×64×30: {wall:.1f} s wall (target ≤ 60 s), peak RSS {peak_gb:.2f} GB = "
              f"{peak_gb / input_gb:.2f} × the float32 input {input_gb:.2f} GB (target ≤ 4 ×); "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
        print(f"    run_case stages (s): {steps}; start-up, reading and writing outputs {rest:.1f} s")
    finally:
        if not keep:
            shutil.rmtree(folder, ignore_errors=True)


def write_speed_input(path):
    """The 512×512×64×30 CTP (0.45 × 0.45 × 2.5 mm, 15 HU, 1.5 s frames) as NIfTI (gzip: slow)."""
    from StrokeMismatchLib import fileio

    phantom = make_volume_phantom("ct", shape=(64, 512, 512), spacing=(0.45, 0.45, 2.5),
                                  noise_hu=15.0, times=np.arange(30) * 1.5, seed=0,
                                  brain_radii_mm=BRAIN_RADII_MM)
    fileio.write_nifti_perfusion(path, phantom.series)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default="ct256,ct512,healthy,speed")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--healthy-seeds", type=int, default=10)
    parser.add_argument("--healthy-matrix", type=int, default=512, choices=[256, 512])
    parser.add_argument("--cores", default="10 mL,80 mL")
    parser.add_argument("--legacy", action="store_true", help="pre-issue-15 settings")
    parser.add_argument("--workdir", help="speed: keep the 2 GB input here and reuse it")
    parser.add_argument("--set", action="append", default=[], metavar="NAME=VALUE",
                        help="override a setting, e.g. denoise_sigma_mm=2 or lesion.rcbf_statistic=median")
    args = parser.parse_args(argv)
    for item in args.set:
        name, value = item.split("=", 1)
        try:
            OVERRIDES[name] = json.loads(value)
        except json.JSONDecodeError:
            OVERRIDES[name] = value
    if OVERRIDES:
        print(f"overrides: {OVERRIDES}")
    wanted = args.cases.split(",")
    print(f"settings: {'legacy (before issue 15)' if args.legacy else 'current defaults'}")
    failures = 0
    print_header()
    for case in ("ct256", "ct512"):
        if case not in wanted:
            continue
        rows = []
        for core in args.cores.split(","):
            for seed in range(args.seeds):
                rows.append(run_one(case, core, seed, args.legacy))
                print_rows(rows[-1:])
        failures += sum(not lesion_ok(r) for r in rows)
    if "healthy" in wanted:
        case = f"ct{args.healthy_matrix}"
        CASES[case] = dict(CASES[case], noise_hu=15.0)
        rows = []
        for seed in range(100, 100 + args.healthy_seeds):
            rows.append(run_one(case, "", seed, args.legacy, lesion=False))
            print_rows(rows[-1:], healthy=True)
        failures += sum(not (r["core_ml"] <= 2 and r["hypo_ml"] <= 2 and r["defuse3"] is not True)
                        for r in rows)
    if "speed" in wanted:
        speed(args.workdir)
    print(f"{failures} case(s) missed a target")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
