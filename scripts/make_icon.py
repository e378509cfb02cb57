#!/usr/bin/env python3
"""Draw the module / extension icon: an axial brain silhouette with a red ischemic core inside
a green penumbra (128 × 128 RGBA PNG, numpy + zlib only, deterministic).

    python scripts/make_icon.py   # writes StrokeMismatch/Resources/Icons/StrokeMismatch.png
                                  # and Resources/Icons/StrokeMismatch.png (extension icon)
"""

from __future__ import annotations

import struct
import sys
import zlib
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
TARGETS = (ROOT / "StrokeMismatch" / "Resources" / "Icons" / "StrokeMismatch.png",
           ROOT / "Resources" / "Icons" / "StrokeMismatch.png")
SIZE = 128


def _png(rgba: np.ndarray) -> bytes:
    """Encode an (H, W, 4) uint8 array as PNG (filter 0 on every row)."""
    height, width, _ = rgba.shape
    raw = b"".join(b"\x00" + rgba[row].tobytes() for row in range(height))

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def _coverage(inside_fn, supersample=4):
    """Anti-aliased coverage in [0, 1] of a region given by ``inside_fn(x, y)`` (x, y in [-1, 1])."""
    offsets = (np.arange(supersample) + 0.5) / supersample
    total = np.zeros((SIZE, SIZE))
    for dy in offsets:
        for dx in offsets:
            y, x = np.mgrid[0:SIZE, 0:SIZE].astype(float)
            x = (x + dx) / SIZE * 2 - 1
            y = (y + dy) / SIZE * 2 - 1
            total += inside_fn(x, y)
    return total / supersample**2


def draw() -> np.ndarray:
    """The icon as (128, 128, 4) uint8."""
    def brain(x, y):  # two hemispheres with a midline notch at the front and back
        shell = (x / 0.80) ** 2 + (y / 0.92) ** 2 <= 1.0
        notch = (np.abs(x) < 0.035) & (np.abs(y) > 0.70)
        return shell & ~notch

    def gyri(x, y):  # a few sulci as thin dark arcs
        r = np.hypot(x / 0.8, y / 0.92)
        return brain(x, y) & (np.abs(np.sin(9 * np.arctan2(y, x)) * 0.05 + r - 0.72) < 0.025)

    def midline(x, y):
        return brain(x, y) & (np.abs(x) < 0.018)

    def penumbra(x, y):  # left hemisphere is on the image right (radiological view)
        return brain(x, y) & (((x - 0.38) / 0.36) ** 2 + ((y + 0.02) / 0.50) ** 2 <= 1.0) & (x > 0.03)

    def core(x, y):
        return ((x - 0.42) / 0.16) ** 2 + ((y + 0.0) / 0.22) ** 2 <= 1.0

    image = np.zeros((SIZE, SIZE, 4))
    layers = [(brain, (0.80, 0.80, 0.82)), (gyri, (0.55, 0.55, 0.60)), (midline, (0.45, 0.45, 0.50)),
              (penumbra, (0.15, 0.78, 0.25)), (core, (0.88, 0.10, 0.10))]
    for fn, colour in layers:
        alpha = _coverage(fn)[..., None]
        image[..., :3] = image[..., :3] * (1 - alpha) + np.array(colour) * alpha
        image[..., 3:] = np.maximum(image[..., 3:], alpha)
    # outline of the brain for contrast on light and dark backgrounds
    outline = _coverage(lambda x, y: brain(x, y) & ~((x / 0.76) ** 2 + (y / 0.88) ** 2 <= 1.0))[..., None]
    image[..., :3] = image[..., :3] * (1 - outline) + np.array((0.25, 0.25, 0.30)) * outline
    return np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)


def main() -> int:
    data = _png(draw())
    for target in TARGETS:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
        print(f"wrote {target} ({len(data)} bytes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
