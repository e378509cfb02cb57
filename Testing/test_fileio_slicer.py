"""``.seq.nrrd`` compatibility with Slicer's own reader/writer (vtkMRMLVolumeSequenceStorageNode,
slicer-core), using the ``scene`` fixture from conftest.py (GUIDE.md §6.2)."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
import slicer.util  # noqa: E402
import vtk  # noqa: E402

from StrokeMismatchLib import fileio  # noqa: E402
from StrokeMismatchLib.geometry import Geometry  # noqa: E402
from StrokeMismatchLib.series import PerfusionSeries  # noqa: E402


def _oblique_series(times):
    a = np.deg2rad(12.0)
    rotation = np.array([[np.cos(a), 0, np.sin(a)], [0, 1, 0], [-np.sin(a), 0, np.cos(a)]])
    matrix = np.eye(4)
    matrix[:3, :3] = rotation @ np.diag([-1.7, -1.9, 4.5])
    matrix[:3, 3] = (40.0, 25.5, -12.0)
    geometry = Geometry(matrix, (3, 5, 7))
    rng = np.random.default_rng(11)
    signal = (rng.random(geometry.shape + (len(times),)) * 500 + 100).astype(np.float32)
    return PerfusionSeries(signal, times, geometry, "mr", te=0.03, tr=None, source="test")


def _ijk_to_ras(node):
    matrix = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(matrix)
    return np.array([[matrix.GetElement(r, c) for c in range(4)] for r in range(4)])


def test_ours_read_by_slicer(scene, tmp_path):
    times = [0, 1, 2, 3, 4, 5, 6, 7, 8, 10.5, 13, 15.5]
    series = _oblique_series(times)
    path = fileio.write_seq_nrrd(tmp_path / "ours.seq.nrrd", series)

    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(path))
    assert storage.ReadData(sequence) == 1
    assert sequence.GetNumberOfDataNodes() == len(times)
    assert sequence.GetIndexName() == "time" and sequence.GetIndexUnit() == "s"
    for n, t in enumerate(times):
        assert float(sequence.GetNthIndexValue(n)) == pytest.approx(t)
        node = sequence.GetNthDataNode(n)
        assert np.array_equal(slicer.util.arrayFromVolume(node), series.signal[..., n])
        assert np.allclose(_ijk_to_ras(node), series.geometry.ijk_to_ras, atol=1e-5)


def test_slicer_written_read_by_ours(scene, tmp_path):
    series = _oblique_series(list(np.arange(12) * 1.5))
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("ms")  # Slicer sequences from DICOM often use ms
    matrix = vtk.vtkMatrix4x4()
    for r in range(4):
        for c in range(4):
            matrix.SetElement(r, c, series.geometry.ijk_to_ras[r, c])
    for n, t in enumerate(series.times):
        volume = slicer.vtkMRMLScalarVolumeNode()
        volume.SetIJKToRASMatrix(matrix)
        image = vtk.vtkImageData()
        image.SetDimensions(*series.geometry.shape[::-1])
        image.AllocateScalars(vtk.VTK_FLOAT, 1)
        volume.SetAndObserveImageData(image)
        slicer.util.updateVolumeFromArray(volume, series.signal[..., n])
        sequence.SetDataNodeAtValue(volume, f"{t * 1000:g}")
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    path = tmp_path / "slicer.seq.nrrd"
    storage.SetFileName(str(path))
    assert storage.WriteData(sequence) == 1

    loaded = fileio.read_perfusion(path, modality="mr", te=0.03)
    assert np.array_equal(loaded.signal, series.signal)
    assert np.allclose(loaded.times, series.times)  # ms converted to s
    assert np.allclose(loaded.geometry.ijk_to_ras, series.geometry.ijk_to_ras, atol=1e-5)
    assert loaded.metadata["time_unit"] == "ms"


def test_slicer_round_trip_of_phantom(scene, tmp_path):
    """Phantom → our writer → Slicer reader → Slicer writer → our reader: unchanged."""
    from StrokeMismatchLib.phantom import make_volume_phantom

    phantom = make_volume_phantom("ct", shape=(4, 24, 24))
    first = fileio.write_seq_nrrd(tmp_path / "a.seq.nrrd", phantom.series)
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode")
    storage = slicer.vtkMRMLVolumeSequenceStorageNode()
    scene.AddNode(storage)
    storage.SetFileName(str(first))
    assert storage.ReadData(sequence) == 1
    second = tmp_path / "b.seq.nrrd"
    storage.SetFileName(str(second))
    assert storage.WriteData(sequence) == 1
    loaded = fileio.read_seq_nrrd(second, modality="ct")
    assert np.array_equal(loaded.signal, phantom.series.signal)
    assert np.allclose(loaded.times, phantom.times)
    assert loaded.geometry.same_grid(phantom.geometry, tolerance_mm=1e-5)
