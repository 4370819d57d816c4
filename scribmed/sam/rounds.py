"""SAM-SP's pseudo-label rounds: zero-shot pseudo labels, then R rounds of decoder fine-tuning + regeneration.

Round 0 prompts the pretrained SAM with the scribbles of every selected case (positives only by
default, see :data:`~scribmed.sam.pseudo_labels.ZERO_SHOT_PROMPTS`). Round ``r >= 1`` fine-tunes
the mask decoder (:func:`scribmed.sam.decoder_finetune.finetune_decoder`; image and prompt
encoders frozen) on the *training* cases against round ``r - 1``'s pseudo labels and their
scribbles, selects the decoder by Dice on the *validation* patients' ground truth, loads it and
regenerates the pseudo labels. After every round the pseudo labels of the cases that have ground
truth are scored and appended to ``quality.json``.

Run folder::

    out_dir/
        run.json                  selection and settings (a rerun must match them)
        quality.json              {"rounds": [{"round": r, "dice": {...}, "cases": n, ...}, ...]}
        round_0/                  <case_id>.nii.gz, <case_id>_confidence.npz, pseudo_labels.json, round.json
        round_1/decoder/          fine-tuning checkpoints (best = selected decoder)
        round_1/...               regenerated pseudo labels, round.json
        embeddings/               the embedding cache unless cache_dir is given

``round.json`` is written last: a round with it is finished and skipped on a rerun; an unfinished
round resumes (fine-tuning resumes from its last checkpoint, written cases are kept). The frozen
encoder runs once per slice across all rounds and reruns (the embedding cache).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

from scribmed.data.case import Case
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.data.split_types import natural_key
from scribmed.data.splits import carve_validation
from scribmed.runtime.files import atomic_output, file_sha256
from scribmed.runtime.migrations import upgrade_sam_rounds_record
from scribmed.runtime.records import SAM_ROUNDS, stamp
from scribmed.sam.embedding_cache import EmbeddingCache
from scribmed.sam.merge import default_merge_priority
from scribmed.sam.pseudo_labels import ZERO_SHOT_PROMPTS, PromptConfig, generate_pseudo_labels, load_pseudo_labels
from scribmed.sam.quality import append_round, quality_entry, read_quality
from scribmed.sam.stage_config import RoundsConfig

PathLike = Union[str, Path]

__all__ = ["RoundSelection", "RoundsResult", "run_pseudo_label_rounds", "select_round_cases"]

MARKER = "round.json"
RUN_RECORD = "run.json"
QUALITY = "quality.json"


@dataclass
class RoundSelection:
    """Which patients play which part (patient ids, natural order)."""

    train: list[str]
    val: list[str]
    eval: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, list[str]]:
        return {"train": list(self.train), "val": list(self.val), "eval": list(self.eval)}


@dataclass
class RoundsResult:
    """What :func:`run_pseudo_label_rounds` produced.

    Attributes:
        out_dir: the run folder.
        quality: the ``quality.json`` document.
        round_dirs: pseudo-label folder of each round (index = round).
        decoders: selected decoder file of each round (``None`` for round 0).
        selection: the patients used.
        encoder_slices: slices this call passed through the image encoder (0 on a cached rerun).
    """

    out_dir: Path
    quality: dict[str, Any]
    round_dirs: list[Path]
    decoders: list[Optional[Path]]
    selection: RoundSelection
    encoder_slices: int


def _ordered(ids: Sequence[str]) -> list[str]:
    return sorted(dict.fromkeys(str(i) for i in ids), key=natural_key)


def select_round_cases(
    dataset: Dataset,
    train_patients: Optional[Sequence[str]] = None,
    val_patients: Optional[Sequence[str]] = None,
    eval_patients: Sequence[str] = (),
    need_val: bool = True,
    seed: int = 0,
    weak: bool = False,
) -> RoundSelection:
    """Resolve the patients of a pseudo-label run.

    Args:
        dataset: the dataset.
        train_patients: get pseudo labels and are the fine-tuning set (default: every patient
            with a scribble that is not in ``val_patients`` / ``eval_patients``).
        val_patients: select the fine-tuned decoder (need ground truth); default when
            ``need_val``: a deterministic ~10% (at least 1) of the labelled training patients,
            carved out of the training set (:func:`~scribmed.data.splits.carve_validation`).
        eval_patients: also get pseudo labels (scored when labelled) but are never trained on.
        need_val: fine-tuning rounds will run, so validation patients are required.
        seed: seed of the validation carve.
        weak: cases are prompted from their own supervision (any type but ``none``), not only
            from scribbles.

    Raises:
        DataError: unknown patients, overlapping roles, no scribbled training case, or
            validation patients without ground truth.
    """
    known = set(dataset.patients)
    named = [*(train_patients or ()), *(val_patients or ()), *eval_patients]
    missing = _ordered([p for p in named if p not in known])
    if missing:
        raise DataError(dataset.root, f"patients not in the {dataset.layout} dataset: {', '.join(missing[:10])}")
    val = _ordered(val_patients or ())
    ev = _ordered(eval_patients)
    if train_patients is None:
        scribbled = {c.patient_id for c in dataset.cases if _promptable(c, weak)}
        train = _ordered([p for p in dataset.patients if p in scribbled and p not in set(val) | set(ev)])
    else:
        train = _ordered(train_patients)
    for a, b, what in ((train, val, "train and val"), (train, ev, "train and eval"), (val, ev, "val and eval")):
        both = sorted(set(a) & set(b))
        if both:
            raise DataError(dataset.root, f"patients given as both {what}: {', '.join(both[:10])}")
    if need_val and not val:
        labelled = {c.patient_id for c in dataset.cases if c.has_label}
        candidates = [p for p in train if p in labelled]
        if len(candidates) < 2:
            raise DataError(
                dataset.root,
                "fine-tuning needs validation patients with ground truth (give a split with val "
                "patients, or at least two labelled training patients to carve them from)",
            )
        _, val = carve_validation(candidates, seed=seed, fold_index=0)
        train = [p for p in train if p not in set(val)]
    if need_val:
        unlabelled = [p for p in val if not any(c.has_label for c in dataset.cases_of([p]))]
        if unlabelled:
            raise DataError(dataset.root, f"validation patients without ground truth: {', '.join(unlabelled[:10])}")
    if not any(_promptable(c, weak) for c in dataset.cases_of(train)):
        what = "a weak label" if weak else "a scribble"
        raise DataError(dataset.root, f"no training case with {what}: nothing to prompt SAM with")
    return RoundSelection(train, val, ev)


def _promptable(case: Case, weak: bool) -> bool:
    """Whether the rounds prompt ``case``: it has a scribble, or (``weak``) any supervision but ``none``."""
    if not weak:
        return case.has_scribble
    from scribmed.sam.weak_prompting import case_supervision

    return case_supervision(case) != "none"


def _scribbled(dataset: Dataset, patients: Sequence[str], weak: bool = False) -> list[Case]:
    return [c for c in dataset.cases_of(patients) if _promptable(c, weak)]


def _atomic_json(path: Path, doc: Any) -> None:
    with atomic_output(path) as tmp:
        tmp.write_text(json.dumps(doc, indent=1))


def _check_run_record(out: Path, record: dict[str, Any]) -> None:
    """A rerun must use the same selection and settings as the run it resumes (an older record upgraded)."""
    path = out / RUN_RECORD
    record = stamp(SAM_ROUNDS, record)
    if not path.is_file():
        _atomic_json(path, record)
        return
    try:
        old = json.loads(path.read_text())
    except (OSError, ValueError):
        raise DataError(path, "unreadable run record; delete the run folder or choose another --out") from None
    old = upgrade_sam_rounds_record(old, path)
    differ = [k for k in ("backend", "encoder_cache_key", "selection", "zero_shot_prompts", "finetuned_prompts",
                          "finetune", "merge_priority", "weak_prompts", "supervision")
              if old.get(k) != record.get(k)]
    if differ:
        hint = ""
        if "encoder_cache_key" in differ:
            key = str(old.get("encoder_cache_key", ""))
            from scribmed.networks.encoder_runtime import ENCODER_RUNTIMES

            now = str(record.get("encoder_cache_key", ""))
            was_amp = next((a for a in ("bf16", "fp16") if key.endswith("-" + a)), "off")
            now_amp = next((a for a in ("bf16", "fp16") if now.endswith("-" + a)), "off")
            if was_amp != now_amp:
                hint = f" (its encoder ran with amp {was_amp}, this run asks for {now_amp}: amp {was_amp} resumes it)"
            else:
                was = next((r for r in ENCODER_RUNTIMES if key.endswith("-" + r)), "torch")
                hint = f" (its encoder ran with the {was} runtime: --sam-encoder-runtime {was} resumes it)"
        raise DataError(path, f"run folder was made with other settings ({', '.join(differ)} differ){hint}; "
                        "choose another --out or delete it")
    if int(record["rounds"]) > int(old.get("rounds", 0)):
        _atomic_json(path, {**old, "rounds": record["rounds"]})


def run_pseudo_label_rounds(
    dataset: Dataset,
    out_dir: PathLike,
    config: RoundsConfig,
    *,
    train_patients: Optional[Sequence[str]] = None,
    val_patients: Optional[Sequence[str]] = None,
    eval_patients: Sequence[str] = (),
    progress: bool = True,
) -> RoundsResult:
    """Zero-shot pseudo labels (round 0) and ``rounds`` rounds of decoder fine-tuning + regeneration.

    Args:
        dataset: the dataset (scribbles for prompts, labels for validation and quality).
        out_dir: run folder (see the module docstring).
        config: the backend, rounds, prompts, fine-tuning and cache settings
            (:class:`~scribmed.sam.stage_config.RoundsConfig`; a recipe's SAM stage:
            :meth:`RoundsConfig.from_stage <scribmed.sam.stage_config.RoundsConfig.from_stage>`).
        train_patients, val_patients, eval_patients: see :func:`select_round_cases`.
        progress: progress bars.

    Returns:
        :class:`RoundsResult`.

    Raises:
        DataError: bad selection, a run folder made with other settings, bad checkpoint.
    """
    if dataset is None:
        raise ValueError("run_pseudo_label_rounds needs a dataset")
    backend, rounds, amp, weak_prompts = config.backend, int(config.rounds), config.amp, config.weak_prompts
    if rounds < 0:
        raise ValueError(f"rounds must be >= 0, got {rounds}")
    if isinstance(backend, str):
        from scribmed.networks.sam_registry import build_sam_backend

        backend = build_sam_backend(backend, checkpoint=config.checkpoint, device=config.device,
                                    encoder_runtime=config.encoder_runtime, encoder_cache=config.encoder_cache,
                                    amp="auto" if amp is None else amp)
    elif amp is not None:
        backend.use_amp(amp)
    class_map = dataset.class_map
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    weak = weak_prompts is not None
    selection = select_round_cases(dataset, train_patients, val_patients, eval_patients, need_val=rounds > 0,
                                   weak=weak)
    ft_cfg = config.finetune_config
    if ft_cfg is None and rounds > 0:
        from scribmed.sam.finetune_config import FinetuneConfig

        ft_cfg = FinetuneConfig(progress=progress)
    zs = config.zero_shot_prompts or ZERO_SHOT_PROMPTS
    finetuned_prompts = config.finetuned_prompts
    if finetuned_prompts is None and ft_cfg is not None:
        finetuned_prompts = PromptConfig(n_points=int(ft_cfg.n_points), negatives=str(ft_cfg.negatives))
    merge_priority = config.merge_priority
    priority = default_merge_priority(class_map) if merge_priority is None else tuple(int(k) for k in merge_priority)
    train_cases = _scribbled(dataset, selection.train, weak)
    eval_cases = _scribbled(dataset, selection.eval, weak)
    extra: dict[str, Any] = {"weak_prompts": None, "supervision": None}  # None: scribbles only
    if weak:
        from scribmed.sam.weak_prompting import case_supervision

        extra = {"weak_prompts": weak_prompts.to_dict(),
                 "supervision": {c.case_id: case_supervision(c) for c in dataset.cases_of(
                     [*selection.train, *selection.val, *selection.eval])}}
    _check_run_record(out, {
        "backend": backend.name,
        "encoder_cache_key": backend.cache_key,
        "checkpoint_sha256": backend.checkpoint_sha256,
        "dataset": {"layout": dataset.layout, "root": str(dataset.root)},
        "selection": selection.to_dict(),
        "rounds": rounds,
        "zero_shot_prompts": zs.to_dict(),
        "finetuned_prompts": None if finetuned_prompts is None else finetuned_prompts.to_dict(),
        "finetune": None if ft_cfg is None else {k: v for k, v in ft_cfg.to_dict().items() if k != "progress"},
        "merge_priority": None if priority is None else list(priority),
        **extra,
    })

    cache_dir = config.cache_dir
    cache = EmbeddingCache(cache_dir if cache_dir is not None else out / "embeddings", backend, progress=progress)
    encoded_before = cache.slices_encoded
    label_cases = train_cases + eval_cases
    by_type = extra.get("supervision")  # mixed supervision: quality per type too
    val_cases = [c for c in dataset.cases_of(selection.val) if c.has_label]
    train_ids = {c.case_id for c in train_cases}
    refs_cache: dict[str, Any] = {}

    def refs() -> dict[str, Any]:
        if not refs_cache:
            for c in label_cases:
                if c.has_label:
                    refs_cache[c.case_id] = c.label
        return refs_cache

    round_dirs: list[Path] = []
    decoders: list[Optional[Path]] = []
    loaded: Optional[Path] = None  # decoder file currently in the backend (None: as built)
    for r in range(rounds + 1):
        rdir = out / f"round_{r}"
        round_dirs.append(rdir)
        marker = rdir / MARKER
        if marker.is_file():  # finished earlier
            done = json.loads(marker.read_text())
            decoders.append(None if done.get("decoder") is None else out / done["decoder"])
            if not any(int(e.get("round", -1)) == r for e in read_quality(out / QUALITY)["rounds"]):
                _score_round(out, r, rdir, label_cases, refs(), train_ids, class_map, done, by_type)
            continue
        info: dict[str, Any] = {"round": r, "started": time.time()}
        decoder_id: Optional[str] = None
        if r == 0:
            config = zs
            decoders.append(None)
        else:
            config = finetuned_prompts  # type: ignore[assignment]
            from scribmed.sam.decoder_checkpoint import load_decoder
            from scribmed.sam.decoder_finetune import finetune_decoder

            previous = decoders[r - 1]
            if previous is not None and loaded != previous:
                load_decoder(backend, previous)  # continue from the last selected decoder
                loaded = previous
            pseudo = load_pseudo_labels(round_dirs[r - 1], [c.case_id for c in train_cases])
            result = finetune_decoder(
                backend, cache, train_cases, val_cases, pseudo, class_map, ft_cfg, rdir / "decoder", resume=True,
                weak=weak_prompts,
            )
            best = Path(result.best_path)
            load_decoder(backend, best)
            loaded = best
            decoders.append(best)
            decoder_id = file_sha256(best)
            rel = best.resolve()
            info.update({
                "decoder": str(rel.relative_to(out.resolve())) if rel.is_relative_to(out.resolve()) else str(rel),
                "decoder_sha256": decoder_id,
                "best_val_dice": _plain(getattr(result, "best_val_dice", None)),
                "selected_epoch": _plain(getattr(result, "selected_epoch", None)),
            })
        generate_pseudo_labels(
            backend, cache, label_cases, class_map, rdir, config, priority, decoder=decoder_id, progress=progress,
            weak=weak_prompts,
        )
        info["prompts"] = config.to_dict()
        info["cases"] = [c.case_id for c in label_cases]
        info["finished"] = time.time()
        _score_round(out, r, rdir, label_cases, refs(), train_ids, class_map, info, by_type)
        _atomic_json(marker, info)
    quality = read_quality(out / QUALITY)
    return RoundsResult(out, quality, round_dirs, decoders, selection, cache.slices_encoded - encoded_before)


def _plain(value: Any) -> Any:
    """JSON-friendly scalar: numpy / torch numbers → float, NaN (no validation) → None."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    try:
        number = float(value)
    except (TypeError, ValueError):
        return str(value)
    return None if math.isnan(number) else number


def _score_round(
    out: Path,
    r: int,
    rdir: Path,
    cases: Sequence[Case],
    refs: dict[str, Any],
    train_ids: set[str],
    class_map: Any,
    info: dict[str, Any],
    by_type: Optional[dict[str, str]] = None,
) -> None:
    """Append round ``r``'s quality over the cases with ground truth (also per subset, and per
    supervision type when ``by_type`` maps case ids to types)."""
    ids = [c.case_id for c in cases if c.case_id in refs]
    preds = load_pseudo_labels(rdir, ids)
    extra: dict[str, Any] = {"prompts": info.get("prompts")}
    for key in ("decoder", "best_val_dice", "selected_epoch"):
        if key in info:
            extra[key] = info[key]
    subsets = {"train": [i for i in ids if i in train_ids], "eval": [i for i in ids if i not in train_ids]}
    if subsets["eval"]:  # held-out cases too: report both parts
        extra["dice_by_subset"] = {}
        for name, sel in subsets.items():
            if sel:
                part = quality_entry(r, {i: preds[i] for i in sel}, refs, class_map)
                extra["dice_by_subset"][name] = {"dice": part["dice"], "cases": part["cases"]}
    if by_type:
        extra["dice_by_supervision"] = {}
        for kind in sorted({by_type[i] for i in ids if i in by_type}):
            sel = [i for i in ids if by_type.get(i) == kind]
            part = quality_entry(r, {i: preds[i] for i in sel}, refs, class_map)
            extra["dice_by_supervision"][kind] = {"dice": part["dice"], "cases": part["cases"]}
    append_round(out / QUALITY, quality_entry(r, preds, refs, class_map, **extra))
