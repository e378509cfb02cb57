"""MRML adapter: Slicer nodes <-> StrokeMismatchLib arrays (the only Lib module importing ``slicer``).

Everything here works in the ``slicer-core`` wheel (MRML classes plus ``slicer.util``) and in
3D Slicer itself, so it is tested with pytest (``Testing/test_mrmlio.py``):

- a Sequence node, its proxy volume, or a MultiVolume node -> :class:`~.series.PerfusionSeries`
  (signal ``[K, J, I, T]``, frame times in s, IJK-to-RAS), geometry checked frame by frame;
- parameter maps -> scalar volume nodes with the input geometry and map-specific display
  (colour table, window/level);
- lesion masks -> one segmentation with named, coloured segments (and closed surfaces);
  edited segments -> masks again;
- metrics and criteria -> one table node (value, unit, verdict, reasons);
- curves (AIF, tissue, one voxel's concentration and residue) -> table + plot series + chart
  (the curves themselves come from the pure-numpy ``inspector`` module);
- manual AIF points (markups) -> voxels.

Slicer conventions: arrays ``[k, j, i]``, RAS millimetres, time on the last axis.
"""

from __future__ import annotations

import math

import numpy as np
import slicer
import slicer.util
import vtk

from . import inspector
from .errors import InputDataError
from .geometry import Geometry
from .series import PerfusionSeries

# --- display conventions ---------------------------------------------------------------------

#: Per map: display name, unit, colour node ids (first one present wins; the last ones are
#: procedural tables present in every Slicer, including slicer-core), window range (min, max)
#: or None for automatic window/level.
MAP_DISPLAY = {
    "cbf": {
        "name": "CBF",
        "unit": "mL/100 g/min",
        "colors": ["vtkMRMLColorTableNodeFileColdToHotRainbow.txt", "vtkMRMLColorTableNodeRainbow"],
        "range": None,  # from the data: DSC-MR CBF is relative (scale of the AIF/tissue calibration)
    },
    "cbv": {
        "name": "CBV",
        "unit": "mL/100 g",
        "colors": ["vtkMRMLColorTableNodeFileColdToHotRainbow.txt", "vtkMRMLColorTableNodeRainbow"],
        "range": None,  # likewise
    },
    "mtt": {
        "name": "MTT",
        "unit": "s",
        "colors": ["vtkMRMLColorTableNodeFileColdToHotRainbow.txt", "vtkMRMLColorTableNodeRainbow"],
        "range": (0.0, 15.0),
    },
    "tmax": {
        "name": "Tmax",
        "unit": "s",
        "colors": ["vtkMRMLColorTableNodeFileColdToHotRainbow.txt", "vtkMRMLColorTableNodeRainbow"],
        "range": (0.0, 10.0),
    },
    "ttp": {
        "name": "TTP",
        "unit": "s",
        "colors": ["vtkMRMLColorTableNodeFileViridis.txt", "vtkMRMLColorTableNodeRainbow"],
        "range": None,
    },
}

#: Map values at or below this are not drawn in slice views (outside the brain, stored as 0).
MAP_HIDDEN_AT_OR_BELOW = 1e-6

#: Segment key -> (segment name shown in Slicer, RGB colour 0..1). The key is also the segment id.
SEGMENTS = {
    "core": ("Ischemic core", (0.90, 0.10, 0.10)),
    "penumbra": ("Penumbra", (0.10, 0.80, 0.20)),
    "tmax_gt_10": ("Tmax > 10 s", (0.95, 0.60, 0.10)),
    "hypoperfusion": ("Hypoperfusion (Tmax > 6 s)", (0.95, 0.85, 0.20)),
}

#: Unit strings (lower case) of a sequence index / frame label -> factor to seconds.
TIME_UNITS = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
              "millisecond": 1e-3, "milliseconds": 1e-3, "min": 60.0, "minute": 60.0,
              "minutes": 60.0}


# --- geometry -----------------------------------------------------------------------------------

def parent_to_world(node):
    """4×4 matrix of the linear transforms above ``node`` (its local RAS -> world RAS), or None
    when the node has no parent transform. A non-linear transform raises :class:`InputDataError`.

    ``GetIJKToRASMatrix`` ignores parent transforms, while markups, the crosshair and other
    volumes are in world RAS (GUIDE §3.8), so geometries are taken to world with this matrix.
    """
    get_parent = getattr(node, "GetParentTransformNode", None)  # sequence nodes are not transformable
    parent = get_parent() if get_parent is not None else None
    if parent is None:
        return None
    if not parent.IsTransformToWorldLinear():
        raise InputDataError(
            f"{node.GetName()!r} is under a non-linear transform: harden it (Data module, right-click "
            "the transform, 'Harden transform') before the analysis."
        )
    matrix = vtk.vtkMatrix4x4()
    parent.GetMatrixTransformToWorld(matrix)
    return slicer.util.arrayFromVTKMatrix(matrix)


def volume_geometry(volume_node) -> Geometry:
    """:class:`Geometry` (IJK-to-RAS and ``(K, J, I)`` shape) of a volume node, in world RAS:
    a linear parent transform (e.g. ADC aligned to the perfusion by a registration
    transform that was not hardened) is included."""
    matrix = vtk.vtkMatrix4x4()
    volume_node.GetIJKToRASMatrix(matrix)
    image = volume_node.GetImageData()
    if image is None:
        raise InputDataError(f"Volume {volume_node.GetName()!r} holds no image data.")
    dims = image.GetDimensions()
    ijk_to_ras = slicer.util.arrayFromVTKMatrix(matrix)
    to_world = parent_to_world(volume_node)
    if to_world is not None:
        ijk_to_ras = to_world @ ijk_to_ras
    return Geometry(ijk_to_ras, (dims[2], dims[1], dims[0]))


def apply_geometry(volume_node, geometry: Geometry) -> None:
    """Set a volume node's IJK-to-RAS matrix from ``geometry``."""
    volume_node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(geometry.ijk_to_ras))


# --- 4D input -----------------------------------------------------------------------------------

def is_multivolume(node) -> bool:
    """True for a ``vtkMRMLMultiVolumeNode`` (MultiVolumeExplorer, not in slicer-core)."""
    return node is not None and node.IsA("vtkMRMLMultiVolumeNode")


def resolve_perfusion_node(node):
    """Return ``("sequence", sequenceNode)`` or ``("multivolume", node)`` for what the user picked.

    Accepts a Sequence node, the proxy volume of a sequence browser, or a MultiVolume node.
    A plain 3D volume raises :class:`InputDataError`.
    """
    if node is None:
        raise InputDataError("No perfusion series selected: choose a Sequence, its volume or a MultiVolume.")
    if node.IsA("vtkMRMLSequenceNode"):
        return "sequence", node
    if is_multivolume(node):
        return "multivolume", node
    if node.IsA("vtkMRMLVolumeNode"):
        browser = None
        modules = getattr(slicer, "modules", None)
        sequences = getattr(modules, "sequences", None) if modules is not None else None
        if sequences is not None:
            browser = sequences.logic().GetFirstBrowserNodeForProxyNode(node)
        if browser is not None:
            sequence = browser.GetSequenceNode(node)
            if sequence is not None:
                return "sequence", sequence
        raise InputDataError(
            f"Volume {node.GetName()!r} is a single 3D volume, not a time series. Choose the "
            "perfusion Sequence (or its proxy volume in a sequence browser) or a MultiVolume node."
        )
    raise InputDataError(
        f"Node {node.GetName()!r} ({node.GetClassName()}) is not a perfusion series: choose a "
        "Sequence node, its proxy volume, or a MultiVolume node."
    )


def seconds_per_unit(unit: str | None, values=None) -> float:
    """Factor converting time values in ``unit`` to seconds.

    An empty unit is taken as seconds unless the median frame step is >= 100 (then
    milliseconds are far more plausible than 100-s frames): ``values`` are used for that guess.
    """
    text = (unit or "").strip().lower()
    if text in TIME_UNITS:
        return TIME_UNITS[text]
    if text:
        raise InputDataError(
            f"Unknown time unit {unit!r} of the frame times: expected s or ms. Set the sequence's "
            "index unit (Sequences module) or type the frame times."
        )
    if values is not None and len(values) > 1 and float(np.median(np.diff(values))) >= 100.0:
        return 1e-3
    return 1.0


def _parse_times(values, unit, what):
    try:
        raw = np.array([float(v) for v in values], dtype=float)
    except (TypeError, ValueError) as error:
        raise InputDataError(
            f"The {what} are not numbers ({error}); the series needs a numeric time index."
        ) from None
    return raw * seconds_per_unit(unit, raw)


def _find_attribute(nodes, names):
    for node in nodes:
        if node is None:
            continue
        for name in names:
            value = node.GetAttribute(name)
            if value not in (None, ""):
                try:
                    return float(value)
                except ValueError:
                    continue
    return None


_TE_ATTRIBUTES = ("MultiVolume.DICOM.EchoTime", "DICOM.EchoTime", "EchoTime", "StrokeMismatch.EchoTime")
_TR_ATTRIBUTES = ("MultiVolume.DICOM.RepetitionTime", "DICOM.RepetitionTime", "RepetitionTime",
                  "StrokeMismatch.RepetitionTime")
_MODALITY_ATTRIBUTES = ("DICOM.Modality", "Modality", "StrokeMismatch.Modality")


def frame_info(node) -> dict:
    """What the panel can pre-fill from the series: ``times`` (s), ``te`` / ``tr`` (s, None
    when unknown), ``modality`` ("mr", "ct" or None), ``kind`` and ``frames``.

    TE and TR are read from node attributes in ms (DICOM convention), e.g.
    ``MultiVolume.DICOM.EchoTime``.
    """
    kind, source = resolve_perfusion_node(node)
    if kind == "sequence":
        count = source.GetNumberOfDataNodes()
        if count < 2:
            raise InputDataError(f"Sequence {source.GetName()!r} has {count} frame(s); perfusion needs a time series.")
        values = [source.GetNthIndexValue(i) for i in range(count)]
        times = _parse_times(values, source.GetIndexUnit(), "sequence index values")
        holders = [source, source.GetNthDataNode(0), node]
    else:
        labels = source.GetAttribute("MultiVolume.FrameLabels") or ""
        unit = source.GetAttribute("MultiVolume.FrameIdentifyingDICOMTagUnits") or ""
        parts = [p for p in labels.split(",") if p.strip()]
        times = _parse_times(parts, unit, "MultiVolume frame labels") if parts else None
        holders = [source]
    te_ms = _find_attribute(holders, _TE_ATTRIBUTES)
    tr_ms = _find_attribute(holders, _TR_ATTRIBUTES)
    modality = None
    for holder in holders:
        if holder is None:
            continue
        for name in _MODALITY_ATTRIBUTES:
            value = (holder.GetAttribute(name) or "").strip().lower()
            if value in ("mr", "ct"):
                modality = value
                break
        if modality:
            break
    return {
        "kind": kind,
        "frames": None if times is None else int(times.size),
        "times": times,
        "te": None if te_ms is None else te_ms / 1000.0,
        "tr": None if tr_ms is None else tr_ms / 1000.0,
        "modality": modality,
    }


def _check_times(times, frames, name):
    if times.shape != (frames,):
        raise InputDataError(f"{name}: {times.size} frame times for {frames} frames.")
    if not np.all(np.isfinite(times)) or np.any(np.diff(times) <= 0):
        raise InputDataError(
            f"{name}: frame times must increase strictly (got {np.round(times[:6], 3).tolist()}...). "
            "Check the sequence index values or type the frame times."
        )


def series_from_node(node, *, times=None, modality=None, te=None, tr=None) -> PerfusionSeries:
    """Read a Sequence / proxy volume / MultiVolume into a :class:`PerfusionSeries`.

    ``times`` (s) overrides the frame times found in the node; ``te``/``tr`` in s override the
    node attributes; ``modality`` "mr"/"ct". Every frame must share frame 0's grid (dimensions
    and IJK-to-RAS within 1e-3 mm), otherwise :class:`InputDataError`.
    """
    kind, source = resolve_perfusion_node(node)
    info = frame_info(node)
    if kind == "sequence":
        count = source.GetNumberOfDataNodes()
        first = source.GetNthDataNode(0)
        if first is None or not first.IsA("vtkMRMLScalarVolumeNode"):
            raise InputDataError(
                f"Sequence {source.GetName()!r} does not hold scalar volumes; a perfusion series "
                "must be a sequence of 3D images."
            )
        geometry = volume_geometry(first)
        signal = None  # one float32 copy of the 4D data, filled frame by frame
        for index in range(count):
            frame = source.GetNthDataNode(index)
            frame_geometry = volume_geometry(frame)
            if not frame_geometry.same_grid(geometry):
                raise InputDataError(
                    f"Frame {index} of sequence {source.GetName()!r} has a different grid "
                    f"({frame_geometry.shape}) or position than frame 0 ({geometry.shape}). "
                    "Resample the series to one grid before the analysis."
                )
            array = slicer.util.arrayFromVolume(frame)  # a view of the frame's image data
            if array.ndim != 3:
                raise InputDataError(f"Frame {index} is not a scalar 3D volume (shape {array.shape}).")
            if signal is None:
                signal = np.empty(array.shape + (count,), dtype=np.float32)
            signal[..., index] = array
        name = source.GetName()
        to_world = parent_to_world(node)  # the proxy's transform (frames live outside the scene)
        if to_world is not None:
            geometry = Geometry(to_world @ geometry.ijk_to_ras, geometry.shape)
    else:
        signal = np.array(slicer.util.arrayFromVolume(source), dtype=np.float32, copy=True)
        if signal.ndim != 4:
            raise InputDataError(f"MultiVolume {source.GetName()!r} is not 4D (shape {signal.shape}).")
        geometry = volume_geometry(source)
        name = source.GetName()
    if times is None:
        times = info["times"]
        if times is None:
            raise InputDataError(
                f"{name!r} carries no frame times: type them (comma separated, s) in the panel."
            )
    times = np.asarray(times, dtype=float)
    _check_times(times, signal.shape[3], name)
    return PerfusionSeries(
        signal=signal,
        times=times,
        geometry=geometry,
        modality=modality if modality is not None else info["modality"],
        te=te if te is not None else info["te"],
        tr=tr if tr is not None else info["tr"],
        source=f"Slicer {kind} {name}",
        metadata={"node_id": node.GetID(), "kind": kind},
    )


def sequence_from_series(series: PerfusionSeries, name="Perfusion", scene=None):
    """A Sequence node (index "time" in s) with one scalar volume per frame of ``series``."""
    scene = scene or slicer.mrmlScene
    sequence = scene.AddNewNodeByClass("vtkMRMLSequenceNode", name)
    sequence.SetIndexName("time")
    sequence.SetIndexUnit("s")
    sequence.SetIndexType(sequence.NumericIndex)
    frame = slicer.vtkMRMLScalarVolumeNode()
    apply_geometry(frame, series.geometry)
    for index, time in enumerate(series.times):
        slicer.util.updateVolumeFromArray(frame, np.ascontiguousarray(series.signal[..., index], dtype=np.float32))
        apply_geometry(frame, series.geometry)
        sequence.SetDataNodeAtValue(frame, f"{float(time):.6g}")
    for key, value in (("StrokeMismatch.EchoTime", series.te), ("StrokeMismatch.RepetitionTime", series.tr)):
        if value is not None:
            sequence.SetAttribute(key, f"{value * 1000.0:g}")
    if series.modality:
        sequence.SetAttribute("StrokeMismatch.Modality", series.modality.upper())
    return sequence


# --- maps -> volumes ----------------------------------------------------------------------------

def volume_from_array(array, geometry: Geometry, name, *, node=None, scene=None, nan_value=0.0):
    """Scalar volume node (float32) holding ``array`` ``[K, J, I]`` on ``geometry``.

    NaN (outside the analysed mask) is stored as ``nan_value`` because Slicer's window/level
    and histograms do not handle NaN. ``node`` is reused when given, else a new node is added.
    """
    array = np.asarray(array)
    if array.shape != geometry.shape:
        raise InputDataError(f"Map {name!r} has shape {array.shape}, expected {geometry.shape}.")
    data = np.where(np.isfinite(array), array, nan_value).astype(np.float32)
    if node is None:
        scene = scene or slicer.mrmlScene
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, data)
    apply_geometry(node, geometry)
    if node.GetDisplayNode() is None:
        node.CreateDefaultDisplayNodes()
    return node


def first_existing_color_id(candidates, scene=None):
    """First colour node id of ``candidates`` present in the scene (file-based tables are
    absent in slicer-core), else the last candidate."""
    scene = scene or slicer.mrmlScene
    for node_id in candidates:
        if scene.GetNodeByID(node_id) is not None:
            return node_id
    return candidates[-1]


def set_map_display(volume_node, key):
    """Colour table, window/level (e.g. Tmax 0-10 s) and no interpolation for map ``key``."""
    spec = MAP_DISPLAY[key]
    display = volume_node.GetDisplayNode()
    if display is None:
        volume_node.CreateDefaultDisplayNodes()
        display = volume_node.GetDisplayNode()
    display.SetAndObserveColorNodeID(first_existing_color_id(spec["colors"], volume_node.GetScene()))
    display.SetInterpolate(0)
    if spec["range"] is None:
        array = slicer.util.arrayFromVolume(volume_node)
        values = array[array > 0]
        low, high = (0.0, float(np.percentile(values, 99))) if values.size else (0.0, 1.0)
        if high <= low:
            high = low + 1.0
    else:
        low, high = spec["range"]
    display.SetAutoWindowLevel(0)
    display.SetWindowLevelMinMax(low, high)
    # Outside the analysed brain the maps hold 0 (the Lib's NaN): shown as foreground, 0 would
    # tint the whole view with the colour table's first colour. Values at or below
    # MAP_HIDDEN_AT_OR_BELOW are transparent (the background shows through).
    display.SetApplyThreshold(1)
    display.SetLowerThreshold(MAP_HIDDEN_AT_OR_BELOW)
    display.SetUpperThreshold(float(np.finfo(np.float32).max))
    volume_node.SetAttribute("StrokeMismatch.Map", key)
    volume_node.SetAttribute("StrokeMismatch.Unit", spec["unit"])
    return display


def maps_to_volumes(maps, geometry: Geometry, *, prefix="", nodes=None, scene=None):
    """Volume nodes for the CBF, CBV, MTT, Tmax and TTP arrays of a ``PerfusionMaps``
    (attributes ``cbf``...) or a dict. Returns ``{key: node}``; ``nodes`` reuses existing nodes."""
    nodes = dict(nodes or {})
    result = {}
    for key, spec in MAP_DISPLAY.items():
        array = maps.get(key) if isinstance(maps, dict) else getattr(maps, key, None)
        if array is None:
            continue
        node = volume_from_array(array, geometry, f"{prefix}{spec['name']}", node=nodes.get(key), scene=scene)
        set_map_display(node, key)
        result[key] = node
    return result


# --- masks <-> segmentation ---------------------------------------------------------------------

def segmentation_from_masks(masks, reference_volume, *, name="Lesion", segmentation=None,
                            keys=("core", "penumbra", "tmax_gt_10"), closed_surface=True, scene=None):
    """One segmentation with a segment per mask in ``keys`` that ``masks`` holds.

    Segment ids are the keys ("core"...), names and colours come from :data:`SEGMENTS`. Masks
    are bool/0-1 arrays on ``reference_volume``'s grid. Closed surfaces are created for 3D.
    """
    scene = scene or slicer.mrmlScene
    geometry = volume_geometry(reference_volume)
    if segmentation is None:
        segmentation = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        segmentation.CreateDefaultDisplayNodes()
    segmentation.SetReferenceImageGeometryParameterFromVolumeNode(reference_volume)
    content = segmentation.GetSegmentation()
    segmentation.SetSourceRepresentationToBinaryLabelmap()
    display = segmentation.GetDisplayNode()
    for key in keys:
        if key not in masks or masks[key] is None:
            continue
        mask = np.asarray(masks[key])
        if mask.shape != geometry.shape:
            raise InputDataError(f"Mask {key!r} has shape {mask.shape}, expected {geometry.shape}.")
        label, color = SEGMENTS.get(key, (key, (0.5, 0.5, 0.5)))
        segment_id = content.GetSegmentIdBySegmentName(label) or ""
        if not segment_id:
            segment_id = content.AddEmptySegment(key, label, list(color))
        set_segment_mask(mask, segmentation, segment_id, reference_volume)
        if display is not None:
            display.SetSegmentOpacity3D(segment_id, 0.5 if key == "core" else 0.3)
    if closed_surface:
        content.SetConversionParameter("Smoothing factor", "0.3")
        segmentation.CreateClosedSurfaceRepresentation()
    if display is not None:
        display.SetOpacity2DFill(0.15)
        display.SetOpacity2DOutline(1.0)
        display.SetVisibility2DFill(1)
        display.SetVisibility2DOutline(1)
    return segmentation


def set_segment_mask(mask, segmentation, segment_id, reference_volume) -> None:
    """Replace a segment's binary labelmap by ``mask`` (``[K, J, I]`` on the reference grid).

    Same as ``slicer.util.updateSegmentBinaryLabelmapFromArray`` without leaving the temporary
    labelmap's display node in the scene (that helper leaks one per call).
    """
    scene = segmentation.GetScene()
    labelmap = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "__StrokeMismatch_temp__")
    try:
        slicer.util.updateVolumeFromArray(labelmap, (np.asarray(mask) > 0).astype(np.uint8))
        matrix = vtk.vtkMatrix4x4()
        reference_volume.GetIJKToRASMatrix(matrix)
        labelmap.SetIJKToRASMatrix(matrix)
        labelmap.SetAndObserveTransformNodeID(reference_volume.GetTransformNodeID())
        segment_ids = vtk.vtkStringArray()
        segment_ids.InsertNextValue(segment_id)
        if not slicer.modules.segmentations.logic().ImportLabelmapToSegmentationNode(labelmap, segmentation,
                                                                                      segment_ids):
            raise InputDataError(f"Could not write segment {segment_id!r} of {segmentation.GetName()!r}.")
    finally:
        scene.RemoveNode(labelmap)


def masks_from_segmentation(segmentation, reference_volume, keys=None):
    """``{key: bool [K, J, I]}`` read back from a segmentation (after edits in Segment Editor).

    Segments are found by their name in :data:`SEGMENTS` (or by id); missing ones are skipped.
    """
    content = segmentation.GetSegmentation()
    result = {}
    for key in keys or SEGMENTS:
        label = SEGMENTS.get(key, (key,))[0]
        segment_id = content.GetSegmentIdBySegmentName(label) or ""
        if not segment_id and content.GetSegment(key) is not None:
            segment_id = key
        if not segment_id:
            continue
        array = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segment_id, reference_volume)
        result[key] = np.asarray(array) > 0
    return result


# --- metrics -> table ---------------------------------------------------------------------------

def _as_mapping(item):
    """A dict view of a metric / criterion given as dict, dataclass with ``to_dict`` or object."""
    if isinstance(item, dict):
        return item
    if hasattr(item, "to_dict"):
        mapping = dict(item.to_dict())
        for key in ("criteria",):  # keep the objects (their ``reason``) rather than dicts
            if hasattr(item, key):
                mapping[key] = getattr(item, key)
        return mapping
    return None


def _metric_value_unit(value):
    """(label, number or text, unit, note) from the forms a metric may take: a ``metrics.Metric``
    or dict with value/unit/label/flag/note, a (value, unit) tuple, or a bare number."""
    label, unit, note = "", "", ""
    mapping = _as_mapping(value)
    if mapping is not None:
        unit = str(mapping.get("unit") or "")
        label = str(mapping.get("label") or "")
        notes = [str(mapping[k]) for k in ("flag", "note", "description") if mapping.get(k)]
        note = "; ".join(notes)
        value = mapping.get("value")
    elif isinstance(value, (tuple, list)) and len(value) == 2 and isinstance(value[1], str):
        value, unit = value
    return label, value, unit, note


def _criterion_fields(criterion):
    """(name, verdict text, reasons text) of a trial rule / criterion (``criteria.RuleResult``,
    its ``to_dict()``, or any dict / object with name, verdict or status or eligible, reasons)."""
    mapping = _as_mapping(criterion)
    get = mapping.get if mapping is not None else (lambda k, d=None: getattr(criterion, k, d))
    name = get("name") or get("rule") or get("criterion") or "criterion"
    verdict = get("verdict") or get("status")
    if verdict is None:
        eligible = get("eligible", get("met", get("passed")))
        verdict = {True: "met", False: "not met", None: "undetermined"}.get(eligible, str(eligible))
    reasons = get("reasons") or get("reason") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    reasons = list(reasons)
    if not reasons:  # e.g. an eligible rule: say why each criterion passed
        for item in get("criteria") or []:
            sub = _as_mapping(item) or {}
            text = sub.get("reason") if sub else getattr(item, "reason", "")
            if text:
                reasons.append(str(text))
    not_checked = get("not_checked") or []
    if not_checked:
        reasons.append("not checked: " + ", ".join(str(n) for n in not_checked))
    return str(name), str(verdict), "; ".join(str(r) for r in reasons)


def _quality_status(flags):
    """``quality.quality_status(flags)``: pass / warn / fail and its meaning."""
    from .quality import quality_status

    return quality_status([flag.to_dict() if hasattr(flag, "to_dict") else dict(flag) for flag in (flags or ())])


def table_from_metrics(metrics: dict, criteria=(), *, quality=(), table=None, name="Mismatch summary",
                       scene=None, side=None, stability=None):
    """A table node with columns Item, Value, Unit, Verdict, Details, Key.

    First the quality status (``quality.quality_status``: pass / warn / fail, key
    ``quality_status``), the verdict stability (``stability.verdict_stability``: stable / near a
    cut-off, key ``stability_status``) and the affected side (key ``affected_side``) when given,
    then one row per metric (label, numeric value - NaN when undefined or
    infinite, unit, flag and note), one per trial rule (its verdict and the reasons), then one per quality-control flag
    (``quality.QualityFlag`` or its dict: message, severity as the verdict, what it means for
    trusting the mismatch as the details; key ``quality:<code>``). Units vary per row, so they
    are in the Unit column.
    """
    scene = scene or slicer.mrmlScene
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", name)
    table.RemoveAllColumns()
    items, values, units, verdicts, details, keys = (vtk.vtkStringArray(), vtk.vtkDoubleArray(),
                                                     vtk.vtkStringArray(), vtk.vtkStringArray(),
                                                     vtk.vtkStringArray(), vtk.vtkStringArray())
    for array, column in ((items, "Item"), (values, "Value"), (units, "Unit"), (verdicts, "Verdict"),
                          (details, "Details"), (keys, "Key")):
        array.SetName(column)
    status = _quality_status(quality)  # first: can this case support a verdict at all?
    items.InsertNextValue("Quality status")
    keys.InsertNextValue("quality_status")
    values.InsertNextValue(math.nan)
    units.InsertNextValue("")
    verdicts.InsertNextValue(str(status.get("status", "")))
    details.InsertNextValue(str(status.get("meaning", "")))
    rows = []
    if stability:
        near = stability.get("status") == "near_cutoff"
        rows.append(("Verdict stability", "stability_status", "near a cut-off" if near else "stable",
                     "; ".join(f.get("message", "") for f in stability.get("findings") or []) if near else
                     "no verdict changes within ±1 s Tmax, ±50 ADC / ±5 points rCBF, or ±10 % of a limit"))
    if side is not None:
        rows.append(("Affected side", "affected_side", side if side in ("left", "right") else "not determined", ""))
    for item, key, verdict, detail in rows:
        items.InsertNextValue(item)
        keys.InsertNextValue(key)
        values.InsertNextValue(math.nan)
        units.InsertNextValue("")
        verdicts.InsertNextValue(verdict)
        details.InsertNextValue(detail)
    for key, raw in (metrics or {}).items():
        label, value, unit, note = _metric_value_unit(raw)
        if isinstance(value, bool):
            verdicts.InsertNextValue("yes" if value else "no")
            value = float(value)
        elif isinstance(value, str):
            verdicts.InsertNextValue(value)
            value = math.nan
        else:
            verdicts.InsertNextValue("")
        try:
            number = math.nan if value is None else float(value)
        except (TypeError, ValueError):
            number = math.nan
        items.InsertNextValue(label or str(key))
        keys.InsertNextValue(str(key))
        values.InsertNextValue(number)
        units.InsertNextValue(unit)
        details.InsertNextValue(note)
    for criterion in criteria or ():
        name_text, verdict, reasons = _criterion_fields(criterion)
        items.InsertNextValue(name_text)
        keys.InsertNextValue("criterion")
        values.InsertNextValue(math.nan)
        units.InsertNextValue("")
        verdicts.InsertNextValue(verdict)
        details.InsertNextValue(reasons)
    for flag in quality or ():
        flag = flag.to_dict() if hasattr(flag, "to_dict") else dict(flag)
        items.InsertNextValue(str(flag.get("message", "")))
        keys.InsertNextValue(f"quality:{flag.get('code', '')}")
        values.InsertNextValue(math.nan)
        units.InsertNextValue("")
        verdicts.InsertNextValue(str(flag.get("severity", "")))
        details.InsertNextValue(str(flag.get("explanation", "")))
    for array in (items, values, units, verdicts, details, keys):
        table.AddColumn(array)
    table.SetColumnDescription("Value", "Numeric value of the metric (NaN for criteria and undefined ratios)")
    table.SetColumnDescription("Unit", "Unit of the value on the same row")
    table.SetColumnDescription("Verdict", "Criterion verdict, yes/no for flags, or quality-flag severity")
    table.SetColumnDescription("Details", "Reasons for the verdict, or notes on the metric")
    table.SetColumnDescription("Key", "Machine-readable metric name (summary.json), 'criterion' or 'quality:<code>'")
    table.Modified()
    return table


def table_rows(table) -> list[dict]:
    """The rows of a summary table as dicts keyed by column name (for tests and the console)."""
    vtk_table = table.GetTable()
    names = [vtk_table.GetColumnName(c) for c in range(vtk_table.GetNumberOfColumns())]
    return [{name: table.GetCellText(row, column) for column, name in enumerate(names)}
            for row in range(table.GetNumberOfRows())]


# --- curves -> plot -----------------------------------------------------------------------------

def plot_curves(x, curves: dict, *, chart=None, name="Curves", x_title="Time (s)", y_title="Concentration",
                scene=None):
    """Table + one plot series per curve + a chart. ``curves`` maps legend -> y array; each
    may also be ``(x, y)`` when it has its own time axis (e.g. a residue). Reuses ``chart``
    (and its table and series nodes, renamed to the new legends) when given, so refreshing on
    every mouse move creates no new nodes. Returns the chart node."""
    scene = scene or slicer.mrmlScene
    if chart is None:
        chart = scene.AddNewNodeByClass("vtkMRMLPlotChartNode", name)
    chart.SetXAxisTitle(x_title)
    chart.SetYAxisTitle(y_title)
    chart.SetTitle(name)
    table = None
    table_id = chart.GetAttribute("StrokeMismatch.TableID")
    if table_id:
        table = scene.GetNodeByID(table_id)
    if table is None:
        table = scene.AddNewNodeByClass("vtkMRMLTableNode", f"{name} table")
        chart.SetAttribute("StrokeMismatch.TableID", table.GetID())
    chart.RemoveAllPlotSeriesNodeIDs()
    table.RemoveAllColumns()
    x = np.asarray(x, dtype=float)
    length = max([x.size] + [np.asarray(c[1] if isinstance(c, tuple) else c).size for c in curves.values()])
    columns = {}

    def add_column(column_name, data):
        padded = np.full(length, np.nan)
        data = np.asarray(data, dtype=float).ravel()
        padded[:data.size] = data
        array = vtk.vtkDoubleArray()
        array.SetName(column_name)
        for number in padded:
            array.InsertNextValue(float(number))
        table.AddColumn(array)
        columns[column_name] = data.size

    add_column("time", x)
    colors = [(0.85, 0.1, 0.1), (0.1, 0.35, 0.85), (0.1, 0.65, 0.2), (0.6, 0.2, 0.7), (0.9, 0.55, 0.1),
              (0.3, 0.3, 0.3)]
    for index, (legend, curve) in enumerate(curves.items()):
        x_column = "time"
        if isinstance(curve, tuple):
            x_column = f"{legend} time"
            add_column(x_column, curve[0])
            curve = curve[1]
        add_column(legend, curve)
        series = None
        series_id = chart.GetAttribute(f"StrokeMismatch.Series{index}")
        if series_id:
            series = scene.GetNodeByID(series_id)
        if series is None:
            series = scene.AddNewNodeByClass("vtkMRMLPlotSeriesNode", legend)
            chart.SetAttribute(f"StrokeMismatch.Series{index}", series.GetID())
        series.SetName(legend)  # the legend shows the series name
        series.SetAndObserveTableNodeID(table.GetID())
        series.SetXColumnName(x_column)
        series.SetYColumnName(legend)
        series.SetPlotType(series.PlotTypeScatter)
        series.SetMarkerStyle(series.MarkerStyleNone)
        series.SetColor(*colors[index % len(colors)])
        chart.AddAndObservePlotSeriesNodeID(series.GetID())
    index = len(curves)
    while chart.GetAttribute(f"StrokeMismatch.Series{index}"):  # drop series no longer used
        stale = scene.GetNodeByID(chart.GetAttribute(f"StrokeMismatch.Series{index}"))
        if stale is not None:
            scene.RemoveNode(stale)
        chart.RemoveAttribute(f"StrokeMismatch.Series{index}")
        index += 1
    table.Modified()
    return chart


# --- manual AIF points ---------------------------------------------------------------------------

def markups_voxels(markups_node, geometry: Geometry) -> np.ndarray:
    """``(N, 3)`` int array of ``(k, j, i)`` for the markups control points inside the grid
    (world coordinates). Raises :class:`InputDataError` when none is inside."""
    if markups_node is None or markups_node.GetNumberOfControlPoints() == 0:
        raise InputDataError("Place at least one AIF point in an artery (markups point list), or choose automatic AIF.")
    points = slicer.util.arrayFromMarkupsControlPoints(markups_node, world=True)
    voxels = [v for v in (inspector.ras_to_voxel(geometry, p) for p in np.atleast_2d(points)) if v is not None]
    if not voxels:
        raise InputDataError("None of the AIF points lies inside the perfusion volume: move them onto an artery.")
    return np.array(voxels, dtype=int)



#: Masks of the analysis kept in the scene for "Update from segments" (one bit each).
ANALYSIS_MASKS = ("tmax_gt_4", "tmax_gt_8", "tmax_gt_10", "hypoperfusion", "brain")


def analysis_masks_volume(masks: dict, reference_volume, name, *, node=None, scene=None):
    """A label map holding the analysis' masks :data:`ANALYSIS_MASKS` (the cleaned Tmax > 4/8/10 s
    masks, the hypoperfusion as analysed, the analysed brain) as bits; attribute
    ``StrokeMismatch.Masks`` lists them in bit order. Hidden from the node selectors: it is what
    :func:`recompute_from_segmentation` needs to do what ``stroke-mismatch recompute`` does."""
    geometry = volume_geometry(reference_volume)
    bits = np.zeros(geometry.shape, np.uint8)
    names = [key for key in ANALYSIS_MASKS if masks.get(key) is not None]
    for bit, key in enumerate(names):
        bits |= (np.asarray(masks[key], dtype=bool).astype(np.uint8) << bit)
    if node is None:
        scene = scene or reference_volume.GetScene()
        node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
    slicer.util.updateVolumeFromArray(node, bits)
    apply_geometry(node, geometry)
    node.SetHideFromEditors(1)
    node.SetAttribute("StrokeMismatch.Masks", ",".join(names))
    return node


def masks_from_analysis_volume(volume) -> dict:
    """``{name: bool mask}`` back from :func:`analysis_masks_volume`."""
    names = [n for n in (volume.GetAttribute("StrokeMismatch.Masks") or "").split(",") if n]
    bits = np.asarray(slicer.util.arrayFromVolume(volume))
    return {name: (bits & (1 << bit)) > 0 for bit, name in enumerate(names)}


def recompute_from_segmentation(segmentation, reference_volume, *, tmax_volume=None, cbv_volume=None,
                                analysis_masks=None, hemispheres=None, settings=None, quality=(), table=None):
    """Metrics and criteria from the (hand-edited) "Ischemic core" and "Penumbra" segments, as
    ``stroke-mismatch recompute`` does (``analysis.metrics_from_masks``).

    Hypoperfusion = core ∪ penumbra. ``analysis_masks`` (the label map of
    :func:`analysis_masks_volume`): while the hypoperfusion equals the analysed one, the
    analysis' cleaned Tmax > 4/8/10 s masks are used as they are (no edit, or core-only edits,
    give Apply's Tmax volumes exactly); once it is edited, ``tmax_volume`` (the Tmax map node)
    gives Tmax > 8/10 s inside the edited hypoperfusion and Tmax > 4 s as (Tmax > 4 s in the
    analysed brain) ∪ hypoperfusion. ``cbv_volume`` adds the CBV index. ``quality``: the
    analysis' QC flags, still true of the edited masks' source data: an error keeps every
    verdict indeterminate (quality), as in the analysis. The segmentation is only read, never
    changed. Writes ``table`` (or a new table node) and returns ``(table, MaskMetrics)``.
    """
    from .analysis import metrics_from_masks

    geometry = volume_geometry(reference_volume)
    masks = masks_from_segmentation(segmentation, reference_volume, keys=("core", "penumbra"))
    if "core" not in masks and "penumbra" not in masks:
        raise InputDataError(
            f"Segmentation {segmentation.GetName()!r} has no 'Ischemic core' or 'Penumbra' segment: "
            "choose the segmentation made by Apply (segment names must be kept)."
        )
    empty = np.zeros(geometry.shape, bool)
    core = masks.get("core", empty)
    penumbra = masks.get("penumbra", empty)
    hypoperfusion = core | penumbra
    tmax_masks = brain = None
    if analysis_masks is not None:
        analysed = masks_from_analysis_volume(analysis_masks)
        brain = analysed.get("brain")
        if "hypoperfusion" in analysed and np.array_equal(analysed["hypoperfusion"], hypoperfusion):
            tmax_masks = {key: mask for key, mask in analysed.items() if key.startswith("tmax_gt_")}
    tmax = None if tmax_volume is None else np.array(slicer.util.arrayFromVolume(tmax_volume), dtype=np.float32)
    cbv = None if cbv_volume is None else np.array(slicer.util.arrayFromVolume(cbv_volume), dtype=np.float32)
    result = metrics_from_masks(core, hypoperfusion, geometry, tmax=tmax, tmax_masks=tmax_masks, brain=brain,
                                cbv=cbv, hemispheres=hemispheres, settings=settings,
                                quality_flags=list(quality or ()))
    table = table_from_metrics(result.metrics, result.criteria, quality=quality, table=table,
                               name=f"{segmentation.GetName()} summary (edited)",
                               scene=segmentation.GetScene())
    table.SetAttribute("StrokeMismatch.Source", "segments")
    return table, result


# --- one analysed case -> all output nodes --------------------------------------------------------

def write_case_outputs(result, *, base_name="Perfusion", reuse=None, show_tmax_above_10=True, scene=None) -> dict:
    """All output nodes of an analysed case (``pipeline.CaseResult``).

    Returns ``{"cbf", "cbv", "mtt", "tmax", "ttp", "baseline"}`` volumes, ``"segmentation"``
    (segments core / penumbra [/ Tmax > 10 s], closed surfaces), ``"table"`` (metrics and
    criteria), ``"aifChart"`` and ``"analysisMasks"`` (hidden label map of the analysis' cleaned
    Tmax masks, hypoperfusion and brain, see :func:`analysis_masks_volume`). ``reuse``: the dict of a previous run whose nodes are
    overwritten; otherwise new nodes named "<base_name> lesion", "<base_name> CBF"... (made
    unique). Every node gets the attribute ``StrokeMismatch.Run``; the segmentation records its
    Tmax, CBV and analysis-masks volume ids for :func:`recompute_from_segmentation`.
    """
    scene = scene or slicer.mrmlScene
    # nodes of the previous run that the user deleted meanwhile are made anew
    reuse = {key: node for key, node in (reuse or {}).items() if node is not None and node.GetScene() is scene}
    if "segmentation" in reuse:
        run_name = reuse["segmentation"].GetName()
    else:
        run_name = scene.GenerateUniqueName(f"{base_name} lesion")
    prefix = run_name[: -len("lesion")] if run_name.endswith(" lesion") else run_name + " "
    geometry = result.geometry
    arrays = result.map_arrays() if hasattr(result, "map_arrays") else result.maps
    outputs = maps_to_volumes(arrays, geometry, prefix=prefix, nodes=reuse, scene=scene)
    outputs["baseline"] = volume_from_array(result.baseline_image, geometry, prefix + "baseline",
                                            node=reuse.get("baseline"), scene=scene)
    keys = ("core", "penumbra") + (("tmax_gt_10",) if show_tmax_above_10 else ())
    outputs["segmentation"] = segmentation_from_masks(result.lesion.masks, outputs["tmax"], name=run_name,
                                                      segmentation=reuse.get("segmentation"), keys=keys, scene=scene)
    outputs["table"] = table_from_metrics(result.lesion.metrics, result.lesion.criteria,
                                          quality=getattr(result, "quality", None) or (),
                                          table=reuse.get("table"), name=prefix + "summary", scene=scene,
                                          side=result.lesion.affected_side, stability=getattr(result, "stability", None))
    outputs["aifChart"] = plot_curves(result.series.times, inspector.case_curves(result), chart=reuse.get("aifChart"),
                                      name=prefix + "AIF", y_title="Concentration (a.u.)", scene=scene)
    analysed = dict(result.lesion.masks, brain=result.lesion.masks.get("brain", result.brain_mask))
    outputs["analysisMasks"] = analysis_masks_volume(analysed, outputs["tmax"], prefix + "analysis masks",
                                                     node=reuse.get("analysisMasks"), scene=scene)
    for node in outputs.values():
        node.SetAttribute("StrokeMismatch.Run", run_name)
    segmentation = outputs["segmentation"]
    segmentation.SetAttribute("StrokeMismatch.TmaxVolumeID", outputs["tmax"].GetID())
    segmentation.SetAttribute("StrokeMismatch.CBVVolumeID", outputs["cbv"].GetID())
    segmentation.SetAttribute("StrokeMismatch.AnalysisMasksVolumeID", outputs["analysisMasks"].GetID())
    return outputs


# --- sample case -> nodes -------------------------------------------------------------------------

def sample_case_nodes(case, scene=None) -> dict:
    """Scene nodes of a ``samplecase.SampleCase``: ``"sequence"`` (frame times in s, TE/TR and
    modality as attributes), its ``"browser"`` and ``"proxy"`` volume (as Slicer makes when it
    loads a ``.seq.nrrd``), and for MR the ``"adc"`` volume. Names: "<name>" and "<name> ADC"."""
    scene = scene or slicer.mrmlScene
    nodes = {"sequence": sequence_from_series(case.series, name=case.name, scene=scene)}
    browser = scene.AddNewNodeByClass("vtkMRMLSequenceBrowserNode", f"{case.name} browser")
    browser.SetAndObserveMasterSequenceNodeID(nodes["sequence"].GetID())
    slicer.modules.sequences.logic().UpdateProxyNodesFromSequences(browser)
    nodes["browser"] = browser
    nodes["proxy"] = browser.GetProxyNode(nodes["sequence"])
    if case.adc is not None:
        nodes["adc"] = volume_from_array(case.adc, case.adc_geometry, f"{case.name} ADC", scene=scene)
    return nodes
