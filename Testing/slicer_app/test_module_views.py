"""What the user sees after Apply: the slice and 3D views drawn by Slicer's displayable managers.

Real: StrokeMismatch.py (``process``, ``showResults``), StrokeMismatchLib, and from slicer-core
the MRML scene, ``vtkMRMLSliceLogic`` (reslicing, layer blending, display-node thresholds and
colour tables), the segmentation 2D/3D, colour-legend, model, camera and view displayable
managers, the Colors / Markups / Tables / Plots logics. Stubbed (slicerapp.py): ``slicer.app``
and its layout manager, which puts each view in an offscreen EGL render window (Mesa).

Run as a script to refresh the README's picture of the module (real rendering of a real run)::

    python Testing/slicer_app/test_module_views.py   # writes Resources/Screenshots/slicer_views.png
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import vtk

import slicer

ROOT = Path(__file__).resolve().parents[2]
SCREENSHOT = ROOT / "Resources" / "Screenshots" / "slicer_views.png"

SEGMENT_RGB = {"core": np.array([230, 26, 26]), "penumbra": np.array([26, 204, 51])}


def _pixel_voxels(widget, geometry):
    """(k, j, i) [H, W, 3] of the voxel drawn at each pixel of ``widget.capture()`` (-1 outside)."""
    height, width = widget.size[1], widget.size[0]
    columns, rows = np.meshgrid(np.arange(width), np.arange(height))
    xy = np.stack([columns.ravel(), (height - 1 - rows).ravel(), np.zeros(rows.size), np.ones(rows.size)])
    ras = slicer.util.arrayFromVTKMatrix(widget.node.GetXYToRAS()) @ xy
    ijk = np.rint(np.linalg.inv(geometry.ijk_to_ras) @ ras)[:3].T.astype(int)
    kji = ijk[:, ::-1]
    inside = np.all((kji >= 0) & (kji < np.array(geometry.shape)), axis=1)
    kji[~inside] = -1
    return kji.reshape(height, width, 3)


def _mask_at(mask, voxels):
    inside = voxels[..., 0] >= 0
    result = np.zeros(voxels.shape[:2], bool)
    v = voxels[inside]
    result[inside] = mask[v[:, 0], v[:, 1], v[:, 2]]
    return result


def _close_to(image, rgb, tolerance=45):
    return np.all(np.abs(image.astype(int) - rgb) <= tolerance, axis=-1)


def _legend_display(outputs):
    return slicer.modules.colors.logic().GetColorLegendDisplayNode(outputs["tmax"])


def test_slice_view_core_red_penumbra_green_on_the_lesion_nothing_tinted_outside(mr_run, app, tmp_path):
    logic, nodes, outputs = mr_run
    red = app.layoutManager().sliceWidget("Red")
    composite = red.logic.GetSliceCompositeNode()
    assert composite.GetBackgroundVolumeID() == outputs["baseline"].GetID()
    assert composite.GetForegroundVolumeID() == outputs["tmax"].GetID()
    result = logic.lastResult
    geometry = result.geometry
    shown = red.capture(tmp_path / "red.png")
    voxels = _pixel_voxels(red, geometry)
    k = int(np.median(voxels[..., 0][voxels[..., 0] >= 0]))
    assert result.lesion.masks["core"][k].any(), "the view goes through the lesion"

    # nothing tinted outside the brain (the legend, drawn on the right, is hidden for this check)
    _legend_display(outputs).SetVisibility(False)
    plain = red.capture(tmp_path / "red_no_legend.png")
    _legend_display(outputs).SetVisibility(True)
    outside = (voxels[..., 0] >= 0) & ~_mask_at(result.brain_mask, voxels)
    assert outside.sum() > 10000
    spread = plain.astype(int).max(axis=-1) - plain.astype(int).min(axis=-1)
    assert np.percentile(spread[outside], 99) <= 3, "the Tmax overlay tints tissue outside the brain"
    inside_brain = _mask_at(result.brain_mask, voxels)
    assert np.median(spread[inside_brain]) > 40, "Tmax is overlaid in colour inside the brain"

    # segment outlines: red on the core's border, green on the penumbra's, in the lesion's hemisphere
    display = outputs["segmentation"].GetDisplayNode()
    display.SetVisibility(False)
    without = red.capture(tmp_path / "red_no_segments.png")
    display.SetVisibility(True)
    changed = np.abs(shown.astype(int) - without.astype(int)).max(axis=-1) > 30
    from scipy import ndimage

    for key in ("core", "penumbra"):
        drawn = changed & _close_to(shown, SEGMENT_RGB[key])
        near = _mask_at(ndimage.binary_dilation(result.lesion.masks[key], iterations=1), voxels)
        assert drawn.sum() > 100, key
        assert (drawn & near).sum() >= 0.9 * drawn.sum(), key
        # patient left (lesion_side "left") is on the image's right in Slicer's axial view
        assert np.argwhere(drawn)[:, 1].mean() > red.size[0] / 2, key
    # the other hemisphere carries no segment colour
    assert not (changed[:, : red.size[0] // 3]).any()

    # colour legend of the Tmax map (0-10 s) is drawn
    legend_pixels = np.abs(shown.astype(int) - plain.astype(int)).max(axis=-1) > 30
    assert legend_pixels.sum() > 500
    assert np.argwhere(legend_pixels)[:, 1].mean() > red.size[0] / 2


def test_three_d_view_shows_the_lesion_surfaces(mr_run, app, tmp_path):
    logic, nodes, outputs = mr_run
    view = app.layoutManager().threeDWidget(0)
    shown = view.capture(tmp_path / "3d.png")
    segmentation = outputs["segmentation"]
    content = segmentation.GetSegmentation()
    display = segmentation.GetDisplayNode()
    display.SetVisibility(False)
    empty = view.capture(tmp_path / "3d_empty.png")
    display.SetVisibility(True)
    changed = np.abs(shown.astype(int) - empty.astype(int)).max(axis=-1) > 20
    assert changed.sum() > 0.02 * changed.size  # the view was centred on the lesion
    ids = {name: content.GetSegmentIdBySegmentName(name) for name in ("Ischemic core", "Penumbra", "Tmax > 10 s")}
    for name, channel in (("Ischemic core", 0), ("Penumbra", 1)):
        for other, segment_id in ids.items():
            display.SetSegmentVisibility3D(segment_id, other == name)
        alone = view.capture(tmp_path / f"3d_{channel}.png").astype(int)
        drawn = np.abs(alone - empty.astype(int)).max(axis=-1) > 20
        assert drawn.sum() > 500, name
        rest = [c for c in range(3) if c != channel]
        dominant = np.all(alone[drawn][:, [channel]] > alone[drawn][:, rest], axis=1)
        assert dominant.mean() > 0.7, (name, dominant.mean())  # red core, green penumbra (labels, edges aside)
        surface = vtk.vtkPolyData()
        segmentation.GetClosedSurfaceRepresentation(ids[name], surface)
        assert surface.GetNumberOfPoints() > 100, name
    for segment_id in ids.values():
        display.SetSegmentVisibility3D(segment_id, True)


def montage(images, path):
    """Side by side, a thin dark gap between them; written with VTK's PNG writer."""
    height = max(image.shape[0] for image in images)
    gap = np.full((height, 6, 3), 30, np.uint8)
    parts = []
    for image in images:
        padded = np.zeros((height,) + image.shape[1:], np.uint8)
        padded[: image.shape[0]] = image
        parts += [padded, gap]
    picture = np.ascontiguousarray(np.concatenate(parts[:-1], axis=1)[::-1])
    data = vtk.vtkImageData()
    data.SetDimensions(picture.shape[1], picture.shape[0], 1)
    data.AllocateScalars(vtk.VTK_UNSIGNED_CHAR, 3)
    vtk.util.numpy_support.vtk_to_numpy(data.GetPointData().GetScalars())[:] = picture.reshape(-1, 3)
    writer = vtk.vtkPNGWriter()
    writer.SetFileName(str(path))
    writer.SetInputData(data)
    writer.Write()
    return path


def main() -> int:
    sys.path[:0] = [str(Path(__file__).parent), str(ROOT / "StrokeMismatch")]
    import vtk.util.numpy_support  # noqa: F401

    import slicerapp
    from conftest import load_sample

    app = slicerapp.install(size=(420, 420))
    import StrokeMismatch

    nodes = load_sample(app, StrokeMismatch, "mr")
    logic = StrokeMismatch.StrokeMismatchLogic()
    outputs = logic.process(nodes["sequence"], nodes["adc"])  # the panel's defaults
    logic.showResults(outputs)
    layout = app.layoutManager()
    layout.threeDWidget(0).mrmlViewNode().SetAxisLabelsVisible(False)  # labels of the 3D box (hidden) clutter
    outputs["segmentation"].GetDisplayNode().SetSliceIntersectionThickness(2)  # outlines readable when small
    images = [layout.sliceWidget("Red").capture(), layout.sliceWidget("Green").capture(),
              layout.threeDWidget(0).capture()]
    print(montage(images, SCREENSHOT))
    print(logic.summaryText())
    return 0


if __name__ == "__main__":
    sys.exit(main())
