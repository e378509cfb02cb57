"""Every user setting of an analysis, defined once: default, unit, allowed range, help, group.

A setting is one field of :class:`CaseSettings` (deconvolution and case-wide choices) or
:class:`LesionSettings` (thresholds, clean-up switches, clinical inputs for the criteria),
declared with :func:`setting`. Everything else is derived from these declarations:

- the command-line options of ``stroke-mismatch analyze`` / ``demo`` (``cli.py``);
- the Slicer parameter node and the panel's settings widgets (``StrokeMismatch.py``);
- the ``settings`` block of ``summary.json`` and the settings columns of ``summary.csv``;
- validation: a value outside its range, of the wrong type or not among its choices raises
  :class:`SettingsError` naming the setting, its unit and its range.

Units are those the user sees, the same on the CLI and the panel (the CT core threshold is a
percentage of the reference CBF, as in "rCBF < 30 %"). ``None`` for a setting of kind
``"auto_bool"`` means "by modality" (see the setting's help); for ``"optional_float"`` it means
the documented automatic value.

Decision support for research and teaching, not a medical device.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

from .errors import InputDataError

KINDS = ("float", "int", "bool", "auto_bool", "choice", "optional_float", "optional_int")
METHODS = ("oSVD", "cSVD", "sSVD", "Tikhonov")
RCBF_REFERENCES = ("contralateral", "tmax_lt_4", "mirror")
RCBF_STATISTICS = ("trimmed_mean", "median", "mean")
#: Denoising of the concentration before deconvolution (denoise.py); "auto": TIPS on CT, none on MR.
DENOISE_CHOICES = ("auto", "tips", "gaussian", "none")
#: Extra Tmax volumes always reported (s); Tmax > 10 s also feeds the HIR.
REPORT_TMAX_THRESHOLDS_S = (4.0, 8.0, 10.0)

#: Groups in the order the panel and ``--help`` show them.
GROUPS = ("Deconvolution", "Core", "Hypoperfusion", "rCBF reference (CT)", "Clean-up",
          "Affected side", "Clinical", "Reporting")


class SettingsError(InputDataError):
    """A setting with a value it cannot take (the message names setting, unit and range)."""


@dataclass(frozen=True)
class Setting:
    """The declaration of one user setting.

    ``name`` field name; ``owner`` "case" | "lesion"; ``kind`` one of :data:`KINDS`;
    ``unit`` as shown to users ("" for none); ``minimum``/``maximum`` inclusive bounds in that
    unit; ``choices`` for kind "choice"; ``label`` short GUI label; ``help`` one or two
    sentences; ``group`` one of :data:`GROUPS`; ``cli_flag`` the option of ``analyze``.
    """

    name: str
    owner: str
    default: Any
    kind: str
    unit: str
    minimum: float | None
    maximum: float | None
    choices: tuple
    label: str
    help: str
    group: str
    cli_flag: str

    # -- text ---------------------------------------------------------------------------------
    def unit_text(self) -> str:
        return f" {self.unit}" if self.unit and self.unit != "%" else self.unit

    def range_text(self) -> str:
        """'0.5–30 s', 'one of oSVD, cSVD, …', 'on or off' …"""
        if self.kind == "choice":
            return "one of " + ", ".join(self.choices)
        if self.kind == "bool":
            return "on or off"
        if self.kind == "auto_bool":
            return "auto, on or off"
        low = "−∞" if self.minimum is None else f"{self.minimum:g}"
        high = "∞" if self.maximum is None else f"{self.maximum:g}"
        text = f"{low}–{high}{self.unit_text()}"
        if self.kind.startswith("optional"):
            text += " (or empty)"
        return text

    def default_text(self) -> str:
        value = self.default
        if value is None:
            return "auto"
        if isinstance(value, bool):
            return "on" if value else "off"
        if isinstance(value, float):
            return f"{value:g}{self.unit_text()}"
        return f"{value}{self.unit_text()}"

    # -- values -------------------------------------------------------------------------------
    def validate(self, value):
        """``value`` checked and normalised (int/float/bool/str/None); :class:`SettingsError`."""
        where = f"Setting {self.name} ({self.cli_flag})"
        if self.kind in ("bool", "auto_bool"):
            if value is None and self.kind == "auto_bool":
                return None
            if isinstance(value, bool):
                return value
            if hasattr(value, "dtype") and str(getattr(value, "dtype")) == "bool":
                return bool(value)
            raise SettingsError(f"{where} must be {self.range_text()} (true/false), got {value!r}.")
        if self.kind == "choice":
            matches = [c for c in self.choices if str(value).lower() == c.lower()]
            if not isinstance(value, str) or not matches:
                raise SettingsError(f"{where} must be {self.range_text()}; got {value!r}.")
            return matches[0]
        if value is None and self.kind.startswith("optional"):
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)) and not _is_numpy_number(value):
            raise SettingsError(f"{where} must be a number in {self.range_text()}; got {value!r}.")
        number = float(value)
        if not math.isfinite(number):
            raise SettingsError(f"{where} must be a finite number in {self.range_text()}; got {value!r}.")
        if self.kind in ("int", "optional_int"):
            if number != int(number):
                raise SettingsError(f"{where} must be a whole number in {self.range_text()}; got {value!r}.")
            number = int(number)
        if (self.minimum is not None and number < self.minimum) or (
                self.maximum is not None and number > self.maximum):
            raise SettingsError(f"{where} is out of range: {value!r}{self.unit_text()}; allowed "
                                f"{self.range_text()}.")
        return number

    def to_dict(self) -> dict:
        """JSON-ready declaration (docs, tests, the panel)."""
        return {"name": self.name, "owner": self.owner, "default": self.default, "kind": self.kind,
                "unit": self.unit, "minimum": self.minimum, "maximum": self.maximum,
                "choices": list(self.choices), "label": self.label, "help": self.help,
                "group": self.group, "cli_flag": self.cli_flag}


def _is_numpy_number(value) -> bool:
    dtype = getattr(value, "dtype", None)
    return dtype is not None and getattr(value, "ndim", 1) == 0 and dtype.kind in "iuf"


def setting(default, *, unit: str = "", label: str, help: str, group: str, minimum=None, maximum=None,
            choices=(), kind: str | None = None, cli: str | None = None):
    """A dataclass field carrying its :class:`Setting` (owner and name are filled in later)."""
    if kind is None:
        if choices:
            kind = "choice"
        elif isinstance(default, bool):
            kind = "bool"
        elif isinstance(default, int):
            kind = "int"
        else:
            kind = "float"
    if kind not in KINDS or group not in GROUPS:
        raise ValueError(f"bad setting declaration: kind {kind!r}, group {group!r}")
    spec = dict(default=default, kind=kind, unit=unit, minimum=minimum, maximum=maximum,
                choices=tuple(choices), label=label, help=help, group=group, cli_flag=cli)
    return field(default=default, metadata={"setting": spec})


def _declarations(cls, owner: str) -> tuple:
    out = []
    for f in dataclasses.fields(cls):
        spec = f.metadata.get("setting")
        if spec is None:
            continue
        flag = spec["cli_flag"] or "--" + f.name.replace("_", "-")
        out.append(Setting(name=f.name, owner=owner, **{**spec, "cli_flag": flag}))
    return tuple(out)


class _Validated:
    """Mixin: validate every declared field on construction (``SettingsError`` otherwise)."""

    def __post_init__(self):
        for spec in type(self).declared():
            object.__setattr__(self, spec.name, spec.validate(getattr(self, spec.name)))

    @classmethod
    def declared(cls) -> tuple:
        return _declarations(cls, cls._OWNER)

    @classmethod
    def from_mapping(cls, values: dict | None = None, **overrides):
        """Build from a mapping of field names (unknown names refused, clearly)."""
        values = dict(values or {}, **overrides)
        if not isinstance(values, dict):
            raise SettingsError(f"{cls.__name__} needs a mapping of setting names to values.")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise SettingsError(f"Unknown {cls.__name__} setting(s): {', '.join(unknown)}. Known: "
                                f"{', '.join(s.name for s in cls.declared())}.")
        return cls(**values)

    def settings_dict(self) -> dict:
        """Declared settings only, name -> value (JSON-ready)."""
        return {spec.name: getattr(self, spec.name) for spec in type(self).declared()}


@dataclass
class LesionSettings(_Validated):
    """Thresholds, clean-up switches and clinical inputs (PERFUSION.md §8–10); every field is a
    :func:`setting`, so its unit, range and help are in its declaration below."""

    _OWNER = "lesion"

    core_adc: float = setting(
        620.0, unit="×10⁻⁶ mm²/s", minimum=200.0, maximum=1200.0, group="Core",
        label="Core: ADC below", cli="--core-adc",
        help="MR core: ADC below this (DEFUSE 3 / EXTEND-IA use 620 ×10⁻⁶ mm²/s).")
    core_rcbf_percent: float = setting(
        30.0, unit="%", minimum=5.0, maximum=80.0, group="Core",
        label="Core: rCBF below", cli="--core-rcbf",
        help="CT core: CBF below this percentage of the reference CBF (trials: 30 %).")
    tmax_threshold: float = setting(
        6.0, unit="s", minimum=1.0, maximum=20.0, group="Hypoperfusion",
        label="Hypoperfusion: Tmax above", cli="--tmax",
        help="Hypoperfused tissue: Tmax above this (trials: 6 s).")
    rcbf_reference: str = setting(
        "contralateral", choices=RCBF_REFERENCES, group="rCBF reference (CT)",
        label="rCBF reference",
        help="Normal CBF for the CT core: the unaffected hemisphere (contralateral), tissue with "
             "Tmax < reference-normal-tmax (tmax_lt_4), or the mirrored voxel (mirror).")
    rcbf_statistic: str = setting(
        "trimmed_mean", choices=RCBF_STATISTICS, group="rCBF reference (CT)", label="Reference statistic",
        help="Statistic of the reference tissue CBF: trimmed mean (5th–95th percentile; robust to "
             "stray vessel and CSF voxels, still the grey/white average), median or mean.")
    rcbf_exclude_vessels: bool = setting(
        True, group="rCBF reference (CT)", label="Reference without vessels",
        help="Leave the voxels of the vessel rule (CBV above the limit, arterial timing) out of the "
             "rCBF reference tissue, as CSF is.")
    reference_normal_tmax: float = setting(
        4.0, unit="s", minimum=1.0, maximum=10.0, group="rCBF reference (CT)",
        label="Normal tissue: Tmax below", help="For rcbf_reference tmax_lt_4: normal tissue has Tmax below this.")
    mirror_sigma_mm: float = setting(
        5.0, unit="mm", minimum=0.0, maximum=20.0, group="rCBF reference (CT)",
        label="Mirror reference smoothing", help="Gaussian σ of the mirrored reference CBF (mirror).")
    brain_mask: bool = setting(
        True, group="Clean-up", label="Restrict to the brain", cli="--restrict-to-brain",
        help="Keep lesion voxels inside the brain mask (and, on CT, below the bone limit).")
    bone_hu: float = setting(
        80.0, unit="HU", minimum=30.0, maximum=300.0, group="Clean-up", label="CT bone limit",
        help="CT: baseline above this is bone, not brain.")
    csf_exclusion: bool = setting(
        True, group="Clean-up", label="Exclude CSF",
        help="Remove CSF (CT: baseline below csf_hu; MR: ADC above csf_adc).")
    csf_hu: float = setting(
        15.0, unit="HU", minimum=-20.0, maximum=40.0, group="Clean-up", label="CT CSF below",
        help="CT: baseline below this is CSF.")
    csf_adc: float = setting(
        2000.0, unit="×10⁻⁶ mm²/s", minimum=1000.0, maximum=4000.0, group="Clean-up",
        label="MR CSF: ADC above", help="MR: ADC above this is CSF.")
    vessel_exclusion: bool = setting(
        True, group="Clean-up", label="Exclude vessels",
        help="Remove large vessels (CBV above the limit, or arterial timing with high CBV).")
    vessel_cbv: float = setting(
        8.0, unit="mL/100 g", minimum=2.0, maximum=50.0, group="Clean-up", label="CT vessel: CBV above",
        help="CT: CBV above this is a vessel.")
    vessel_cbv_multiple: float = setting(
        4.0, unit="× brain median", minimum=1.5, maximum=20.0, group="Clean-up",
        label="MR vessel: CBV above", help="MR (relative CBV): CBV above this multiple of the brain median is a vessel.")
    vessel_ttp_window_s: float | None = setting(
        None, unit="s", minimum=0.0, maximum=10.0, kind="optional_float", group="Clean-up",
        label="Vessel: TTP within", cli="--vessel-ttp-window",
        help="Vessel also when TTP ≤ AIF TTP + this and CBV above 0.75 × the limit; empty: one "
             "frame interval; 0 switches this criterion off.")
    restrict_to_affected_hemisphere: bool = setting(
        False, group="Clean-up", label="Affected hemisphere only",
        help="Keep lesion voxels on the side with the Tmax deficit only (not applied when no side is found).")
    core_within_hypoperfusion: bool | None = setting(
        None, kind="auto_bool", group="Clean-up", label="Core inside hypoperfusion",
        cli="--core-in-hypoperfusion",
        help="Keep only core inside the cleaned hypoperfused region (auto: on for CT, off for MR).")
    tmax_median_filter: bool | None = setting(
        None, kind="auto_bool", group="Clean-up", label="Tmax median filter",
        help="In-plane NaN-aware median of Tmax before thresholding (auto: on for CT, off for MR).")
    tmax_median_size_voxels: int = setting(
        3, unit="voxels", minimum=1, maximum=9, group="Clean-up", label="Tmax median size",
        cli="--tmax-median-size", help="Width of the Tmax median filter (1 = none).")
    cbf_smoothing_fwhm_mm: float = setting(
        0.0, unit="mm", minimum=0.0, maximum=20.0, group="Clean-up", label="CT CBF smoothing FWHM",
        cli="--cbf-smoothing-fwhm",
        help="CT core: in-plane Gaussian smoothing of tissue CBF before rCBF < threshold (0: off; "
             "off by default since the concentration is denoised before deconvolution).")
    opening: bool = setting(
        True, group="Clean-up", label="Opening of Tmax masks",
        help="Morphological opening of the Tmax masks (removes thin speckle).")
    core_opening: bool = setting(
        False, group="Clean-up", label="Opening of the core", help="Morphological opening of the core.")
    opening_radius_voxels: int = setting(
        1, unit="voxels", minimum=0, maximum=5, group="Clean-up", label="Opening radius",
        cli="--opening-radius", help="Radius of the opening ball, × the finest spacing (in-plane for thick slices).")
    fill_holes: bool = setting(
        True, group="Clean-up", label="Fill holes", help="Fill 2D holes of the Tmax masks inside tissue.")
    fill_holes_max_mm2: float = setting(
        400.0, unit="mm²", minimum=0.0, maximum=10000.0, group="Clean-up", label="Largest hole filled",
        cli="--fill-holes-max-area",
        help="Holes larger than this area in their slice stay open (0: no limit).")
    cluster_removal: bool = setting(
        True, group="Clean-up", label="Remove small clusters",
        help="Remove connected clusters smaller than the minimum volumes.")
    min_core_ml: float = setting(
        0.5, unit="mL", minimum=0.0, maximum=50.0, group="Clean-up", label="Smallest core cluster",
        help="Core clusters smaller than this are removed.")
    min_hypoperfusion_ml: float = setting(
        1.0, unit="mL", minimum=0.0, maximum=50.0, group="Clean-up", label="Smallest Tmax cluster",
        help="Clusters of every Tmax mask smaller than this are removed.")
    max_yaw_deg: float = setting(
        15.0, unit="°", minimum=0.0, maximum=45.0, group="Affected side", label="Midline: largest yaw",
        help="Largest head rotation searched for the mid-sagittal plane.")
    side_min_ml: float = setting(
        1.0, unit="mL", minimum=0.0, maximum=100.0, group="Affected side", label="Side: smallest deficit",
        help="A side is named only when its Tmax deficit is at least this volume.")
    side_min_asymmetry: float = setting(
        0.2, unit="", minimum=0.0, maximum=1.0, group="Affected side", label="Side: smallest asymmetry",
        help="… and the deficit asymmetry (L−R)/(L+R) is at least this (0–1).")
    side_min_median_difference_s: float = setting(
        1.0, unit="s", minimum=0.0, maximum=10.0, group="Affected side", label="Side: Tmax difference",
        cli="--side-min-median-difference",
        help="… or the hemispheres' median Tmax differ by at least this.")
    age: int | None = setting(
        None, unit="years", minimum=0, maximum=120, kind="optional_int", group="Clinical", label="Age",
        help="Patient age, for DAWN (empty: not given).")
    nihss: int | None = setting(
        None, unit="", minimum=0, maximum=42, kind="optional_int", group="Clinical", label="NIHSS",
        help="NIH Stroke Scale 0–42, for DAWN (empty: not given).")
    collateral_score: int | None = setting(
        None, unit="", minimum=0, maximum=5, kind="optional_int", group="Clinical", label="Collateral score",
        help="Collateral grade entered by the user, for the illustrative tissue rule (empty: not given).")

    @property
    def core_rcbf(self) -> float:
        """The CT core threshold as a fraction of the reference CBF (``core_rcbf_percent`` / 100)."""
        return self.core_rcbf_percent / 100.0

    @property
    def tmax_report_thresholds(self) -> tuple:
        return REPORT_TMAX_THRESHOLDS_S

    def validate(self) -> None:
        """Check every field again (after ``dataclasses.replace`` or attribute changes)."""
        self.__post_init__()

    def median_filter(self, modality: str) -> bool:
        return modality == "ct" if self.tmax_median_filter is None else bool(self.tmax_median_filter)

    def core_within(self, modality: str) -> bool:
        return (modality == "ct" if self.core_within_hypoperfusion is None
                else bool(self.core_within_hypoperfusion))

    def to_dict(self) -> dict:
        return self.settings_dict()


def _default_lesion_settings():
    return LesionSettings()


@dataclass
class CaseSettings(_Validated):
    """Case-wide choices (deconvolution, physiology constants, motion) and the case's inputs
    that are not settings: manual AIF ``aif_voxels`` (k, j, i) triples or ``aif_mask`` bool
    [K, J, I]; ``baseline`` (start, stop) frames used verbatim (stop exclusive); ``lesion``
    :class:`LesionSettings`."""

    _OWNER = "case"

    method: str = setting(
        "oSVD", choices=METHODS, group="Deconvolution", label="Deconvolution",
        help="oSVD (Wu 2003, delay-insensitive; default), block-circulant cSVD, standard sSVD or Tikhonov.")
    hematocrit_factor: float = setting(
        0.73, unit="", minimum=0.3, maximum=1.0, group="Deconvolution", label="Hematocrit factor k_H",
        help="(1 − Hct large vessels)/(1 − Hct capillaries); scales CBF and CBV (PERFUSION.md §5).")
    tissue_density: float = setting(
        1.04, unit="g/mL", minimum=0.9, maximum=1.2, group="Deconvolution", label="Tissue density ρ",
        help="Brain tissue density; CBF and CBV per 100 g.")
    motion_correction: bool = setting(
        True, group="Deconvolution", label="Motion correction",
        help="Rigid registration of every frame to the pre-bolus mean before the analysis.")
    ct_analysis_resolution_mm: float = setting(
        2.0, unit="mm", minimum=0.0, maximum=10.0, group="Deconvolution", label="CT analysis resolution",
        cli="--ct-analysis-resolution",
        help="CT finer than this in-plane is block-averaged by whole factors to at most this voxel "
             "size (0.45 mm → 1.8 mm) before the analysis; maps are on that grid (0: as acquired).")
    denoise: str = setting(
        "auto", choices=DENOISE_CHOICES, group="Deconvolution", label="Denoising",
        help="Denoise the concentration in-plane before deconvolution: TIPS bilateral (edge "
             "preserving), Gaussian or none; auto: TIPS on CT, none on MR.")
    denoise_sigma_mm: float = setting(
        2.5, unit="mm", minimum=0.0, maximum=10.0, group="Deconvolution", label="Denoising σ",
        help="Spatial σ of the denoising kernel (TIPS reaches 2σ).")
    slice_timing_correction: bool = setting(
        True, group="Deconvolution", label="Slice-timing correction",
        help="Resample each slice's curves from its own acquisition time (DICOM slice timing, BIDS "
             "SliceTiming) to the frame times before deconvolution; series without slice timing are "
             "left as they are.")
    verdict_stability: bool = setting(
        True, group="Reporting", label="Verdict stability",
        help="Re-run the lesion analysis around each threshold (Tmax ±1 s, ADC ±50, rCBF ±5 points) "
             "and mark verdicts near a cut-off.")
    aif_voxels: Any = None
    aif_mask: Any = None
    baseline: tuple | None = None
    lesion: LesionSettings = field(default_factory=_default_lesion_settings)

    def denoise_method(self, modality: str) -> str:
        """The denoising actually used: "auto" is TIPS on CT and none on MR."""
        if self.denoise == "auto":
            return "tips" if modality == "ct" else "none"
        return self.denoise

    def __post_init__(self):
        super().__post_init__()
        import numpy as np

        if isinstance(self.lesion, dict):
            self.lesion = LesionSettings.from_mapping(self.lesion)
        if not isinstance(self.lesion, LesionSettings):
            raise SettingsError("CaseSettings.lesion must be LesionSettings (or a mapping of its settings).")
        if self.aif_voxels is not None:
            try:
                voxels = np.asarray(self.aif_voxels, dtype=float)
            except (TypeError, ValueError):
                voxels = np.zeros((0,))
            if voxels.ndim == 1 and voxels.size == 3:
                voxels = voxels[None, :]
            if voxels.ndim != 2 or voxels.shape[1] != 3 or voxels.shape[0] == 0:
                raise SettingsError(
                    "AIF voxels must be a list of (k, j, i) index triples, e.g. '12,40,33;12,40,34'.")
            if not np.all(np.isfinite(voxels)) or not np.all(np.equal(np.mod(voxels, 1), 0)):
                raise SettingsError("AIF voxel indices must be whole numbers (k, j, i).")
            self.aif_voxels = voxels.astype(int)
        if self.baseline is not None:
            try:
                start, stop = (int(v) for v in self.baseline)
            except (TypeError, ValueError):
                raise SettingsError(
                    "The baseline override must be a (start, stop) pair of frame indices.") from None
            if start < 0 or stop <= start:
                raise SettingsError(
                    f"Baseline frames ({start}, {stop}) are not a valid range: need 0 ≤ start < stop.")
            self.baseline = (start, stop)

    def to_dict(self) -> dict:
        """JSON-ready: the declared settings of both levels (flat) and the case's AIF/baseline inputs."""
        import numpy as np

        out = {**self.settings_dict(), **self.lesion.settings_dict()}
        out["aif_voxels_kji"] = None if self.aif_voxels is None else np.asarray(self.aif_voxels).tolist()
        out["aif_mask_voxels"] = None if self.aif_mask is None else int(np.count_nonzero(self.aif_mask))
        out["baseline_frames"] = None if self.baseline is None else list(self.baseline)
        return out


def all_settings() -> tuple:
    """Every :class:`Setting`, case-level first, in declaration order."""
    return CaseSettings.declared() + LesionSettings.declared()


def settings_by_name() -> dict:
    return {spec.name: spec for spec in all_settings()}


def settings_by_group() -> dict:
    """group -> [Setting, …] in :data:`GROUPS` order."""
    groups = {name: [] for name in GROUPS}
    for spec in all_settings():
        groups[spec.group].append(spec)
    return {name: specs for name, specs in groups.items() if specs}


def case_settings_from_values(values: dict) -> CaseSettings:
    """A :class:`CaseSettings` from a flat mapping name -> value (missing names: defaults);
    case inputs ``aif_voxels``, ``aif_mask``, ``baseline`` may be included."""
    specs = settings_by_name()
    case_inputs = ("aif_voxels", "aif_mask", "baseline")
    unknown = sorted(k for k in values if k not in specs and k not in case_inputs)
    if unknown:
        raise SettingsError(f"Unknown setting(s): {', '.join(unknown)}.")
    lesion = {k: v for k, v in values.items() if k in specs and specs[k].owner == "lesion"}
    case = {k: v for k, v in values.items() if k not in lesion}
    return CaseSettings(**case, lesion=LesionSettings(**lesion))


def settings_markdown() -> str:
    """docs/SETTINGS.md: every setting by group, with CLI option, default, range and help."""
    lines = ["# Settings", "",
             "Generated from `StrokeMismatchLib/settings.py` by `python scripts/write_settings_doc.py`; "
             "the CLI options, the Slicer panel and the `settings` block of summary.json are derived from "
             "the same declarations. Units are those shown to users.", ""]
    for group, specs in settings_by_group().items():
        lines += [f"## {group}", "", "| setting | CLI option | default | allowed | meaning |",
                  "| --- | --- | --- | --- | --- |"]
        for spec in specs:
            flag = spec.cli_flag if spec.kind not in ("bool", "auto_bool") else \
                f"{spec.cli_flag} / --no-{spec.cli_flag[2:]}"
            lines.append(f"| `{spec.name}` | `{flag}` | {spec.default_text()} | {spec.range_text()} | "
                         f"{spec.help} |")
        lines.append("")
    return "\n".join(lines)
