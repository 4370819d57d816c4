"""Training loop of the instance recipes: a 2D contour U-Net on whole images held in memory.

The instance recipes (``sesam``, ``s4m``, ``wish`` and the supervised ``nuclei`` baseline) all
train :class:`~scribmed.networks.instance_unet.InstanceUNet` with this loop; they differ only in
the per-pixel maps they prepare for each training image (weak targets, SAM pseudo labels, SAM
candidate masks, SAM features) and in their :class:`InstanceObjective`. The loop:

* draws ``batch_size`` images per iteration, a random ``patch`` x ``patch`` crop of each
  (reflect-padded when smaller), a random flip and rot90 — the same geometry for the image and
  every map — then an optional recipe ``mix`` step on the batch (S4M's copy-paste);
* keeps an EMA teacher of the student when the objective asks for one (its softmax is passed to
  the objective; :class:`~scribmed.training.ema_teacher.EMATeacher`);
* validates every ``val_interval`` iterations on whole validation images (instances by the
  recipe's post-processing, scored by the DSB2018 score) and keeps ``best.pt``; ``last.pt`` is
  written at every validation, so a killed run resumes where it was (the random draws of
  iteration ``i`` derive from ``(seed, i)`` only, so a resumed run draws what an uninterrupted
  one would).

Images are per-channel z-scored (:func:`normalise_image`) for training and prediction.

``train_instance_segmentor(..., amp=...)`` runs the student's and teacher's forward passes under
:func:`~scribmed.runtime.device.amp_policy`'s autocast on CUDA (the objective on float32 logits,
a ``GradScaler`` for float16, kept in ``last.pt``); off by default, always off on the CPU.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Optional, Protocol, Sequence

import numpy as np
import torch

from scribmed.data.errors import DataError
from scribmed.runtime.checkpoint import (
    load_checkpoint,
    save_checkpoint,
)
from scribmed.runtime.records import CHECKPOINT, stamp
from scribmed.training.config import TrainResult
from scribmed.runtime.device import AmpRequest, amp_policy, resolve_device
from scribmed.training.ema_teacher import EMATeacher
from scribmed.runtime.seeding import derive_seed
from scribmed.runtime.files import atomic_write_text
from scribmed.networks.instance_unet import InstanceUNet
from scribmed.transforms.instance_postprocess import instances_from_contours

__all__ = [
    "InstanceObjective",
    "InstanceTrainConfig",
    "StudentOutput",
    "TrainSample",
    "normalise_image",
    "predict_instances",
    "train_instance_segmentor",
]

log = logging.getLogger(__name__)
_AUG_TAG = 0x1A57
_DROP_TAG = 0xD0


@dataclass
class InstanceTrainConfig:
    """Schedule and network of the instance segmentor (CPU-sized defaults).

    Attributes:
        iterations: optimiser steps.
        batch_size: images per step (one random crop each).
        patch: side of the square training crop (divisible by 2 ** (stages - 1)).
        lr / weight_decay: AdamW; the learning rate follows a cosine decay to 5 % over the run.
        val_interval: iterations between validations (and ``last.pt`` writes).
        seed: every random draw of the run derives from it.
        in_channels: image channels (1 grey, 3 RGB; the reader's ``channels``).
        features: U-Net channels per stage.
        ema_decay: EMA teacher decay (used when the objective asks for a teacher).
        predict_with: ``"student"`` or ``"teacher"`` (the network validated, saved and predicted).
        postprocess: ``"watershed"`` or ``"components"``; ``min_size``: smallest instance kept (px).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ``"cuda[:N]"``.
        progress: tqdm bar.
    """

    iterations: int = 400
    batch_size: int = 8
    patch: int = 128
    lr: float = 2e-3
    weight_decay: float = 1e-4
    val_interval: int = 50
    seed: int = 0
    in_channels: int = 1
    features: tuple[int, ...] = (16, 32, 64, 128)
    ema_decay: float = 0.999
    predict_with: str = "student"
    postprocess: str = "watershed"
    min_size: int = 10
    device: str = "auto"
    progress: bool = True

    VOLATILE: ClassVar[tuple[str, ...]] = ("device", "progress")

    def __post_init__(self) -> None:
        self.features = tuple(int(f) for f in self.features)
        if self.predict_with not in ("student", "teacher"):
            raise ValueError(f"predict_with must be 'student' or 'teacher', got {self.predict_with!r}")
        d = 2 ** (len(self.features) - 1)
        if self.patch % d:
            raise ValueError(f"patch {self.patch} must be divisible by {d} ({len(self.features)} U-Net stages)")
        for name in ("iterations", "batch_size", "val_interval"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in fields(cls)]


@dataclass
class TrainSample:
    """One training image and its per-pixel maps, all on the image's grid.

    Attributes:
        case_id: the image's case id.
        image: ``(C, H, W)`` float32, normalised (:func:`normalise_image`).
        maps: name -> ``(H, W)`` integer map (targets, instance ids) or ``(K, H, W)`` array
            (features, candidate masks); cropped, flipped and rotated with the image.
        fill: padding value per map when a crop runs past the image (default 0;
            targets use 255, the ignore value).
    """

    case_id: str
    image: np.ndarray
    maps: dict[str, np.ndarray] = field(default_factory=dict)
    fill: dict[str, float] = field(default_factory=dict)


@dataclass
class StudentOutput:
    """What the objective sees of the student: logits ``(B, 3, h, w)`` and decoder features."""

    logits: torch.Tensor
    features: Optional[torch.Tensor] = None


class InstanceObjective(Protocol):
    """A recipe's loss. ``uses_teacher`` / ``uses_features`` say what the loop must compute."""

    uses_teacher: bool
    uses_features: bool

    def __call__(
        self, out: StudentOutput, batch: Mapping[str, torch.Tensor], teacher_probs: Optional[torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, float]]: ...


def normalise_image(image: np.ndarray) -> np.ndarray:
    """A case image ``(1, H, W)`` / ``(1, C, H, W)`` / ``(H, W)`` → ``(C, H, W)`` float32, z-scored per channel."""
    x = np.asarray(image, dtype=np.float32)
    if x.ndim == 2:
        x = x[None]
    elif x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    elif x.ndim == 3 and x.shape[0] != 1 and x.shape[0] not in (3,):
        raise ValueError(f"expected one 2D image (1, H, W) or (1, C, H, W), got {x.shape}")
    mean = x.mean(axis=(1, 2), keepdims=True)
    std = x.std(axis=(1, 2), keepdims=True)
    return ((x - mean) / np.maximum(std, 1e-6)).astype(np.float32)


# ------------------------------------------------------------------------------ batches


def _crop_box(h: int, w: int, patch: int, rng: np.random.Generator) -> tuple[int, int]:
    y = int(rng.integers(0, h - patch + 1)) if h > patch else 0
    x = int(rng.integers(0, w - patch + 1)) if w > patch else 0
    return y, x


def _take(arr: np.ndarray, y: int, x: int, patch: int, fill: float, reflect: bool) -> np.ndarray:
    """``arr[..., y:y+patch, x:x+patch]``, padded at the bottom/right when the image is smaller."""
    out = arr[..., y:y + patch, x:x + patch]
    ph, pw = patch - out.shape[-2], patch - out.shape[-1]
    if ph or pw:
        pad = [(0, 0)] * (out.ndim - 2) + [(0, ph), (0, pw)]
        out = np.pad(out, pad, mode="reflect") if reflect and min(out.shape[-2:]) > max(ph, pw) else \
            np.pad(out, pad, mode="constant", constant_values=fill)
    return out


def _geometry(arr: np.ndarray, flip: int, k: int) -> np.ndarray:
    if flip:
        arr = arr[..., :, ::-1]
    if k:
        arr = np.rot90(arr, k, axes=(-2, -1))
    return np.ascontiguousarray(arr)


def sample_batch(
    samples: Sequence[TrainSample], batch_size: int, patch: int, rng: np.random.Generator
) -> list[dict[str, np.ndarray]]:
    """``batch_size`` random crops (image + every map) with a random flip / rot90 each."""
    out = []
    for i in rng.integers(0, len(samples), size=batch_size):
        s = samples[int(i)]
        h, w = s.image.shape[-2:]
        y, x = _crop_box(h, w, patch, rng)
        flip, k = int(rng.integers(0, 2)), int(rng.integers(0, 4))
        item = {"image": _geometry(_take(s.image, y, x, patch, 0.0, True), flip, k)}
        for name, arr in s.maps.items():
            item[name] = _geometry(_take(arr, y, x, patch, s.fill.get(name, 0), False), flip, k)
        out.append(item)
    return out


def collate(items: Sequence[Mapping[str, np.ndarray]], device: torch.device) -> dict[str, torch.Tensor]:
    """Stack the items' arrays: integer maps as long, the rest as float32."""
    batch: dict[str, torch.Tensor] = {}
    for key in items[0]:
        arr = np.stack([np.asarray(it[key]) for it in items])
        t = torch.from_numpy(arr)
        t = t.long() if (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool) else t.float()
        batch[key] = t.to(device)
    return batch


# ------------------------------------------------------------------------------ inference


@torch.no_grad()
def predict_probabilities(network: torch.nn.Module, image: np.ndarray, device: torch.device) -> np.ndarray:
    """Softmax ``(3, H, W)`` of a normalised image ``(C, H, W)`` (padded to the U-Net's divisor)."""
    network.eval()
    d = getattr(network, "divisor", 16)
    c, h, w = image.shape
    ph, pw = (-h) % d, (-w) % d
    x = np.pad(image, ((0, 0), (0, ph), (0, pw)), mode="reflect") if (ph or pw) else image
    logits = network(torch.from_numpy(np.ascontiguousarray(x))[None].to(device))
    return torch.softmax(logits.float(), 1)[0, :, :h, :w].cpu().numpy()


def predict_instances(
    network: torch.nn.Module, image: np.ndarray, device: torch.device, postprocess: str = "watershed",
    min_size: int = 10,
) -> np.ndarray:
    """``(H, W)`` int32 instance map of a normalised image ``(C, H, W)``."""
    return instances_from_contours(predict_probabilities(network, image, device), mode=postprocess, min_size=min_size)


# ------------------------------------------------------------------------------ training


def _lr(cfg: InstanceTrainConfig, it: int) -> float:
    return cfg.lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * min(it, cfg.iterations) / cfg.iterations)))


def _validate(network: torch.nn.Module, val: Sequence[tuple[str, np.ndarray, np.ndarray]], cfg: InstanceTrainConfig,
              device: torch.device) -> float:
    from scribmed.metrics.instance import dsb_score

    scores = [dsb_score(predict_instances(network, img, device, cfg.postprocess, cfg.min_size), ref)
              for _, img, ref in val]
    return float(np.mean(scores))


def train_instance_segmentor(
    samples: Sequence[TrainSample],
    val: Sequence[tuple[str, np.ndarray, np.ndarray]],
    objective: InstanceObjective,
    out_dir: Path,
    cfg: InstanceTrainConfig,
    recipe: str,
    record: Mapping[str, Any],
    mix: Optional[Callable[[list[dict[str, np.ndarray]], np.random.Generator], list[dict[str, np.ndarray]]]] = None,
    init_state: Optional[Mapping[str, torch.Tensor]] = None,
    refresh: Optional[Callable[[int, torch.nn.Module], None]] = None,
    amp: AmpRequest = False,
) -> TrainResult:
    """Train the contour U-Net; returns the checkpoints written into ``out_dir``.

    Args:
        samples: the training images with the maps the objective reads.
        val: ``(case_id, normalised image (C, H, W), reference instance map (H, W))`` for selection.
        objective: the recipe's loss.
        out_dir: ``last.pt``, ``best.pt``, ``history.json``, ``training_curve.png``.
        cfg: schedule and network.
        recipe: the recipe's name (stored in the checkpoints).
        record: the recipe's config and class map, stored in every checkpoint and compared on resume.
        mix: optional batch step after cropping (e.g. ARP copy-paste), drawing from the given generator.
        init_state: network weights to start from (e.g. S4M's teacher stage).
        refresh: called as ``refresh(iteration, student)`` after each validation's checkpoint (and
            when a run resumes), e.g. WISH re-choosing SAM candidates against the student; it may
            change the samples' maps in place.
        amp: mixed precision on CUDA (``"auto"``/``True``, ``"bf16"``, ``"fp16"``,
            ``False``/``"off"``, the default); float32 on the CPU whatever is asked.

    Raises:
        DataError: ``last.pt`` was written by another configuration.
    """
    if not samples:
        raise DataError(out_dir, "no training images")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    torch.manual_seed(derive_seed(cfg.seed, _DROP_TAG))
    student = InstanceUNet(cfg.in_channels, 3, cfg.features).to(device)
    if init_state is not None:
        student.load_state_dict(init_state)
    teacher = EMATeacher(student, decay=cfg.ema_decay) if (objective.uses_teacher or cfg.predict_with == "teacher") else None
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    policy = amp_policy(device, amp)
    scaler = policy.grad_scaler()  # float16 only
    history: dict[str, Any] = {"recipe": recipe, "epochs": [], "loss_terms": []}
    start, best, best_it = 0, None, None
    last, best_path = out_dir / "last.pt", out_dir / "best.pt"
    stored = json.loads(json.dumps(dict(record), default=str))
    checksums: dict[str, str] = {}
    if last.exists():
        ckpt = load_checkpoint(last, map_location=device)
        if ckpt.get("record") != stored:
            raise DataError(last, "written by another configuration of this recipe; use a new output folder")
        student.load_state_dict(ckpt["student"])
        opt.load_state_dict(ckpt["optimizer"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        if teacher is not None and ckpt.get("teacher") is not None:
            teacher.load_state_dict(ckpt["teacher"])
        start, best, best_it = int(ckpt["iteration"]), ckpt.get("best_metric"), ckpt.get("best_iteration")
        history = ckpt.get("history") or history
        log.info("resuming %s at iteration %d", out_dir, start)
        if refresh is not None and start:
            refresh(start, student)
    chosen = (lambda: teacher.network) if cfg.predict_with == "teacher" else (lambda: student)

    def payload(it: int) -> dict[str, Any]:
        return stamp(CHECKPOINT, {
            "recipe": recipe, "record": stored, "config": stored.get("config"),
            "class_map": stored.get("class_map"), "network": chosen().state_dict(), "student": student.state_dict(),
            "teacher": None if teacher is None else teacher.state_dict(), "optimizer": opt.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else {},
            "iteration": it, "best_metric": best, "best_iteration": best_it, "history": history,
        })

    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.iterations, initial=start, desc=f"{recipe} training", unit="it")
    running: dict[str, list[float]] = {}
    for it in range(start, cfg.iterations):
        rng = np.random.default_rng([cfg.seed, _AUG_TAG, it])
        torch.manual_seed(derive_seed(cfg.seed, _DROP_TAG, it))
        items = sample_batch(samples, cfg.batch_size, cfg.patch, rng)
        if mix is not None:
            items = mix(items, rng)
        batch = collate(items, device)
        student.train()
        for g in opt.param_groups:
            g["lr"] = _lr(cfg, it)
        with policy.autocast():
            if objective.uses_features:
                logits, feats = student.forward_features(batch["image"])
            else:
                logits, feats = student(batch["image"]), None
            t_probs = None
            if objective.uses_teacher and teacher is not None:
                t_probs = torch.softmax(teacher.logits(batch["image"]).float(), 1)
        if policy.enabled:  # the objective in float32
            logits, feats = logits.float(), None if feats is None else feats.float()
        loss, parts = objective(StudentOutput(logits, feats), batch, t_probs)
        opt.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.backward()
            opt.step()
        if teacher is not None:
            teacher.update(student)
        for k, v in {"loss": float(loss.detach()), **parts}.items():
            running.setdefault(k, []).append(float(v))
        if bar is not None:
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}")
        done = it + 1
        if done % cfg.val_interval == 0 or done == cfg.iterations:
            entry: dict[str, Any] = {"iteration": done, **{k: float(np.mean(v)) for k, v in running.items()}}
            history["loss_terms"] = sorted(k for k in running if k != "loss")
            running = {}
            if val:
                score = _validate(chosen(), val, cfg, device)
                entry["val_dsb_score"] = score
                if best is None or score > best:
                    best, best_it = score, done
                    checksums["best"] = save_checkpoint(best_path, payload(done))
            history["epochs"].append(entry)
            checksums["last"] = save_checkpoint(last, payload(done))
            if refresh is not None and done < cfg.iterations:
                refresh(done, student)
    if bar is not None:
        bar.close()
    if start >= cfg.iterations and not last.exists():  # pragma: no cover - guarded by the loop
        raise DataError(last, "training finished without a checkpoint")
    hist_path = out_dir / "history.json"
    atomic_write_text(hist_path, json.dumps(history, indent=2) + "\n")
    from scribmed.training.run_record import plot_training_curve

    curve = plot_training_curve(history, out_dir / "training_curve.png", val_key="val_dsb_score",
                                val_label="validation DSB score")
    from scribmed.runtime.files import file_sha256

    has_best = bool(val) and best_path.exists()
    return TrainResult(
        best_checkpoint=best_path if has_best else None, last_checkpoint=last, history_path=hist_path,
        best_metric=best, best_iteration=best_it, curve_path=curve,
        checksums={"last": checksums.get("last") or file_sha256(last),
                   **({"best": checksums.get("best") or file_sha256(best_path)} if has_best else {})},
        iterations=cfg.iterations,
    )


def config_dict(cfg: Any) -> dict[str, Any]:
    """A dataclass config as a JSON-ready dict (tuples as lists)."""
    return json.loads(json.dumps(asdict(cfg), default=str))
