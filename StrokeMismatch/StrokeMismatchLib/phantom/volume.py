"""Brain-like 3D+time digital perfusion phantom for DSC-MRI (with an ADC map) and CT perfusion.

The anatomy is defined in physical space (RAS mm, brain centred on the RAS origin) and sampled
at voxel centres, so the perfusion grid and the ADC grid (its own spacing, field of view and
origin) describe the same brain:

- an ellipsoidal brain with a thin CSF rim, a grey-matter (GM) cortical ribbon, white matter (WM)
  inside, deep grey nuclei and two CSF ventricles near the midline;
- an artery (a vertical tube of radius ``vessel_radius_mm``, default 1.9 mm, i.e. an ICA/M1-like
  calibre of 3.8 mm, defined in mm so it is 2 × 2 voxels at 1.8 mm and ≈ 8 × 8 at 0.45 mm) on the
  unaffected side carrying the AIF, and the superior sagittal sinus (posterior midline, same
  radius) carrying a delayed, broadened venous curve with a larger area than the AIF (as measured
  arterial curves suffer partial volume). Voxels are labelled by their centre (no partial-volume
  mixing at the vessel wall);
- optionally a one-sided lesion: an ischemic core (CBF 10 %, CBV 40 % of normal, delay 6 s,
  dispersion 3 s, ADC ≈ 500 × 10⁻⁶ mm²/s) inside a hypoperfused region (CBF 80 %, CBV 90 %,
  delay 5 s, dispersion 2 s: true Tmax ≈ 7.9–8.1 s) inside an oligemic rim (CBF 85 %, delay
  1 s, dispersion 1 s: true Tmax ≈ 2.9–3.1 s, *not* hypoperfused).

Why these zone values (the truth must agree with the clinical definitions, PERFUSION.md §8,
with a margin larger than the method's documented biases, docs/PERFUSION_METHODS.md):

- rCBF is CBF ÷ the contralateral mean (≈ 41 mL/100 g/min for this GM/WM mix). Core: GM
  6 → rCBF ≈ 0.15, WM 2.5 → ≈ 0.06, clearly < 0.30 (at 20 % the GM core was 12 → 0.29, on the
  threshold). Hypoperfused: GM 48 → ≈ 1.2, WM 20 → ≈ 0.49, clearly > 0.30 (at 60 % the WM was
  15 → 0.37, and dispersion lowers the estimated CBF by ≈ 15–20 %, which put it below 0.30).
- Tmax: oSVD reads Tmax ≈ 1.3–2.1 s above the truth (more with dispersion) and the 6 s
  threshold therefore flags true delays ≳ 4 s. The oligemic rim (true Tmax ≈ 3 s) stays ≈ 3 s
  below 6 s; at delay 2.5 s (true Tmax 4.4–4.6 s) its estimated median was 6.1–7.0 s, so the
  "not hypoperfused" rim read as hypoperfused. The hypoperfused zone (≈ 8 s) and the core
  (≈ 12.2–12.6 s true) are ≥ 1.9 s above the threshold.

Curves follow PERFUSION.md §11 (:func:`.curves.simulate_curves`, κ = 1 convention): one curve per
distinct parameter set (tissue class × lesion zone), painted into the volume, then per-voxel noise
from a seeded ``numpy.random.Generator``.

Signal (PERFUSION.md §11.3):

- MR: S = S0 · e^{−κ·TE·C}; κ_a so the AIF loses 60 % at its peak, κ_t so grey matter
  (CBF 60, CBV 4) loses 40 %. Estimated CBF/CBV come out scaled by ``mr_scale`` = κ_t/κ_a:
  divide it out for absolute comparisons. Rician noise with σ = S0(GM)/SNR.
- CT: HU = baseline (GM 38, WM 30, CSF 8, blood 40, skull 1000, air −1000) + C with a 400 HU
  AIF peak; Gaussian noise of SD ``noise_hu``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import InputDataError
from ..geometry import Geometry
from ..series import PerfusionSeries
from .curves import gamma_variate_aif, mr_scale_for_drop, simulate_curves

# Tissue labels.
BACKGROUND, GM, WM, CSF, ARTERY, VEIN = 0, 1, 2, 3, 4, 5
LABEL_NAMES = {BACKGROUND: "background", GM: "grey matter", WM: "white matter", CSF: "CSF",
               ARTERY: "artery", VEIN: "vein"}

# Lesion zones.
NORMAL, OLIGEMIA, HYPOPERFUSED, CORE = 0, 1, 2, 3
ZONE_NAMES = {NORMAL: "normal", OLIGEMIA: "oligemia", HYPOPERFUSED: "hypoperfused", CORE: "core"}

# Normal tissue: CBF mL/100 g/min, CBV mL/100 g.
NORMAL_TISSUE = {GM: {"cbf": 60.0, "cbv": 4.0}, WM: {"cbf": 25.0, "cbv": 2.0}}
# Lesion zones: CBF and CBV as fractions of normal, delay s, dispersion time constant 1/β s.
ZONES = {
    NORMAL: {"cbf": 1.00, "cbv": 1.00, "delay": 0.0, "dispersion": 0.0},
    OLIGEMIA: {"cbf": 0.85, "cbv": 1.00, "delay": 1.0, "dispersion": 1.0},
    HYPOPERFUSED: {"cbf": 0.80, "cbv": 0.90, "delay": 5.0, "dispersion": 2.0},
    CORE: {"cbf": 0.10, "cbv": 0.40, "delay": 6.0, "dispersion": 3.0},
}
# ADC in 10⁻⁶ mm²/s.
ADC_VALUES = {BACKGROUND: 0.0, GM: 800.0, WM: 750.0, CSF: 3000.0, ARTERY: 1600.0, VEIN: 1600.0}
ADC_CORE = 500.0
ADC_UNITS = {"1e-6": 1.0, "1e-3": 1e-3, "mm2/s": 1e-6}
# MR baseline signal S0 (a.u.) and CT baselines (HU).
MR_S0 = {BACKGROUND: 0.0, GM: 1000.0, WM: 850.0, CSF: 1500.0, ARTERY: 900.0, VEIN: 900.0}
CT_HU = {BACKGROUND: -1000.0, GM: 38.0, WM: 30.0, CSF: 8.0, ARTERY: 40.0, VEIN: 40.0}
CT_SKULL_HU = 1000.0

# Bolus: gamma variate r = 3, b = 1.5 s (PERFUSION.md §11.1), first arrival t0.
BOLUS_T0 = 16.0
AIF_R, AIF_B = 3.0, 1.5
# Vein: later, broader, area × 1.3 of the AIF (area ∝ peak · b for fixed r).
VEIN_DELAY, VEIN_B, VEIN_AREA_RATIO = 5.0, 2.2, 1.3

DEFAULT_SHAPE = (16, 64, 64)
DEFAULT_SPACING = {"mr": (1.8, 1.8, 5.0), "ct": (1.8, 1.8, 5.0)}  # i, j, k mm
# Brain semi-axes as fractions of the field of view (x: left-right, y: anterior-posterior, z).
BRAIN_FRACTION = (0.42, 0.46, 0.45)


@dataclass
class VolumePhantom:
    """A simulated perfusion exam with its ground truth.

    ``series``: the 4D :class:`PerfusionSeries` (float32 signal, MR a.u. or CT HU);
    ``adc`` [K', J', I'] on ``adc_geometry`` (None for CT) in ``adc_unit`` (default 10⁻⁶ mm²/s);
    ``labels`` [K, J, I] int (0 background, 1 GM, 2 WM, 3 CSF, 4 artery, 5 vein);
    ``zones`` [K, J, I] int (0 normal, 1 oligemia, 2 hypoperfused, 3 core; tissue voxels only);
    ``brain_mask`` (labels > 0), ``artery_mask``, ``vein_mask`` bool;
    ``true_maps``: cbf (mL/100 g/min), cbv (mL/100 g), mtt (s), tmax (s), ttp (s from the first
    frame time 0) float32, set on GM/WM, CBF = CBV = 0 in CSF, NaN elsewhere (MTT/Tmax/TTP NaN
    in CSF too); ``true_core``, ``true_hypoperfusion`` (true Tmax > 6 s) bool;
    ``true_aif`` / ``true_vof`` [T] concentrations (κ = 1 units; CT: HU above baseline);
    ``lesion_side`` "left"/"right" (None without lesion); ``mr_scale`` κ_t/κ_a (MR, else None);
    ``volumes_ml``: true core, hypoperfusion (Tmax > 6 s), penumbra, oligemia, brain volumes;
    ``info``: the parameters used.
    """

    series: PerfusionSeries
    adc: np.ndarray | None
    adc_geometry: Geometry | None
    labels: np.ndarray
    zones: np.ndarray
    brain_mask: np.ndarray
    artery_mask: np.ndarray
    vein_mask: np.ndarray
    true_maps: dict
    true_core: np.ndarray
    true_hypoperfusion: np.ndarray
    true_aif: np.ndarray
    true_vof: np.ndarray
    lesion_side: str | None
    mr_scale: float | None
    adc_unit: str = "1e-6"
    volumes_ml: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    @property
    def geometry(self) -> Geometry:
        """Geometry of the perfusion grid."""
        return self.series.geometry

    @property
    def times(self) -> np.ndarray:
        """Frame times in s."""
        return self.series.times


def default_times(modality: str, *, variable_rate: bool = False) -> np.ndarray:
    """Frame times (s): MR TR 1.5 s × 60 (0–88.5 s); CT 1 s × 60 (0–59 s) or, with
    ``variable_rate``, 1 s to 39 s then every 3 s to 75 s (53 frames)."""
    if modality == "mr":
        return np.arange(60) * 1.5
    if variable_rate:
        return np.concatenate([np.arange(0.0, 40.0, 1.0), np.arange(42.0, 76.0, 3.0)])
    return np.arange(60) * 1.0


def _grid_geometry(shape, spacing, offset_ras=(0.0, 0.0, 0.0)) -> Geometry:
    """Axis-aligned LPS-style grid whose centre lies at ``offset_ras``."""
    shape = tuple(int(n) for n in shape)
    spacing = np.asarray(spacing, dtype=float)
    half = (np.array(shape[::-1], dtype=float) - 1.0) / 2.0  # centre index (i, j, k)
    steps = np.array([-1.0, -1.0, 1.0]) * spacing  # i → left, j → posterior, k → superior
    origin = np.asarray(offset_ras, dtype=float) - half * steps
    return Geometry.from_spacing(shape, spacing, origin)


def _centres_ras(geometry: Geometry) -> np.ndarray:
    """RAS coordinates of every voxel centre, shape [K, J, I, 3]."""
    k, j, i = np.meshgrid(*(np.arange(n) for n in geometry.shape), indexing="ij")
    return geometry.ijk_to_ras_points(np.stack([i, j, k], axis=-1))


def _ellipsoid(u, v, w, centre, radii):
    """Normalised distance from ``centre`` in an ellipsoid of ``radii`` (≤ 1 inside)."""
    return np.sqrt(((u - centre[0]) / radii[0]) ** 2 + ((v - centre[1]) / radii[1]) ** 2
                   + ((w - centre[2]) / radii[2]) ** 2)


def _anatomy(ras, radii, vessels, lesion_sign, skull, core_scale=1.0):
    """Labels, lesion zones and skull mask at RAS points ``[..., 3]``.

    ``radii``: brain semi-axes (mm); ``vessels``: dict with artery (x, y) and radius, vein
    radius; ``lesion_sign``: −1 left, +1 right, 0 none; ``core_scale`` multiplies the core
    ellipsoid's semi-axes (1: the default core).
    """
    x, y, z = ras[..., 0], ras[..., 1], ras[..., 2]
    u, v, w = x / radii[0], y / radii[1], z / radii[2]
    rho = np.sqrt(u**2 + v**2 + w**2)
    labels = np.zeros(x.shape, dtype=np.int16)
    labels[rho <= 1.0] = CSF
    labels[rho <= 0.93] = GM
    labels[rho <= 0.78] = WM
    for side in (-1.0, 1.0):
        labels[(_ellipsoid(u, v, w, (side * 0.26, 0.02, -0.12), (0.11, 0.18, 0.28)) <= 1) & (rho <= 0.78)] = GM
        labels[_ellipsoid(u, v, w, (side * 0.09, 0.06, 0.12), (0.05, 0.36, 0.28)) <= 1] = CSF
    inside = rho <= 1.0
    # Artery: a vertical tube through the brain (ICA/MCA region, unaffected side).
    artery = inside & (np.hypot(x - vessels["artery_x"], y - vessels["artery_y"]) <= vessels["radius"])
    # Superior sagittal sinus: a tube following the posterior inner surface along the midline.
    w_clip = np.clip(w, -1.0, 1.0)
    y_sinus = -radii[1] * np.sqrt(1.0 - w_clip**2) * 0.955 + vessels["vein_dy"]
    vein = inside & (w > -0.6) & (np.abs(x - vessels["vein_x"]) <= vessels["radius"]) & (
        np.abs(y - y_sinus) <= vessels["radius"])
    labels[artery] = ARTERY
    labels[vein] = VEIN

    zones = np.zeros(x.shape, dtype=np.int16)
    if lesion_sign:
        tissue = (labels == GM) | (labels == WM)
        hemisphere = lesion_sign * u > 0.04
        d_outer = _ellipsoid(u, v, w, (lesion_sign * 0.52, 0.08, 0.10), (0.56, 0.72, 0.90))
        d_core = _ellipsoid(u, v, w, (lesion_sign * 0.55, 0.10, 0.05),
                            tuple(core_scale * r for r in (0.30, 0.34, 0.50)))
        zones[tissue & hemisphere & (d_outer <= 1.0)] = OLIGEMIA
        zones[tissue & hemisphere & (d_outer <= 0.84)] = HYPOPERFUSED
        zones[tissue & hemisphere & (d_core <= 1.0)] = CORE
    skull_mask = skull & (rho > 1.0) & (rho <= 1.10)
    return labels, zones, skull_mask


def make_volume_phantom(
    modality="mr",
    *,
    lesion=True,
    lesion_side="left",
    snr=20.0,
    noise_hu=3.0,
    seed=0,
    shape=None,
    spacing=None,
    scale=1.0,
    times=None,
    variable_rate=False,
    te=0.03,
    residue="exponential",
    adc_unit="1e-6",
    adc_noise=20.0,
    skull=True,
    dt_fine=0.02,
    # issue 15 (clinical CTP): vessel calibre in mm, brain size in mm, core size
    vessel_radius_mm=1.9,
    brain_radii_mm=None,
    core_scale=1.0,
) -> VolumePhantom:
    """Simulate a brain perfusion exam with known truth (see the module docstring).

    ``modality`` "mr" (DSC, with an ADC map) or "ct"; ``lesion`` False gives a healthy brain;
    ``lesion_side`` "left" or "right" (RAS x < 0 is left); ``snr`` MR SNR = S0(GM)/σ (None or
    inf: no noise); ``noise_hu`` CT noise SD in HU (0: none); ``seed`` for the noise;
    ``shape`` (K, J, I) default (16, 64, 64) and ``spacing`` (i, j, k) mm default
    (1.8, 1.8, 5); ``scale`` multiplies the in-plane matrix and divides the in-plane spacing
    (same brain, more voxels, for benchmarks); ``times`` frame times in s (default MR TR 1.5 s ×
    60, CT 1 s × 50, or CT ``variable_rate``); ``te`` echo time s (MR); ``residue`` shape
    (PERFUSION.md §11.1); ``adc_unit`` "1e-6" (10⁻⁶ mm²/s), "1e-3" or "mm2/s"; ``adc_noise``
    Gaussian SD of the ADC in 10⁻⁶ mm²/s; ``skull`` a 1000 HU shell around the brain (CT only).
    ``vessel_radius_mm`` artery and sinus radius (mm, at any resolution); ``brain_radii_mm``
    brain semi-axes (x, y, z) in mm (default: fractions of the field of view, as before; give
    e.g. (68, 84, 60) for an adult-sized brain in a clinical 230 mm field of view);
    ``core_scale`` multiplies the core's semi-axes (core volume ∝ ``core_scale``³ until it
    reaches the hemisphere's edge). Clinical CTP: ``shape=(32, 512, 512)``,
    ``spacing=(0.45, 0.45, 5.0)``, ``noise_hu=15``, ``times=np.arange(40.0)`` (see
    benchmarks/bench_ct_accuracy.py).
    """
    if modality not in ("mr", "ct"):
        raise InputDataError(f"Unknown phantom modality {modality!r}: use 'mr' or 'ct'.")
    if lesion_side not in ("left", "right"):
        raise InputDataError(f"lesion_side must be 'left' or 'right', not {lesion_side!r}.")
    if adc_unit not in ADC_UNITS:
        raise InputDataError(f"adc_unit must be one of {sorted(ADC_UNITS)}, not {adc_unit!r}.")
    if scale <= 0:
        raise InputDataError("scale must be positive.")
    if not (vessel_radius_mm > 0 and core_scale > 0):
        raise InputDataError("vessel_radius_mm and core_scale must be positive.")
    rng = np.random.default_rng(seed)

    shape = tuple(DEFAULT_SHAPE if shape is None else shape)
    spacing = np.array(DEFAULT_SPACING[modality] if spacing is None else spacing, dtype=float)
    if scale != 1.0:
        shape = (shape[0], int(round(shape[1] * scale)), int(round(shape[2] * scale)))
        spacing = spacing / np.array([scale, scale, 1.0])
    geometry = _grid_geometry(shape, spacing)
    fov = np.array(shape[::-1]) * spacing  # i, j, k extent in mm
    radii = (np.array(BRAIN_FRACTION) * fov if brain_radii_mm is None
             else np.asarray(brain_radii_mm, dtype=float))
    lesion_sign = (-1 if lesion_side == "left" else 1) if lesion else 0
    artery_side = 1 if lesion_side == "left" else -1  # opposite the (would-be) lesion

    # Vessels centred on voxel corners of the perfusion grid (2 × 2 voxels at 1.8 mm).
    def snap(value_mm, axis):
        centre0 = geometry.ijk_to_ras[axis, 3]
        step = abs(geometry.ijk_to_ras[axis, axis])
        return centre0 + (np.floor((value_mm - centre0) / step) + 0.5) * step

    vessels = {
        "artery_x": snap(artery_side * 0.30 * radii[0], 0),
        "artery_y": snap(0.22 * radii[1], 1),
        "vein_x": snap(0.0, 0),
        "vein_dy": 0.0,
        "radius": float(vessel_radius_mm),
    }
    labels, zones, skull_mask = _anatomy(_centres_ras(geometry), radii, vessels, lesion_sign,
                                         skull and modality == "ct", core_scale=core_scale)

    times = default_times(modality, variable_rate=variable_rate) if times is None else np.asarray(times, float)
    aif_peak = 400.0 if modality == "ct" else 1.0

    # One curve per (tissue class, zone): index = 2 + (class − 1) · 4 + zone.
    classes = np.repeat([GM, WM], 4)
    zone_ids = np.tile([NORMAL, OLIGEMIA, HYPOPERFUSED, CORE], 2)
    cbf = np.array([NORMAL_TISSUE[c]["cbf"] * ZONES[z]["cbf"] for c, z in zip(classes, zone_ids)])
    cbv = np.array([NORMAL_TISSUE[c]["cbv"] * ZONES[z]["cbv"] for c, z in zip(classes, zone_ids)])
    delay = np.array([ZONES[z]["delay"] for z in zone_ids])
    dispersion = np.array([ZONES[z]["dispersion"] for z in zone_ids])
    mtt = 60.0 * cbv / cbf
    curves = simulate_curves(cbf, mtt, residue=residue, delay=delay, dispersion=dispersion,
                             times=times, dt_fine=dt_fine, aif_peak=aif_peak, t0=BOLUS_T0,
                             r=AIF_R, b=AIF_B)
    aif = curves.aif
    vof = gamma_variate_aif(times, t0=BOLUS_T0 + VEIN_DELAY, r=AIF_R, b=VEIN_B,
                            peak=aif_peak * VEIN_AREA_RATIO * AIF_B / VEIN_B)
    library = np.concatenate([np.zeros((1, times.size)), aif[None], vof[None], curves.tissue], axis=0)

    tissue = (labels == GM) | (labels == WM)
    curve_index = np.zeros(labels.shape, dtype=np.intp)
    curve_index[labels == ARTERY] = 1
    curve_index[labels == VEIN] = 2
    curve_index[tissue] = 3 + (labels[tissue] - GM) * 4 + zones[tissue]
    concentration = library.astype(np.float32)[curve_index]  # [K, J, I, T]

    # True maps.
    true_maps = {}
    for name in ("cbf", "cbv", "mtt", "tmax", "ttp"):
        values = np.concatenate([[np.nan] * 3, curves.truth[name]])
        values = values[curve_index].astype(np.float32)
        values[~tissue] = np.nan
        if name in ("cbf", "cbv"):
            values[labels == CSF] = 0.0
        true_maps[name] = values
    true_core = tissue & (zones == CORE)
    true_hypo = np.nan_to_num(true_maps["tmax"], nan=0.0) > 6.0

    # Signal.
    mr_scale = None
    info = {"modality": modality, "seed": seed, "brain_radii_mm": radii.tolist(),
            "bolus_t0_s": BOLUS_T0, "residue": residue, "zones": ZONES,
            "normal_tissue": NORMAL_TISSUE}
    if modality == "mr":
        kappa_a = mr_scale_for_drop(aif.max() if aif.max() > 0 else 1.0, te=te, drop=0.6)
        gm_normal = curves.tissue[0]
        kappa_t = mr_scale_for_drop(gm_normal.max(), te=te, drop=0.4)
        mr_scale = float(kappa_t / kappa_a)
        s0 = np.vectorize(MR_S0.get, otypes=[float])(labels)
        kappa = np.where((labels == ARTERY) | (labels == VEIN), kappa_a, kappa_t)
        signal = concentration
        signal *= -(kappa * te).astype(np.float32)[..., None]
        np.exp(signal, out=signal)
        signal *= s0.astype(np.float32)[..., None]
        sigma = 0.0 if snr is None or not np.isfinite(snr) else MR_S0[GM] / float(snr)
        if sigma > 0:
            # Rician: magnitude of signal + complex Gaussian noise (same as curves.add_rician_noise,
            # in float32 to keep benchmark-size phantoms small).
            signal += np.float32(sigma) * rng.standard_normal(signal.shape, dtype=np.float32)
            imaginary = rng.standard_normal(signal.shape, dtype=np.float32)
            imaginary *= np.float32(sigma)
            np.hypot(signal, imaginary, out=signal)
            del imaginary
        info.update(kappa_t=float(kappa_t), kappa_a=float(kappa_a), snr=snr, noise_sigma=sigma, te_s=te)
        tr = float(np.median(np.diff(times))) if times.size > 1 else None
    else:
        lut = np.array([CT_HU[label] for label in sorted(CT_HU)], dtype=np.float32)
        base = lut[labels]
        base[skull_mask] = CT_SKULL_HU
        signal = concentration
        signal += base[..., None]
        if noise_hu:
            # slice by slice (the same random stream as one call) so no full-size temporary
            for k in range(signal.shape[0]):
                signal[k] += np.float32(noise_hu) * rng.standard_normal(signal.shape[1:], dtype=np.float32)
        info.update(noise_hu=noise_hu, aif_peak_hu=aif_peak, skull=bool(skull))
        te, tr = None, None
    series = PerfusionSeries(signal.astype(np.float32, copy=False), times, geometry, modality, te=te, tr=tr,
                             source="phantom",
                             metadata={"phantom": True, "lesion_side": lesion_side if lesion else None,
                                       "seed": seed})

    # ADC on its own grid (MR only): finer in-plane, 4 mm slices, shifted centre.
    adc = adc_geometry = None
    if modality == "mr":
        adc_spacing = np.array([spacing[0] / 1.2, spacing[1] / 1.2, 4.0])
        adc_shape = (int(np.ceil(fov[2] / 4.0)) + 1, int(np.ceil(fov[1] / adc_spacing[1])),
                     int(np.ceil(fov[0] / adc_spacing[0])))
        adc_geometry = _grid_geometry(adc_shape, adc_spacing, offset_ras=(1.3, -2.1, 1.7))
        adc_labels, adc_zones, _ = _anatomy(_centres_ras(adc_geometry), radii, vessels, lesion_sign, False,
                                            core_scale=core_scale)
        adc_values = np.vectorize(ADC_VALUES.get, otypes=[float])(adc_labels)
        adc_tissue = (adc_labels == GM) | (adc_labels == WM)
        adc_values[adc_tissue & (adc_zones == CORE)] = ADC_CORE
        if adc_noise:
            noisy = adc_labels > 0
            adc_values[noisy] += rng.normal(0.0, float(adc_noise), int(noisy.sum()))
        adc = (np.clip(adc_values, 0.0, None) * ADC_UNITS[adc_unit]).astype(np.float32)

    voxel_ml = geometry.voxel_volume_ml
    brain_mask = labels > 0
    volumes = {
        "core_ml": float(true_core.sum() * voxel_ml),
        "hypoperfusion_ml": float(true_hypo.sum() * voxel_ml),
        "penumbra_ml": float((true_hypo & ~true_core).sum() * voxel_ml),
        "oligemia_ml": float((tissue & (zones == OLIGEMIA)).sum() * voxel_ml),
        "brain_ml": float(brain_mask.sum() * voxel_ml),
    }
    return VolumePhantom(
        series=series,
        adc=adc,
        adc_geometry=adc_geometry,
        labels=labels.astype(np.uint8),
        zones=zones.astype(np.uint8),
        brain_mask=brain_mask,
        artery_mask=labels == ARTERY,
        vein_mask=labels == VEIN,
        true_maps=true_maps,
        true_core=true_core,
        true_hypoperfusion=true_hypo,
        true_aif=aif,
        true_vof=vof,
        lesion_side=lesion_side if lesion else None,
        mr_scale=mr_scale,
        adc_unit=adc_unit,
        volumes_ml=volumes,
        info=info,
    )
