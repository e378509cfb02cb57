"""Volumes under a parent transform (slicer-core): ``GetIJKToRASMatrix`` ignores the transform,
while markups, the crosshair and other volumes are in world RAS, so ``mrmlio`` geometries must
include linear parent transforms (and refuse non-linear ones)."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from StrokeMismatchLib import inspector, mrmlio  # noqa: E402
from StrokeMismatchLib.errors import InputDataError  # noqa: E402
from StrokeMismatchLib.geometry import Geometry  # noqa: E402
from StrokeMismatchLib.series import PerfusionSeries  # noqa: E402

LOCAL = np.array([[-2.0, 0.0, 0.0, 10.0],
                  [0.0, -2.0, 0.0, 20.0],
                  [0.0, 0.0, 3.0, -30.0],
                  [0.0, 0.0, 0.0, 1.0]])


def _linear_transform(scene):
    """A rotation of 20° about S plus a shift, as a registration would leave un-hardened."""
    angle = np.deg2rad(20.0)
    matrix = np.eye(4)
    matrix[:2, :2] = [[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]]
    matrix[:3, 3] = [5.0, -7.0, 12.0]
    node = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode", "registration")
    node.SetMatrixTransformToParent(slicer.util.vtkMatrixFromArray(matrix))
    return node, matrix


def test_volume_geometry_and_markups_voxels_are_in_world_coordinates(scene):
    volume = mrmlio.volume_from_array(np.zeros((4, 5, 6)), Geometry(LOCAL, (4, 5, 6)), "ADC")
    transform, matrix = _linear_transform(scene)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    geometry = mrmlio.volume_geometry(volume)
    np.testing.assert_allclose(geometry.ijk_to_ras, matrix @ LOCAL, atol=1e-9)
    # a point placed in the views on voxel (k, j, i) = (2, 3, 4) of the transformed volume
    world = (matrix @ LOCAL @ np.array([4.0, 3.0, 2.0, 1.0]))[:3]
    points = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AIF")
    points.AddControlPointWorld(vtk.vtkVector3d(*world))
    np.testing.assert_array_equal(mrmlio.markups_voxels(points, geometry), [[2, 3, 4]])
    assert inspector.ras_to_voxel(geometry, world) == (2, 3, 4)
    # without the transform the same point falls elsewhere: the test would catch ignoring it
    assert inspector.ras_to_voxel(Geometry(LOCAL, (4, 5, 6)), world) != (2, 3, 4)


def test_untransformed_volume_geometry_is_unchanged(scene):
    volume = mrmlio.volume_from_array(np.zeros((4, 5, 6)), Geometry(LOCAL, (4, 5, 6)), "plain")
    assert mrmlio.parent_to_world(volume) is None
    np.testing.assert_allclose(mrmlio.volume_geometry(volume).ijk_to_ras, LOCAL, atol=1e-12)


def test_proxy_under_a_transform_gives_the_series_world_geometry(scene):
    rng = np.random.default_rng(3)
    series = PerfusionSeries(signal=rng.uniform(50, 500, (3, 4, 5, 4)).astype(np.float32),
                             times=np.array([0.0, 1.5, 3.0, 4.5]), geometry=Geometry(LOCAL, (3, 4, 5)),
                             modality="mr", te=0.03)
    sequence = mrmlio.sequence_from_series(series, scene=scene)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    browser.SetAndObserveMasterSequenceNodeID(sequence.GetID())
    slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(sequence)
    transform, matrix = _linear_transform(scene)
    proxy.SetAndObserveTransformNodeID(transform.GetID())
    np.testing.assert_allclose(mrmlio.series_from_node(proxy).geometry.ijk_to_ras, matrix @ LOCAL, atol=1e-9)
    # the sequence node itself is not transformable: its frames' own geometry
    np.testing.assert_allclose(mrmlio.series_from_node(sequence).geometry.ijk_to_ras, LOCAL, atol=1e-9)


def test_non_linear_parent_transform_is_refused_with_advice(scene):
    volume = mrmlio.volume_from_array(np.zeros((4, 5, 6)), Geometry(LOCAL, (4, 5, 6)), "warped")
    source, target = vtk.vtkPoints(), vtk.vtkPoints()
    for point in [(0, 0, 0), (50, 0, 0), (0, 50, 0), (0, 0, 50), (30, 30, 30)]:
        source.InsertNextPoint(point)
        target.InsertNextPoint([c + (3.0 if i == 0 and point == (30, 30, 30) else 0.0) for i, c in enumerate(point)])
    spline = vtk.vtkThinPlateSplineTransform()
    spline.SetSourceLandmarks(source)
    spline.SetTargetLandmarks(target)
    spline.SetBasisToR()
    transform = scene.AddNewNodeByClass("vtkMRMLTransformNode", "warp")
    transform.SetAndObserveTransformToParent(spline)
    volume.SetAndObserveTransformNodeID(transform.GetID())
    with pytest.raises(InputDataError, match="non-linear transform.*[Hh]arden"):
        mrmlio.volume_geometry(volume)
