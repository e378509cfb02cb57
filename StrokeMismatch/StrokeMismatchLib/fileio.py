"""File input and output without Slicer: the dispatch by path, and the public names of the readers.

Which module does what:

* :mod:`.niftiio` — 4D NIfTI + BIDS JSON sidecar, 3D volumes (ADC, masks, maps) in anything
  SimpleITK reads;
* :mod:`.nrrdio` — Slicer volume sequences (``.seq.nrrd``);
* :mod:`.dicomio` — DICOM folders (classic and enhanced multi-frame);
* :mod:`.validation` — :func:`validate_series`, the one check of a series, run once per analysis
  (every reader ends with it; :func:`pipeline.run_case` reuses its result).

Conventions: arrays ``[k, j, i]`` with time on the last axis, times in s, geometry as
:class:`~.geometry.Geometry` (IJK-to-RAS). Damaged files raise :class:`InputFileError`, unusable
content :class:`InputDataError`, unwritable outputs :class:`OutputError`.

Rules every reader follows:

* frame times recorded in the file (sidecar per-frame times, DICOM headers, ``.seq.nrrd`` index
  values) win over a given TR; the TR makes the times (index × TR) only where the file records
  none; a given TR that disagrees with recorded times is reported in ``metadata["warnings"]``;
  explicit ``times`` (library only) replace everything;
* a given modality that contradicts the file's (DICOM ``Modality``, sidecar ``Modality``,
  ``.seq.nrrd`` ``StrokeMismatch.modality``) is refused unless ``force_modality=True``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .errors import InputFileError
from .niftiio import (NIFTI_SUFFIXES, _check_nifti_complete, read_nifti_perfusion, read_volume,  # noqa: F401
                      sidecar_path, write_nifti_perfusion, write_volume)
from .nrrdio import SEQUENCE_SUFFIXES, read_seq_nrrd, write_seq_nrrd  # noqa: F401
from .series import PerfusionSeries
from .validation import (CONSTANT_TOLERANCE, FOREGROUND_FRACTION, MIN_FRAMES,  # noqa: F401
                         MR_NONPOSITIVE_LIMIT, replaced_times_warning, resolve_modality, tr_mismatch_warning,
                         validate_series)

__all__ = [
    "read_perfusion", "read_nifti_perfusion", "read_seq_nrrd", "read_volume", "validate_series",
    "write_nifti_perfusion", "write_seq_nrrd", "write_volume", "sidecar_path",
    "NIFTI_SUFFIXES", "SEQUENCE_SUFFIXES", "MIN_FRAMES",
]


def read_perfusion(path, *, series=None, modality=None, tr=None, te=None, times=None, sidecar=None,
                   force_modality=False) -> PerfusionSeries:
    """Read a perfusion series from ``path``: ``.nii``/``.nii.gz`` (with BIDS sidecar),
    ``.seq.nrrd``/``.nrrd`` (Slicer sequence), ``.mha``/``.mhd`` (4D image) or a DICOM folder
    (``series`` picks one when the folder holds several).

    ``te`` (s) replaces the file's TE; ``tr`` (s) makes the frame times only when the file records
    none (a disagreement with recorded times is a warning); ``times`` (s) replace the frame
    times; ``modality`` must agree with the file's unless ``force_modality``. The series is
    validated once (:func:`validate_series`); its warnings are in ``metadata["warnings"]``."""
    path = Path(path)
    if not path.exists():
        raise InputFileError(f"The perfusion input {path} does not exist: check the path.")
    name = path.name.lower()
    if path.is_dir() or name.endswith(".dcm"):
        from . import dicomio

        folder = path if path.is_dir() else path.parent
        loaded = dicomio.read_dicom_perfusion(folder, series=series, tr=tr)  # tr: only where headers give no timing
        return _override(loaded, modality=modality, tr=tr, te=te, times=times, force_modality=force_modality,
                         where="the DICOM header (Modality)")
    if name.endswith(SEQUENCE_SUFFIXES):
        return read_seq_nrrd(path, modality=modality, te=te, tr=tr, times=times, force_modality=force_modality)
    return read_nifti_perfusion(path, sidecar=sidecar, tr=tr, te=te, times=times, modality=modality,
                                force_modality=force_modality)


def _override(series: PerfusionSeries, *, modality=None, tr=None, te=None, times=None, force_modality=False,
              where="the file") -> PerfusionSeries:
    """``series`` with the user's facts applied under the rules of the module docstring, validated.

    Recorded frame times (``metadata["times_recorded"]``, true unless a reader says otherwise:
    DICOM always records them) are never replaced by ``tr``."""
    warnings = list(series.metadata.get("warnings") or [])
    new_modality = resolve_modality(modality, series.modality, where, force=force_modality, warnings=warnings)
    new_times = series.times
    if times is not None:
        new_times = np.asarray(times, dtype=float).ravel()
        if series.metadata.get("times_recorded", True):
            replaced = replaced_times_warning(series.times, new_times, "file")
            if replaced:
                warnings.append(replaced)
    elif tr is not None:
        if series.metadata.get("times_recorded", True):
            conflict = tr_mismatch_warning(series.times, tr, "frame times recorded in the file")
            if conflict:
                warnings.append(conflict)
        else:
            new_times = np.arange(series.signal.shape[-1]) * float(tr)
    result = PerfusionSeries(
        series.signal, new_times, series.geometry, new_modality,
        te=te if te is not None else series.te,
        tr=tr if tr is not None else series.tr,
        source=series.source, metadata=dict(series.metadata),
    )
    result.metadata["warnings"] = warnings + validate_series(result)
    return result
