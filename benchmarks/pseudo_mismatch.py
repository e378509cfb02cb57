"""Pseudo-mismatch figures on the volume phantom (issue 20): baseline window, AIF pre-bolus
offset and area vs truth, AIF location, volumes and verdicts, for the demo cases and for a
3–4 s delay in the unaffected hemisphere.

    .venv/bin/python benchmarks/pseudo_mismatch.py [--quick]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.pipeline import run_case


def _trapz(y, t):
    return float(np.sum((y[1:] + y[:-1]) * np.diff(t)) / 2)


def measure(modality, lesion=True, **options):
    phantom = make_volume_phantom(modality, lesion=lesion, **options)
    started = time.perf_counter()
    result = run_case(phantom.series, adc=phantom.adc, adc_geometry=phantom.adc_geometry)
    elapsed = time.perf_counter() - started
    times = phantom.times
    curve = np.asarray(result.aif.curve, float)
    truth = np.asarray(phantom.true_aif, float)
    if modality == "mr":  # ΔR2* of the AIF = κ_a · C
        truth = truth * phantom.info["kappa_a"]
    arrival = int(np.flatnonzero(truth > 0.01 * truth.max())[0])
    pre = curve[result.baseline.start:arrival]
    labels = phantom.labels[tuple(np.asarray(result.aif.voxels).T)]
    metrics = result.lesion.metrics
    verdicts = {c.rule: c.eligible for c in result.lesion.criteria}
    errors = [f.code for f in result.quality if f.severity == "error"]
    unit_peak = float(truth.max())
    return {
        "case": f"{modality}{'' if lesion else ' no-lesion'}" + (f" {options}" if options else ""),
        "baseline": (result.baseline.start, result.baseline.stop),
        "true_aif_arrival_frame": arrival,
        "aif_prebolus_mean": round(float(pre.mean()), 3) if pre.size else float("nan"),
        "aif_prebolus_pct_peak": round(100 * float(pre.mean()) / unit_peak, 2) if pre.size else float("nan"),
        "aif_area_vs_truth": round(_trapz(curve, times) / _trapz(truth, times), 3),
        "aif_labels": {int(k): int(v) for k, v in zip(*np.unique(labels, return_counts=True))},
        "core_ml": round(metrics["core_ml"].value, 2),
        "hypo_ml": round(metrics["hypoperfusion_ml"].value, 2),
        "verdicts": verdicts,
        "errors": errors,
        "seconds": round(elapsed, 1),
    }


def main(argv=None):
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="demo cases only")
    args = parser.parse_args(argv)
    cases = [("mr", True, {}), ("ct", True, {}), ("mr", False, {}), ("ct", False, {})]
    if not args.quick:
        cases += [("ct", True, {"unaffected_delay_s": 3.0}), ("ct", True, {"unaffected_delay_s": 4.0}),
                  ("mr", True, {"unaffected_delay_s": 3.0}), ("mr", True, {"unaffected_delay_s": 4.0}),
                  ("ct", True, {"noise_hu": 0.0, "unaffected_delay_s": 3.0}),
                  ("mr", True, {"snr": None}), ("mr", True, {"snr": None, "unaffected_delay_s": 3.0}),
                  ("ct", True, {"artery": False}), ("mr", True, {"artery": False})]
    for modality, lesion, options in cases:
        row = measure(modality, lesion, **options)
        print(row, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
