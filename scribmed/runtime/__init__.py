"""The bottom floor every package may use: device and precision policy, distributed setup, seeding,
checkpoint IO, the atomic file writer, figure output, progress output, and where the shipped files
are.

Modules: ``device`` (one mixed-precision policy), ``distributed`` (torchrun process groups),
``seeding`` (the seeded streams of a run), ``checkpoint`` (``weights_only`` loading, RNG state),
``files`` (atomic writes, sha256; standard library only), ``figures`` (palette, layout, PNG/PDF
output), ``progress`` (a tqdm bar in a terminal, plain lines in a log), ``shipped`` (split files
and bundles inside the wheel or the source tree), ``records``
(schema identifiers of the records scribmed writes) and ``migrations`` (the one module that
upgrades older records). Names load on first access, so ``scribmed.runtime.files`` stays
importable without torch.
"""

from __future__ import annotations

from scribmed.runtime.lazy_exports import lazy_exports

_EXPORTS = {
    "AMP_MODES": "scribmed.runtime.device",
    "AmpPolicy": "scribmed.runtime.device",
    "BACKGROUND_SCRIBBLE_COLOUR": "scribmed.runtime.figures",
    "BOXPLOT_STYLE": "scribmed.runtime.figures",
    "CHECKPOINT": "scribmed.runtime.records",
    "CLASS_COLOURS": "scribmed.runtime.figures",
    "CURRENT_VERSIONS": "scribmed.runtime.records",
    "DistContext": "scribmed.runtime.distributed",
    "FIGURES_ENV": "scribmed.runtime.figures",
    "FINETUNE_CONFIG_V1_VALUES": "scribmed.runtime.migrations",
    "FOLD": "scribmed.runtime.records",
    "FORMATS": "scribmed.runtime.figures",
    "KINDS": "scribmed.runtime.shipped",
    "OKABE_ITO": "scribmed.runtime.figures",
    "PROGRESS_ENV": "scribmed.runtime.progress",
    "PROGRESS_INTERVAL_ENV": "scribmed.runtime.progress",
    "PROGRESS_MODES": "scribmed.runtime.progress",
    "POSTPROCESSING": "scribmed.runtime.records",
    "PSEUDO_LABELS": "scribmed.runtime.records",
    "Progress": "scribmed.runtime.progress",
    "ProgressLines": "scribmed.runtime.progress",
    "RUN": "scribmed.runtime.records",
    "SAM_DECODER": "scribmed.runtime.records",
    "SAM_ROUNDS": "scribmed.runtime.records",
    "SCHEMA_KEY": "scribmed.runtime.records",
    "SEGMENTOR_CONFIG_V1_VALUES": "scribmed.runtime.migrations",
    "all_reduce_mean": "scribmed.runtime.distributed",
    "amp_dtype": "scribmed.runtime.device",
    "amp_enabled": "scribmed.runtime.device",
    "amp_mode": "scribmed.runtime.device",
    "amp_policy": "scribmed.runtime.device",
    "cpu_has_native_bf16": "scribmed.runtime.device",
    "atomic_output": "scribmed.runtime.files",
    "atomic_write_bytes": "scribmed.runtime.files",
    "atomic_write_text": "scribmed.runtime.files",
    "barrier": "scribmed.runtime.distributed",
    "capture_rng_state": "scribmed.runtime.checkpoint",
    "class_colour": "scribmed.runtime.figures",
    "class_legend_handles": "scribmed.runtime.figures",
    "cleanup_distributed": "scribmed.runtime.distributed",
    "derive_seed": "scribmed.runtime.seeding",
    "figure_formats": "scribmed.runtime.figures",
    "figure_legend": "scribmed.runtime.figures",
    "figure_paths": "scribmed.runtime.figures",
    "file_sha256": "scribmed.runtime.files",
    "get_rank": "scribmed.runtime.distributed",
    "get_world_size": "scribmed.runtime.distributed",
    "init_distributed": "scribmed.runtime.distributed",
    "is_distributed": "scribmed.runtime.distributed",
    "is_main_process": "scribmed.runtime.distributed",
    "label_rgba": "scribmed.runtime.figures",
    "lazy_exports": "scribmed.runtime.lazy_exports",
    "load_checkpoint": "scribmed.runtime.checkpoint",
    "load_network_weights": "scribmed.runtime.checkpoint",
    "loader_generator": "scribmed.runtime.seeding",
    "loader_options": "scribmed.runtime.device",
    "loss_generator": "scribmed.runtime.seeding",
    "new_figure": "scribmed.runtime.figures",
    "palette_colour": "scribmed.runtime.figures",
    "parse_figure_formats": "scribmed.runtime.figures",
    "parse_schema": "scribmed.runtime.records",
    "progress_bar": "scribmed.runtime.progress",
    "progress_interval": "scribmed.runtime.progress",
    "progress_mode": "scribmed.runtime.progress",
    "read_json_record": "scribmed.runtime.migrations",
    "reseed_rank": "scribmed.runtime.seeding",
    "resolve_device": "scribmed.runtime.device",
    "restore_rng_state": "scribmed.runtime.checkpoint",
    "save_checkpoint": "scribmed.runtime.checkpoint",
    "save_figure": "scribmed.runtime.figures",
    "schema_id": "scribmed.runtime.records",
    "set_figure_formats": "scribmed.runtime.figures",
    "set_title": "scribmed.runtime.figures",
    "shipped_dir": "scribmed.runtime.shipped",
    "stamp": "scribmed.runtime.records",
    "style_boxes": "scribmed.runtime.figures",
    "text_outside_canvas": "scribmed.runtime.figures",
    "upgrade_checkpoint": "scribmed.runtime.migrations",
    "upgrade_fold_record": "scribmed.runtime.migrations",
    "upgrade_postprocessing_record": "scribmed.runtime.migrations",
    "upgrade_pseudo_label_record": "scribmed.runtime.migrations",
    "upgrade_run_record": "scribmed.runtime.migrations",
    "upgrade_sam_decoder_checkpoint": "scribmed.runtime.migrations",
    "upgrade_sam_rounds_record": "scribmed.runtime.migrations",
    "wrap_text": "scribmed.runtime.figures",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, globals(), _EXPORTS)
