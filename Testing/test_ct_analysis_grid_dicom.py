"""A fine-matrix CT analysed on the 2 mm analysis grid (issue 15) still exports DICOM results on
the source series' own grid: each analysis voxel's value repeated over its block."""

import numpy as np
import pytest

from dicom_factory import write_classic_series
from StrokeMismatchLib import dicomout
from StrokeMismatchLib.cli import main
from StrokeMismatchLib.denoise import upsample_to_grid
from StrokeMismatchLib.fileio import read_perfusion
from StrokeMismatchLib.phantom import make_volume_phantom
from StrokeMismatchLib.pipeline import CaseSettings, run_case
from StrokeMismatchLib.resample import resample_mask

hd = pytest.importorskip("highdicom")


def test_fine_ct_dicom_results_are_on_the_source_grid(tmp_path):
    phantom = make_volume_phantom("ct", seed=0, shape=(4, 80, 80), spacing=(0.9, 0.9, 5.0),
                                  noise_hu=5.0, times=np.arange(45.0))
    write_classic_series(tmp_path / "src", phantom.series.signal, phantom.series.times, modality="CT",
                         spacing=(0.9, 0.9, 5.0), intercept=-1024.0, description="CT perfusion")
    code = main(["analyze", "--perfusion", str(tmp_path / "src"), "--out", str(tmp_path / "out"),
                 "--quiet", "--no-report", "--no-motion-correction", "--dicom-out", str(tmp_path / "dicom")])
    assert code == 0
    series = read_perfusion(tmp_path / "src")
    result = run_case(series, settings=CaseSettings(motion_correction=False))
    assert result.analysis_grid["applied"] and result.analysis_grid["factors_ij"] == [2, 2]
    seg = hd.seg.segread(tmp_path / "dicom" / "seg.dcm")
    labels = {d.SegmentLabel: d.SegmentNumber for d in seg.SegmentSequence}
    volume = seg.get_volume(segment_numbers=[labels["Hypoperfused tissue"]], combine_segments=True)
    back = resample_mask(np.asarray(volume.array) > 0, dicomout.geometry_of_volume(volume), series.geometry)
    expected = upsample_to_grid(result.lesion.masks["hypoperfusion"], [2, 2], series.geometry.shape)
    assert expected.any()
    np.testing.assert_array_equal(back, expected)
