"""Abdominal MRI phantoms, CHAOS-like axial T1/T2: liver, kidneys, spleen, spine, fat, bowel.

Labels 0 bg, 1 liver, 2 right kidney, 3 left kidney, 4 spleen; scribble ignore 5. Image left
is the patient's right (radiological view).
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from scribmed.data.case import ABDOMINAL
from scribmed.data.phantoms.imaging import _finish, _texture
from scribmed.data.phantoms.patient_sampling import _pixel_size, _rng, _scribble, _size
from scribmed.data.phantoms.phantom_case import PhantomCase
from scribmed.data.phantoms.shapes import _ellipse, _grid, _wobbly
from scribmed.data.scribble_synthesis import ScribbleStyle
from scribmed.data.split_protocols import CHAOS_PATIENTS


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


__all__ = ["generate_abdominal"]
