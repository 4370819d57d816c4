"""Cardiac MRI phantoms: short-axis cine (ACDC-like) or LGE (MSCMR-like) stacks.

Per patient a stack of slices from base to apex with an LV blood pool, a myocardial ring of
varying thickness, an RV crescent beside it (absent in apical slices), all varying per patient
and between end-diastole and end-systole; around it a thorax (body, fat rim, lungs, liver,
aorta, random blobs). Labels 0 bg, 1 RV, 2 Myo, 3 LV; scribble ignore 4.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from scribmed.data.case import CARDIAC
from scribmed.data.phantoms.imaging import _finish, _texture
from scribmed.data.phantoms.patient_sampling import _pixel_size, _rng, _scribble, _size
from scribmed.data.phantoms.phantom_case import PhantomCase
from scribmed.data.phantoms.shapes import _ellipse, _ellipse_radius, _grid, _polar
from scribmed.data.scribble_synthesis import ScribbleStyle


@dataclass(frozen=True)
class _Heart:
    """Per-patient anatomy (mm, radians)."""

    cy: float
    cx: float
    r_lv: float           # ED endocardial radius at the base
    thick: float          # ED myocardial thickness
    thick_var: float      # relative angular variation of the thickness
    thick_phase: float
    ecc: float            # LV eccentricity (a/b - 1)
    rot: float
    harm: tuple[tuple[int, float, float], ...]
    rv_dir: float         # direction of the RV from the LV centre
    rv_width: float       # RV free-wall distance at the base
    rv_span: float        # RV extent across (relative to the epicardial radius)
    rv_extent: float      # fraction of the stack (from the base) that has an RV
    taper: float          # apex radius factor
    tilt_y: float         # centre drift base->apex (mm)
    tilt_x: float
    papillary: tuple[tuple[float, float], ...]  # (angle, relative radius) of papillary muscles


def _draw_heart(rng: np.random.Generator, fov_mm: tuple[float, float]) -> _Heart:
    h_mm, w_mm = fov_mm
    r_lv = rng.uniform(18, 26)
    return _Heart(
        cy=rng.uniform(-0.08, 0.08) * h_mm,
        cx=rng.uniform(-0.04, 0.1) * w_mm,
        r_lv=r_lv,
        thick=rng.uniform(6.5, 10),
        thick_var=rng.uniform(0.05, 0.3),
        thick_phase=rng.uniform(0, 2 * np.pi),
        ecc=rng.uniform(0.0, 0.18),
        rot=rng.uniform(0, np.pi),
        harm=((3, rng.uniform(0, 0.04), rng.uniform(0, 2 * np.pi)), (5, rng.uniform(0, 0.02), rng.uniform(0, 2 * np.pi))),
        rv_dir=np.pi + rng.uniform(-0.45, 0.25),
        rv_width=rng.uniform(12, 20),
        rv_span=rng.uniform(1.15, 1.5),
        rv_extent=rng.uniform(0.7, 0.92),
        taper=rng.uniform(0.22, 0.4),
        tilt_y=rng.uniform(-8, 8),
        tilt_x=rng.uniform(-8, 8),
        papillary=tuple((rng.uniform(0, 2 * np.pi), rng.uniform(0.6, 0.8)) for _ in range(2)),
    )


def _heart_slice(hp: _Heart, t: float, phase: str, pf: dict, yy: np.ndarray, xx: np.ndarray):
    """Label map and tissue masks of one short-axis slice at depth ``t`` (0 base .. 1 apex)."""
    es = phase == "ES"
    tt = min(t * (pf["shorten"] if es else 1.0), 1.0)
    f = 1 - (1 - hp.taper) * tt**1.8          # radius factor base -> apex
    r_endo = hp.r_lv * f * (pf["lv"] if es else 1.0)
    thick = hp.thick * (0.85 + 0.15 * f) * (pf["thick"] if es else 1.0)
    cy, cx = hp.cy + hp.tilt_y * t, hp.cx + hp.tilt_x * t
    a, b = r_endo * (1 + hp.ecc / 2), r_endo / (1 + hp.ecc / 2)
    rho, th = _polar(yy, xx, cy, cx)
    r = _ellipse_radius(th, a, b, hp.rot)
    for n, amp, ph in hp.harm:
        r = r * (1 + amp * np.cos(n * th + ph))
    r_epi = r + thick * (1 + hp.thick_var * np.cos(th - hp.thick_phase))
    lv = rho <= r
    # the wall always encloses the cavity, also where it is thinner than a pixel
    epi = (rho <= r_epi) | ndi.binary_dilation(lv)
    label = np.zeros(yy.shape, np.uint8)
    if tt < hp.rv_extent:
        s = np.sqrt(max(1 - tt / hp.rv_extent, 0.0))
        r_out = hp.r_lv * f + hp.thick            # epicardial radius scale
        width = hp.rv_width * (0.35 + 0.65 * s) * (pf["rv"] if es else 1.0)
        u = np.array([np.sin(hp.rv_dir), np.cos(hp.rv_dir)])
        along = r_out * 0.55 + width / 2
        rcy, rcx = cy + u[0] * (r_out * 0.45 + width / 2), cx + u[1] * (r_out * 0.45 + width / 2)
        rv = _ellipse(yy, xx, rcy, rcx, r_out * hp.rv_span * (0.7 + 0.3 * s), along, hp.rv_dir) & ~epi
        label[rv] = 1
    label[epi] = 2
    label[lv] = 3
    papillary = np.zeros(yy.shape, bool)
    if not es and tt < 0.8:
        for ang, rel in hp.papillary:
            py, px = cy + np.sin(ang) * rel * r_endo, cx + np.cos(ang) * rel * r_endo
            papillary |= np.hypot(yy - py, xx - px) <= 0.18 * r_endo
        papillary &= lv
    return label, papillary


@dataclass(frozen=True)
class _Body:
    cy: float
    cx: float
    a: float   # half height (mm)
    b: float   # half width
    fat: float
    lungs: tuple[tuple[float, float, float, float, float], ...]
    blobs: tuple[tuple[float, float, float, float, float], ...]  # cy, cx, a, b, intensity
    aorta: tuple[float, float, float]


def _draw_body(rng: np.random.Generator, fov_mm: tuple[float, float], heart: _Heart) -> _Body:
    h_mm, w_mm = fov_mm
    a, b = rng.uniform(0.36, 0.44) * h_mm, rng.uniform(0.42, 0.48) * w_mm
    lungs = tuple(
        (rng.uniform(-0.15, 0.1) * h_mm, side * rng.uniform(0.22, 0.3) * w_mm, rng.uniform(0.2, 0.28) * h_mm,
         rng.uniform(0.1, 0.15) * w_mm, rng.uniform(-0.3, 0.3))
        for side in (-1, 1)
    )
    blobs = tuple(
        (rng.uniform(-0.35, 0.35) * h_mm, rng.uniform(-0.4, 0.4) * w_mm, rng.uniform(4, 14), rng.uniform(4, 14),
         rng.uniform(0.15, 0.8))
        for _ in range(int(rng.integers(3, 7)))
    )
    aorta = (heart.cy + rng.uniform(35, 50), heart.cx + rng.uniform(-25, 5), rng.uniform(9, 12))
    return _Body(rng.uniform(-0.04, 0.04) * h_mm, rng.uniform(-0.03, 0.03) * w_mm, a, b, rng.uniform(5, 12), lungs, blobs, aorta)


_CONTRASTS = {
    # tissue: (cine bSSFP, LGE)
    "blood": (0.9, 0.55),
    "myo": (0.25, 0.1),
    "scar": (0.3, 0.95),
    "tissue": (0.4, 0.35),
    "fat": (0.75, 0.6),
    "lung": (0.04, 0.04),
    "liver": (0.35, 0.3),
    "air": (0.0, 0.0),
}


def _cardiac_background(body: _Body, yy, xx, contrast: int, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Thorax around the heart (slice-independent): returns (intensity map, inside-body mask)."""
    c = {k: v[contrast] for k, v in _CONTRASTS.items()}
    img = np.full(yy.shape, c["air"])
    inside = _ellipse(yy, xx, body.cy, body.cx, body.a, body.b)
    inner = _ellipse(yy, xx, body.cy, body.cx, body.a - body.fat, body.b - body.fat)
    img[inside] = c["fat"]
    img[inner] = c["tissue"]
    liver = _ellipse(yy, xx, body.cy + 0.55 * body.a, body.cx - 0.35 * body.b, 0.45 * body.a, 0.5 * body.b, 0.3)
    img[liver & inner] = c["liver"]
    for (ly, lx, la, lb, rot) in body.lungs:
        img[_ellipse(yy, xx, ly, lx, la, lb, rot) & inner] = c["lung"]
    for (by, bx, ba, bb, val) in body.blobs:
        img[_ellipse(yy, xx, by, bx, ba, bb) & inner] = val
    ay, ax, ar = body.aorta
    img[(np.hypot(yy - ay, xx - ax) <= ar) & inner] = c["blood"]
    return img * texture, inner


def _paint_heart(background: np.ndarray, label, papillary, contrast: int, rv_gain: float, scar) -> np.ndarray:
    """Heart intensities over the background of one slice (fine grid)."""
    c = {k: v[contrast] for k, v in _CONTRASTS.items()}
    img = background.copy()
    heart = label > 0
    # pericardial fat: a thin bright rim around the heart
    rim = ndi.binary_dilation(heart, iterations=max(1, int(label.shape[0] / 100))) & ~heart
    img[rim] = c["fat"] * 0.9
    img[label == 1] = c["blood"] * rv_gain
    img[label == 3] = c["blood"]
    img[label == 2] = c["myo"]
    if scar is not None:
        img[(label == 2) & scar] = c["scar"]
    img[papillary] = c["myo"] * 1.2
    return img


def generate_cardiac(
    n_patients: int,
    seed: int = 0,
    *,
    size: int | tuple[int, int] | None = None,
    size_range: tuple[int, int] = (128, 176),
    slices: tuple[int, int] = (8, 10),
    frames: Sequence[str] = ("ED", "ES"),
    contrast: str = "cine",
    fov_mm: tuple[float, float] = (200.0, 260.0),
    spacing_xy: Optional[tuple[float, float]] = None,
    spacing_z: Sequence[float] = (8.0, 10.0, 10.0),
    noise: tuple[float, float] = (0.02, 0.05),
    bias: float = 0.2,
    blur_px: float = 0.5,
    supersample: int = 2,
    patient_ids: Optional[Sequence[str]] = None,
    scribbles: bool = True,
    scribble_style: Optional[ScribbleStyle] = None,
) -> list[PhantomCase]:
    """Short-axis cardiac MRI phantoms (labels 0 bg, 1 RV, 2 Myo, 3 LV; scribble ignore 4).

    Args:
        n_patients: number of patients.
        seed: base seed; patient ``i`` depends only on ``(seed, i)``.
        size: in-plane ``(H, W)`` (or one int); ``None`` draws each side from ``size_range`` (step 8).
        slices: inclusive range of the number of slices per patient.
        frames: ``"ED"`` (``frame01``) and/or ``"ES"`` (``frameNN``, NN drawn in 8..16 per patient).
        contrast: ``"cine"`` (bright blood, dark myocardium) or ``"lge"`` (late gadolinium
            enhancement: dark healthy myocardium, bright scar in some patients).
        fov_mm: range of the field of view (mm) across the larger image side; the pixel size is
            ``fov / max(H, W)``, so anatomy keeps its proportions at any matrix size.
        spacing_xy: in-plane pixel size range (mm), overrides ``fov_mm``.
        spacing_z: slice spacings (mm) to pick from.
        noise: range of the Rician noise sigma relative to the maximum intensity.
        bias: strength of the multiplicative bias field (``exp(bias * p)``, ``|p| <= 1``).
        blur_px: partial-volume gaussian sigma in output pixels.
        supersample: rasterisation factor before blurring and block averaging.
        patient_ids: ids to use (default ``patient001``...).
        scribbles: synthesise scribbles (:func:`synthesize_scribbles`).
        scribble_style: stroke parameters for the synthesiser.

    Returns:
        Cases ordered by patient then frame; case ids ``<patient>_frameNN``.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    if contrast not in ("cine", "lge"):
        raise ValueError(f"contrast must be 'cine' or 'lge', got {contrast!r}")
    bad = [f for f in frames if f not in ("ED", "ES")]
    if bad or not frames:
        raise ValueError(f"frames must be a non-empty subset of ('ED', 'ES'), got {tuple(frames)}")
    ids = list(patient_ids) if patient_ids is not None else [f"patient{i + 1:03d}" for i in range(n_patients)]
    if len(ids) < n_patients or len(set(ids[:n_patients])) < n_patients:
        raise ValueError(f"need {n_patients} distinct patient ids, got {ids}")
    ci = 0 if contrast == "cine" else 1
    ss = int(supersample)
    out: list[PhantomCase] = []
    for i in range(n_patients):
        rng = _rng(seed, i, "cardiac")
        shape = _size(rng, size, size_range)
        dx = _pixel_size(rng, shape, fov_mm, spacing_xy)
        dz = float(rng.choice(np.asarray(spacing_z, dtype=float)))
        n_sl = int(rng.integers(slices[0], slices[1] + 1))
        fov = (shape[0] * dx, shape[1] * dx)
        heart = _draw_heart(rng, fov)
        body = _draw_body(rng, fov, heart)
        es_frame = int(rng.integers(8, 17))
        pf = {"lv": rng.uniform(0.6, 0.78), "thick": rng.uniform(1.3, 1.6), "rv": rng.uniform(0.65, 0.85),
              "shorten": rng.uniform(1.0, 1.12)}
        fy, fx = _grid(shape, dx, ss)
        cy_, cx_ = _grid(shape, dx, 1)
        scar_center = rng.uniform(0, 2 * np.pi) if (ci == 1 and rng.random() < 0.7) else None
        scar_width = rng.uniform(0.4, 1.2)
        for phase in frames:
            frng = _rng(seed, i, f"cardiac-{phase}")
            texture = _texture(frng, fy.shape, 3.0 * ss, 0.08)
            background, _ = _cardiac_background(body, fy, fx, ci, texture)
            body_mask = _ellipse(cy_, cx_, body.cy, body.cx, body.a, body.b)
            rv_gain = frng.uniform(0.9, 1.0)
            labels, fine = [], []
            for z in range(n_sl):
                t = z / max(n_sl - 1, 1)
                lab, _ = _heart_slice(heart, t, phase, pf, cy_, cx_)
                flab, pap = _heart_slice(heart, t, phase, pf, fy, fx)
                scar = None
                if scar_center is not None:
                    _, th = _polar(fy, fx, heart.cy + heart.tilt_y * t, heart.cx + heart.tilt_x * t)
                    scar = np.cos(th - scar_center) > np.cos(scar_width / 2)
                labels.append(lab)
                fine.append(_paint_heart(background, flab, pap, ci, rv_gain, scar))
            image = _finish(fine, ss, frng, blur_px, noise, bias)
            label = np.stack(labels).astype(np.uint8)
            frame = 1 if phase == "ED" else es_frame
            scrib = (_scribble(label, CARDIAC, frng, scribble_style, np.broadcast_to(body_mask, label.shape))
                     if scribbles else None)
            out.append(
                PhantomCase(f"{ids[i]}_frame{frame:02d}", ids[i], image, label, scrib, (dz, dx, dx), CARDIAC,
                            {"phase": phase, "frame": frame, "contrast": contrast})
            )
    return out


__all__ = ["generate_cardiac"]
