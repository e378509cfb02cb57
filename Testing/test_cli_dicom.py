"""`stroke-mismatch analyze` on a DICOM folder: several series (choose with --series), unequal
frame times from the headers, CT rescale; the result must match the phantom's truth."""

import dataclasses
import json

import numpy as np
import pytest
import SimpleITK as sitk
from dicom_factory import write_classic_series

from StrokeMismatchLib.cli import main
from StrokeMismatchLib.phantom.volume import make_volume_phantom
from StrokeMismatchLib.pipeline import CaseSettings, run_case


def _dice(a, b):
    return 2.0 * np.count_nonzero(a & b) / max(np.count_nonzero(a) + np.count_nonzero(b), 1)


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory):
    """A variable-rate CT perfusion phantom (1 s, then 3 s frames) and a 3-frame localiser series
    in one export folder (one subfolder per series), as a PACS export would give them."""
    folder = tmp_path_factory.mktemp("dicom")
    phantom = make_volume_phantom("ct", seed=0, variable_rate=True)
    spacing_ijk = tuple(float(x) for x in phantom.series.geometry.spacing)
    write_classic_series(folder / "series5", phantom.series.signal, phantom.series.times, modality="CT",
                         spacing=spacing_ijk, intercept=-1024.0, number=5, description="CT perfusion")
    localiser = np.full((2, 16, 16, 3), 20.0)
    write_classic_series(folder / "series2", localiser, np.array([0.0, 1.0, 2.0]), modality="CT", number=2,
                         description="Localiser", shuffle_seed=1)
    return folder, phantom


def test_folder_with_several_series_asks_for_series(dicom_folder, tmp_path, capsys):
    folder, _ = dicom_folder
    code = main(["analyze", "--perfusion", str(folder), "--out", str(tmp_path / "o"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2
    assert "--series" in err and "CT perfusion" in err and "Localiser" in err
    assert not (tmp_path / "o").exists()


def test_analyze_dicom_series_matches_the_in_memory_analysis(dicom_folder, tmp_path):
    """What the DICOM path reads (values, geometry, unequal times) gives the same lesion as the
    same data analysed in memory, and agrees with the phantom's truth."""
    folder, phantom = dicom_folder
    out = tmp_path / "case"
    code = main(["analyze", "--perfusion", str(folder), "--series", "5", "--out", str(out), "--quiet",
                 "--no-report", "--no-motion-correction"])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["modality"] == "ct"
    # unequal frame times come from the headers (not index × TR)
    np.testing.assert_allclose(summary["inputs"]["frame_times_s"], phantom.series.times, atol=0.2)
    assert len(set(np.round(np.diff(summary["inputs"]["frame_times_s"]), 1))) > 1

    # The factory stamps slice k 10 ms after slice 0 (AcquisitionTime): the reader reports that slice
    # timing and the analysis corrects it, so the in-memory reference gets the same slice timing.
    assert summary["inputs"]["metadata"]["slice_timing_s"] == pytest.approx(0.01 * np.arange(16), abs=1e-3)
    assert summary["analysis"]["slice_timing"]["applied"] is True
    metadata = dict(phantom.series.metadata, slice_timing_s=summary["inputs"]["metadata"]["slice_timing_s"])
    stored = dataclasses.replace(phantom.series, signal=np.round(phantom.series.signal).astype(np.float32),
                                 metadata=metadata)
    reference = run_case(stored, settings=CaseSettings(motion_correction=False)).lesion.masks
    for name, truth in (("core", phantom.true_core), ("hypoperfusion", phantom.true_hypoperfusion)):
        found = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "masks" / f"{name}.nii.gz"))) > 0
        assert _dice(found, reference[name]) >= 0.95, name
    # Truth: hypoperfusion Dice ≥ 0.8 as on the equal-rate demo. The variable-rate core is below
    # the demo's (Dice ≈ 0.79 in memory too: 3 s frames after the bolus give a noisier CBF), so the
    # core is held to the in-memory analysis above, and to overlap with the truth here.
    hypo = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "masks" / "hypoperfusion.nii.gz"))) > 0
    core = sitk.GetArrayFromImage(sitk.ReadImage(str(out / "masks" / "core.nii.gz"))) > 0
    assert _dice(hypo, phantom.true_hypoperfusion) >= 0.8
    assert _dice(core, phantom.true_core) >= 0.7
