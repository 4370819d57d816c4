"""WISH: instance segmentation from heterogeneous weak labels (tags, points, boxes) with SAM.

Each training image carries one kind of label, assigned in the ratios of ``mix``
(:func:`scribmed.data.instance_weak_mix.assign_weak_kinds`, seeded): an image-level **tag**
(the nucleus count), one **point** per nucleus, or a **box** per nucleus.

* SAM is prompted once per point (with its clipped Voronoi cell's box, ``prompt_box``) / box and
  keeps all three of its candidate masks per instance
  (cropped to the instance's window, cached per image).
* The pseudo label of an instance is the candidate that best matches the current prediction:
  WISH's mask cost is the minimum over SAM's three candidates
  (:func:`scribmed.losses.sam_min_cost.sam_min_cost`, soft Dice + BCE of the student's foreground
  probability in the instance's window). Before the student has learnt anything the candidate
  with SAM's highest predicted IoU is used; every ``val_interval`` iterations the choice is
  re-made against the student and the pseudo instance map rebuilt.
* Loss: partial cross-entropy with precedence weak > SAM > teacher: the weak targets (discs
  around points with Voronoi-edge background; background outside all boxes), the pseudo instance
  map's contour target, and on what is left — all of a tag-only image — the EMA teacher's
  confident prediction (``pseudo_weight``, threshold 0.96).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import numpy as np
import torch

from scribmed.data.case import Case
from scribmed.training.instance_batches import TrainSample
from scribmed.training.instance_inference import normalise_image, predict_probabilities
from scribmed.recipes.instance_segmentor import (
    SamInstanceConfig,
    SamInstanceRecipe,
    case_instance,
    make_weak,
    weak_target,
)
from scribmed.recipes.sesam.recipe import SeSAMInstanceLoss, sam_target
from scribmed.runtime.progress import progress_bar
from scribmed.sam.instance_stage import instance_quality, write_instance_quality
from scribmed.transforms.contour_targets import IGNORE

__all__ = ["WISHConfig", "WISHRecipe", "choose_candidates", "parse_mix"]

_MARGIN = 4
_CHUNK = 32  # instances prompted per call: bounds the (n, 3, H, W) candidate logits in memory


@dataclass
class WISHConfig(SamInstanceConfig):
    """WISH's settings on top of the contour U-Net's.

    Attributes:
        mix: label kinds and their shares, ``"tag:0.34,point:0.33,box:0.33"``.
        sam_weight / pseudo_weight / pseudo_threshold: the SAM and teacher terms.
        sam_band: pixels around the pseudo outlines left unlabeled by the SAM term.
        reassign: re-choose each instance's candidate by the min-over-3 cost every validation.
        prompt_box: point images also prompt with each point's clipped-Voronoi-cell box
            (:mod:`scribmed.transforms.point_cells`).
    """

    mix: str = "tag:0.34,point:0.33,box:0.33"
    sam_weight: float = 1.0
    pseudo_weight: float = 0.1
    pseudo_threshold: float = 0.96
    sam_band: int = 2
    reassign: bool = True
    prompt_box: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        parse_mix(self.mix)


def parse_mix(mix: str) -> dict[str, float]:
    """``"tag:0.4,point:0.3,box:0.3"`` → ``{"tag": 0.4, ...}`` (kinds tag / point / box, shares sum to 1)."""
    out: dict[str, float] = {}
    for part in str(mix).replace(" ", "").split(","):
        kind, sep, share = part.partition(":")
        if not sep or kind not in ("tag", "point", "box"):
            raise ValueError(f"mix must look like 'tag:0.4,point:0.3,box:0.3' (kinds tag, point, box), got {mix!r}")
        out[kind] = float(share)
    if abs(sum(out.values()) - 1.0) > 1e-6 or min(out.values()) < 0:
        raise ValueError(f"mix shares must be >= 0 and sum to 1, got {mix!r}")
    return out


def _windows(cands: np.ndarray, hw: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Per instance, the box ``(y0, x0, y1, x1)`` (exclusive end) around its candidates' union + margin."""
    out = []
    h, w = hw
    for c in cands:
        ys, xs = np.nonzero(c.any(0))
        if ys.size == 0:
            out.append((0, 0, 0, 0))
            continue
        out.append((max(0, ys.min() - _MARGIN), max(0, xs.min() - _MARGIN),
                    min(h, ys.max() + 1 + _MARGIN), min(w, xs.max() + 1 + _MARGIN)))
    return out


def pack_candidates(chunks: Sequence[tuple[np.ndarray, np.ndarray]], hw: tuple[int, int]) -> dict[str, np.ndarray]:
    """SAM's candidates as per-instance windows (compact on disk and in memory).

    Args:
        chunks: ``(candidates (n, M, H, W) bool, iou (n, M))`` for consecutive groups of instances
            (prompted a group at a time to bound memory on images with hundreds of nuclei).
        hw: the image's ``(H, W)``.
    """
    wins: list[tuple[int, int, int, int]] = []
    flat: list[np.ndarray] = []
    ious: list[np.ndarray] = []
    m = 3
    for cands, iou in chunks:
        m = int(cands.shape[1])
        w = _windows(cands, hw)
        wins += w
        flat += [cands[i, :, y0:y1, x0:x1].ravel() for i, (y0, x0, y1, x1) in enumerate(w)]
        ious.append(np.asarray(iou, np.float32).reshape(-1, m))
    return {"windows": np.asarray(wins, np.int32).reshape(-1, 4),
            "iou": np.concatenate(ious) if ious else np.zeros((0, m), np.float32),
            "flat": np.concatenate(flat) if flat else np.zeros(0, bool), "shape": np.asarray(hw, np.int32),
            "m": np.asarray(m, np.int32)}


def windowed_candidates(packed: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """Every instance's candidates inside its window, ``(M, h, w)`` bool each (one pass over the pack)."""
    wins, m = packed["windows"], int(packed["m"])
    sizes = [(y1 - y0) * (x1 - x0) * m for y0, x0, y1, x1 in wins]
    ends = np.cumsum(sizes, dtype=np.int64)
    return [packed["flat"][e - n:e].reshape(m, y1 - y0, x1 - x0)
            for n, e, (y0, x0, y1, x1) in zip(sizes, ends, wins)]


def build_instances(packed: Mapping[str, np.ndarray], index: np.ndarray, min_size: int) -> np.ndarray:
    """The pseudo instance map from each instance's chosen candidate (overlaps: higher SAM IoU wins)."""
    from scribmed.sam.instance_prompting import masks_to_instances

    h, w = (int(s) for s in packed["shape"])
    n = len(packed["windows"])
    if n == 0:
        return np.zeros((h, w), np.int32)
    masks = np.zeros((n, h, w), bool)
    for i, ((y0, x0, y1, x1), cands) in enumerate(zip(packed["windows"], windowed_candidates(packed))):
        if y1 > y0:
            masks[i, y0:y1, x0:x1] = cands[int(index[i])]
    scores = packed["iou"][np.arange(n), index]
    return masks_to_instances(masks, scores, min_size=min_size).astype(np.int32)


def choose_candidates(packed: Mapping[str, np.ndarray], fg_logit: np.ndarray) -> np.ndarray:
    """Per instance, the candidate with the minimum WISH cost against the foreground logits ``(H, W)``."""
    from scribmed.losses.sam_min_cost import sam_min_cost

    n = len(packed["windows"])
    index = np.zeros(n, np.int64)
    for i, ((y0, x0, y1, x1), window) in enumerate(zip(packed["windows"], windowed_candidates(packed))):
        if y1 <= y0:
            continue
        pred = torch.from_numpy(np.ascontiguousarray(fg_logit[y0:y1, x0:x1]))[None].float()
        cands = torch.from_numpy(window)[None].float()
        _, idx = sam_min_cost(pred, cands, cost="dice+bce")
        index[i] = int(idx[0])
    return index


class WISHRecipe(SamInstanceRecipe):
    """WISH on DSB2018-style instance data (see the module docstring).

    Files in a fold's ``train/``: ``sam/<case_id>.npz`` (SAM's three candidates per instance,
    windowed), ``sam/kinds.json``-equivalent in ``sam/quality.json`` (each image's label kind and
    the pseudo labels' scores against the reference: a diagnostic, never used for selection).
    """

    name = "wish"
    title = "WISH"
    config_cls: ClassVar[type] = WISHConfig
    config: WISHConfig

    def prepare_samples(self, train: Sequence[Case], out_dir: Path, progress: bool) -> list[TrainSample]:
        from scribmed.data.instance_weak_mix import assign_weak_kinds

        cfg = self.config
        out_dir = Path(out_dir)
        kinds = assign_weak_kinds([c.case_id for c in train], parse_mix(cfg.mix), seed=cfg.weak_seed)
        stage = self.sam_stage(out_dir)
        self._packed: dict[str, dict[str, np.ndarray]] = {}
        samples, quality = [], {}
        for case in progress_bar(train, desc="WISH SAM candidates", unit="image", disable=not progress):
            kind = kinds[case.case_id]
            weak = make_weak(case, cfg, kind)
            maps = {"weak": weak_target(weak, cfg)}
            if kind in ("point", "box"):
                packed = stage.cached(out_dir / "sam", case.case_id, lambda: self._candidates(stage, case, weak))
                self._packed[case.case_id] = packed
                index = np.argmax(packed["iou"], axis=1) if len(packed["iou"]) else np.zeros(0, np.int64)
                inst = build_instances(packed, index, cfg.sam_min_size)
                maps["sam"] = sam_target(inst, cfg.sam_band)
                quality[case.case_id] = {"kind": kind, **instance_quality(inst, case_instance(case))}
            else:
                maps["sam"] = np.full(maps["weak"].shape, IGNORE, np.uint8)
                quality[case.case_id] = {"kind": kind}
            samples.append(TrainSample(case.case_id, normalise_image(case.image), maps, {k: IGNORE for k in maps}))
        stage.release()
        scored = {k: {m: v for m, v in q.items() if m != "kind"} for k, q in quality.items() if len(q) > 1}
        write_instance_quality(out_dir / "sam" / "quality.json", scored, "score")
        self._samples = samples
        return samples

    def _candidates(self, stage: Any, case: Case, weak: Any) -> dict[str, np.ndarray]:
        from scribmed.sam.instance_prompting import prompt_instances

        hw = tuple(int(s) for s in weak.shape)
        if weak.kind == "point":  # the point + its clipped Voronoi cell's box (LiteMedSAM is box-prompted)
            from scribmed.transforms.point_cells import point_cells

            ids = sorted(weak.points)
            coords = np.stack([np.asarray(weak.points[i], np.float32).reshape(-1, 2)[:1] for i in ids]) if ids else None
            labels = np.ones((len(ids), 1), np.int64) if ids else None
            boxes = point_cells(weak.points, hw).boxes if (ids and self.config.prompt_box) else None
        else:
            ids = sorted(weak.boxes)
            coords = labels = None
            boxes = np.stack([np.asarray(weak.boxes[i], np.float32).reshape(4) for i in ids]) if ids else None
        chunks = []
        for lo in range(0, len(ids), _CHUNK):
            part = slice(lo, lo + _CHUNK)
            res = prompt_instances(stage.backend, stage.embedding(case), hw,
                                   point_coords=None if coords is None else coords[part],
                                   point_labels=None if labels is None else labels[part],
                                   boxes=None if boxes is None else boxes[part], rule="score")
            chunks.append((np.asarray(res.candidates) > 0, np.asarray(res.iou)))
        return pack_candidates(chunks, hw)

    def refresh(self, iteration: int, network: torch.nn.Module) -> None:
        """Re-choose every instance's candidate by the min-over-3 cost against ``network``."""
        if iteration == 0:
            return
        device = next(network.parameters()).device
        for sample in self._samples:
            packed = self._packed.get(sample.case_id)
            if packed is None or len(packed["windows"]) == 0:
                continue
            p = predict_probabilities(network, sample.image, device)
            fg_logit = np.log(np.clip(p[1] + p[2], 1e-6, None)) - np.log(np.clip(p[0], 1e-6, None))
            index = choose_candidates(packed, fg_logit)
            sample.maps["sam"] = sam_target(build_instances(packed, index, self.config.sam_min_size),
                                            self.config.sam_band)

    def weak_provenance(self) -> dict[str, Any]:
        cfg = self.config
        return {"simulated_from": "instance masks", "kind": "one per image", "mix": parse_mix(cfg.mix),
                "seed": cfg.weak_seed}

    def objective(self) -> Any:
        cfg = self.config
        return SeSAMInstanceLoss(cfg.sam_weight, cfg.pseudo_weight, cfg.pseudo_threshold, cfg.boundary_weight)

    def refresher(self) -> Any:
        return self.refresh if self.config.reassign else None
