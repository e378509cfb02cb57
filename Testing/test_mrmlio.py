"""MRML adapter tests against the slicer-core wheel (GUIDE §6.2)."""

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")

from StrokeMismatchLib import mrmlio  # noqa: E402
from StrokeMismatchLib.errors import InputDataError  # noqa: E402
from StrokeMismatchLib.geometry import Geometry  # noqa: E402
from StrokeMismatchLib.series import PerfusionSeries  # noqa: E402

OBLIQUE = np.array([[-1.5, 0.1, 0.0, 10.0],
                    [0.0, -1.4, 0.2, 20.0],
                    [0.05, 0.0, 4.0, -30.0],
                    [0.0, 0.0, 0.0, 1.0]])


def _without_status(rows):
    """The rows after the quality-status row."""
    return [row for row in rows if row["Key"] != "quality_status"]


def _series(shape=(3, 5, 6), times=(0.0, 1.2, 2.0, 3.5, 6.0), seed=1):
    rng = np.random.default_rng(seed)
    signal = rng.uniform(50, 500, size=shape + (len(times),)).astype(np.float32)
    return PerfusionSeries(signal=signal, times=np.array(times), geometry=Geometry(OBLIQUE, shape),
                           modality="mr", te=0.03, tr=1.5)


def _add_sequence(scene, series, unit="s", scale=1.0):
    seq = scene.AddNewNodeByClass("vtkMRMLSequenceNode", "perf")
    seq.SetIndexUnit(unit)
    frame = slicer.vtkMRMLScalarVolumeNode()
    for index, t in enumerate(series.times):
        slicer.util.updateVolumeFromArray(frame, series.signal[..., index])
        frame.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(series.geometry.ijk_to_ras))
        seq.SetDataNodeAtValue(frame, f"{t * scale:g}")
    return seq


def test_sequence_with_unequal_times_in_ms_reads_as_seconds(scene):
    series = _series()
    seq = _add_sequence(scene, series, unit="ms", scale=1000.0)
    result = mrmlio.series_from_node(seq, modality="mr")
    assert isinstance(result, PerfusionSeries)
    assert result.signal.shape == (3, 5, 6, 5)
    np.testing.assert_allclose(result.times, series.times)
    np.testing.assert_array_equal(result.signal, series.signal)
    np.testing.assert_allclose(result.geometry.ijk_to_ras, OBLIQUE, atol=1e-9)
    assert result.geometry.shape == (3, 5, 6)
    assert result.modality == "mr"


def test_sequence_from_series_round_trip_keeps_te_tr_and_modality(scene):
    series = _series()
    seq = mrmlio.sequence_from_series(series, scene=scene)
    info = mrmlio.frame_info(seq)
    assert info["te"] == pytest.approx(0.03) and info["tr"] == pytest.approx(1.5)
    assert info["modality"] == "mr" and info["frames"] == 5
    back = mrmlio.series_from_node(seq)
    np.testing.assert_allclose(back.times, series.times)
    np.testing.assert_array_equal(back.signal, series.signal)
    assert back.te == pytest.approx(0.03)


def test_proxy_volume_resolves_to_its_sequence(scene):
    series = _series()
    seq = _add_sequence(scene, series)
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode")
    browser.SetAndObserveMasterSequenceNodeID(seq.GetID())
    slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
    proxy = browser.GetProxyNode(seq)
    assert mrmlio.resolve_perfusion_node(proxy) == ("sequence", seq)
    np.testing.assert_array_equal(mrmlio.series_from_node(proxy).signal, series.signal)


def test_plain_volume_and_mixed_geometry_are_refused(scene):
    volume = slicer.util.addVolumeFromArray(np.zeros((2, 3, 4), np.float32), name="t1")
    with pytest.raises(InputDataError, match="single 3D volume"):
        mrmlio.series_from_node(volume)
    series = _series()
    seq = _add_sequence(scene, series)
    frame = seq.GetNthDataNode(3)
    matrix = OBLIQUE.copy()
    matrix[0, 3] += 2.0
    frame.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(matrix))
    with pytest.raises(InputDataError, match="Frame 3"):
        mrmlio.series_from_node(seq)


def test_non_increasing_times_are_refused(scene):
    series = _series()
    seq = _add_sequence(scene, series)
    with pytest.raises(InputDataError, match="increase"):
        mrmlio.series_from_node(seq, times=[0, 1, 1, 2, 3])


def test_maps_keep_exact_geometry_and_display(scene):
    geometry = Geometry(OBLIQUE, (3, 5, 6))
    rng = np.random.default_rng(2)
    maps = {key: rng.uniform(0, 12, geometry.shape).astype(np.float32) for key in mrmlio.MAP_DISPLAY}
    maps["tmax"][0, 0, 0] = np.nan
    nodes = mrmlio.maps_to_volumes(maps, geometry, prefix="p-")
    assert set(nodes) == {"cbf", "cbv", "mtt", "tmax", "ttp"}
    for key, node in nodes.items():
        back = mrmlio.volume_geometry(node)
        assert back.shape == geometry.shape
        np.testing.assert_allclose(back.ijk_to_ras, OBLIQUE, atol=1e-9)
        array = slicer.util.arrayFromVolume(node)
        expected = np.where(np.isfinite(maps[key]), maps[key], 0.0)
        np.testing.assert_array_equal(array, expected)
    tmax_display = nodes["tmax"].GetDisplayNode()
    assert tmax_display.GetWindowLevelMin() == pytest.approx(0.0)
    assert tmax_display.GetWindowLevelMax() == pytest.approx(10.0)
    assert tmax_display.GetAutoWindowLevel() == 0
    # file-based tables are absent in slicer-core: the procedural fallback must be used
    assert tmax_display.GetColorNodeID() == "vtkMRMLColorTableNodeRainbow"
    assert scene.GetNodeByID(tmax_display.GetColorNodeID()) is not None
    assert nodes["tmax"].GetName() == "p-Tmax"


def test_masks_round_trip_into_named_coloured_segments_with_surfaces(scene):
    geometry = Geometry(OBLIQUE, (8, 10, 12))
    reference = mrmlio.volume_from_array(np.zeros(geometry.shape), geometry, "ref")
    core = np.zeros(geometry.shape, bool)
    core[2:5, 3:7, 4:8] = True
    core[6, 1, 1] = True  # isolated voxel must survive too
    penumbra = np.zeros(geometry.shape, bool)
    penumbra[2:6, 2:9, 2:10] = True
    penumbra &= ~core
    tmax10 = np.zeros(geometry.shape, bool)
    tmax10[3, 4, 5] = True
    seg = mrmlio.segmentation_from_masks({"core": core, "penumbra": penumbra, "tmax_gt_10": tmax10}, reference)
    content = seg.GetSegmentation()
    assert content.GetNumberOfSegments() == 3
    names = [content.GetNthSegment(i).GetName() for i in range(3)]
    assert names == ["Ischemic core", "Penumbra", "Tmax > 10 s"]
    core_color = content.GetSegment(content.GetSegmentIdBySegmentName("Ischemic core")).GetColor()
    assert core_color[0] > 0.8 and core_color[1] < 0.2
    pen_color = content.GetSegment(content.GetSegmentIdBySegmentName("Penumbra")).GetColor()
    assert pen_color[1] > 0.7 and pen_color[0] < 0.2
    back = mrmlio.masks_from_segmentation(seg, reference)
    assert back["core"].sum() == core.sum() == 3 * 4 * 4 + 1
    np.testing.assert_array_equal(back["core"], core)
    np.testing.assert_array_equal(back["penumbra"], penumbra)
    np.testing.assert_array_equal(back["tmax_gt_10"], tmax10)
    assert seg.GetSegmentation().ContainsRepresentation("Closed surface")
    import vtk
    polydata = vtk.vtkPolyData()
    seg.GetClosedSurfaceRepresentation(content.GetSegmentIdBySegmentName("Ischemic core"), polydata)
    assert polydata.GetNumberOfPoints() > 0


def test_updating_segmentation_reuses_segments_by_name(scene):
    geometry = Geometry.from_spacing((4, 4, 4), (2.0, 2.0, 2.0))
    reference = mrmlio.volume_from_array(np.zeros(geometry.shape), geometry, "ref")
    first = np.zeros(geometry.shape, bool)
    first[1, 1, 1] = True
    seg = mrmlio.segmentation_from_masks({"core": first}, reference, closed_surface=False)
    second = np.zeros(geometry.shape, bool)
    second[2:4, 2:4, 2:4] = True
    mrmlio.segmentation_from_masks({"core": second}, reference, segmentation=seg, closed_surface=False)
    assert seg.GetSegmentation().GetNumberOfSegments() == 1
    assert mrmlio.masks_from_segmentation(seg, reference)["core"].sum() == 8


def test_metrics_table_has_values_units_and_criteria_reasons(scene):
    metrics = {
        "core_volume_ml": {"value": 12.5, "unit": "mL"},
        "hypoperfusion_volume_ml": (40.0, "mL"),
        "mismatch_ratio": {"value": None, "unit": "", "note": "core is empty"},
        "voxels": 7,
    }
    criteria = [{"name": "DEFUSE 3", "eligible": True, "reasons": ["core 12.5 mL < 70 mL", "ratio >= 1.8"]},
                {"name": "EXTEND-IA", "verdict": "not met", "reasons": "mismatch volume 9 mL < 10 mL"}]
    table = mrmlio.table_from_metrics(metrics, criteria)
    rows = _without_status(mrmlio.table_rows(table))
    assert [r["Item"] for r in rows] == list(metrics) + ["DEFUSE 3", "EXTEND-IA"]
    assert [r["Key"] for r in rows] == list(metrics) + ["criterion", "criterion"]
    assert float(rows[0]["Value"]) == pytest.approx(12.5) and rows[0]["Unit"] == "mL"
    assert rows[1]["Unit"] == "mL" and float(rows[1]["Value"]) == pytest.approx(40.0)
    assert rows[2]["Details"] == "core is empty" and rows[2]["Value"].lower() == "nan"
    assert rows[4]["Verdict"] == "met" and "70 mL" in rows[4]["Details"]
    assert rows[5]["Verdict"] == "not met" and "9 mL" in rows[5]["Details"]
    assert table.GetNumberOfColumns() == 6
    # refilling the same table replaces the rows instead of appending
    mrmlio.table_from_metrics({"a": (1.0, "s")}, [], table=table)
    assert len(_without_status(mrmlio.table_rows(table))) == 1


def test_plot_curves_builds_table_series_and_chart(scene):
    times = np.array([0.0, 1.0, 2.5, 4.0])
    chart = mrmlio.plot_curves(times, {"AIF": [0, 5, 2, 1], "Tissue": [0, 1, 1.5, 1],
                                       "Residue": (np.arange(3) * 0.5, [1.0, 0.6, 0.3])}, name="Curves")
    assert chart.IsA("vtkMRMLPlotChartNode")
    assert chart.GetNumberOfPlotSeriesNodes() == 3
    series = chart.GetNthPlotSeriesNode(0)
    table = series.GetTableNode()
    assert series.GetXColumnName() == "time" and series.GetYColumnName() == "AIF"
    rows = mrmlio.table_rows(table)
    assert float(rows[2]["time"]) == pytest.approx(2.5) and float(rows[1]["AIF"]) == pytest.approx(5.0)
    assert chart.GetNthPlotSeriesNode(2).GetXColumnName() == "Residue time"
    # refresh (points moved): same chart, same number of series, new values
    again = mrmlio.plot_curves(times, {"AIF": [0, 7, 2, 1]}, chart=chart, name="Curves")
    assert again is chart and chart.GetNumberOfPlotSeriesNodes() == 1
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 1  # stale series removed
    assert float(mrmlio.table_rows(chart.GetNthPlotSeriesNode(0).GetTableNode())[1]["AIF"]) == pytest.approx(7.0)
    assert scene.GetNumberOfNodesByClass("vtkMRMLTableNode") == 1
    for step in range(5):  # live refresh with changing legends creates no nodes
        mrmlio.plot_curves(times, {f"AIF {step}": [0, step, 2, 1], "T": [1, 1, 1, 1]}, chart=chart, name="Curves")
    assert scene.GetNumberOfNodesByClass("vtkMRMLPlotSeriesNode") == 2
    assert chart.GetNthPlotSeriesNode(0).GetName() == "AIF 4"


def test_markups_points_map_to_voxels_and_outside_points_are_dropped(scene):
    geometry = Geometry(OBLIQUE, (3, 5, 6))
    markups = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "AIF")
    inside = geometry.ijk_to_ras_points(np.array([4.0, 2.0, 1.0]))  # (i, j, k)
    markups.AddControlPoint(*inside)
    markups.AddControlPoint(1000.0, 1000.0, 1000.0)
    voxels = mrmlio.markups_voxels(markups, geometry)
    np.testing.assert_array_equal(voxels, [[1, 2, 4]])
    empty = scene.AddNewNodeByClass("vtkMRMLMarkupsFiducialNode", "none")
    with pytest.raises(InputDataError, match="AIF point"):
        mrmlio.markups_voxels(empty, geometry)


def test_metrics_table_from_the_lib_metric_and_rule_objects(scene):
    metrics_module = pytest.importorskip("StrokeMismatchLib.metrics")
    criteria_module = pytest.importorskip("StrokeMismatchLib.criteria")
    metrics = {"core_ml": metrics_module.Metric("core_ml", 12.0, "mL", "Ischemic core volume"),
               "mismatch_ratio": metrics_module.Metric("mismatch_ratio", None, "1", "Mismatch ratio",
                                                       flag="infinite", note="core is empty")}
    ok = criteria_module.Criterion("core", 12.0, "< 70 mL", "pass", "core 12.0 mL is below 70 mL", "mL")
    rule = criteria_module.RuleResult("DEFUSE 3", True, [ok], [])
    table = mrmlio.table_from_metrics(metrics, [rule])
    rows = _without_status(mrmlio.table_rows(table))
    assert rows[0]["Item"] == "Ischemic core volume" and rows[0]["Key"] == "core_ml"
    assert rows[0]["Unit"] == "mL" and float(rows[0]["Value"]) == pytest.approx(12.0)
    assert "infinite" in rows[1]["Details"] and "core is empty" in rows[1]["Details"]
    assert rows[2]["Item"] == "DEFUSE 3" and rows[2]["Verdict"] == "eligible"
    assert "below 70 mL" in rows[2]["Details"]


def test_edited_segment_read_back_gives_recomputed_metrics_and_segments_stay(scene):
    pytest.importorskip("StrokeMismatchLib.analysis")
    geometry = Geometry.from_spacing((10, 20, 20), (2.0, 2.0, 5.0))  # 0.02 mL voxels
    reference = mrmlio.volume_from_array(np.zeros(geometry.shape), geometry, "Tmax")
    core = np.zeros(geometry.shape, bool)
    core[2:6, 5:10, 5:10] = True  # 100 voxels = 2 mL
    penumbra = np.zeros(geometry.shape, bool)
    penumbra[2:8, 3:15, 3:15] = True
    penumbra &= ~core  # 6*12*12 - 100 = 764 voxels
    seg = mrmlio.segmentation_from_masks({"core": core, "penumbra": penumbra}, reference, closed_surface=False)
    table, result = mrmlio.recompute_from_segmentation(seg, reference)
    volumes = {k: m.value for k, m in result.metrics.items() if m.unit == "mL"}
    assert any(v == pytest.approx(2.0) for v in volumes.values()), volumes
    assert any(v == pytest.approx(864 * 0.02) for v in volumes.values()), volumes
    # the user erases half of the core in Segment Editor (simulated on the labelmap)
    edited = core.copy()
    edited[4:6] = False
    segment_id = seg.GetSegmentation().GetSegmentIdBySegmentName("Ischemic core")
    slicer.util.updateSegmentBinaryLabelmapFromArray(edited.astype(np.uint8), seg, segment_id, reference)
    table2, result2 = mrmlio.recompute_from_segmentation(seg, reference, table=table)
    assert table2 is table
    volumes2 = {k: m.value for k, m in result2.metrics.items() if m.unit == "mL"}
    assert any(v == pytest.approx(1.0) for v in volumes2.values()), volumes2
    assert not any(v == pytest.approx(2.0) for v in volumes2.values())
    rows = mrmlio.table_rows(table)
    assert any(r["Unit"] == "mL" and float(r["Value"]) == pytest.approx(1.0) for r in rows)
    assert any(r["Key"] == "criterion" and r["Verdict"] for r in rows)
    # the edit is kept: recomputing never writes the segments
    np.testing.assert_array_equal(mrmlio.masks_from_segmentation(seg, reference)["core"], edited)
    # a quality error of the analysis keeps the edited case's verdicts indeterminate (issue 9)
    from StrokeMismatchLib.quality import QualityFlag

    error = QualityFlag("no_bolus", "error", "No contrast bolus was detected.", "why")
    _, gated = mrmlio.recompute_from_segmentation(seg, reference, table=table, quality=[error])
    assert [r.status for r in gated.criteria] == ["indeterminate (quality)"] * len(gated.criteria)


def test_cbf_window_follows_the_data(scene):
    """DSC-MR CBF is relative (hundreds of 'mL/100 g/min' on the phantom): a fixed 0–80 window
    would saturate it, so CBF and CBV are windowed from 0 to the 99th percentile of the map."""
    geometry = Geometry.from_spacing((10, 10, 4), (2.0, 2.0, 5.0))
    rng = np.random.default_rng(3)
    for scale in (1.0, 10.0):
        cbf = (rng.uniform(10, 60, geometry.shape) * scale).astype(np.float32)
        node = mrmlio.maps_to_volumes({"cbf": cbf}, geometry, prefix=f"x{scale}-")["cbf"]
        display = node.GetDisplayNode()
        assert display.GetWindowLevelMin() == pytest.approx(0.0)
        assert display.GetWindowLevelMax() == pytest.approx(np.percentile(cbf, 99), rel=1e-4)


def test_summary_table_lists_quality_flags(scene):
    from StrokeMismatchLib.quality import QualityFlag

    flags = [QualityFlag("short_scan", "warning", "The scan lasts 45 s (under 60 s).",
                         "The bolus may not have passed: CBV and CBF can be too low."),
             {"code": "motion", "severity": "info", "message": "Motion 0.4 mm", "explanation": "Small."}]
    table = mrmlio.table_from_metrics({"core_ml": (10.0, "mL")}, [], quality=flags)
    rows = _without_status(mrmlio.table_rows(table))
    assert [r["Key"] for r in rows] == ["core_ml", "quality:short_scan", "quality:motion"]
    assert rows[1]["Verdict"] == "warning" and "45 s" in rows[1]["Item"]
    assert "bolus" in rows[1]["Details"]
    assert rows[2]["Verdict"] == "info"


def test_reading_a_sequence_makes_one_copy_of_the_4d_data(scene):
    """Issue 8: the read made two full copies (stack, then astype). Peak numpy allocation while
    reading is now one float32 copy of the series (plus small per-frame objects)."""
    import tracemalloc

    series = _series(shape=(8, 40, 40), times=tuple(np.arange(30) * 1.5))
    seq = _add_sequence(scene, series)
    nbytes = series.signal.astype(np.float32).nbytes
    mrmlio.series_from_node(seq)  # warm-up (imports, caches)
    tracemalloc.start()
    try:
        read = mrmlio.series_from_node(seq)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    np.testing.assert_array_equal(read.signal, series.signal)
    assert read.signal.dtype == np.float32
    assert peak < 1.25 * nbytes, (peak / nbytes)


def test_summary_table_starts_with_the_quality_status(scene):
    """Pass / warn / fail first in the Slicer table (issue 9's gate), once the Lib computes it."""
    from StrokeMismatchLib import quality
    from StrokeMismatchLib.quality import QualityFlag

    flags = [QualityFlag("short_scan", "warning", "The scan lasts 45 s (under 60 s).", "The bolus may not have passed.")]
    rows = mrmlio.table_rows(mrmlio.table_from_metrics({"core_ml": (10.0, "mL")}, [], quality=flags))
    assert rows[0]["Key"] == "quality_status" and rows[0]["Item"] == "Quality status"
    assert rows[0]["Verdict"] == quality.quality_status(flags)["status"] == "warn"
    assert rows[1]["Key"] == "core_ml"


def test_summary_table_states_stability_and_side_after_the_quality_status(scene):
    """Real MRML table: the same order as the terminal and report page 1 (quality, verdict
    stability, affected side, then volumes and verdicts)."""
    stability = {"status": "near_cutoff", "findings": [{"message": "DEFUSE3: core volume 68 mL is within 10 % of < 70 mL"}]}
    rows = mrmlio.table_rows(mrmlio.table_from_metrics({"core_ml": (68.0, "mL")}, [], quality=[],
                                                       side="left", stability=stability))
    keys = [row["Key"] for row in rows]
    assert keys[:4] == ["quality_status", "stability_status", "affected_side", "core_ml"]
    assert rows[1]["Verdict"] == "near a cut-off" and "68 mL" in rows[1]["Details"]
    assert rows[2]["Verdict"] == "left"
