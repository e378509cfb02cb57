"""Hand edits in Slicer's segment editor, then "Update from segments".

Real: StrokeMismatch.py (``updateFromSegments``), StrokeMismatchLib, and from slicer-core the
C++ segment-editor logic ``vtkSlicerSegmentEditorLogic`` (``ModifySegmentByLabelmap`` with the
editor node's default masking, i.e. painting a segment takes the voxels from the others;
``SaveStateForUndo`` / ``Undo``), the segmentation node and its labelmaps. Stubbed
(slicerapp.py): ``slicer.app``; the brush stroke is a labelmap we build (what the Paint and
Erase effects hand to the logic).
"""

import numpy as np
import pytest

from StrokeMismatchLib import mrmlio


def _volumes(table):
    return {row["Key"]: float(row["Value"]) for row in mrmlio.table_rows(table)
            if row["Unit"] == "mL" or row["Key"] == "mismatch_ratio"}


def _stroke(shape, where):
    mask = np.zeros(shape, np.uint8)
    mask[where] = 1
    return mask


def test_paint_and_erase_with_undo_then_update_follows_the_edits(mr_run, app):
    logic, nodes, outputs = mr_run
    segmentation, tmax = outputs["segmentation"], outputs["tmax"]
    result = logic.lastResult
    voxel_ml = result.geometry.voxel_volume_ml
    applied = _volumes(outputs["table"])
    content = segmentation.GetSegmentation()
    core_id = content.GetSegmentIdBySegmentName("Ischemic core")
    penumbra_id = content.GetSegmentIdBySegmentName("Penumbra")
    editor = app.segmentEditorLogic(segmentation, outputs["baseline"])
    masks = result.lesion.masks

    # paint: extend the core into 20 penumbra voxels (the editor moves them out of the penumbra)
    candidates = np.argwhere(masks["penumbra"])[:20]
    brush = np.zeros(result.geometry.shape, np.uint8)
    brush[tuple(candidates.T)] = 1
    assert editor.SaveStateForUndo()
    editor.ModifySegmentByLabelmap(segmentation, core_id, app.modifierLabelmap(brush, tmax),
                                   editor.ModificationModeAdd, False, False)
    painted = _volumes(logic.updateFromSegments(segmentation, tableNode=outputs["table"]))
    assert painted["core_ml"] == pytest.approx(applied["core_ml"] + 20 * voxel_ml)
    assert painted["penumbra_ml"] == pytest.approx(applied["penumbra_ml"] - 20 * voxel_ml)
    assert painted["hypoperfusion_ml"] == pytest.approx(applied["hypoperfusion_ml"])
    assert painted["mismatch_ratio"] < applied["mismatch_ratio"]

    # erase: remove a slab of penumbra outside the core (hypoperfusion shrinks)
    penumbra_now = np.asarray(mrmlio.masks_from_segmentation(segmentation, tmax)["penumbra"])
    k = int(np.argmax(penumbra_now.sum(axis=(1, 2))))
    eraser = np.zeros_like(brush)
    eraser[k] = penumbra_now[k]
    erased_voxels = int(eraser.sum())
    assert erased_voxels > 10
    assert editor.SaveStateForUndo()
    editor.ModifySegmentByLabelmap(segmentation, penumbra_id, app.modifierLabelmap(eraser, tmax),
                                   editor.ModificationModeRemove, False, False)
    erased = _volumes(logic.updateFromSegments(segmentation, tableNode=outputs["table"]))
    assert erased["penumbra_ml"] == pytest.approx(painted["penumbra_ml"] - erased_voxels * voxel_ml)
    assert erased["hypoperfusion_ml"] == pytest.approx(painted["hypoperfusion_ml"] - erased_voxels * voxel_ml)
    assert erased["core_ml"] == pytest.approx(painted["core_ml"])

    # undo twice: the segments and the numbers are Apply's again
    editor.Undo()
    assert _volumes(logic.updateFromSegments(segmentation, tableNode=outputs["table"])) == pytest.approx(painted)
    editor.Undo()
    back = _volumes(logic.updateFromSegments(segmentation, tableNode=outputs["table"]))
    assert back == pytest.approx(applied)
    restored = mrmlio.masks_from_segmentation(segmentation, tmax)
    np.testing.assert_array_equal(restored["core"], masks["core"])
    np.testing.assert_array_equal(restored["penumbra"], masks["penumbra"])
