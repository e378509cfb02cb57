"""Results as DICOM objects, for PACS: segmentation, parametric maps, summary capture and SR.

For a case analysed from a DICOM series, :func:`build_dicom_objects` makes (with highdicom):

- a **Segmentation** (binary, overlapping segments): ischemic core, penumbra, hypoperfused
  tissue (Tmax above the threshold), coded (SNOMED CT where a concept exists, else the private
  scheme :data:`SCHEME`), in the report's colours, on the source frame of reference;
- one **Parametric Map** per map (CBF, CBV, MTT, Tmax), float32, NaN outside the brain, quantity
  (DCM) and unit (UCUM) coded; DSC-MR CBF/CBV are coded as *relative* blood flow/volume;
- a **Secondary Capture** of the report's first page: case line, quality status, headline numbers,
  trial verdicts and the core/penumbra montage, drawn with matplotlib (no browser is needed);
- a **Comprehensive 3D SR** (TID 1500 measurement report): the volume of each segment (mL,
  referencing the SEG), the mismatch ratio and volume, and each trial rule's verdict and the
  quality status as coded qualitative evaluations.

Every object is a new series (new Series/SOP Instance UIDs) in the **source study**, with the
patient and study attributes copied from the source, and "NOT FOR CLINICAL USE" in its series
description. Objects are only made for DICOM input: a NIfTI or NRRD input has no patient, study
or frame of reference to attach results to, and invented ones would put unlinked objects into a
PACS (:func:`require_dicom_source` says so).

The Slicer panel calls :func:`export_dicom` with its (edited) masks and maps arrays.
Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

import io
import os
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import DISCLAIMER, __version__
from .errors import InputDataError, InputFileError, OutputError
from .geometry import LPS_TO_RAS, Geometry

SCHEME = "99STRKMSM"  # private coding scheme designator (PS3.16 §8: "99" prefix)
MANUFACTURER = "StrokeMismatch (open source)"
MODEL = "StrokeMismatch"
NOT_CLINICAL = "NOT FOR CLINICAL USE"

SEGMENTS = (  # name, label, (code value, scheme, meaning), report colour RGB 0..1
    ("core", "Ischemic core", ("55641003", "SCT", "Infarct"), (0.92, 0.05, 0.05)),
    ("penumbra", "Penumbra", ("PENUMBRA", SCHEME, "Ischemic penumbra"), (0.10, 0.85, 0.20)),
    ("hypoperfusion", "Hypoperfused tissue", ("52674009", "SCT", "Ischemia"), (1.00, 0.80, 0.00)),
)
MAP_ORDER = ("cbf", "cbv", "mtt", "tmax")
#: map -> (label, UCUM unit code, unit meaning, quantity (value, scheme, meaning) for CT and MR)
MAP_CODES = {
    "cbf": ("CBF", "ml/(100.g.min)", "milliliter per 100 gram per minute",
            {"ct": ("126390", "DCM", "Absolute Regional Blood Flow"),
             "mr": ("126397", "DCM", "Relative Regional Blood Flow")}),
    "cbv": ("CBV", "ml/(100.g)", "milliliter per 100 gram",
            {"ct": ("126391", "DCM", "Absolute Regional Blood Volume"),
             "mr": ("126398", "DCM", "Relative Regional Blood Volume")}),
    "mtt": ("MTT", "s", "second", {m: ("113052", "DCM", "Mean Transit Time") for m in ("ct", "mr")}),
    "tmax": ("Tmax", "s", "second", {m: ("113084", "DCM", "Tmax") for m in ("ct", "mr")}),
}
SERIES_NUMBERS = {"seg": 9001, "cbf": 9002, "cbv": 9003, "mtt": 9004, "tmax": 9005, "capture": 9006, "sr": 9007}
FILE_NAMES = {"seg": "seg.dcm", "cbf": "pm_cbf.dcm", "cbv": "pm_cbv.dcm", "mtt": "pm_mtt.dcm",
              "tmax": "pm_tmax.dcm", "capture": "capture.dcm", "sr": "sr.dcm"}
VERDICT_CODES = {True: ("ELIGIBLE", "Eligible"), False: ("NOT_ELIGIBLE", "Not eligible"),
                 None: ("INDETERMINATE", "Indeterminate")}
RULE_NAMES = {"DEFUSE3": "DEFUSE 3 imaging criteria", "EXTEND_IA": "EXTEND-IA imaging criteria",
              "DAWN": "DAWN clinical-imaging mismatch", "TISSUE_RULE": "Tissue rule (illustrative)"}


def _hd():
    try:
        import highdicom
    except ImportError:
        raise OutputError(
            "Writing DICOM results needs highdicom: pip install 'StrokeMismatchLib[dicom]' "
            "(in 3D Slicer: slicer.util.pip_install('highdicom'))."
        ) from None
    return highdicom


def _code(value, scheme, meaning):
    from highdicom.sr import CodedConcept

    return CodedConcept(value=value, scheme_designator=scheme, meaning=meaning)


def _description(what: str) -> str:
    """Series description (LO, ≤ 64 characters) ending with the not-for-clinical-use warning."""
    return f"{what[:64 - len(NOT_CLINICAL) - 3]} - {NOT_CLINICAL}"


# --------------------------------------------------------------------------------------------
# Source series
# --------------------------------------------------------------------------------------------
def require_dicom_source(series, inputs: dict | None = None) -> tuple[str, str]:
    """(folder, SeriesInstanceUID) of a series read from DICOM, else a clear :class:`InputDataError`.
    ``inputs``: the ``inputs`` block of a summary.json, used when ``series`` does not say (a
    re-thresholded or recomputed result folder)."""
    metadata = dict(getattr(series, "metadata", None) or {})
    source = str(getattr(series, "source", "") or "")
    if not metadata.get("series_uid") and inputs:
        metadata = dict(inputs.get("metadata") or {})
        source = str(inputs.get("source") or "")
    uid = metadata.get("series_uid")
    folder = metadata.get("folder") or metadata.get("dicom_folder")
    if folder is None:
        if source.startswith("DICOM series ") and " in " in source:
            folder = source.split(" in ", 1)[1]
    if not uid or not folder:
        raise InputDataError(
            "--dicom-out needs a DICOM perfusion input: the DICOM results must belong to the source "
            "patient, study and frame of reference, which a NIfTI/NRRD file does not carry (an invented "
            "patient would put unlinked objects into a PACS). Analyse the DICOM series itself, or use "
            "the NIfTI maps and masks in --out."
        )
    return str(folder), str(uid)


def read_source_datasets(folder, series_uid: str) -> list:
    """Headers (no pixel data) of the files of ``series_uid`` under ``folder``."""
    import pydicom

    found = []
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            path = os.path.join(root, name)
            try:
                ds = pydicom.dcmread(path, stop_before_pixels=True)
            except Exception:  # noqa: BLE001 - not DICOM or damaged: not part of the series
                continue
            if str(ds.get("SeriesInstanceUID", "")) == series_uid and "Rows" in ds:
                found.append(ds)
    if not found:
        raise InputFileError(f"No DICOM file of series {series_uid} was found in {folder}.")
    return found


def reference_images(datasets, geometry: Geometry) -> list:
    """The source instances the results refer to: a multi-frame object as is, or for one-file-per-
    slice series the first time point's file of each slice (in slice order)."""
    multi = [ds for ds in datasets if int(ds.get("NumberOfFrames", 1) or 1) > 1]
    if multi:
        return [_with_type2(multi[0])]
    normal = np.cross(*np.reshape(np.asarray(datasets[0].ImageOrientationPatient, float), (2, 3)))
    by_position: dict = {}
    for ds in datasets:
        key = round(float(np.asarray(ds.ImagePositionPatient, float) @ normal), 2)
        rank = (int(ds.get("TemporalPositionIdentifier", 0) or 0), str(ds.get("AcquisitionTime", "")),
                int(ds.get("InstanceNumber", 0) or 0))
        if key not in by_position or rank < by_position[key][0]:
            by_position[key] = (rank, ds)
    chosen = [_with_type2(by_position[key][1]) for key in sorted(by_position)]
    if len(chosen) != geometry.shape[0]:
        raise InputFileError(
            f"The source series has {len(chosen)} slice positions but the analysis grid has "
            f"{geometry.shape[0]} slices; the results cannot be referenced to it."
        )
    return chosen


#: Patient/study attributes of type 2 (present, may be empty) that anonymised exports often drop;
#: the copies handed to highdicom get them empty so the results stay valid.
TYPE2_PATIENT_STUDY = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                       "ReferringPhysicianName", "StudyID", "AccessionNumber")


def _with_type2(dataset):
    """A copy of ``dataset`` with the :data:`TYPE2_PATIENT_STUDY` attributes present (never the input)."""
    import copy

    copied = copy.deepcopy(dataset)
    for keyword in TYPE2_PATIENT_STUDY:
        if keyword not in copied:
            setattr(copied, keyword, "")
    return copied


def check_on_source_grid(refs, geometry: Geometry, tolerance_mm: float = 0.05) -> None:
    """Raise :class:`InputDataError` unless every slice of ``geometry`` lies on a plane of the source
    images ``refs`` (same orientation and position): results are only exported on the source grid."""
    positions, orientations = [], []
    for ds in refs:
        if "PerFrameFunctionalGroupsSequence" in ds:
            shared = ds.SharedFunctionalGroupsSequence[0] if "SharedFunctionalGroupsSequence" in ds else None
            for frame in ds.PerFrameFunctionalGroupsSequence:
                positions.append(frame.PlanePositionSequence[0].ImagePositionPatient)
                group = frame if "PlaneOrientationSequence" in frame else shared
                orientations.append(group.PlaneOrientationSequence[0].ImageOrientationPatient)
        else:
            positions.append(ds.ImagePositionPatient)
            orientations.append(ds.ImageOrientationPatient)
    positions = np.asarray(positions, dtype=float)
    ijk_to_lps = LPS_TO_RAS @ geometry.ijk_to_ras
    direction = ijk_to_lps[:3, :2] / np.linalg.norm(ijk_to_lps[:3, :2], axis=0)
    expected_orientation = np.concatenate([direction[:, 0], direction[:, 1]])
    if not np.allclose(np.asarray(orientations[0], float), expected_orientation, atol=1e-3):
        raise InputDataError(
            "The results are not in the source series' orientation: export them on the perfusion "
            "series' own grid (resample the masks and maps onto it first).")
    for k in range(geometry.shape[0]):
        origin = ijk_to_lps[:3, 3] + k * ijk_to_lps[:3, 2]
        distance = float(np.min(np.linalg.norm(positions - origin, axis=1)))
        if distance > tolerance_mm:
            raise InputDataError(
                f"Slice {k} of the results lies {distance:.2f} mm from every slice of the source series: "
                "export them on the perfusion series' own grid (resample the masks and maps onto it first).")


def _volume(array, geometry: Geometry, frame_of_reference_uid, channels=None):
    """highdicom Volume of a ``[k, j, i]`` array on ``geometry`` (LPS affine of (k, j, i) indices)."""
    hd = _hd()
    ijk_to_lps = LPS_TO_RAS @ geometry.ijk_to_ras
    affine = np.eye(4)
    affine[:3, 0] = ijk_to_lps[:3, 2]
    affine[:3, 1] = ijk_to_lps[:3, 1]
    affine[:3, 2] = ijk_to_lps[:3, 0]
    affine[:3, 3] = ijk_to_lps[:3, 3]
    return hd.Volume(array, affine, coordinate_system="PATIENT", frame_of_reference_uid=frame_of_reference_uid,
                     channels=channels)


def geometry_of_volume(volume) -> Geometry:
    """Inverse of :func:`_volume`: the :class:`Geometry` of a highdicom Volume (for read-back)."""
    affine = np.asarray(volume.affine, float)
    ijk_to_lps = np.eye(4)
    ijk_to_lps[:3, 0] = affine[:3, 2]
    ijk_to_lps[:3, 1] = affine[:3, 1]
    ijk_to_lps[:3, 2] = affine[:3, 0]
    ijk_to_lps[:3, 3] = affine[:3, 3]
    return Geometry(LPS_TO_RAS @ ijk_to_lps, tuple(volume.spatial_shape))


# --------------------------------------------------------------------------------------------
# The objects
# --------------------------------------------------------------------------------------------
@dataclass
class DicomResults:
    """The objects of one case (name -> pydicom Dataset) and, once written, their paths."""

    objects: dict
    paths: dict = field(default_factory=dict)

    @property
    def files(self) -> list[Path]:
        return list(self.paths.values())


def build_dicom_objects(*, masks: dict, maps: dict, geometry: Geometry, source_datasets, summary: dict,
                        modality: str, montage_png: bytes | None = None) -> DicomResults:
    """The DICOM objects of one case.

    ``masks``: name -> bool ``[k, j, i]`` (core, penumbra, hypoperfusion; hypoperfusion = core ∪
    penumbra when absent); ``maps``: name -> float ``[k, j, i]`` (cbf, cbv, mtt, tmax; NaN outside
    the brain); ``geometry``: their grid (the source series' grid); ``source_datasets``: the
    source series' headers (:func:`read_source_datasets`); ``summary``: the case record dict
    (summary.json: headline numbers, criteria, quality); ``modality`` "ct" | "mr";
    ``montage_png``: the report's montage picture for the capture (optional).
    """
    hd = _hd()
    from pydicom.sr.codedict import codes

    if modality not in ("ct", "mr"):
        raise InputDataError(f"Unknown modality {modality!r} (expected 'ct' or 'mr').")
    refs = reference_images(list(source_datasets), geometry)
    check_on_source_grid(refs, geometry)
    frame_uid = str(refs[0].FrameOfReferenceUID)
    masks = {name: np.asarray(mask, bool) for name, mask in masks.items() if mask is not None}
    if "core" not in masks or "penumbra" not in masks:
        raise InputDataError("The DICOM segmentation needs the core and penumbra masks.")
    masks.setdefault("hypoperfusion", masks["core"] | masks["penumbra"])
    for name, array in list(masks.items()) + list(maps.items()):
        if tuple(np.shape(array)) != tuple(geometry.shape):
            raise InputDataError(f"The {name} array {np.shape(array)} is not on the grid {geometry.shape}.")
    common = dict(manufacturer=MANUFACTURER, manufacturer_model_name=MODEL, software_versions=__version__,
                  device_serial_number="0")
    algorithm = hd.AlgorithmIdentificationSequence(
        name="StrokeMismatch", version=__version__,
        family=codes.cid7162.HistogramAnalysis)  # thresholds on maps, then morphological clean-up
    objects = {}

    # Segmentation: binary, overlapping segments on the source grid.
    descriptions, stack = [], []
    for number, (name, label, (value, scheme, meaning), rgb) in enumerate(SEGMENTS, start=1):
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=label,
            segmented_property_category=_code("49755003", "SCT", "Morphologically Altered Structure"),
            segmented_property_type=_code(value, scheme, meaning),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algorithm,
            tracking_uid=hd.UID(), tracking_id=label,
            display_color=hd.color.CIELabColor.from_rgb(*(int(round(255 * c)) for c in rgb))))
        stack.append(masks[name])
    seg_array = np.stack(stack, axis=-1).astype(np.uint8)
    objects["seg"] = hd.seg.Segmentation(
        source_images=refs, pixel_array=_volume(seg_array, geometry, frame_uid,
                                                      channels={"SegmentNumber": list(range(1, len(SEGMENTS) + 1))}),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS["seg"], sop_instance_uid=hd.UID(),
        instance_number=1, omit_empty_frames=False,
        series_description=_description("Core, penumbra, hypoperfusion SEG"),
        content_label="LESION", content_description="Ischemic core, penumbra and hypoperfused tissue",
        **common)

    # Parametric maps: float32, one per map.
    for name in MAP_ORDER:
        if name not in maps or maps[name] is None:
            continue
        label, unit, unit_meaning, quantities = MAP_CODES[name]
        values = np.asarray(maps[name], dtype=np.float32)
        finite = values[np.isfinite(values)]
        low, high = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        if high <= low:
            high = low + 1.0
        mapping = hd.pm.RealWorldValueMapping(
            lut_label=label, lut_explanation=f"{label} ({unit_meaning})",
            unit=_code(unit, "UCUM", unit_meaning), value_range=(low, high), slope=1.0, intercept=0.0,
            quantity_definition=_code(*quantities[modality]))
        kind = "relative " if (modality == "mr" and name in ("cbf", "cbv")) else ""
        objects[name] = hd.pm.ParametricMap(
            source_images=refs, pixel_array=_volume(values, geometry, frame_uid),
            series_instance_uid=hd.UID(), series_number=SERIES_NUMBERS[name], sop_instance_uid=hd.UID(),
            instance_number=1, contains_recognizable_visual_features=False,
            real_world_value_mappings=[mapping],
            voi_lut_transformations=[hd.VOILUTTransformation(window_center=(low + high) / 2.0,
                                                             window_width=high - low)],
            series_description=_description(f"{kind}{label} map"),
            content_label=label.upper(), content_description=f"{kind}{label} ({unit_meaning})"[:64],
            **common)

    # Secondary capture of the summary page.
    pixels = summary_page_rgb(summary, montage_png)
    objects["capture"] = hd.sc.SCImage.from_ref_dataset(
        ref_dataset=refs[0], pixel_array=pixels, photometric_interpretation="RGB", bits_allocated=8,
        coordinate_system="PATIENT", series_instance_uid=hd.UID(), sop_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS["capture"], instance_number=1, manufacturer=MANUFACTURER,
        patient_orientation=("L", "P"), series_description=_description("StrokeMismatch summary"),
        transfer_syntax_uid="1.2.840.10008.1.2.1")

    objects["sr"] = _measurement_report(hd, objects["seg"], refs, summary, masks, geometry)
    body_part = str(refs[0].get("BodyPartExamined", "") or "HEAD")
    for name in ("seg", *MAP_ORDER, "capture"):
        if name in objects:  # a head examination: no laterality (dciodvfy asks for it otherwise)
            objects[name].BodyPartExamined = body_part
    return DicomResults(objects=objects)


def _measurement_report(hd, seg, refs, summary, masks, geometry):
    """TID 1500: one volumetric group per segment (its volume, referencing the SEG) and one group
    with the mismatch numbers, the trial verdicts and the quality status."""
    from pydicom.sr.codedict import codes

    voxel_ml = geometry.voxel_volume_ml
    groups = []
    for number, (name, label, _, _) in enumerate(SEGMENTS, start=1):
        volume_ml = float(np.count_nonzero(masks[name])) * voxel_ml
        groups.append(hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier=label),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=number,
                source_series=hd.sr.SourceSeriesForSegmentation(str(refs[0].SeriesInstanceUID))),
            finding_type=_code(*next(s[2] for s in SEGMENTS if s[0] == name)),
            measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=round(volume_ml, 3),
                                            unit=_code("ml", "UCUM", "milliliter"))]))
    measurements = []
    for key, meaning, unit in (("mismatch_ratio", "Mismatch ratio", ("1", "UCUM", "no units")),
                               ("mismatch_ml", "Mismatch volume", ("ml", "UCUM", "milliliter")),
                               ("tmax_gt_10_ml", "Tmax > 10 s volume", ("ml", "UCUM", "milliliter")),
                               ("hir", "Hypoperfusion intensity ratio", ("1", "UCUM", "no units"))):
        value = summary.get(key)
        if value is not None and np.isfinite(value):
            measurements.append(hd.sr.Measurement(name=_code(key.upper(), SCHEME, meaning),
                                                  value=float(value), unit=_code(*unit)))
    evaluations = []
    for key, rule in (summary.get("criteria") or {}).items():
        code, meaning = VERDICT_CODES.get(rule.get("eligible"), VERDICT_CODES[None])
        evaluations.append(hd.sr.QualitativeEvaluation(
            name=_code(key[:16], SCHEME, RULE_NAMES.get(key, str(rule.get("name") or key))[:64]),
            value=_code(code, SCHEME, meaning)))
    status = str((summary.get("quality") or {}).get("status") or "unknown")
    evaluations.append(hd.sr.QualitativeEvaluation(
        name=_code("QUALITY", SCHEME, "Quality control status"),
        value=_code(f"QC_{status.upper()}"[:16], SCHEME, f"Quality {status}")))
    groups.append(hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="Mismatch and trial criteria"),
        measurements=measurements or None, qualitative_evaluations=evaluations))
    context = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=hd.UID(), name="StrokeMismatch", manufacturer_name=MANUFACTURER, model_name=MODEL)))
    report = hd.sr.MeasurementReport(
        observation_context=context, procedure_reported=_code("129104", "DCM", "Perfusion image analysis"),
        imaging_measurements=groups)
    return hd.sr.Comprehensive3DSR(
        evidence=[*refs, seg], content=report, series_instance_uid=hd.UID(),
        series_number=SERIES_NUMBERS["sr"], sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer=MANUFACTURER, is_complete=True, series_description=_description("StrokeMismatch measurements"))


# --------------------------------------------------------------------------------------------
# The summary page (secondary capture)
# --------------------------------------------------------------------------------------------
def _fmt(value, unit):
    if value is None:
        return "n/a"
    return f"{value:.1f} {unit}" if unit == "mL" else f"{value:.2f}"


def summary_page_rgb(summary: dict, montage_png: bytes | None = None, width_px=1024) -> np.ndarray:
    """The report's first page as an RGB uint8 image ``[rows, columns, 3]``: title and disclaimer,
    case line, quality status, headline numbers, verdicts with their first reason, and the
    montage (when given). Drawn with matplotlib (extra ``report``/``dicom``)."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        import matplotlib.image as mpimg
    except ImportError:
        raise OutputError("The DICOM summary capture needs matplotlib: pip install 'StrokeMismatchLib[dicom]'.") from None
    lines = [("StrokeMismatch perfusion summary - " + NOT_CLINICAL, 15, "white", "bold"),
             (DISCLAIMER, 9, "#ffb0b0", "normal"),
             (f"Subject {summary.get('subject', '')}   modality {str(summary.get('modality', '')).upper()}   "
              f"affected side {summary.get('affected_side') or 'n/a'}", 11, "white", "normal")]
    quality = summary.get("quality") or {}
    status = str(quality.get("status", "unknown"))
    colour = {"pass": "#80ff80", "warn": "#ffd060", "fail": "#ff6060"}.get(status, "white")
    lines.append((f"Quality: {status.upper()}", 12, colour, "bold"))
    for finding in (quality.get("findings") or [])[:3]:
        if finding.get("severity") in ("error", "warning"):
            lines.append(("  " + str(finding.get("message", ""))[:110], 9, colour, "normal"))
    tmax = (summary.get("settings") or {}).get("tmax_threshold", 6.0)
    lines.append((f"Core {_fmt(summary.get('core_ml'), 'mL')}    Hypoperfusion (Tmax>{tmax:g}s) "
                  f"{_fmt(summary.get('hypoperfusion_ml'), 'mL')}    Penumbra {_fmt(summary.get('penumbra_ml'), 'mL')}"
                  f"    Mismatch ratio {_fmt(summary.get('mismatch_ratio'), '1')}", 12, "white", "bold"))
    for key, rule in (summary.get("criteria") or {}).items():
        reasons = rule.get("reasons") or []
        reason = f" - {reasons[0]}" if reasons else ""
        text = f"{RULE_NAMES.get(key, key)}: {rule.get('verdict', 'n/a')}{reason}"
        for n, piece in enumerate(textwrap.wrap(text, 120)[:2]):
            lines.append((("    " if n else "") + piece, 10, "white", "normal"))
    montage = None
    if montage_png:
        montage = mpimg.imread(io.BytesIO(montage_png), format="png")
    dpi = 100
    text_h = 0.28 * len(lines) + 0.3
    width_in = width_px / dpi
    montage_h = (width_in * montage.shape[0] / montage.shape[1]) if montage is not None else 0.0
    figure = Figure(figsize=(width_in, text_h + montage_h), dpi=dpi, facecolor="black")
    total = text_h + montage_h
    y = 1.0 - 0.25 / total
    for text, size, colour, weight in lines:
        figure.text(0.02, y, text, fontsize=size, color=colour, fontweight=weight, va="top")
        y -= 0.28 / total
    if montage is not None:
        axis = figure.add_axes((0.0, 0.0, 1.0, montage_h / total))
        axis.imshow(montage)
        axis.set_axis_off()
    canvas = FigureCanvasAgg(figure)
    canvas.draw()
    rgba = np.asarray(canvas.buffer_rgba())
    return np.ascontiguousarray(rgba[..., :3]).astype(np.uint8)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------
def write_dicom_objects(results: DicomResults, out_dir) -> DicomResults:
    """Write every object into ``out_dir`` (created) as ``seg.dcm``, ``pm_*.dcm``, ``capture.dcm``,
    ``sr.dcm``; returns ``results`` with ``paths`` filled. Raises :class:`OutputError`."""
    out_dir = Path(out_dir).expanduser()
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for name, dataset in results.objects.items():
            path = out_dir / FILE_NAMES[name]
            partial = path.with_name(path.name + ".partial")
            dataset.save_as(partial, enforce_file_format=True)
            os.replace(partial, path)
            results.paths[name] = path
    except OSError as exc:
        raise OutputError(f"Cannot write the DICOM results to {out_dir}: {exc.strerror or exc}. "
                          "Choose a writable folder with --dicom-out.") from None
    return results


def export_dicom(out_dir, *, masks: dict, maps: dict, geometry: Geometry, source_folder, summary: dict,
                 modality: str, series_uid: str | None = None, montage_png: bytes | None = None) -> DicomResults:
    """Build and write the DICOM objects of a case from arrays (what the Slicer panel calls with the
    current, possibly edited, segments and maps): ``masks`` core/penumbra(/hypoperfusion) bool
    ``[k, j, i]``, ``maps`` cbf/cbv/mtt/tmax float ``[k, j, i]`` on ``geometry`` (the source grid),
    ``source_folder`` the DICOM folder of the perfusion series (``series_uid`` when it holds
    several), ``summary`` the case record dict (recomputed after edits), ``modality`` ct | mr."""
    datasets = _source_series(source_folder, series_uid)
    results = build_dicom_objects(masks=masks, maps=maps, geometry=geometry, source_datasets=datasets,
                                  summary=summary, modality=modality, montage_png=montage_png)
    return write_dicom_objects(results, out_dir)


def _source_series(folder, series_uid):
    import pydicom

    if series_uid is None:
        uids = set()
        for root, _, names in os.walk(folder):
            for name in names:
                try:
                    ds = pydicom.dcmread(os.path.join(root, name), stop_before_pixels=True,
                                         specific_tags=["SeriesInstanceUID", "Rows"])
                except Exception:  # noqa: BLE001
                    continue
                if "Rows" in ds and "SeriesInstanceUID" in ds:
                    uids.add(str(ds.SeriesInstanceUID))
        if len(uids) != 1:
            raise InputFileError(f"{folder} holds {len(uids)} image series; give the perfusion series' UID.")
        series_uid = uids.pop()
    return read_source_datasets(folder, series_uid)


def export_case_dicom(result, record, out_dir) -> DicomResults:
    """The DICOM objects of a ``pipeline.CaseResult`` analysed from DICOM (``analyze --dicom-out``):
    the analysis masks and maps, the record (``record.to_dict()``) and the report's montage."""
    summary = record.to_dict() if hasattr(record, "to_dict") else dict(record)
    folder, uid = require_dicom_source(result.series, summary.get("inputs"))
    masks = {name: result.lesion.masks.get(name) for name in ("core", "penumbra", "hypoperfusion")}
    maps = {name: getattr(result.maps, name) for name in MAP_ORDER}
    geometry = result.series.geometry
    grid = getattr(result, "analysis_grid", None) or {}
    if grid.get("applied"):  # issue 15: CT analysed on a coarser grid; back onto the source grid
        from .denoise import upsample_to_grid

        geometry = Geometry(np.asarray(grid["input_ijk_to_ras"], float), tuple(grid["input_shape_kji"]))
        masks = {k: None if v is None else upsample_to_grid(v, grid["factors_ij"], geometry.shape)
                 for k, v in masks.items()}
        maps = {k: upsample_to_grid(v, grid["factors_ij"], geometry.shape) for k, v in maps.items()}
    montage = None
    try:
        from .report_figures import make_report_images

        images, _ = make_report_images(result, include_3d=False)
        montage = images.get("montage")
    except Exception:  # noqa: BLE001 - the capture is still made, with the numbers only
        montage = None
    return export_dicom(out_dir, masks=masks, maps=maps, geometry=geometry, source_folder=folder,
                        summary=summary, modality=result.modality, series_uid=uid, montage_png=montage)
