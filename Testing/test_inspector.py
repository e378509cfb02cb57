"""The curve inspector (``StrokeMismatchLib.inspector``): pure numpy, no Slicer needed."""

import numpy as np
import pytest

from StrokeMismatchLib import inspector, perfusion
from StrokeMismatchLib.geometry import Geometry

OBLIQUE = np.array([[-1.5, 0.1, 0.0, 10.0],
                    [0.0, -1.4, 0.2, 20.0],
                    [0.05, 0.0, 4.0, -30.0],
                    [0.0, 0.0, 0.0, 1.0]])


def test_ras_to_voxel_rounds_to_the_nearest_voxel_and_refuses_points_outside():
    geometry = Geometry(OBLIQUE, (3, 5, 6))
    ras = geometry.ijk_to_ras_points(np.array([4.2, 1.8, 1.0]))  # (i, j, k)
    assert inspector.ras_to_voxel(geometry, ras) == (1, 2, 4)
    assert inspector.ras_to_voxel(geometry, [1000, 0, 0]) is None


def test_inspector_module_does_not_import_slicer():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(inspector.__file__).read_text(encoding="utf-8"))
    imported = {alias.name.split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.Import)
                for alias in node.names}
    imported |= {(node.module or "").split(".")[0] for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert not imported & {"slicer", "vtk", "qt", "ctk"}


def test_classify_voxel():
    core = np.zeros((2, 2, 2), bool)
    core[0, 0, 0] = True
    pen = np.zeros((2, 2, 2), bool)
    pen[1, 1, 1] = True
    brain = np.ones((2, 2, 2), bool)
    brain[0, 1, 0] = False
    masks = {"core": core, "penumbra": pen}
    assert inspector.classify_voxel(masks, (0, 0, 0), brain) == "core"
    assert inspector.classify_voxel(masks, (1, 1, 1), brain) == "penumbra"
    assert inspector.classify_voxel(masks, (1, 0, 0), brain) == "normal"
    assert inspector.classify_voxel(masks, (0, 1, 0), brain) == "outside"

def test_inspect_voxel_residue_peak_is_the_voxel_cbf_and_its_lag_tmax():
    from StrokeMismatchLib.phantom.curves import simulate_curves

    times = np.arange(0.0, 80.0, 1.0)
    cbf = np.array([[[60.0, 20.0], [40.0, 10.0]]])
    delay = np.array([[[0.0, 8.0], [2.0, 4.0]]])
    curves = simulate_curves(cbf, np.full(cbf.shape, 4.0), delay=delay, times=times)
    maps = perfusion.compute_maps(curves.tissue, curves.aif, times, method="oSVD",
                                  hematocrit_factor=1.0, tissue_density=1.0)
    core = np.zeros(cbf.shape, bool)
    core[0, 1, 1] = True
    penumbra = np.zeros(cbf.shape, bool)
    penumbra[0, 0, 1] = True
    for voxel, expected_class in (((0, 0, 0), "normal"), ((0, 0, 1), "penumbra"), ((0, 1, 1), "core")):
        info = inspector.inspect_voxel(voxel, concentration=curves.tissue, aif=curves.aif, times=times,
                                    maps=maps, masks={"core": core, "penumbra": penumbra})
        assert info["class"] == expected_class
        np.testing.assert_array_equal(info["concentration"], curves.tissue[voxel])
        # the plotted residue is CBF·R(t): its peak is the map's CBF, at lag Tmax
        assert info["residue"].max() == pytest.approx(info["cbf"], rel=0.05)
        step = float(np.diff(info["residue_times"])[0])  # Tmax is refined below one grid step
        assert info["residue_times"][np.argmax(info["residue"])] == pytest.approx(info["tmax"], abs=step)
        assert info["cbf"] == pytest.approx(float(maps.cbf[voxel]))
    # the longer the delay, the later the residue peak (what the teacher shows for penumbra)
    lags = [inspector.inspect_voxel(v, concentration=curves.tissue, aif=curves.aif, times=times, maps=maps,
                                 masks={})["tmax"] for v in ((0, 0, 0), (0, 1, 0), (0, 1, 1), (0, 0, 1))]
    assert lags == sorted(lags) and lags[-1] - lags[0] > 5.0

def test_inspector_curves_are_peak_normalised_with_units_in_legends():
    info = {"concentration": np.array([0.0, 2.0, 1.0]), "residue": np.array([10.0, 40.0, 5.0]),
            "residue_times": np.array([0.0, 1.0, 2.0])}
    curves = inspector.inspector_curves(info, [0, 1, 2], np.array([0.0, 8.0, 2.0]))
    (tissue_name, tissue), (aif_name, aif), (res_name, (lags, residue)) = curves.items()
    assert "peak 2" in tissue_name and "peak 8" in aif_name and "40.0 mL/100 g/min" in res_name
    np.testing.assert_allclose(tissue, [0, 1, 0.5])
    np.testing.assert_allclose(aif, [0, 1, 0.25])
    np.testing.assert_allclose(residue, [0.25, 1, 0.125])
    np.testing.assert_allclose(inspector.mean_curve(np.arange(24.0).reshape(2, 2, 2, 3), [[0, 0, 0], [1, 1, 1]]),
                               [10.5, 11.5, 12.5])


def test_mean_curve_of_no_voxel_is_a_clear_error():
    from StrokeMismatchLib.errors import InputDataError

    with pytest.raises(InputDataError, match="No voxel"):
        inspector.mean_curve(np.zeros((2, 2, 2, 3)), np.zeros((0, 3), int))
