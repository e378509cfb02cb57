"""Voxel geometry shared by every image in StrokeMismatchLib.

Conventions (the same as 3D Slicer's):

- arrays are indexed ``[k, j, i]`` (slice, row, column), with time, when present, on the
  **last** axis: ``[k, j, i, t]``;
- an image's position in space is its 4×4 **IJK-to-RAS** matrix (millimetres, RAS =
  right-anterior-superior), whose columns 0, 1, 2 are the i, j, k steps;
- SimpleITK, NIfTI-through-ITK, NRRD and DICOM use LPS; the conversion flips x and y.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from .errors import InputDataError

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class Geometry:
    """Where a ``[k, j, i]`` voxel grid lies in space.

    ``ijk_to_ras``: 4×4 matrix in mm; ``shape``: ``(K, J, I)``.
    """

    ijk_to_ras: np.ndarray
    shape: tuple[int, int, int]

    def __post_init__(self):
        matrix = np.asarray(self.ijk_to_ras, dtype=float)
        if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
            raise InputDataError("The IJK-to-RAS matrix must be a finite 4×4 matrix.")
        if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
            raise InputDataError("The IJK-to-RAS matrix is singular: the image has a zero voxel size.")
        object.__setattr__(self, "ijk_to_ras", matrix)
        object.__setattr__(self, "shape", tuple(int(n) for n in self.shape))

    @classmethod
    def from_spacing(cls, shape, spacing_ijk=(1.0, 1.0, 1.0), origin_ras=(0.0, 0.0, 0.0)):
        """Axis-aligned grid with ``spacing_ijk`` (mm along i, j, k), oriented as an LPS-stored
        image loads in Slicer: i towards left (−R), j towards posterior (−A), k superior."""
        matrix = np.eye(4)
        matrix[:3, :3] = np.diag([-spacing_ijk[0], -spacing_ijk[1], spacing_ijk[2]])
        matrix[:3, 3] = origin_ras
        return cls(matrix, tuple(shape))

    @property
    def spacing(self) -> np.ndarray:
        """Voxel size along i, j, k in mm."""
        return np.linalg.norm(self.ijk_to_ras[:3, :3], axis=0)

    @property
    def voxel_volume_ml(self) -> float:
        """Volume of one voxel in mL (mm³ / 1000)."""
        return float(abs(np.linalg.det(self.ijk_to_ras[:3, :3]))) / 1000.0

    @property
    def direction_ras(self) -> np.ndarray:
        """Unit direction of the i, j, k axes in RAS (3×3, columns)."""
        return self.ijk_to_ras[:3, :3] / self.spacing

    def ijk_to_ras_points(self, ijk: np.ndarray) -> np.ndarray:
        """Map ``[..., 3]`` (i, j, k) indices to RAS mm."""
        ijk = np.asarray(ijk, dtype=float)
        return ijk @ self.ijk_to_ras[:3, :3].T + self.ijk_to_ras[:3, 3]

    def ras_to_ijk_points(self, ras: np.ndarray) -> np.ndarray:
        """Map ``[..., 3]`` RAS mm points to continuous (i, j, k) indices."""
        inverse = np.linalg.inv(self.ijk_to_ras)
        ras = np.asarray(ras, dtype=float)
        return ras @ inverse[:3, :3].T + inverse[:3, 3]

    def same_grid(self, other: "Geometry", tolerance_mm: float = 1e-3) -> bool:
        """True when both grids have the same shape and voxel positions (within ``tolerance_mm``)."""
        return self.shape == other.shape and bool(
            np.allclose(self.ijk_to_ras, other.ijk_to_ras, atol=tolerance_mm)
        )

    # --- SimpleITK (LPS) -------------------------------------------------------------------
    def to_sitk(self, array_kji: np.ndarray) -> sitk.Image:
        """A 3D SimpleITK image of ``array_kji`` (shape ``(K, J, I)``) with this geometry."""
        array_kji = np.asarray(array_kji)
        if array_kji.shape != self.shape:
            raise InputDataError(
                f"Array shape {array_kji.shape} does not match the geometry's grid {self.shape}."
            )
        image = sitk.GetImageFromArray(array_kji)
        self.apply_to_sitk(image)
        return image

    def apply_to_sitk(self, image: sitk.Image) -> None:
        """Write this geometry's origin, spacing and direction (as LPS) into ``image``."""
        ijk_to_lps = LPS_TO_RAS @ self.ijk_to_ras
        spacing = self.spacing
        image.SetSpacing([float(s) for s in spacing])
        image.SetOrigin([float(x) for x in ijk_to_lps[:3, 3]])
        image.SetDirection([float(x) for x in (ijk_to_lps[:3, :3] / spacing).ravel()])

    @classmethod
    def from_sitk(cls, image: sitk.Image) -> "Geometry":
        """Geometry of a 3D SimpleITK image (or the spatial part of a 4D one)."""
        dimension = image.GetDimension()
        if dimension < 3:
            raise InputDataError(f"Expected a 3D or 4D image, got a {dimension}D image.")
        spacing = np.array(image.GetSpacing()[:3], dtype=float)
        direction = np.array(image.GetDirection(), dtype=float).reshape(dimension, dimension)[:3, :3]
        origin = np.array(image.GetOrigin()[:3], dtype=float)
        ijk_to_lps = np.eye(4)
        ijk_to_lps[:3, :3] = direction * spacing
        ijk_to_lps[:3, 3] = origin
        size = image.GetSize()[:3]
        return cls(LPS_TO_RAS @ ijk_to_lps, (size[2], size[1], size[0]))
