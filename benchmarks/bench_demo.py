"""Wall-clock benchmark of `stroke-mismatch demo` (MR and CT, report included). Not a test.

    python benchmarks/bench_demo.py [--modalities mr,ct] [--no-report] [--no-motion-correction]

Each modality runs the real console script in a subprocess (fresh interpreter, so imports count)
into a temporary folder and prints the wall time, the per-step timings from summary.json and the
Dice against the phantom truth. Target: ≤ 20 s per modality on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_S = 20.0


def command() -> list[str]:
    exe = Path(sys.executable).with_name("stroke-mismatch")
    if exe.exists():
        return [str(exe)]
    return [sys.executable, "-m", "StrokeMismatchLib.cli"]


def run(modality: str, extra: list[str]) -> dict:
    folder = Path(tempfile.mkdtemp(prefix=f"bench-demo-{modality}-"))
    try:
        out = folder / "out"
        env = dict(os.environ, MPLBACKEND="Agg")
        started = time.perf_counter()
        proc = subprocess.run(command() + ["demo", "--modality", modality, "--out", str(out), "--quiet", *extra],
                              capture_output=True, text=True, env=env)
        wall = time.perf_counter() - started
        if proc.returncode != 0:
            return {"modality": modality, "wall_s": wall, "error": proc.stderr.strip()}
        summary = json.loads((out / "summary.json").read_text())
        return {
            "modality": modality,
            "wall_s": wall,
            "steps_s": summary.get("timings_s", {}),
            "report": summary.get("outputs", {}).get("report", {}).get("written"),
            "dice_core": summary["phantom_agreement"]["core"]["dice"],
            "dice_hypoperfusion": summary["phantom_agreement"]["hypoperfusion"]["dice"],
        }
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", default="mr,ct")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument("--no-motion-correction", action="store_true")
    args = parser.parse_args(argv)
    extra = (["--no-report"] if args.no_report else []) + (
        ["--no-motion-correction"] if args.no_motion_correction else [])
    slow = False
    for modality in args.modalities.split(","):
        result = run(modality.strip(), extra)
        if "error" in result:
            print(f"{modality}: FAILED after {result['wall_s']:.1f} s: {result['error']}")
            slow = True
            continue
        verdict = "ok" if result["wall_s"] <= TARGET_S else f"SLOWER than the {TARGET_S:.0f} s target"
        slow |= result["wall_s"] > TARGET_S
        steps = ", ".join(f"{k} {v:.2f}" for k, v in result["steps_s"].items())
        print(f"{modality}: {result['wall_s']:.1f} s wall ({verdict}); report written: {result['report']}")
        print(f"    steps (s): {steps}")
        print(f"    Dice core {result['dice_core']:.3f}, hypoperfusion {result['dice_hypoperfusion']:.3f}")
    return 1 if slow else 0


if __name__ == "__main__":
    sys.exit(main())
