"""Siemens mosaic DICOM: one file per time point, every slice of the volume tiled in one image.

The tiling and the geometry come from Siemens' private CSA image header (0029,1010), parsed
and interpreted by nibabel's ``nicom`` package (``csareader``, ``dicomwrappers.MosaicWrapper``),
which is what nibabel and dcm2niix agree on:

- ``NumberOfImagesInMosaic`` (CSA; also (0019,100A)) slices are tiled row-major in a square
  grid of ``ceil(sqrt(n))`` tiles; Rows and Columns are those of the whole mosaic.
- ImagePositionPatient of a mosaic is that of the whole mosaic image; the first tile's corner
  is shifted by half the unused tiles (nibabel ``MosaicWrapper.image_position``,
  doc/theory/dicom_mosaic).
- The slice normal is the cross product of ImageOrientationPatient with the sign of the CSA
  ``SliceNormalVector``: with H>>F image numbering the tiles run from head to foot and the CSA
  normal points the other way, so tile ``s`` lies at ``first + s · spacing · normal`` in both
  numberings (checked against dcm2niix on the dcm_qa_mosaic series, F>>H and H>>F).
- ``MosaicRefAcqTimes`` (ms, one per tile) is the slice timing.

Anything that does not fit (no CSA header, no mosaic count, a mosaic whose size is not a
multiple of the tile grid, a CSA normal not perpendicular to the image) is refused: reading a
mosaic as one slice gives a 1 m wide "image" and a meaningless analysis.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np

from .errors import InputFileError

MOSAIC_COUNT_TAG = (0x0019, 0x100A)  # Siemens NumberOfImagesInMosaic (private, "SIEMENS MR HEADER")


@dataclass
class MosaicLayout:
    """How one mosaic file is tiled: ``n`` slices of ``rows`` × ``columns`` pixels in a
    ``grid`` × ``grid`` tiling; ``first`` LPS position (mm) of tile 0's first voxel,
    ``normal`` unit slice direction (tile s at ``first + s·step·normal``), ``step`` mm;
    ``slice_times`` s after the start of the volume, one per tile (None if not recorded)."""

    n: int
    grid: int
    rows: int
    columns: int
    first: np.ndarray
    normal: np.ndarray
    step: float
    slice_times: np.ndarray | None


def _nicom():
    """nibabel's DICOM helpers; nibabel warns on import that nicom is experimental."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            from nibabel.nicom import csareader, dicomwrappers
    except ImportError:  # pragma: no cover - nibabel is a dependency; Slicer installs it on first use
        raise InputFileError(
            "Reading Siemens mosaic DICOM needs the Python package nibabel, which is not installed. "
            "Install it (pip install nibabel; in 3D Slicer: slicer.util.pip_install('nibabel'))."
        ) from None
    return csareader, dicomwrappers


def looks_like_mosaic(ds) -> bool:
    """True when a classic file says it is a mosaic (ImageType MOSAIC or a Siemens mosaic count)."""
    image_type = [str(v).upper() for v in (ds.get("ImageType", None) or [])]
    return "MOSAIC" in image_type or MOSAIC_COUNT_TAG in ds


def mosaic_layout(path, ds) -> MosaicLayout:
    """The tiling and geometry of a mosaic file (header only). Raises InputFileError when the
    file says it is a mosaic but its layout cannot be recognised."""
    csareader, dicomwrappers = _nicom()

    def refuse(reason):
        return InputFileError(
            f"{path} is a Siemens mosaic (all slices tiled in one image) but {reason}, so its "
            "slices cannot be placed. Export the series as separate slices (or enhanced DICOM), "
            "or convert it with dcm2niix and give the NIfTI file."
        )

    try:
        csa = csareader.get_csa_header(ds)
    except Exception as exc:  # noqa: BLE001 - nibabel raises its own CSAReadError and others
        raise refuse(f"its Siemens CSA header (0029,1010) cannot be read ({exc})") from None
    n = csareader.get_n_mosaic(csa) if csa else None
    if not n and MOSAIC_COUNT_TAG in ds:
        try:
            n = int(ds[MOSAIC_COUNT_TAG].value)
        except (TypeError, ValueError):
            n = None
    if csa is None:
        raise refuse("it has no Siemens CSA image header (0029,1010)")
    if not n or int(n) < 1:
        raise refuse("neither the CSA header nor (0019,100A) gives NumberOfImagesInMosaic")
    n = int(n)
    try:
        wrapper = dicomwrappers.MosaicWrapper(ds, csa, n_mosaic=n)
        first = wrapper.image_position
        normal = wrapper.slice_normal  # IOP cross product, sign from the CSA SliceNormalVector
    except (AssertionError, ValueError) as exc:
        raise refuse(f"its CSA SliceNormalVector does not agree with ImageOrientationPatient ({exc})") from None
    except Exception as exc:  # noqa: BLE001
        raise refuse(f"its geometry cannot be worked out ({type(exc).__name__}: {exc})") from None
    grid = int(math.ceil(math.sqrt(n)))
    rows, columns = int(ds.Rows), int(ds.Columns)
    if rows % grid or columns % grid:
        raise refuse(f"its {rows} x {columns} image is not a {grid} x {grid} grid of tiles for {n} slices")
    if first is None or normal is None:
        raise refuse("it lacks ImagePositionPatient, ImageOrientationPatient or PixelSpacing")
    step = None
    for name in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(name, None))
        except (TypeError, ValueError):
            continue
        if math.isfinite(value) and value > 0:
            step = value
            break
    if step is None and n > 1:
        raise refuse("it gives neither SpacingBetweenSlices nor SliceThickness")
    times = None
    try:
        values = csareader.get_vector(csa, "MosaicRefAcqTimes", n)
        if values is not None:
            times = np.asarray(values, dtype=float) / 1000.0
            if not np.all(np.isfinite(times)):
                times = None
    except (ValueError, TypeError):
        times = None  # a count that differs from the mosaic's: not trusted
    return MosaicLayout(
        n=n, grid=grid, rows=rows // grid, columns=columns // grid,
        first=np.asarray(first, dtype=float), normal=np.asarray(normal, dtype=float) / np.linalg.norm(normal),
        step=float(step or 1.0), slice_times=times,
    )


def tile(array: np.ndarray, layout: MosaicLayout, index: int) -> np.ndarray:
    """Tile ``index`` (row-major in the grid) of a mosaic pixel array ``[rows, cols]``."""
    row, column = divmod(int(index), layout.grid)
    return array[row * layout.rows:(row + 1) * layout.rows, column * layout.columns:(column + 1) * layout.columns]
