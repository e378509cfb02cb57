#!/usr/bin/env python3
"""Write the Slicer module's sample cases to files, for the command line (or to share them).

    python scripts/make_sample_data.py [--out build/sample-data] [--modality mr|ct|all]

Slicer does not need these files: *Sample Data → Stroke perfusion* builds the same cases on the
spot with ``StrokeMismatchLib.samplecase.make_sample_case`` (no download). This script writes
them as ``<name>.seq.nrrd`` (the series, int16, Slicer's volume-sequence format) and, for MR,
``<name>-ADC.nrrd``, uncompressed (NRRD ``encoding: raw``) so that the bytes do not depend on
the zlib build or the time, and prints each file's SHA256 and the phantom's true volumes (mL).
Then, for example::

    stroke-mismatch analyze --perfusion build/sample-data/StrokeMismatchPhantomMR.seq.nrrd \
        --diffusion build/sample-data/StrokeMismatchPhantomMR-ADC.nrrd --te 0.03 --out result
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "StrokeMismatch"))

from StrokeMismatchLib import fileio  # noqa: E402
from StrokeMismatchLib.samplecase import make_sample_case  # noqa: E402
from StrokeMismatchLib.series import PerfusionSeries  # noqa: E402


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


def make_sample_data(out_dir, modalities=("mr", "ct")) -> dict:
    """Write the sample case files into ``out_dir``; return ``{name: {"files": {file: sha256},
    "truth_ml": {...}, "te_ms": ...}}``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    made = {}
    for modality in modalities:
        case = make_sample_case(modality)
        source = case.series
        signal = np.clip(source.signal, -32768, 32767).astype(np.int16)
        series = PerfusionSeries(signal=signal, times=source.times, geometry=source.geometry,
                                 modality=modality, te=source.te, tr=source.tr, source=source.source)
        series_path = out_dir / f"{case.name}.seq.nrrd"
        if series_path.exists():
            series_path.unlink()
        fileio.write_seq_nrrd(series_path, series)
        _raw_nrrd(series_path)
        files = {series_path.name: sha256(series_path)}
        if case.adc is not None:
            adc_path = out_dir / f"{case.name}-ADC.nrrd"
            _write_raw_volume_nrrd(adc_path, np.clip(case.adc, 0, 32767).astype(np.int16), case.adc_geometry)
            files[adc_path.name] = sha256(adc_path)
        made[case.name] = {"files": files, "truth_ml": case.truth_ml,
                           "te_ms": None if source.te is None else float(source.te) * 1000.0}
    return made


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "build" / "sample-data"), help="output folder")
    parser.add_argument("--modality", choices=("mr", "ct", "all"), default="all")
    args = parser.parse_args(argv)
    modalities = ("mr", "ct") if args.modality == "all" else (args.modality,)
    for name, info in make_sample_data(args.out, modalities).items():
        for file_name, digest in info["files"].items():
            size = (Path(args.out) / file_name).stat().st_size
            print(f"{file_name}  {size / 1e6:.2f} MB  SHA256 {digest}")
        print(f"{name}: truth (mL) {info['truth_ml']}, TE (ms) {info['te_ms']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
