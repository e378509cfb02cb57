"""StrokeMismatchLib: perfusion maps and core/penumbra mismatch for acute stroke.

Pure Python on numpy, scipy and SimpleITK. Importing this package must stay light:
it never imports ``slicer``, ``qt`` or :mod:`StrokeMismatchLib.mrmlio`.

Research and teaching software: decision support, not a medical device.
"""

__version__ = "0.1.0"

DISCLAIMER = (
    "StrokeMismatch is research and teaching software for decision support. "
    "It is not a medical device and must not be the sole basis of a clinical decision."
)
