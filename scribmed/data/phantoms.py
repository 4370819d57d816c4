"""Synthetic cardiac and abdominal MRI phantoms with labels and realistic scribbles.

The embedded default dataset: no download, seeded, a 10-patient cardiac set in a few seconds. It
exercises the whole pipeline (readers, training, SAM prompting, metrics) on data that looks like
the real thing at the level that matters for those code paths.

Cardiac (short-axis cine, ACDC-like; or LGE, MSCMR-like): per patient a stack of slices from base
to apex with an LV blood pool, a myocardial ring of varying thickness, an RV crescent beside it
(absent in apical slices), all varying per patient (size, position, eccentricity, orientation,
taper) and between end-diastole (ED, ``frame01``) and end-systole (ES, ``frameNN``: smaller cavity,
thicker wall). Around it: body ellipse with a fat rim, lungs, liver, aorta and random blobs.
Abdominal (CHAOS-like axial MR): liver (image left = patient right), right/left kidneys, spleen,
spine, fat, bowel blobs, in T1 and T2 contrast.

Image formation: shapes are rasterised on a supersampled grid, blurred and block-averaged
(partial-volume effect), multiplied by a smooth bias field, given Rician noise, then clipped at
the 99th percentile and scaled to [0, 1] (as in the WSL4MIS ACDC h5 files). Labels are evaluated at
the pixel centres of the final grid. Arrays are ``(slices, H, W)``, spacing ``(dz, dy, dx)`` mm.

Patient ``i`` of a given ``seed`` is the same whatever ``n_patients`` is (each patient has its own
``numpy`` generator seeded by ``(seed, i)``).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence

import numpy as np
from scipy import ndimage as ndi

from scribmed.data.case import ABDOMINAL, CARDIAC, Case, CaseArrays, ClassMap
from scribmed.data.errors import DataError
from scribmed.data.scribble_synthesis import ScribbleStyle, synthesize_scribbles
from scribmed.data.splits import CHAOS_PATIENTS, MSCMR_TEST, MSCMR_TRAIN, MSCMR_VAL

KINDS = ("cardiac", "abdominal")
LAYOUTS_BY_KIND = {
    "cardiac": ("acdc-h5", "acdc-nifti", "mscmr", "generic"),
    "abdominal": ("chaos-npz", "generic"),
}
MARKER = ".scribmed-phantom.json"
_FORMAT_VERSION = 1


@dataclass
class PhantomCase:
    """One generated volume.

    Attributes:
        case_id / patient_id: ids in the convention of the target layout.
        image: float32 ``(slices, H, W)`` in [0, 1].
        label: uint8 ``(slices, H, W)`` full ground truth.
        scribble: uint16 ``(slices, H, W)`` synthesised scribble (``class_map.ignore_index`` = unlabeled).
        spacing: ``(dz, dy, dx)`` in mm.
        class_map: ``CARDIAC`` or ``ABDOMINAL``.
        meta: e.g. ``{"phase": "ED", "frame": 1}`` or ``{"modality": "T1"}``.
    """

    case_id: str
    patient_id: str
    image: np.ndarray
    label: np.ndarray
    scribble: Optional[np.ndarray]
    spacing: tuple[float, float, float]
    class_map: ClassMap
    meta: dict[str, Any] = field(default_factory=dict)

    def to_case(self, source: str | Path = "<phantom>") -> Case:
        """An in-memory :class:`Case` (already loaded), for pipelines that take cases."""
        arrays = CaseArrays(self.image, self.label, self.scribble, self.spacing)
        return Case(
            self.case_id,
            self.patient_id,
            Path(source),
            loader=lambda: arrays,
            has_label=True,
            has_scribble=self.scribble is not None,
            _cache=arrays,
        )


# ---------------------------------------------------------------------------------- helpers


def _grid(shape: tuple[int, int], dx: float, ss: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (mm, origin at the image centre) of an ``ss``-times finer grid."""
    h, w = shape
    ys = ((np.arange(h * ss) + 0.5) / ss - h / 2) * dx
    xs = ((np.arange(w * ss) + 0.5) / ss - w / 2) * dx
    return np.meshgrid(ys, xs, indexing="ij")


def _polar(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float) -> tuple[np.ndarray, np.ndarray]:
    dy, dx = yy - cy, xx - cx
    return np.hypot(dy, dx), np.arctan2(dy, dx)


def _ellipse_radius(theta: np.ndarray, a: float, b: float, rot: float) -> np.ndarray:
    """Radius of an ellipse (semi-axes ``a`` along ``rot``, ``b`` across) in direction ``theta``."""
    t = theta - rot
    return 1.0 / np.sqrt((np.cos(t) / a) ** 2 + (np.sin(t) / b) ** 2)


def _ellipse(yy, xx, cy, cx, ry: float, rx: float, rot: float = 0.0) -> np.ndarray:
    """Filled ellipse: semi-axis ``rx`` along direction ``rot`` (0 = +x), ``ry`` across it."""
    dy, dx = yy - cy, xx - cx
    if rot:
        c, s = np.cos(rot), np.sin(rot)
        dx, dy = dx * c + dy * s, dy * c - dx * s
    return (dx / rx) ** 2 + (dy / ry) ** 2 <= 1.0


def _wobbly(yy, xx, cy, cx, ry, rx, rot, harm: Sequence[tuple[int, float, float]]) -> np.ndarray:
    """Ellipse (as :func:`_ellipse`) whose radius is modulated by harmonics ``(order, amplitude, phase)``."""
    rho, th = _polar(yy, xx, cy, cx)
    r = _ellipse_radius(th, rx, ry, rot)
    for n, amp, ph in harm:
        r = r * (1 + amp * np.cos(n * th + ph))
    return rho <= r


def _downsample(fine: np.ndarray, ss: int, sigma_px: float) -> np.ndarray:
    """Partial-volume: blur on the fine grid, then average ``ss x ss`` blocks."""
    if sigma_px > 0:
        fine = ndi.gaussian_filter(fine, sigma_px * ss)
    h, w = fine.shape[0] // ss, fine.shape[1] // ss
    return fine.reshape(h, ss, w, ss).mean(axis=(1, 3))


def _bias_field(rng: np.random.Generator, shape: tuple[int, int, int], strength: float) -> np.ndarray:
    """Smooth multiplicative field, ``exp`` of a random quadratic in (z, y, x), about 1 +- strength."""
    s, h, w = shape
    z = np.linspace(-1, 1, s)[:, None, None] if s > 1 else np.zeros((1, 1, 1))
    y = np.linspace(-1, 1, h)[None, :, None]
    x = np.linspace(-1, 1, w)[None, None, :]
    c = rng.normal(0, 1, 7)
    poly = c[0] * y + c[1] * x + 0.5 * c[2] * y * x + 0.5 * c[3] * y**2 + 0.5 * c[4] * x**2 + 0.3 * c[5] * z
    poly = poly + 0.3 * c[6] * z * x
    poly = poly / (np.abs(poly).max() + 1e-6)
    return np.exp(strength * poly)


def _finish(fine_slices: list[np.ndarray], ss: int, rng: np.random.Generator, blur_px: float,
            noise: tuple[float, float], bias: float) -> np.ndarray:
    """Fine-grid intensity maps -> blurred, biased, noisy float32 volume in [0, 1]."""
    vol = np.stack([_downsample(f, ss, blur_px) for f in fine_slices]).astype(np.float64)
    vol *= _bias_field(rng, vol.shape, bias)
    sigma = rng.uniform(*noise) * max(float(vol.max()), 1e-6)
    vol = np.sqrt((vol + rng.normal(0, sigma, vol.shape)) ** 2 + rng.normal(0, sigma, vol.shape) ** 2)
    hi = float(np.percentile(vol, 99))
    lo = float(vol.min())
    vol = (np.clip(vol, lo, hi) - lo) / max(hi - lo, 1e-6)
    return vol.astype(np.float32)


def _texture(rng: np.random.Generator, shape: tuple[int, int], scale_px: float, amp: float) -> np.ndarray:
    """Smooth random texture around 1 (tissue inhomogeneity)."""
    t = ndi.gaussian_filter(rng.normal(0, 1, shape), scale_px)
    t /= t.std() + 1e-9
    return 1 + amp * t


def _rng(seed: int, index: int, salt: str) -> np.random.Generator:
    return np.random.default_rng([int(seed) & 0xFFFFFFFF, index, int(hashlib.sha256(salt.encode()).hexdigest()[:8], 16)])


def _size(rng: np.random.Generator, size: int | tuple[int, int] | None, lo_hi: tuple[int, int]) -> tuple[int, int]:
    if size is None:
        return tuple(int(v) for v in 8 * rng.integers(lo_hi[0] // 8, lo_hi[1] // 8 + 1, size=2))  # type: ignore[return-value]
    if isinstance(size, int):
        return (size, size)
    return (int(size[0]), int(size[1]))


def _pixel_size(rng: np.random.Generator, shape: tuple[int, int], fov_mm: tuple[float, float],
                spacing_xy: Optional[tuple[float, float]]) -> float:
    """In-plane pixel size (mm): from an explicit range, else field of view / larger side."""
    if spacing_xy is not None:
        return round(float(rng.uniform(*spacing_xy)), 3)
    return round(float(rng.uniform(*fov_mm)) / max(shape), 3)


def _scribble(label: np.ndarray, class_map: ClassMap, rng: np.random.Generator,
              style: Optional[ScribbleStyle], background_region: Optional[np.ndarray] = None) -> np.ndarray:
    return synthesize_scribbles(label, class_map, seed=rng, style=style, background_region=background_region)


# ----------------------------------------------------------------------------------- cardiac


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


# --------------------------------------------------------------------------------- abdominal


def _kidney(yy, xx, cy, cx, ry, rx, rot, medial_sign: float) -> np.ndarray:
    """Bean: an ellipse (long semi-axis ``ry``) with a notch (the hilum) on its medial side."""
    body = _ellipse(yy, xx, cy, cx, ry, rx, rot)
    hy, hx = cy + medial_sign * rx * np.sin(rot), cx + medial_sign * rx * 0.95 * np.cos(rot)
    return body & ~(np.hypot(yy - hy, xx - hx) <= 0.45 * rx)


def _organ_profile(t: float, start: float, stop: float, peak: float) -> float:
    """Size factor in (0, 1] inside [start, stop] (peak at ``peak``), 0 outside."""
    if not start <= t <= stop:
        return 0.0
    if t <= peak:
        u = (t - start) / max(peak - start, 1e-6)
    else:
        u = (stop - t) / max(stop - peak, 1e-6)
    return float(0.35 + 0.65 * np.sqrt(max(u, 0.0)))


_ABDO_CONTRAST = {
    # tissue: (T1, T2)
    "liver": (0.62, 0.3),
    "spleen": (0.45, 0.62),
    "kidney": (0.5, 0.72),
    "fat": (0.85, 0.6),
    "muscle": (0.3, 0.22),
    "tissue": (0.4, 0.35),
    "bone": (0.5, 0.4),
    "fluid": (0.12, 0.95),
    "vessel": (0.2, 0.1),
}


def generate_abdominal(
    n_patients: int,
    seed: int = 0,
    *,
    size: int | tuple[int, int] | None = None,
    size_range: tuple[int, int] = (128, 160),
    slices: tuple[int, int] = (12, 16),
    modalities: Sequence[str] = ("T1", "T2"),
    fov_mm: tuple[float, float] = (230.0, 290.0),
    spacing_xy: Optional[tuple[float, float]] = None,
    spacing_z: tuple[float, float] = (5.5, 8.0),
    noise: tuple[float, float] = (0.02, 0.05),
    bias: float = 0.25,
    blur_px: float = 0.5,
    supersample: int = 2,
    patient_ids: Optional[Sequence[str]] = None,
    scribbles: bool = True,
    scribble_style: Optional[ScribbleStyle] = None,
) -> list[PhantomCase]:
    """Axial abdominal MRI phantoms, CHAOS-like (0 bg, 1 liver, 2 right kidney, 3 left kidney, 4 spleen; ignore 5).

    Slices run superior (0) to inferior. Image left is the patient's right (radiological view):
    liver and right kidney on the left, spleen and left kidney on the right. Each patient gets one
    case per modality (``T1_<patient>``, ``T2_<patient>``) sharing the anatomy (small shift)
    with modality-specific contrast; patient ids default to the 20 CHAOS MR ids
    (``patient01``, ``patient02``, ``patient03``, ``patient05``, ...) then ``patient40``, ``patient41``...
    Other arguments as in :func:`generate_cardiac`.
    """
    if n_patients < 1:
        raise ValueError(f"n_patients must be >= 1, got {n_patients}")
    bad = [m for m in modalities if m not in ("T1", "T2")]
    if bad or not modalities:
        raise ValueError(f"modalities must be a non-empty subset of ('T1', 'T2'), got {tuple(modalities)}")
    if patient_ids is None:
        extra = [f"patient{40 + i:02d}" for i in range(max(0, n_patients - len(CHAOS_PATIENTS)))]
        ids = (CHAOS_PATIENTS + extra)[:n_patients]
    else:
        ids = list(patient_ids)
    if len(ids) < n_patients or len(set(ids[:n_patients])) < n_patients:
        raise ValueError(f"need {n_patients} distinct patient ids, got {ids}")
    ss = int(supersample)
    out: list[PhantomCase] = []
    for i in range(n_patients):
        rng = _rng(seed, i, "abdominal")
        shape = _size(rng, size, size_range)
        dx = _pixel_size(rng, shape, fov_mm, spacing_xy)
        dz = round(float(rng.uniform(*spacing_z)), 2)
        n_sl = int(rng.integers(slices[0], slices[1] + 1))
        h_mm, w_mm = shape[0] * dx, shape[1] * dx
        body_a, body_b = rng.uniform(0.3, 0.36) * h_mm, rng.uniform(0.4, 0.46) * w_mm
        body_cy, body_cx = rng.uniform(-0.03, 0.05) * h_mm, rng.uniform(-0.03, 0.03) * w_mm
        fat = rng.uniform(6, 16)
        liv = dict(cy=body_cy - 0.1 * body_a + rng.uniform(-5, 5), cx=body_cx - 0.42 * body_b + rng.uniform(-5, 5),
                   a=0.62 * body_a * rng.uniform(0.9, 1.1), b=0.5 * body_b * rng.uniform(0.9, 1.1),
                   rot=rng.uniform(-0.4, 0.1), start=0.0, stop=rng.uniform(0.6, 0.8), peak=rng.uniform(0.15, 0.35),
                   harm=((2, rng.uniform(0.05, 0.12), rng.uniform(0, 6.3)), (3, rng.uniform(0, 0.06), rng.uniform(0, 6.3))))
        spl = dict(cy=body_cy + 0.25 * body_a + rng.uniform(-5, 5), cx=body_cx + 0.6 * body_b + rng.uniform(-5, 5),
                   a=rng.uniform(30, 45) / 2, b=rng.uniform(70, 100) / 2, rot=rng.uniform(-1.2, -0.5),
                   start=rng.uniform(0.0, 0.12), stop=rng.uniform(0.4, 0.55), peak=rng.uniform(0.2, 0.3),
                   harm=((2, rng.uniform(0, 0.1), rng.uniform(0, 6.3)),))
        kid = {}
        for lab_v, side, z0 in ((2, -1, rng.uniform(0.42, 0.5)), (3, 1, rng.uniform(0.32, 0.42))):
            kid[lab_v] = dict(cy=body_cy + 0.45 * body_a + rng.uniform(-4, 4),
                              cx=body_cx + side * (0.38 * body_b + rng.uniform(-4, 4)),
                              a=rng.uniform(45, 60) / 2, b=rng.uniform(32, 42) / 2,
                              rot=side * rng.uniform(0.2, 0.5), start=z0,
                              stop=min(z0 + rng.uniform(0.4, 0.5), 1.0), side=side)
        spine = (body_cy + 0.72 * body_a, body_cx + rng.uniform(-3, 3), rng.uniform(13, 17))
        bowel = [(rng.uniform(-0.6, 0.2) * body_a + body_cy, rng.uniform(-0.3, 0.5) * body_b + body_cx,
                  rng.uniform(6, 14), rng.uniform(0.2, 0.8)) for _ in range(int(rng.integers(3, 7)))]
        vessels = [(liv["cy"] + rng.uniform(-0.5, 0.5) * liv["a"], liv["cx"] + rng.uniform(-0.5, 0.5) * liv["b"],
                    rng.uniform(2, 4)) for _ in range(int(rng.integers(2, 5)))]
        fy, fx = _grid(shape, dx, ss)
        cy_, cx_ = _grid(shape, dx, 1)

        def slice_label(t: float, yy: np.ndarray, xx: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
            sy, sx = shift
            lab = np.zeros(yy.shape, np.uint8)
            fl = _organ_profile(t, liv["start"], liv["stop"], liv["peak"])
            if fl > 0:
                lab[_wobbly(yy, xx, liv["cy"] + sy, liv["cx"] + sx, liv["a"] * fl, liv["b"] * fl, liv["rot"], liv["harm"])] = 1
            fs = _organ_profile(t, spl["start"], spl["stop"], spl["peak"])
            if fs > 0:
                lab[_wobbly(yy, xx, spl["cy"] + sy, spl["cx"] + sx, spl["a"] * fs, spl["b"] * fs, spl["rot"], spl["harm"])] = 4
            for v, k in kid.items():
                fk = _organ_profile(t, k["start"], k["stop"], (k["start"] + k["stop"]) / 2)
                if fk > 0:
                    m = _kidney(yy, xx, k["cy"] + sy, k["cx"] + sx, k["a"] * fk, k["b"] * fk, k["rot"], -k["side"])
                    lab[m & (lab == 0)] = v
            body = _ellipse(yy, xx, body_cy + sy, body_cx + sx, body_a, body_b)
            lab[~body] = 0
            return lab

        for m_i, mod in enumerate(modalities):
            mrng = _rng(seed, i, f"abdominal-{mod}")
            shift = (0.0, 0.0) if m_i == 0 else tuple(mrng.uniform(-2, 2, 2))
            c = {k: v[0 if mod == "T1" else 1] for k, v in _ABDO_CONTRAST.items()}
            texture = _texture(mrng, fy.shape, 3.0 * ss, 0.08)
            sy, sx = shift
            # slice-independent anatomy: body, fat, paraspinal muscles, spine, aorta
            static = np.zeros(fy.shape)
            inner = _ellipse(fy, fx, body_cy + sy, body_cx + sx, body_a - fat, body_b - fat)
            static[_ellipse(fy, fx, body_cy + sy, body_cx + sx, body_a, body_b)] = c["fat"]
            static[inner] = c["tissue"]
            for side in (-1, 1):
                muscle = _ellipse(fy, fx, spine[0] + sy, spine[1] + sx + side * 1.6 * spine[2], 1.1 * spine[2], spine[2])
                static[muscle & inner] = c["muscle"]
            static[(np.hypot(fy - spine[0] - sy, fx - spine[1] - sx) <= spine[2]) & inner] = c["bone"]
            aorta = np.hypot(fy - spine[0] + 1.8 * spine[2] - sy, fx - spine[1] - sx + 0.5 * spine[2]) <= 0.6 * spine[2]
            static[aorta & inner] = c["vessel"]
            static *= texture
            body_mask = _ellipse(cy_, cx_, body_cy + sy, body_cx + sx, body_a, body_b)
            labels, fine = [], []
            for z in range(n_sl):
                t = z / max(n_sl - 1, 1)
                labels.append(slice_label(t, cy_, cx_, shift))
                flab = slice_label(t, fy, fx, shift)
                img = static.copy()
                for (by, bx, br, val) in bowel:
                    r = br * (0.6 + 0.4 * np.sin(np.pi * t + br))
                    img[(np.hypot(fy - by - sy, fx - bx - sx) <= r) & inner & (flab == 0)] = val if mod == "T1" else 1 - val * 0.5
                img[flab == 1] = c["liver"]
                img[flab == 4] = c["spleen"]
                img[(flab == 2) | (flab == 3)] = c["kidney"]
                for (vy, vx, vr) in vessels:  # hepatic vessels: dark dots inside the liver
                    img[(np.hypot(fy - vy - sy, fx - vx - sx) <= vr) & (flab == 1)] = c["vessel"]
                fine.append(img)
            image = _finish(fine, ss, mrng, blur_px, noise, bias)
            label = np.stack(labels).astype(np.uint8)
            scrib = (_scribble(label, ABDOMINAL, mrng, scribble_style, np.broadcast_to(body_mask, label.shape))
                     if scribbles else None)
            out.append(PhantomCase(f"{mod}_{ids[i]}", ids[i], image, label, scrib, (dz, dx, dx), ABDOMINAL,
                                   {"modality": mod}))
    return out


# ----------------------------------------------------------------------------------- writing


def mscmr_subsets(n_patients: int, include_test: bool = False) -> list[tuple[str, str]]:
    """``(subject id, subset)`` for an MSCMR-layout phantom, taken from the standard split lists.

    Proportional to the standard 25/5(/15) split, with at least one train and one val subject
    (and one TestSet subject when ``include_test``), so ``data_splits/mscmr.json`` applies with
    ``allow_missing``.
    """
    pools = [("train", MSCMR_TRAIN), ("val", MSCMR_VAL)] + ([("TestSet", MSCMR_TEST)] if include_test else [])
    need = len(pools)
    if n_patients < need:
        raise ValueError(f"an mscmr phantom needs at least {need} patients (one per subset), got {n_patients}")
    total = sum(len(p) for _, p in pools)
    if n_patients > total:
        raise ValueError(f"an mscmr phantom holds at most {total} subjects (the standard ids), got {n_patients}")
    counts = [max(1, int(round(n_patients * len(p) / total))) for _, p in pools]
    while sum(counts) > n_patients:
        counts[int(np.argmax(counts))] -= 1
    while sum(counts) < n_patients:
        j = int(np.argmax([len(p) - c for (_, p), c in zip(pools, counts)]))
        counts[j] += 1
    out = []
    for (subset, pool), c in zip(pools, counts):
        out += [(f"subject{n}", subset) for n in pool[:c]]
    return out


def _jsonable(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return repr(value)


def _params(kind: str, layout: str, n_patients: int, seed: int, include_test: bool, gen: dict) -> dict:
    """The marker content, normalised through JSON so it compares equal to a re-read marker."""
    params = {"format": _FORMAT_VERSION, "kind": kind, "layout": layout, "n_patients": n_patients, "seed": seed,
              "include_test": include_test, "options": dict(sorted(gen.items()))}
    return json.loads(json.dumps(params, default=_jsonable))


def _same_phantom(out: Path, params: dict) -> bool:
    try:
        return json.loads((out / MARKER).read_text(encoding="utf-8")) == params
    except (OSError, ValueError):
        return False


def write_phantom_dataset(
    kind: str,
    layout: str,
    out: str | Path,
    n_patients: int,
    seed: int = 0,
    *,
    include_test: bool = False,
    **gen_kwargs: Any,
) -> Path:
    """Generate phantoms and write them in ``layout`` under ``out``; returns the dataset root.

    ``out`` must not exist, be an empty folder, or be a complete phantom written earlier with the
    same parameters (then it is reused as is). Anything else is refused: existing files are never
    overwritten. The dataset is built in a temporary sibling folder and renamed into place, so an
    interrupted run never leaves a half-written dataset that looks complete. A marker file
    ``.scribmed-phantom.json`` records the parameters.

    Args:
        kind: ``"cardiac"`` or ``"abdominal"``.
        layout: ``acdc-h5``, ``acdc-nifti``, ``mscmr``, ``generic`` (cardiac) or ``chaos-npz``,
            ``generic`` (abdominal).
        out: dataset root to create (for ``acdc-h5`` it holds ``ACDC_training_volumes/``).
        n_patients: number of patients.
        seed: base seed.
        include_test: mscmr only: also write ``TestSet`` subjects (with manual labels).
        **gen_kwargs: passed to :func:`generate_cardiac` / :func:`generate_abdominal`. For mscmr the
            defaults are one frame (ED) and LGE contrast.

    Raises:
        ValueError: unknown kind/layout or a kind-layout pair that makes no sense.
        DataError: ``out`` holds something else.
    """
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    if layout not in LAYOUTS_BY_KIND[kind]:
        raise ValueError(f"{kind} phantoms can be written as {', '.join(LAYOUTS_BY_KIND[kind])}, not {layout!r}")
    if include_test and layout != "mscmr":
        raise ValueError("include_test applies to the mscmr layout only")
    out = Path(out)
    params = _params(kind, layout, n_patients, seed, include_test, gen_kwargs)
    if out.exists():
        if not out.is_dir():
            raise DataError(out, "exists and is not a folder; choose a new output folder for the phantom")
        if any(out.iterdir()):
            marker = out / MARKER
            try:
                previous = json.loads(marker.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise DataError(out, "folder is not empty and is not a scribmed phantom; refusing to write into it") from None
            if previous != params:
                raise DataError(out, f"holds a phantom made with other parameters ({marker.name}); use a new folder")
            return out
    from scribmed.data.layouts import (
        write_dataset,  # layouts import data only; keep phantoms importable alone
    )

    subsets: dict[str, str] = {}
    if kind == "cardiac":
        opts = dict(gen_kwargs)
        if layout == "mscmr":
            if "patient_ids" in opts:
                raise ValueError("the mscmr phantom takes its subject ids from the standard split; omit patient_ids")
            pairs = mscmr_subsets(n_patients, include_test)
            subsets = dict(pairs)
            opts.setdefault("frames", ("ED",))
            opts.setdefault("contrast", "lge")
            opts.setdefault("patient_ids", [p for p, _ in pairs])
        cases = generate_cardiac(n_patients, seed, **opts)
    else:
        cases = generate_abdominal(n_patients, seed, **gen_kwargs)

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        def items():
            for c in cases:
                item = {"case_id": c.patient_id if layout == "mscmr" else c.case_id, "patient_id": c.patient_id,
                        "image": c.image, "label": c.label, "scribble": c.scribble, "spacing": c.spacing}
                if layout == "mscmr":
                    item["subset"] = subsets[c.patient_id]
                if layout == "generic":
                    item["class_map"] = c.class_map
                yield item

        write_dataset(layout, tmp, items())
        (tmp / MARKER).write_text(json.dumps(params, indent=2) + "\n", encoding="utf-8")
        try:
            if out.exists():
                out.rmdir()  # empty (checked above); rename needs the name free on every platform
            os.replace(tmp, out)
        except OSError:
            # another process finished the same phantom first: use it; anything else is an error
            if _same_phantom(out, params):
                shutil.rmtree(tmp, ignore_errors=True)
                return out
            raise DataError(out, "was filled by someone else while the phantom was being written") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


def phantom_cases(kind: str, n_patients: int, seed: int = 0, **kwargs: Any) -> list[PhantomCase]:
    """Dispatch to :func:`generate_cardiac` or :func:`generate_abdominal` by ``kind``."""
    if kind == "cardiac":
        return generate_cardiac(n_patients, seed, **kwargs)
    if kind == "abdominal":
        return generate_abdominal(n_patients, seed, **kwargs)
    raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")


__all__ = [
    "PhantomCase",
    "generate_cardiac",
    "generate_abdominal",
    "phantom_cases",
    "write_phantom_dataset",
    "mscmr_subsets",
    "KINDS",
    "LAYOUTS_BY_KIND",
]
