"""Manual AIF in the panel: the curve shown before Apply is the AIF Apply uses, and it follows
the points when they move.

Real: StrokeMismatch.py (``updateAifPlot``, ``process``), StrokeMismatchLib (``pipeline.
prepare_series`` and ``pipeline.case_aif``, the calls ``run_case`` makes), and from slicer-core
the markups point list (``vtkMRMLMarkupsFiducialNode``), the plot chart / series / table nodes.
Stubbed (slicerapp.py): ``slicer.app``; the widget's point observer is replaced by calling
``updateAifPlot`` as it does.
"""

import numpy as np
import pytest

from conftest import load_sample


def _curve(chart):
    series = chart.GetNthPlotSeriesNode(0)
    table = series.GetTableNode().GetTable()
    column = table.GetColumnByName(series.GetYColumnName())
    return np.array([column.GetValue(i) for i in range(column.GetNumberOfTuples())])


def _artery_points(case_geometry, voxels):
    return [case_geometry.ijk_to_ras_points(np.array(v[::-1], dtype=float)) for v in voxels]


@pytest.mark.parametrize("motion", [False, True])
def test_preview_is_the_aif_apply_uses_and_follows_the_points(app, module, motion):
    import slicer

    from StrokeMismatchLib.phantom.volume import make_volume_phantom
    from StrokeMismatchLib.samplecase import SAMPLE_CASES

    nodes = load_sample(app, module, "mr")
    parameters = dict(SAMPLE_CASES["mr"])
    phantom = make_volume_phantom(parameters.pop("modality"), **parameters)
    arteries = np.argwhere(phantom.artery_mask)
    geometry = phantom.series.geometry
    points = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AIF")
    for ras in _artery_points(geometry, arteries[:2]):
        points.AddControlPoint(*ras)
    logic = module.StrokeMismatchLogic()
    preview = _curve(logic.updateAifPlot(nodes["proxy"], points, motionCorrection=motion))
    assert preview.max() > 0

    outputs = logic.process(nodes["proxy"], nodes["adc"], aifPointsNode=points, motionCorrection=motion)
    np.testing.assert_allclose(logic.lastResult.aif.curve, preview, rtol=1e-6, atol=1e-9)
    assert logic.lastResult.aif.method == "manual"
    # after Apply the preview reuses the run (same node, same options): still the same curve
    after = _curve(logic.updateAifPlot(nodes["proxy"], points, motionCorrection=motion))
    np.testing.assert_allclose(after, preview, rtol=1e-6)

    # the user drags the points onto brain tissue: the curve changes (lower, later peak)
    tissue = np.argwhere(phantom.brain_mask & ~phantom.artery_mask & ~phantom.vein_mask)
    for index, ras in enumerate(_artery_points(geometry, tissue[len(tissue) // 2: len(tissue) // 2 + 2])):
        points.SetNthControlPointPosition(index, *ras)
    moved = _curve(logic.updateAifPlot(nodes["proxy"], points, motionCorrection=motion))
    assert moved.max() < 0.5 * preview.max()
    assert logic.updateAifPlot(nodes["proxy"], points, motionCorrection=motion) is outputs["aifChart"]
