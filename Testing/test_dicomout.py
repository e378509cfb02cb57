"""DICOM results (``analyze --dicom-out``): every object passes dciodvfy; read back with highdicom
and resampled onto the source grid, the segments and maps are the analysis' own; UIDs, frame of
reference, patient and study come from the source; NIfTI input is refused; the Slicer export
function writes the edited masks."""

import json
import shutil
import subprocess

import numpy as np
import pydicom
import pytest
import SimpleITK as sitk
from dicom_factory import write_classic_series, write_enhanced_series

from StrokeMismatchLib import dicomout
from StrokeMismatchLib.cli import main
from StrokeMismatchLib.fileio import read_perfusion, write_nifti_perfusion, write_volume
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.pipeline import CaseSettings, run_case
from StrokeMismatchLib.resample import resample_array, resample_mask

hd = pytest.importorskip("highdicom")


def _nifti(path):
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


@pytest.fixture(scope="module")
def case(tmp_path_factory):
    """A small CT perfusion phantom written as a DICOM series, analysed with --dicom-out."""
    root = tmp_path_factory.mktemp("dicomout")
    phantom = make_volume_phantom("ct", seed=0, shape=(6, 40, 40))
    spacing = tuple(float(x) for x in phantom.series.geometry.spacing)
    write_classic_series(root / "src", phantom.series.signal, phantom.series.times, modality="CT",
                         spacing=spacing, intercept=-1024.0, description="CT perfusion")
    code = main(["analyze", "--perfusion", str(root / "src"), "--out", str(root / "out"), "--quiet",
                 "--no-report", "--no-motion-correction", "--dicom-out", str(root / "dicom")])
    assert code == 0
    series = read_perfusion(root / "src")
    sources = dicomout.read_source_datasets(root / "src", series.metadata["series_uid"])
    # the same analysis in memory: its float32 maps keep NaN outside the brain (the NIfTI files
    # read back through SimpleITK hold 0 there), so map values are compared with these
    reference = run_case(series, settings=CaseSettings(motion_correction=False))
    return root, series, sources, reference


def test_every_object_is_written(case):
    root, _, _, _ = case
    names = sorted(p.name for p in (root / "dicom").iterdir())
    assert names == sorted(dicomout.FILE_NAMES.values())


def test_every_object_passes_dciodvfy(case):
    root, _, _, _ = case
    assert shutil.which("dciodvfy"), "dciodvfy missing: apt-get install dicom3tools (.ci/run does it)"
    for path in sorted((root / "dicom").iterdir()):
        run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
        errors = [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{path.name}: {errors}"


def test_new_series_in_the_source_study_marked_not_for_clinical_use(case):
    root, series, sources, reference = case
    source = sources[0]
    uids = set()
    for path in sorted((root / "dicom").iterdir()):
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == source.StudyInstanceUID, path.name
        assert ds.PatientID == source.PatientID and ds.PatientName == source.PatientName, path.name
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID, path.name
        assert "NOT FOR CLINICAL USE" in ds.SeriesDescription, path.name
        uids.add(ds.SeriesInstanceUID)
    assert len(uids) == len(dicomout.FILE_NAMES)  # one new series per object


def test_segmentation_round_trip_on_the_source_grid(case):
    """Read back, resample onto the source grid: the analysis' core, penumbra and hypoperfusion
    voxels exactly; referenced series and frame of reference are the source's."""
    root, series, sources, reference = case
    seg = hd.seg.segread(root / "dicom" / "seg.dcm")
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
    assert referenced == {series.metadata["series_uid"]}
    source_sops = {ds.SOPInstanceUID for ds in sources}
    assert {sop for _, _, sop in seg.get_source_image_uids()} <= source_sops
    labels = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    assert set(labels) == {"Ischemic core", "Penumbra", "Hypoperfused tissue"}
    core_colour = seg.SegmentSequence[labels["Ischemic core"] - 1].RecommendedDisplayCIELabValue
    assert hd.color.CIELabColor.from_dicom_value(core_colour).to_rgb()[0] > 200  # red as in the report
    for label, name in (("Ischemic core", "core"), ("Penumbra", "penumbra"), ("Hypoperfused tissue", "hypoperfusion")):
        volume = seg.get_volume(segment_numbers=[labels[label]], combine_segments=True)
        geometry = dicomout.geometry_of_volume(volume)
        back = resample_mask(np.asarray(volume.array) > 0, geometry, series.geometry)
        expected = _nifti(root / "out" / "masks" / f"{name}.nii.gz") > 0
        assert expected.any(), name
        np.testing.assert_array_equal(back, expected, err_msg=name)
        np.testing.assert_array_equal(back, reference.lesion.masks[name], err_msg=name)


@pytest.mark.parametrize("name", ["cbf", "cbv", "mtt", "tmax"])
def test_parametric_map_round_trip(case, name):
    root, series, sources, reference = case
    ds = pydicom.dcmread(root / "dicom" / f"pm_{name}.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.30"  # Parametric Map Storage
    assert ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert "FloatPixelData" in ds
    mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
    unit = mapping.MeasurementUnitsCodeSequence[0]
    assert unit.CodingSchemeDesignator == "UCUM"
    assert unit.CodeValue == {"cbf": "ml/(100.g.min)", "cbv": "ml/(100.g)", "mtt": "s", "tmax": "s"}[name]
    image = hd.imread(root / "dicom" / f"pm_{name}.dcm")
    volume = image.get_volume(dtype=np.float32)
    back = resample_array(np.asarray(volume.array, np.float32), dicomout.geometry_of_volume(volume),
                          series.geometry, interpolation="nearest").astype(np.float32)
    expected = reference.map_arrays()[name]
    assert np.isnan(expected).any() and np.isfinite(expected).any()
    np.testing.assert_array_equal(np.isnan(back), np.isnan(expected))
    np.testing.assert_array_equal(back[np.isfinite(back)], expected[np.isfinite(expected)])


def test_ct_cbf_is_coded_absolute_and_mr_relative():
    assert dicomout.MAP_CODES["cbf"][3]["ct"][2] == "Absolute Regional Blood Flow"
    assert dicomout.MAP_CODES["cbf"][3]["mr"][2] == "Relative Regional Blood Flow"


def test_sr_reports_the_volumes_ratio_and_verdicts_of_summary_json(case):
    root, _, _, _ = case
    summary = json.loads((root / "out" / "summary.json").read_text())
    sr = hd.sr.srread(root / "dicom" / "sr.dcm")
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    groups = sr.content.get_volumetric_roi_measurement_groups()
    volumes = {g.tracking_identifier: g.get_measurements()[0].value for g in groups}
    assert volumes["Ischemic core"] == pytest.approx(summary["core_ml"], abs=1e-3)
    assert volumes["Penumbra"] == pytest.approx(summary["penumbra_ml"], abs=1e-3)
    assert volumes["Hypoperfused tissue"] == pytest.approx(summary["hypoperfusion_ml"], abs=1e-3)
    seg = pydicom.dcmread(root / "dicom" / "seg.dcm")
    for group in groups:
        assert group.referenced_segment.referenced_sop_instance_uid == seg.SOPInstanceUID
    (other,) = [g for g in sr.content.get_image_measurement_groups()
                if g.tracking_identifier == "Mismatch and trial criteria"]
    evaluations = {e.name.value: e.value.value for e in other.get_qualitative_evaluations()}
    for key, rule in summary["criteria"].items():
        expected = {True: "ELIGIBLE", False: "NOT_ELIGIBLE", None: "INDETERMINATE"}[rule["eligible"]]
        assert evaluations[key] == expected, key
    assert evaluations["QUALITY"] == f"QC_{summary['quality']['status'].upper()}"
    if summary["mismatch_ratio"] is not None:
        ratio = [m.value for m in other.get_measurements() if m.name.value == "MISMATCH_RATIO"]
        assert ratio == [pytest.approx(summary["mismatch_ratio"])]


def test_summary_capture_is_an_rgb_picture_of_the_page(case):
    root, _, _, _ = case
    ds = pydicom.dcmread(root / "dicom" / "capture.dcm")
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"  # Secondary Capture
    assert ds.PhotometricInterpretation == "RGB" and ds.SamplesPerPixel == 3
    pixels = ds.pixel_array
    assert pixels.shape[1] == 1024 and pixels.shape[0] > 400
    # the montage below the text: core red and penumbra green pixels are present
    red = (pixels[..., 0] > 180) & (pixels[..., 1] < 80) & (pixels[..., 2] < 80)
    green = (pixels[..., 1] > 150) & (pixels[..., 0] < 100) & (pixels[..., 2] < 120)
    assert red.sum() > 20 and green.sum() > 20


def test_nifti_input_with_dicom_out_is_refused_before_the_analysis(tmp_path, capsys):
    phantom = make_volume_phantom("ct", seed=0, shape=(6, 40, 40))
    path = tmp_path / "ctp.nii.gz"
    write_nifti_perfusion(path, phantom.series)
    code = main(["analyze", "--perfusion", str(path), "--out", str(tmp_path / "o"), "--quiet",
                 "--dicom-out", str(tmp_path / "d")])
    err = capsys.readouterr().err
    assert code == 2
    assert "--dicom-out needs a DICOM perfusion input" in err
    assert not (tmp_path / "o").exists() and not (tmp_path / "d").exists()


def test_existing_dicom_results_are_not_overwritten_without_overwrite(case, tmp_path, capsys):
    root, _, _, _ = case
    target = tmp_path / "dicom"
    target.mkdir()
    (target / "seg.dcm").write_bytes(b"earlier result")
    code = main(["analyze", "--perfusion", str(root / "src"), "--out", str(tmp_path / "o"), "--quiet",
                 "--dicom-out", str(target)])
    assert code == 2 and "--overwrite" in capsys.readouterr().err
    assert (target / "seg.dcm").read_bytes() == b"earlier result" and not (tmp_path / "o").exists()


def test_send_without_dicom_out_is_a_usage_error(case, tmp_path, capsys):
    root, _, _, _ = case
    code = main(["analyze", "--perfusion", str(root / "src"), "--out", str(tmp_path / "o"), "--quiet",
                 "--send", "PACS@127.0.0.1:104"])
    assert code == 2 and "--dicom-out" in capsys.readouterr().err


def test_slicer_export_writes_the_edited_masks(case, tmp_path):
    """export_dicom (what the Slicer panel calls): edited segments and their recomputed volume."""
    root, series, _, _ = case
    core = _nifti(root / "out" / "masks" / "core.nii.gz") > 0
    penumbra = _nifti(root / "out" / "masks" / "penumbra.nii.gz") > 0
    edited_core = core.copy()
    edited_core[: core.shape[0] // 2] = False  # the user erased the core on the lower slices
    assert edited_core.sum() < core.sum()
    maps = {name: _nifti(root / "out" / "maps" / f"{name}.nii.gz") for name in ("cbf", "cbv", "mtt", "tmax")}
    summary = json.loads((root / "out" / "summary.json").read_text())
    summary["core_ml"] = float(edited_core.sum()) * series.geometry.voxel_volume_ml
    results = dicomout.export_dicom(tmp_path / "slicer", masks={"core": edited_core, "penumbra": penumbra},
                                    maps=maps, geometry=series.geometry, source_folder=root / "src",
                                    summary=summary, modality="ct")
    seg = hd.seg.segread(results.paths["seg"])
    volume = seg.get_volume(segment_numbers=[1], combine_segments=True)
    back = resample_mask(np.asarray(volume.array) > 0, dicomout.geometry_of_volume(volume), series.geometry)
    np.testing.assert_array_equal(back, edited_core)
    hypo = seg.get_volume(segment_numbers=[3], combine_segments=True)
    np.testing.assert_array_equal(
        resample_mask(np.asarray(hypo.array) > 0, dicomout.geometry_of_volume(hypo), series.geometry),
        edited_core | penumbra)
    sr = hd.sr.srread(results.paths["sr"])
    volumes = {g.tracking_identifier: g.get_measurements()[0].value
               for g in sr.content.get_volumetric_roi_measurement_groups()}
    assert volumes["Ischemic core"] == pytest.approx(summary["core_ml"], abs=1e-3)


def test_source_files_are_not_modified(case):
    root, _, sources, _ = case
    for ds in sources[:5]:
        on_disk = pydicom.dcmread(ds.filename, stop_before_pixels=True)
        assert "PatientBirthDate" not in on_disk  # the type-2 fill-in went to copies only


def _dciodvfy_errors(path):
    run = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    return [line for line in (run.stdout + run.stderr).splitlines() if line.startswith("Error")]


def test_enhanced_multiframe_source(tmp_path):
    """An Enhanced CT source (one object, all frames): the objects reference it and validate."""
    phantom = make_volume_phantom("ct", seed=0, shape=(6, 40, 40))
    spacing = tuple(float(x) for x in phantom.series.geometry.spacing)
    source = write_enhanced_series(tmp_path / "src" / "ctp.dcm", phantom.series.signal, phantom.series.times,
                                   modality="CT", spacing=spacing, intercept=-1024.0)
    code = main(["analyze", "--perfusion", str(tmp_path / "src"), "--out", str(tmp_path / "out"), "--quiet",
                 "--no-report", "--no-motion-correction", "--dicom-out", str(tmp_path / "dicom")])
    assert code == 0
    original = pydicom.dcmread(source, stop_before_pixels=True)
    seg = hd.seg.segread(tmp_path / "dicom" / "seg.dcm")
    assert {sop for _, _, sop in seg.get_source_image_uids()} == {original.SOPInstanceUID}
    assert seg.FrameOfReferenceUID == original.FrameOfReferenceUID
    for path in sorted((tmp_path / "dicom").iterdir()):
        assert _dciodvfy_errors(path) == [], path.name


def test_mr_cbf_and_cbv_are_coded_relative(tmp_path):
    """DSC-MR CBF/CBV are relative (uncalibrated): the parametric maps say so in their codes."""
    phantom = make_volume_phantom("mr", seed=0, shape=(6, 40, 40))
    spacing = tuple(float(x) for x in phantom.series.geometry.spacing)
    write_classic_series(tmp_path / "src", phantom.series.signal, phantom.series.times, modality="MR",
                         spacing=spacing, te_ms=30.0)
    write_volume(tmp_path / "adc.nii.gz", phantom.adc, phantom.adc_geometry)
    code = main(["analyze", "--perfusion", str(tmp_path / "src"), "--diffusion", str(tmp_path / "adc.nii.gz"),
                 "--out", str(tmp_path / "out"), "--quiet", "--no-report", "--no-motion-correction",
                 "--dicom-out", str(tmp_path / "dicom")])
    assert code == 0
    for name, meaning in (("cbf", "Relative Regional Blood Flow"), ("cbv", "Relative Regional Blood Volume"),
                          ("tmax", "Tmax")):
        ds = pydicom.dcmread(tmp_path / "dicom" / f"pm_{name}.dcm")
        mapping = ds.SharedFunctionalGroupsSequence[0].RealWorldValueMappingSequence[0]
        assert mapping.QuantityDefinitionSequence[0].ConceptCodeSequence[0].CodeMeaning == meaning
    assert "relative CBF" in pydicom.dcmread(tmp_path / "dicom" / "pm_cbf.dcm").SeriesDescription
    assert _dciodvfy_errors(tmp_path / "dicom" / "pm_cbf.dcm") == []


def test_recompute_with_edited_core_writes_dicom_of_the_edit(case, tmp_path):
    """``recompute RESULT --core EDITED --dicom-out``: the SEG holds the edited core, on the source."""
    root, series, sources, _ = case
    from StrokeMismatchLib.fileio import read_volume

    core, geometry = read_volume(root / "out" / "masks" / "core.nii.gz")
    edited = core > 0
    edited[: edited.shape[0] // 2] = False
    write_volume(tmp_path / "core_edited.nii.gz", edited, geometry)
    code = main(["recompute", str(root / "out"), "--core", str(tmp_path / "core_edited.nii.gz"), "--out",
                 str(tmp_path / "re"), "--quiet", "--no-report", "--dicom-out", str(tmp_path / "dicom")])
    assert code == 0
    seg = hd.seg.segread(tmp_path / "dicom" / "seg.dcm")
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    volume = seg.get_volume(segment_numbers=[1], combine_segments=True)
    back = resample_mask(np.asarray(volume.array) > 0, dicomout.geometry_of_volume(volume), series.geometry)
    np.testing.assert_array_equal(back, edited)
    summary = json.loads((tmp_path / "re" / "summary.json").read_text())
    sr = hd.sr.srread(tmp_path / "dicom" / "sr.dcm")
    volumes = {g.tracking_identifier: g.get_measurements()[0].value
               for g in sr.content.get_volumetric_roi_measurement_groups()}
    assert volumes["Ischemic core"] == pytest.approx(summary["core_ml"], abs=1e-3)


def test_no_lesion_and_no_valid_map_values_still_give_valid_objects(case, tmp_path):
    """A healthy case (empty masks) and an all-NaN map: objects are written and validate."""
    root, series, _, _ = case
    shape = series.geometry.shape
    maps = {name: np.full(shape, np.nan, np.float32) for name in ("cbf", "cbv", "mtt", "tmax")}
    summary = {"core_ml": 0.0, "penumbra_ml": 0.0, "hypoperfusion_ml": 0.0, "mismatch_ratio": None,
               "criteria": {"DEFUSE3": {"eligible": None, "verdict": "indeterminate (no lesion)", "reasons": []}},
               "quality": {"status": "pass", "findings": []}}
    results = dicomout.export_dicom(tmp_path / "d", masks={"core": np.zeros(shape, bool),
                                                            "penumbra": np.zeros(shape, bool)},
                                    maps=maps, geometry=series.geometry, source_folder=root / "src",
                                    summary=summary, modality="ct")
    assert len(results.files) == 7
    for path in results.files:
        assert _dciodvfy_errors(path) == [], path.name
    seg = hd.seg.segread(results.paths["seg"])
    assert not np.asarray(seg.get_volume(segment_numbers=[1], combine_segments=True).array).any()


def test_results_off_the_source_grid_are_refused(case, tmp_path):
    """Masks and maps on another grid (here shifted 2 mm) are not exported as if on the source's."""
    root, series, _, _ = case
    from StrokeMismatchLib.errors import InputDataError
    from StrokeMismatchLib.geometry import Geometry

    shifted = np.array(series.geometry.ijk_to_ras)
    shifted[0, 3] += 2.0
    shape = series.geometry.shape
    with pytest.raises(InputDataError, match="perfusion series' own grid"):
        dicomout.export_dicom(tmp_path / "d", masks={"core": np.zeros(shape, bool), "penumbra": np.zeros(shape, bool)},
                              maps={}, geometry=Geometry(shifted, shape), source_folder=root / "src",
                              summary={}, modality="ct")
    assert not (tmp_path / "d").exists()
