#!/usr/bin/env python3
"""Make the Slicer sample data: a small DSC-MR phantom series (.seq.nrrd) and its ADC (.nrrd).

    python scripts/make_sample_data.py [--out build/sample-data] [--check]

The files come from ``StrokeMismatchLib.phantom.make_volume_phantom`` (fixed seed), are
rounded to int16 and written **uncompressed** (NRRD ``encoding: raw``), so the bytes, and
therefore the SHA256 values registered with SampleData in ``StrokeMismatch/StrokeMismatch.py``,
do not depend on the zlib build or on the time of writing. They are not committed to git:
they are uploaded as assets of the GitHub release ``sample-data-v2``
(https://github.com/StrokeMismatch/SlicerStrokeMismatch/releases/download/sample-data-v2/...).

The script prints each file's SHA256 and the phantom's true volumes (mL); ``--check`` compares
them with the constants in StrokeMismatch.py (exit status 1 on a mismatch).
Testing/test_sample_data.py regenerates the files and runs the same comparison.
"""

from __future__ import annotations

import argparse
import ast
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "StrokeMismatch"))

from StrokeMismatchLib import fileio  # noqa: E402
from StrokeMismatchLib.phantom.volume import make_volume_phantom  # noqa: E402
from StrokeMismatchLib.series import PerfusionSeries  # noqa: E402

MODULE_FILE = ROOT / "StrokeMismatch" / "StrokeMismatch.py"
SERIES_FILE = "StrokeMismatchPhantomMR.seq.nrrd"
ADC_FILE = "StrokeMismatchPhantomMR-ADC.nrrd"
#: Phantom parameters: 12 slices of 48 × 48 voxels of 2.4 × 2.4 × 5 mm, 60 frames (TR 1.5 s),
#: TE 30 ms, SNR 20, lesion on the left, seed 0. About 3.4 MB in all.
#: The vessel radius is the phantom's former default (0.75 × the 2.4 mm voxel diagonal; vessels are
#: defined in mm since issue 15) so the registered files and checksums stay valid.
PHANTOM = {"modality": "mr", "shape": (12, 48, 48), "spacing": (2.4, 2.4, 5.0), "seed": 0, "snr": 20.0,
           "te": 0.03, "lesion_side": "left", "vessel_radius_mm": 0.75 * 2.4 * 2 ** 0.5}


def _raw_nrrd(path: Path) -> None:
    """Rewrite a gzip-encoded NRRD as ``encoding: raw`` (same header otherwise)."""
    data = path.read_bytes()
    split = data.index(b"\n\n") + 2
    header, payload = data[:split].decode("latin-1"), data[split:]
    lines = header.rstrip("\n").split("\n")
    encoding = [line for line in lines if line.startswith("encoding:")]
    if not encoding or encoding[0].split(":", 1)[1].strip() == "raw":
        return
    if encoding[0].split(":", 1)[1].strip() not in ("gzip", "gz"):
        raise RuntimeError(f"{path}: unexpected NRRD encoding {encoding[0]!r}")
    payload = gzip.decompress(payload)
    lines = ["encoding: raw" if line.startswith("encoding:") else line for line in lines]
    path.write_bytes(("\n".join(lines) + "\n\n").encode("latin-1") + payload)


def _write_raw_volume_nrrd(path: Path, array: np.ndarray, geometry) -> None:
    """A 3D NRRD (LPS, raw int16) written byte for byte by us (deterministic)."""
    from StrokeMismatchLib.geometry import LPS_TO_RAS

    data = np.ascontiguousarray(array, dtype="<i2")
    K, J, I = data.shape
    ijk_to_lps = LPS_TO_RAS @ geometry.ijk_to_ras

    def vector(values):
        return "(" + ",".join(repr(float(v)) for v in values) + ")"

    header = "\n".join([
        "NRRD0004",
        "# Complete NRRD file format specification at:",
        "# http://teem.sourceforge.net/nrrd/format.html",
        "type: short",
        "dimension: 3",
        "space: left-posterior-superior",
        f"sizes: {I} {J} {K}",
        "space directions: " + " ".join(vector(ijk_to_lps[:3, n]) for n in range(3)),
        "kinds: domain domain domain",
        "endian: little",
        "encoding: raw",
        "space origin: " + vector(ijk_to_lps[:3, 3]),
    ]) + "\n\n"
    path.write_bytes(header.encode("latin-1") + data.tobytes())


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def make_sample_data(out_dir) -> dict:
    """Write the two files into ``out_dir``; return ``{"files": {name: sha256}, "truth_ml": {...},
    "te_ms": ...}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    phantom = make_volume_phantom(PHANTOM["modality"], shape=PHANTOM["shape"], spacing=PHANTOM["spacing"],
                                  seed=PHANTOM["seed"], snr=PHANTOM["snr"], te=PHANTOM["te"],
                                  lesion_side=PHANTOM["lesion_side"],
                                  vessel_radius_mm=PHANTOM["vessel_radius_mm"])
    source = phantom.series
    signal = np.clip(np.rint(source.signal), -32768, 32767).astype(np.int16)
    series = PerfusionSeries(signal=signal, times=source.times, geometry=source.geometry, modality="mr",
                             te=source.te, tr=source.tr, source="StrokeMismatch phantom")
    series_path = out_dir / SERIES_FILE
    if series_path.exists():
        series_path.unlink()
    fileio.write_seq_nrrd(series_path, series)
    _raw_nrrd(series_path)
    adc = np.clip(np.rint(phantom.adc), 0, 32767).astype(np.int16)
    _write_raw_volume_nrrd(out_dir / ADC_FILE, adc, phantom.adc_geometry)
    volumes = phantom.volumes_ml
    truth = {"core": round(float(volumes["core_ml"]), 3), "hypoperfusion": round(float(volumes["hypoperfusion_ml"]), 3),
             "penumbra": round(float(volumes["penumbra_ml"]), 3)}
    return {"files": {SERIES_FILE: sha256(series_path), ADC_FILE: sha256(out_dir / ADC_FILE)},
            "truth_ml": truth, "te_ms": float(PHANTOM["te"]) * 1000.0}


def registered_constants(module_file=MODULE_FILE) -> dict:
    """The SAMPLE_* constants of StrokeMismatch.py, read with ast (no Slicer needed)."""
    tree = ast.parse(Path(module_file).read_text(encoding="utf-8"))
    constants = {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            name = node.targets[0].id
            if name.startswith("SAMPLE_"):
                constants[name] = ast.literal_eval(node.value)
    return constants


def compare(made: dict, constants: dict) -> list[str]:
    """Differences between freshly made data and the registered constants (empty: all match)."""
    problems = []
    expected = {constants["SAMPLE_SERIES_FILE"]: constants["SAMPLE_SERIES_SHA256"],
                constants["SAMPLE_ADC_FILE"]: constants["SAMPLE_ADC_SHA256"]}
    if set(expected) != set(made["files"]):
        problems.append(f"file names differ: registered {sorted(expected)}, made {sorted(made['files'])}")
    for name, digest in made["files"].items():
        if expected.get(name) != digest:
            problems.append(f"{name}: registered SHA256 {expected.get(name)}, made {digest}")
    for key, value in made["truth_ml"].items():
        if abs(constants["SAMPLE_TRUTH_ML"].get(key, float("nan")) - value) > 1e-6 or \
                constants["SAMPLE_TRUTH_ML"].get(key) is None:
            problems.append(f"truth {key}: registered {constants['SAMPLE_TRUTH_ML'].get(key)}, made {value}")
    if abs(constants["SAMPLE_ECHO_TIME_MS"] - made["te_ms"]) > 1e-9:
        problems.append(f"TE: registered {constants['SAMPLE_ECHO_TIME_MS']} ms, made {made['te_ms']} ms")
    return problems


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "sample-data"), help="output folder")
    parser.add_argument("--check", action="store_true",
                        help="compare with the constants registered in StrokeMismatch.py")
    args = parser.parse_args(argv)
    made = make_sample_data(args.out)
    for name, digest in made["files"].items():
        size = (Path(args.out) / name).stat().st_size
        print(f"{name}  {size / 1e6:.2f} MB  SHA256 {digest}")
    print("truth (mL):", made["truth_ml"], " TE (ms):", made["te_ms"])
    if args.check:
        problems = compare(made, registered_constants())
        for problem in problems:
            print("MISMATCH:", problem)
        return 1 if problems else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
