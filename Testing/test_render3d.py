"""3D picture of core and penumbra (VTK offscreen): a real render, graceful failure, bad input."""

import warnings

import numpy as np
import pytest

from StrokeMismatchLib import render3d
from StrokeMismatchLib.errors import InputDataError, OutputError
from StrokeMismatchLib.geometry import Geometry

pytest.importorskip("vtk")
image_module = pytest.importorskip("matplotlib.image")


def _scene(lesion_side="left"):
    """Ellipsoid brain with a lesion ball (core inside penumbra) on one side, LPS-style grid."""
    shape = (14, 48, 48)
    geometry = Geometry.from_spacing(shape, (3.5, 3.5, 6.0))
    k, j, i = np.indices(shape)
    brain = ((i - 23.5) / 20) ** 2 + ((j - 23.5) / 22) ** 2 + ((k - 6.5) / 6.6) ** 2 < 1
    # from_spacing: i runs towards the patient's left (−x), so large i is the left hemisphere.
    centre_i = 35 if lesion_side == "left" else 12
    lesion = (((i - centre_i) / 7) ** 2 + ((j - 20) / 9) ** 2 + ((k - 7) / 4) ** 2 < 1) & brain
    core = (((i - centre_i) / 3.5) ** 2 + ((j - 20) / 4) ** 2 + ((k - 7) / 2.5) ** 2 < 1) & brain
    return brain, core, lesion & ~core, geometry


def _colour_fractions(path):
    rgb = image_module.imread(str(path))[..., :3]
    scene = rgb[32:-32]  # leave out the title and the colour legend (text in red and green)
    red = (scene[..., 0] > 0.5) & (scene[..., 1] < 0.35) & (scene[..., 2] < 0.35)
    # the penumbra is translucent over the brain: "green" = green clearly above red and blue
    green = (scene[..., 1] > scene[..., 0] + 0.1) & (scene[..., 1] > scene[..., 2] + 0.1)
    return rgb, red.mean(), green.mean()


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    brain, core, penumbra, geometry = _scene()
    path = tmp_path_factory.mktemp("render") / "lesion.png"
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a missing GL context must fail this test
        result = render3d.render_lesion_3d(brain, core, penumbra, geometry, path, size=(400, 320))
    return result, path


def test_render_writes_nonblank_png_with_red_core_and_green_penumbra(rendered):
    result, path = rendered
    assert result == path and path.is_file()
    rgb, red, green = _colour_fractions(path)
    assert rgb.shape[:2] == (320, 400)
    assert rgb.std() > 0.05
    assert red > 0.002, "no red (core) pixels"
    assert green > 0.005, "no green (penumbra) pixels"
    # white background: the corners are white
    assert np.all(rgb[2, -3] > 0.95) and np.all(rgb[-3, -3] > 0.95)


def test_camera_looks_from_the_lesion_side(tmp_path):
    """The lesion is near the viewer: it is drawn larger than the same lesion on the far side
    would be, and the text says which side we look from."""
    sizes = {}
    for side in ("left", "right"):
        brain, core, penumbra, geometry = _scene(side)
        path = render3d.render_lesion_3d(brain, core, np.zeros_like(core), geometry,
                                         tmp_path / f"{side}.png", size=(300, 240))
        _, red, _ = _colour_fractions(path)
        sizes[side] = red
    # same lesion mirrored, camera follows it: similar apparent size on both sides
    assert sizes["left"] > 0.002 and sizes["right"] > 0.002
    assert 0.5 < sizes["left"] / sizes["right"] < 2.0


def test_no_opengl_context_returns_none_with_warning(tmp_path, monkeypatch):
    brain, core, penumbra, geometry = _scene()
    monkeypatch.setattr(render3d, "_make_render_window", lambda vtk, size: None)
    with pytest.warns(RuntimeWarning, match="OpenGL"):
        assert render3d.render_lesion_3d(brain, core, penumbra, geometry, tmp_path / "x.png") is None
    assert not (tmp_path / "x.png").exists()


def test_missing_vtk_returns_none_with_warning(tmp_path, monkeypatch):
    brain, core, penumbra, geometry = _scene()
    monkeypatch.setattr(render3d, "_import_vtk", lambda: None)
    with pytest.warns(RuntimeWarning, match="VTK is not installed"):
        assert render3d.render_lesion_3d(brain, core, penumbra, geometry, tmp_path / "x.png") is None


def test_bad_inputs_raise_our_errors(tmp_path):
    brain, core, penumbra, geometry = _scene()
    with pytest.raises(InputDataError, match="perfusion grid"):
        render3d.render_lesion_3d(brain, core[:, :10], penumbra, geometry, tmp_path / "x.png")
    with pytest.raises(InputDataError, match="brain mask is empty"):
        render3d.render_lesion_3d(np.zeros_like(brain), core, penumbra, geometry, tmp_path / "x.png")
    with pytest.raises(OutputError, match="does not exist"):
        render3d.render_lesion_3d(brain, core, penumbra, geometry, tmp_path / "missing" / "x.png")


def test_empty_lesion_still_renders_the_brain(tmp_path):
    brain, core, penumbra, geometry = _scene()
    empty = np.zeros_like(brain)
    path = render3d.render_lesion_3d(brain, empty, empty, geometry, tmp_path / "brain.png", size=(200, 160))
    rgb, red, green = _colour_fractions(path)
    assert rgb.std() > 0.02 and green < 0.001
