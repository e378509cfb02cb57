"""Fuzz the loaders: mutated NIfTI headers/bytes and DICOM tags either load or raise our own
StrokeMismatchError; no other exception escapes (bounded: ~100 examples each, < 60 s)."""

import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dicom_factory import write_classic_series, write_enhanced_series
from StrokeMismatchLib import dicomio, fileio
from StrokeMismatchLib.errors import StrokeMismatchError
from StrokeMismatchLib.geometry import Geometry
from StrokeMismatchLib.series import PerfusionSeries

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow],
                database=None)
TIMES = np.arange(0.0, 12.0, 1.0)


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    root = tmp_path_factory.mktemp("fuzz_templates")
    rng = np.random.default_rng(0)
    signal = rng.normal(40.0, 5.0, size=(3, 6, 5, TIMES.size)).astype(np.float32)
    series = PerfusionSeries(signal, TIMES, Geometry.from_spacing((3, 6, 5), (2.0, 2.0, 5.0)), modality="ct")
    nifti = fileio.write_nifti_perfusion(root / "perf.nii", series)
    volume = fileio.write_volume(root / "vol.nii", signal[..., 0], series.geometry)
    classic = root / "classic"
    write_classic_series(classic, signal[:2, :, :, :], TIMES)
    enhanced = root / "enhanced"
    write_enhanced_series(enhanced / "mf.dcm", signal[:2, :, :, :], TIMES, modality="MR")
    return {"nifti": nifti, "volume": volume, "classic": classic, "enhanced": enhanced}


def _loads_or_our_error(function, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            function(*args, **kwargs)
        except StrokeMismatchError:
            pass  # ours: fine


mutations = st.lists(
    st.tuples(st.integers(min_value=0, max_value=347), st.integers(min_value=0, max_value=255)),
    min_size=1, max_size=6,
)


@FUZZ
@given(mutations=mutations, cut=st.one_of(st.none(), st.integers(min_value=0, max_value=2000)))
def test_nifti_header_mutations(templates, mutations, cut):
    with tempfile.TemporaryDirectory() as folder:
        for key, reader in (("nifti", fileio.read_nifti_perfusion), ("volume", fileio.read_volume)):
            data = bytearray(templates[key].read_bytes())
            for offset, value in mutations:
                data[offset] = value
            if cut is not None:
                data = data[: min(cut, len(data))]
            path = Path(folder) / templates[key].name
            path.write_bytes(bytes(data))
            sidecar = templates[key].with_suffix("").with_suffix(".json")
            if sidecar.exists():
                shutil.copy(sidecar, Path(folder) / sidecar.name)
            _loads_or_our_error(reader, path)


TAGS = [
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
    "AcquisitionTime", "AcquisitionDate", "TemporalPositionIdentifier", "RescaleSlope",
    "RescaleIntercept", "Modality", "SeriesInstanceUID", "BitsAllocated", "PixelRepresentation",
    "EchoTime", "NumberOfFrames", "PixelData", "SamplesPerPixel", "InstanceNumber",
]
values = st.one_of(
    st.none(),  # delete the tag
    st.text(max_size=12),
    st.integers(min_value=-70000, max_value=70000),
    st.floats(allow_nan=True, allow_infinity=True),
    st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=7),
    st.binary(max_size=40),
)


def _set(ds, tag, value):
    if value is None:
        if tag in ds:
            del ds[tag]
        return
    try:
        if tag == "PixelData":
            ds.PixelData = value if isinstance(value, bytes) else str(value).encode()
        elif isinstance(value, list):
            setattr(ds, tag, [str(v) for v in value])
        elif isinstance(value, bytes):
            setattr(ds, tag, value.decode("latin-1"))
        else:
            setattr(ds, tag, value)
    except Exception:  # the value cannot even be stored in that tag: skip this mutation
        pass


@FUZZ
@given(kind=st.sampled_from(["classic", "enhanced"]), file_index=st.integers(0, 30),
       edits=st.lists(st.tuples(st.sampled_from(TAGS), values), min_size=1, max_size=3))
def test_dicom_tag_mutations(templates, kind, file_index, edits):
    with tempfile.TemporaryDirectory() as folder:
        target = Path(folder) / "series"
        shutil.copytree(templates[kind], target)
        files = sorted(target.iterdir())
        path = files[file_index % len(files)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(path)
            for tag, value in edits:
                _set(ds, tag, value)
            try:
                ds.save_as(path)
            except Exception:
                return  # pydicom cannot write this mutation; nothing to read
        _loads_or_our_error(dicomio.read_dicom_perfusion, target)
        _loads_or_our_error(dicomio.list_dicom_series, target)
