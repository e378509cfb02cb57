#!/usr/bin/env bash
# Run the library's tests with the package versions bundled in Slicer 5.10, our oldest supported
# Slicer (numpy 2.0, scipy 1.13, SimpleITK 2.5.2, pydicom 2.4.4, VTK 9.5): catches calls that
# only newer releases have. The MRML and Qt tests need slicer-core / PySide6, which pin their own
# versions, so they are left to the main test command (.ci/run); so are the tests of the optional
# extras (cohort: Dask; dicom: highdicom/pynetdicom and Orthanc) and the Chromium print test.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=${1:-.venv-slicer510}
python3 -m venv "$venv"
"$venv/bin/pip" install -q "numpy==2.0.2" "scipy==1.13.1" "SimpleITK==2.5.2" "pydicom==2.4.4" \
    "vtk==9.5.2" "matplotlib<3.10" "nibabel>=5.0" pytest hypothesis jsonschema pypdf dcm2niix
"$venv/bin/pip" install -q --no-deps -e .
"$venv/bin/python" -m pytest -q -p no:cacheprovider \
    --ignore=Testing/test_mrmlio.py --ignore=Testing/test_mrmlio_transforms.py \
    --ignore=Testing/test_fileio_slicer.py --ignore=Testing/test_sample_data.py --ignore=Testing/test_ui.py \
    --ignore=Testing/slicer_app \
    --ignore=Testing/test_cohort.py --ignore=Testing/test_cohort_manifest.py \
    --ignore=Testing/test_dicomout.py --ignore=Testing/test_dicomnet.py --ignore=Testing/test_report_print.py
