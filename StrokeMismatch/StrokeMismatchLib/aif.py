"""Arterial input function: automatic (after Mouridsen et al. MRM 2006;55:524) or manual.

Automatic selection (PERFUSION.md §3.1), deterministic (no random starts):

0. First-pass window (our choice): from the mean curve's bolus arrival − 2 frames to its peak +
   2·(peak − arrival) + 2 frames. Areas, first moments and clustering use this window only, so
   the long noisy tail (and S0 errors, which add a constant offset to a voxel's curve) do not
   drive the selection.
1. Candidates: voxels in ``mask`` (all voxels if none) with a bolus (positive peak and area),
   not saturated (MR, when ``signal`` is given: min S/S0 ≥ ``saturation_ratio``), and peaking
   **early**: time to peak no later than that of the mean curve (arteries lead tissue; this
   drops veins, whose area is larger).
2. Area: keep the top ``auc_fraction`` (10 %) by (windowed) area under the curve.
3. Irregularity: roughness Σ(second difference)²/AUC², the second differences taken outside the
   first-pass window (so a sharp bolus is not penalised); drop the most irregular 25 %.
4. Clustering: k-means (k = 5) seeded deterministically by first moment quantiles, keep the
   cluster whose mean curve has the lowest first moment (ties: higher peak). Mouridsen's second
   pass (k-means again on its members, keep the lowest-first-moment cluster again) runs only
   when the cluster has more than ``min_split`` (50) members (``n_passes=1`` switches it off).
   Our choice: at SNR 20 a forced second pass left 4–6 voxels and a noisier AIF (volume
   phantom, 3 seeds: CBF within 4 % of the true-AIF CBF, against up to 11 % when forced).
5. AIF = mean curve of the final cluster.

Manual: ``voxels`` (N, ndim) indices or ``manual_mask``; :func:`voxels_around` gives a 3×3
in-plane neighbourhood of a picked point. Quality figures are reported for both.

**An AIF must be an artery, or there is none** (PERFUSION.md §3.1; issue 20). Clustering always
returns *something* (on a CT slab without an artery: 28 scattered grey-matter voxels peaking at
9 HU), so before step 2 the candidates are gated (``gate=True``), each rule a constant below:

- blood-like baseline, CT only (``CT_BLOOD_HU``: 20–80 HU, not CSF, not bone);
- peak well above the voxel's own pre-bolus noise (``MIN_PEAK_TO_NOISE`` 6; after Straka 2010);
- peak well above the brain-average curve's (``MIN_PEAK_VS_TISSUE``: CT 4×, MR 2×);
- early arrival: no later than the brain-average curve's arrival (+ ``ARRIVAL_TOLERANCE_FRAMES``);
- a return toward baseline after the peak (below ``RETURN_FRACTION`` 50 % of it);
- peaking before the brain-average curve (at least one frame; veins, tissue).

When fewer than ``min_artery_voxels`` candidates pass, selection runs on the ungated candidates
as before (so the maps can still be reviewed) but ``AIFResult.artery["found"]`` is False with the
reason "no artery found". The final AIF curve — automatic or manual — is checked against the
same rules (:func:`artery_checks`); any failure also sets ``found`` False. The pipeline turns
that into a quality flag of severity "error" (every verdict indeterminate).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .concentration import check_times, curve_arrival_index, detect_baseline_curve, mean_curve
from .errors import InputDataError

CHUNK_VOXELS = 1 << 16

#: Artery rules (module docstring). CT baseline of blood-like voxels (HU): below is CSF, above bone.
CT_BLOOD_HU = (20.0, 80.0)
#: Peak ÷ the voxel's pre-bolus noise SD (Straka et al. JMRI 2010 use SNR ≥ 6 for arteries).
MIN_PEAK_TO_NOISE = 6.0
#: AIF peak ÷ the brain-average curve's peak. CT: arteries 200–500 HU against a 10–30 HU brain
#: average (volume phantom: 75×; the best grey matter of a slab without artery: 2.8×). MR:
#: ΔR2* of tissue per unit contrast is far higher than of blood (§11.3), so grey matter comes
#: close: on the volume phantom the artery reads 3.3–4.2× and grey matter 2.3–2.4×, and a higher
#: limit only selects the noisiest grey-matter voxels (2.9× at a 2.8 limit). MR therefore keeps
#: a modest limit; a slab without an artery is not reliably detected on MR (known limit).
MIN_PEAK_VS_TISSUE = {"ct": 4.0, "mr": 2.0}
#: After its peak an artery falls below this fraction of it before the end (a step does not).
RETURN_FRACTION = 0.5
#: Frames an artery's arrival may lag the brain-average arrival (sampling and noise).
ARRIVAL_TOLERANCE_FRAMES = 1
#: Per-voxel arrival: first frame above max(ARRIVAL_SD_FACTOR · noise SD, 5 % of the peak).
ARRIVAL_SD_FACTOR = 4.0


@dataclass
class AIFResult:
    """AIF ``curve`` [T] (concentration units), ``voxels`` (N, ndim) int indices, ``method``
    "automatic"|"manual", ``quality`` dict (peak_height, time_to_peak_s, fwhm_s, first_moment_s,
    auc, returns_to_baseline, noise_sd, n_voxels, min_signal_ratio), ``warnings`` list[str]."""

    curve: np.ndarray
    voxels: np.ndarray
    method: str
    quality: dict = field(default_factory=dict)
    warnings: list = field(default_factory=list)
    #: Is it an artery? {"found": bool | None, "reason": str, "checks": [..], "gated_candidates": n}
    artery: dict = field(default_factory=dict)


def _first_moment(curves, times):
    c = np.clip(curves, 0, None)
    total = c.sum(axis=-1)
    return np.where(total > 0, (c * times).sum(axis=-1) / np.where(total > 0, total, 1.0), np.inf)


def _trapz_weights(times):
    w = np.zeros(times.size)
    d = np.diff(times)
    w[:-1] += d / 2
    w[1:] += d / 2
    return w


def curve_quality(curve, times, *, voxel_curves=None):
    """Quality figures of an AIF ``curve`` [T] on ``times`` (s).

    peak_height, time_to_peak_s (from the first frame), fwhm_s (linear half-maximum crossings),
    first_moment_s, auc, returns_to_baseline (after the peak the curve falls below 20 % of its
    peak before the end; False means a truncated bolus), noise_sd (SD of the pre-bolus frames;
    the median over ``voxel_curves`` when given, i.e. single-voxel noise).
    """
    curve = np.asarray(curve, dtype=float)
    t = times - times[0]
    ip = int(np.argmax(curve))
    peak = float(curve[ip])
    half = peak / 2
    fwhm = np.nan
    if peak > 0:
        left = np.flatnonzero(curve[:ip + 1] < half)
        right = np.flatnonzero(curve[ip:] < half)
        if left.size and right.size:
            i0 = left[-1]
            i1 = ip + right[0]
            tl = np.interp(half, [curve[i0], curve[i0 + 1]], [t[i0], t[i0 + 1]])
            tr = np.interp(-half, [-curve[i1 - 1], -curve[i1]], [t[i1 - 1], t[i1]])
            fwhm = float(tr - tl)
    returns = bool(peak > 0 and np.any(curve[ip:] < 0.2 * peak))
    info = detect_baseline_curve(curve, modality="ct", skip_frames=0)
    base = slice(info.start, max(info.stop, info.start + 2))

    def sd(x):
        return float(np.std(x[..., base], axis=-1, ddof=1).mean()) if x.shape[-1] >= 2 else np.nan

    if voxel_curves is not None and len(voxel_curves):
        noise = float(np.median(np.std(np.asarray(voxel_curves)[:, base], axis=-1, ddof=1)))
    else:
        noise = sd(curve)
    return {
        "peak_height": peak,
        "time_to_peak_s": float(t[ip]),
        "fwhm_s": fwhm,
        "first_moment_s": float(_first_moment(curve, t)),
        "auc": float(curve @ _trapz_weights(times)),
        "returns_to_baseline": returns,
        "noise_sd": noise,
    }


def voxels_around(index, shape, radius=1):
    """Voxel indices of the (2r+1)×(2r+1) in-plane neighbourhood of ``index`` (k, j, i), clipped to ``shape``."""
    index = tuple(int(x) for x in index)
    offsets = np.arange(-radius, radius + 1)
    jj, ii = np.meshgrid(offsets, offsets, indexing="ij")
    out = np.stack([np.full(jj.size, index[0]), index[1] + jj.ravel(), index[2] + ii.ravel()], axis=1)
    inside = np.all((out >= 0) & (out < np.asarray(shape)[:3]), axis=1)
    return out[inside]


def _kmeans(x, k, seed_order, n_iter=50):
    """Deterministic k-means (Lloyd) with centres seeded at ``seed_order`` quantiles."""
    n = x.shape[0]
    k = min(k, n)
    order = np.argsort(seed_order, kind="stable")
    groups = np.array_split(order, k)
    centres = np.stack([x[g].mean(axis=0) for g in groups])
    labels = np.full(n, -1)
    for _ in range(n_iter):
        d = (x**2).sum(1)[:, None] - 2 * x @ centres.T + (centres**2).sum(1)[None, :]
        new = np.argmin(d, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for c in range(k):
            members = labels == c
            if members.any():
                centres[c] = x[members].mean(axis=0)
    return labels, k


def _earliest_cluster(curves, times, k, normalize):
    """Indices (into ``curves``) of the k-means cluster with the lowest first moment."""
    fm = _first_moment(curves, times)
    if curves.shape[0] <= k:
        return np.arange(curves.shape[0])
    x = curves
    if normalize:
        area = np.clip(curves, 0, None).sum(axis=1, keepdims=True)
        x = curves / np.where(area > 0, area, 1.0)
    labels, kk = _kmeans(x, k, fm)
    best, best_key = None, None
    for c in range(kk):
        members = np.flatnonzero(labels == c)
        if members.size == 0:
            continue
        mean = curves[members].mean(axis=0)
        key = (float(_first_moment(mean, times)), -float(mean.max()))
        if best_key is None or key < best_key:
            best, best_key = members, key
    return best


def select_aif(concentration, times, *, mask=None, voxels=None, manual_mask=None, signal=None,
               auc_fraction=0.10, irregular_fraction=0.25, n_clusters=5, normalize=False,
               saturation_ratio=0.1, min_candidates=10, n_passes=2, min_split=50,
               modality=None, baseline_image=None, baseline_frames=None, gate=True,
               min_artery_voxels=4) -> AIFResult:
    """AIF from concentration curves [..., T]: automatic (module docstring) or manual.

    ``mask`` (bool, leading shape) restricts the automatic search (e.g. brain mask or a slab at
    the MCA level). ``voxels`` ((N, ndim) indices) or ``manual_mask`` select the AIF voxels by
    hand. ``signal`` (raw MR signal, same shape) enables the saturation check. Same input →
    same AIF. Artery rules (module docstring): ``modality`` "mr"|"ct" (None: the CT
    baseline rule is skipped and the MR peak ratio used), ``baseline_image`` pre-bolus mean
    (CT HU) for the blood-like baseline rule, ``baseline_frames`` (start, stop) for the noise SD
    and arrival (default: frames before the mean curve's arrival); ``gate`` False selects
    without the rules (the result is still checked); ``min_artery_voxels`` below which "no
    artery found".
    """
    conc = np.asarray(concentration)
    times = check_times(times, conc.shape[-1])
    lead = conc.shape[:-1]
    flat = conc.reshape(-1, conc.shape[-1])
    warnings = []
    tcentred = times - times[0]
    modality = None if modality is None else str(modality).lower()
    if baseline_image is not None:
        baseline_image = np.asarray(baseline_image, dtype=float)
        if baseline_image.shape != lead:
            raise InputDataError(f"Baseline image shape {baseline_image.shape} does not match the grid {lead}.")
    global_curve = mean_curve(conc, mask) if (mask is None or np.any(mask)) else None

    if voxels is not None or manual_mask is not None:
        if manual_mask is not None:
            manual_mask = np.asarray(manual_mask, dtype=bool)
            if manual_mask.shape != lead:
                raise InputDataError(f"AIF mask shape {manual_mask.shape} does not match the image grid {lead}.")
            vox = np.argwhere(manual_mask)
        else:
            vox = np.atleast_2d(np.asarray(voxels, dtype=int))
            if vox.shape[1] != len(lead):
                raise InputDataError(f"AIF voxels must be (N, {len(lead)}) indices; got shape {vox.shape}.")
            if np.any(vox < 0) or np.any(vox >= np.asarray(lead)):
                raise InputDataError("Some AIF voxel indices lie outside the image: pick voxels inside it.")
        if vox.shape[0] == 0:
            raise InputDataError("No AIF voxels were given: pick at least one voxel in an artery.")
        flat_index = np.ravel_multi_index(tuple(vox.T), lead)
        curves = np.nan_to_num(flat[flat_index].astype(float))
        curve = curves.mean(axis=0)
        result = AIFResult(curve, vox, "manual", warnings=warnings)
        _finish(result, curves, times, signal, flat_index=flat_index, lead=lead)
        # warn when the AIF peaks later than the average tissue
        tissue = global_curve
        if tissue is not None and np.argmax(curve) > np.argmax(tissue):
            warnings.append("The manual AIF peaks later than the average tissue curve: is it a vein or a "
                            "downstream artery? Pick an artery on the unaffected side.")
        result.artery = _artery_verdict(result, curves, tissue, times, modality, baseline_image,
                                        flat_index, baseline_frames, gated=None)
        return result

    index = np.arange(flat.shape[0]) if mask is None else np.flatnonzero(np.asarray(mask, bool))
    if mask is not None and np.asarray(mask).shape != lead:
        raise InputDataError(f"Mask shape {np.asarray(mask).shape} does not match the image grid {lead}.")
    if index.size == 0:
        raise InputDataError("The AIF search mask is empty: give a mask with brain voxels.")
    # first-pass window from the mean curve: bolus arrival − 2 frames … peak + 2·(peak − arrival) + 2
    g_peak = int(np.argmax(global_curve))
    g_info = detect_baseline_curve(global_curve, modality="ct", skip_frames=0)
    g_bat = g_info.bolus_arrival_index if g_info.bolus_arrival_index is not None else 0
    w_lo = max(0, min(g_bat, g_peak) - 2)
    w_hi = min(times.size, g_peak + 2 * max(g_peak - g_bat, 2) + 3)
    window = np.zeros(times.size, bool)
    window[w_lo:w_hi] = True
    wt = _trapz_weights(times) * window
    # pass 1 (chunked): windowed area, time to peak, peak, saturation
    auc = np.empty(index.size)
    ttp = np.empty(index.size, dtype=int)
    peak = np.empty(index.size)
    ok = np.ones(index.size, bool)
    artery_like = np.ones(index.size, bool)
    pre_lo, pre_hi = _prebolus_frames(baseline_frames, g_bat, times.size)
    g_arrival = curve_arrival_index(global_curve, start=pre_lo)
    g_arrival = g_bat if g_arrival is None else g_arrival
    ratio = MIN_PEAK_VS_TISSUE.get(modality or "mr")
    sig_flat = None if signal is None else np.asarray(signal).reshape(-1, conc.shape[-1])
    frame = np.arange(times.size)
    for lo in range(0, index.size, CHUNK_VOXELS):
        rows = np.nan_to_num(flat[index[lo:lo + CHUNK_VOXELS]].astype(np.float64))
        auc[lo:lo + CHUNK_VOXELS] = rows @ wt
        ttp[lo:lo + CHUNK_VOXELS] = np.argmax(rows, axis=1)
        peak[lo:lo + CHUNK_VOXELS] = rows.max(axis=1)
        if gate:
            p = peak[lo:lo + CHUNK_VOXELS]
            tp = ttp[lo:lo + CHUNK_VOXELS]
            noise = rows[:, pre_lo:pre_hi].std(axis=1, ddof=1)
            level = np.maximum(ARRIVAL_SD_FACTOR * noise, 0.05 * p)[:, None]
            above = (rows > level) & (frame >= pre_lo)
            arrival = np.where(above.any(axis=1), np.argmax(above, axis=1), times.size)
            after_min = np.where(frame[None, :] >= tp[:, None], rows, np.inf).min(axis=1)
            good = (p >= MIN_PEAK_TO_NOISE * noise) & (p >= ratio * global_curve.max())
            good &= arrival <= g_arrival + ARRIVAL_TOLERANCE_FRAMES
            good &= after_min <= RETURN_FRACTION * p
            good &= tp < g_peak  # peaks before the brain average (the step below keeps ≤ for all)
            if modality == "ct" and baseline_image is not None:
                hu = baseline_image.reshape(-1)[index[lo:lo + CHUNK_VOXELS]]
                good &= (hu >= CT_BLOOD_HU[0]) & (hu <= CT_BLOOD_HU[1])
            artery_like[lo:lo + CHUNK_VOXELS] = good
        if sig_flat is not None:
            s = sig_flat[index[lo:lo + CHUNK_VOXELS]].astype(np.float64)
            s0 = np.maximum(s[:, : max(2, w_lo)].mean(axis=1), 1e-12)
            ok[lo:lo + CHUNK_VOXELS] &= s.min(axis=1) / s0 >= saturation_ratio
    if not ok.all():
        warnings.append(f"{int((~ok).sum())} saturated candidate voxels (min S/S0 < {saturation_ratio}) were excluded.")
    ok &= (auc > 0) & (peak > 0)
    ok &= ttp <= g_peak  # arteries peak no later than the average tissue (drops veins)
    gated = np.flatnonzero(ok & artery_like) if gate else None
    cand = np.flatnonzero(ok)
    # the area step keeps as many voxels as without the rules (top 10 % of the bolus voxels)
    n_keep = max(min_candidates, int(np.ceil(auc_fraction * cand.size)))
    if gated is not None and gated.size >= min_artery_voxels:
        cand = gated
    elif cand.size < min_candidates:
        raise InputDataError(
            f"Only {cand.size} voxels look like an artery (early, large bolus): automatic AIF selection "
            "failed. Check the mask and the bolus, or pick the AIF voxels by hand."
        )
    n_keep = min(cand.size, n_keep)
    cand = cand[np.argsort(-auc[cand], kind="stable")[:n_keep]]
    curves = np.nan_to_num(flat[index[cand]].astype(np.float64))
    area = auc[cand]
    # roughness Σ(second difference)²/AUC² outside the first-pass window (noise, irregular
    # recirculation), so that a sharp arterial bolus is not mistaken for irregularity
    d2 = np.diff(curves, n=2, axis=1)[:, ~window[1:-1]]
    rough = (d2**2).sum(axis=1) / area**2
    n_regular = max(1, int(np.floor((1 - irregular_fraction) * cand.size)))
    keep = np.argsort(rough, kind="stable")[:n_regular]
    keep.sort()
    cand, curves = cand[keep], curves[keep]
    bolus = curves[:, window]
    t_win = tcentred[window]
    sel = _earliest_cluster(bolus, t_win, n_clusters, normalize)
    if n_passes > 1 and sel.size > min_split:  # our choice: split again only a large cluster
        sel = sel[_earliest_cluster(bolus[sel], t_win, n_clusters, normalize)]
    final = index[cand[sel]]
    vox = np.stack(np.unravel_index(final, lead), axis=1) if len(lead) else np.zeros((final.size, 0), int)
    curve = curves[sel].mean(axis=0)
    result = AIFResult(curve, vox, "automatic", warnings=warnings)
    _finish(result, curves[sel], times, signal, flat_index=final, lead=lead)
    result.artery = _artery_verdict(result, curves[sel], global_curve, times, modality, baseline_image,
                                    final, baseline_frames, gated=None if gated is None else int(gated.size),
                                    min_artery_voxels=min_artery_voxels)
    return result


def _prebolus_frames(baseline_frames, arrival, n_frames):
    """(lo, hi) pre-bolus frames for noise SDs: the baseline, else the frames before arrival
    (at least 2)."""
    if baseline_frames is not None:
        lo, hi = (int(v) for v in baseline_frames)
    else:
        lo, hi = 0, int(arrival)
    hi = min(max(hi, lo + 2), n_frames)
    return lo, hi


def artery_checks(curve, times, *, tissue_curve, modality=None, voxel_noise_sd=None, baseline_hu=None,
                  baseline_frames=None) -> list:
    """The artery rules (module docstring) applied to one AIF ``curve`` [T].

    ``tissue_curve`` the brain-average concentration curve; ``voxel_noise_sd`` the median
    single-voxel pre-bolus SD of the AIF voxels (default: the curve's own); ``baseline_hu`` the
    median baseline HU of the AIF voxels (CT); ``baseline_frames`` (start, stop). Returns a list
    of dicts: name, value, threshold, passed (None when not checkable), meaning.
    """
    curve = np.asarray(curve, dtype=float)
    tissue = None if tissue_curve is None else np.asarray(tissue_curve, dtype=float)
    t = times - times[0]
    start = 0 if baseline_frames is None else int(baseline_frames[0])
    peak = float(curve.max())
    ip = int(np.argmax(curve))
    arrival = curve_arrival_index(curve, start=start)
    if voxel_noise_sd is None:
        lo, hi = _prebolus_frames(baseline_frames, arrival if arrival is not None else 2, curve.size)
        voxel_noise_sd = float(np.std(curve[lo:hi], ddof=1))
    checks = []

    def add(name, value, threshold, passed, meaning):
        checks.append({"name": name, "value": value, "threshold": threshold,
                       "passed": None if passed is None else bool(passed), "meaning": meaning})

    if modality == "ct":
        ok = None if baseline_hu is None else CT_BLOOD_HU[0] <= baseline_hu <= CT_BLOOD_HU[1]
        add("blood_like_baseline_hu", baseline_hu, list(CT_BLOOD_HU), ok,
            "Unenhanced blood reads 30–60 HU; lower is CSF, higher is bone (a skull edge that moved).")
    ptn = peak / voxel_noise_sd if voxel_noise_sd and voxel_noise_sd > 0 else float("inf")
    add("peak_to_noise", ptn, MIN_PEAK_TO_NOISE, ptn >= MIN_PEAK_TO_NOISE,
        "An artery's bolus stands far above the voxel noise; tissue or noise does not.")
    if tissue is not None and tissue.size == curve.size:
        ratio = MIN_PEAK_VS_TISSUE.get(modality or "mr")
        tissue_peak = float(tissue.max())
        value = peak / tissue_peak if tissue_peak > 0 else float("inf")
        add("peak_vs_tissue", value, ratio, value >= ratio,
            "Arterial blood carries far more contrast than the brain average; a lower peak is "
            "tissue, partial volume or noise.")
        t_arr = curve_arrival_index(tissue, start=start)
        ok = None if arrival is None or t_arr is None else arrival <= t_arr + ARRIVAL_TOLERANCE_FRAMES
        add("arrival_s", None if arrival is None else float(t[arrival]),
            None if t_arr is None else float(t[min(t_arr + ARRIVAL_TOLERANCE_FRAMES, t.size - 1)]), ok,
            "An artery fills no later than the tissue it feeds (brain-average arrival + one frame).")
        tissue_ttp = float(t[int(np.argmax(tissue))])
        add("time_to_peak_s", float(t[ip]), tissue_ttp, t[ip] < tissue_ttp,
            "An artery peaks before the tissue it feeds (at least one frame before the brain "
            "average). An AIF peaking with or after it is tissue, a vein or downstream of an "
            "occlusion: it hides delay (Tmax too short).")
    after = float(curve[ip:].min()) if peak > 0 else float("nan")
    add("returns_toward_baseline", after / peak if peak > 0 else None, RETURN_FRACTION,
        peak > 0 and after <= RETURN_FRACTION * peak,
        "A bolus passes and the curve falls again; a step that stays up is motion or a partial-"
        "volume edge, not blood.")
    return checks


def _artery_verdict(result, curves, tissue_curve, times, modality, baseline_image, flat_index,
                    baseline_frames, *, gated, min_artery_voxels=4):
    """``AIFResult.artery``: the checks of the final curve, and whether an artery was found."""
    noise = result.quality.get("noise_sd")
    hu = None
    if modality == "ct" and baseline_image is not None:
        hu = float(np.median(baseline_image.reshape(-1)[np.asarray(flat_index)]))
    checks = artery_checks(result.curve, times, tissue_curve=tissue_curve, modality=modality,
                           voxel_noise_sd=noise, baseline_hu=hu, baseline_frames=baseline_frames)
    failed = [c["name"] for c in checks if c["passed"] is False]
    reasons = []
    if gated is not None and gated < min_artery_voxels:
        reasons.append(f"no artery found in the covered slab: {gated} voxel(s) pass the artery rules "
                       f"(at least {min_artery_voxels} needed)")
    if failed:
        who = "the chosen AIF" if result.method == "manual" else "the selected AIF"
        reasons.append(f"{who} fails: " + ", ".join(failed))
    return {"found": not reasons, "reason": "; ".join(reasons), "checks": checks,
            "gated_candidates": gated, "min_artery_voxels": int(min_artery_voxels)}


def refresh_aif(aif: AIFResult, concentration, times, *, signal=None, tissue_curve=None, modality=None,
                baseline_image=None, baseline_frames=None) -> AIFResult:
    """The same AIF voxels on new concentration curves (e.g. after the baseline was re-cut):
    curve, quality and artery checks recomputed; the selection notes kept."""
    conc = np.asarray(concentration)
    times = check_times(times, conc.shape[-1])
    lead = conc.shape[:-1]
    flat_index = np.ravel_multi_index(tuple(np.asarray(aif.voxels).T), lead)
    curves = np.nan_to_num(conc.reshape(-1, conc.shape[-1])[flat_index].astype(float))
    kept = [w for w in aif.warnings if not w.startswith(_QUALITY_WARNINGS)]
    result = AIFResult(curves.mean(axis=0), np.asarray(aif.voxels), aif.method, warnings=kept)
    _finish(result, curves, times, signal, flat_index=flat_index, lead=lead)
    if aif.artery:
        result.artery = _artery_verdict(result, curves, tissue_curve, times, modality, baseline_image,
                                        flat_index, baseline_frames, gated=aif.artery.get("gated_candidates"),
                                        min_artery_voxels=aif.artery.get("min_artery_voxels", 4))
    return result


_QUALITY_WARNINGS = ("The AIF signal drops", "The AIF does not return", "The AIF rests on only")


def _finish(result, curves, times, signal, *, flat_index, lead):
    q = curve_quality(result.curve, times, voxel_curves=curves)
    q["n_voxels"] = int(curves.shape[0])
    q["min_signal_ratio"] = None
    if signal is not None:
        s = np.asarray(signal).reshape(-1, np.asarray(signal).shape[-1])[flat_index].astype(float).mean(axis=0)
        info = detect_baseline_curve(s, modality="mr")
        s0 = s[info.frames].mean()
        if s0 > 0:
            q["min_signal_ratio"] = float(s.min() / s0)
            if q["min_signal_ratio"] < 0.1:
                result.warnings.append("The AIF signal drops near the noise floor (saturation): CBF may be overestimated.")
    if not q["returns_to_baseline"]:
        result.warnings.append("The AIF does not return towards baseline before the end: the acquisition may be "
                               "truncated (CBV and CBF biased low).")
    if q["n_voxels"] < 3:
        result.warnings.append(f"The AIF rests on only {q['n_voxels']} voxel(s): it may be noisy.")
    result.quality = q
