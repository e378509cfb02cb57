"""Small path checks shared by the file readers and writers (NIfTI, NRRD, DICOM dispatch)."""

from __future__ import annotations

from pathlib import Path

from .errors import InputFileError, OutputError


def check_input_file(path: Path, what: str) -> None:
    """Raise :class:`InputFileError` when ``path`` is missing or a folder."""
    if not path.exists():
        raise InputFileError(f"The {what} {path} does not exist: check the path.")
    if path.is_dir():
        raise InputFileError(f"The {what} {path} is a folder; give the image file.")


def prepare_output_file(path: Path) -> None:
    """Create the folder of an output file; :class:`OutputError` when it cannot be made."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"Cannot create the folder {path.parent}: {error}") from None
    if path.is_dir():
        raise OutputError(f"{path} is a folder; give a file name.")
