"""SAM on the CPU, side by side: encoder runtimes, fine-tuning loss resolution, the embedding cache, batched decoding.

Real slices with scribbles of all three classes, LiteMedSAM, 10 positive points per class:
ACDC (``ACDC/``, ``acdc-h5``, slices of at most 256 px) and MSCMR (``MSCMR/``, ``mscmr``, 480-512 px),
those of the two present in the data folder (``--data-root DIR`` or ``$SCRIBMED_DATA``). Everything is
measured interleaved, slice by slice, so load changes on a shared machine hit every variant alike:

1. **Encoder**: preprocessing + image encoder with PyTorch float32, OpenVINO (the default on a
   CPU) and ONNX Runtime (compiled once, cached by weight hash; export time reported apart), one
   slice at a time and in batches of 4 slices (how the embedding cache encodes a case), their
   speed-ups over PyTorch, the largest relative error ``max |x - torch| / max |torch|`` of their
   embeddings, and the **pseudo-label Dice** each encoder's embeddings give: SAM's zero-shot
   masks (the default scribble prompts, ``logits > 0``) against the label, per class, on the
   ACDC slices.
2. **Fine-tuning step** (decoder forward for the 3 classes in one call + the round's loss, partial
   CE on the scribble + 0.5 soft Dice against the label, + backward + AdamW), embedding from the
   cache: loss on the logits upsampled to the slice (``full``, today's path) vs on the decoder's
   256x256 logits (``low``, the default), per dataset; and the same decoder in a SAM ViT frame
   (``S = 1024``, where full resolution upsamples 4x further; random embedding, timing only).
3. **Cache**: the fine-tuning step plus encoding (what a pipeline without the cache pays every
   epoch) over the step alone.
4. **Decoding**: the 3 classes of a slice in one decoder call vs one call per class.

Prints tables and writes JSON (default ``runs/bench/sam_speed.json``).

    python benchmarks/sam_speed.py [--data-root DIR] [--slices 4] [--repeats 3] [--encoder-only] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_root import add_data_root, data_root, dataset_dir  # noqa: E402
from scribmed.data.case import CARDIAC, Case, CaseArrays  # noqa: E402
from scribmed.data.layouts import open_dataset  # noqa: E402
from scribmed.losses.sam_finetune import SamFinetuneLoss  # noqa: E402
from scribmed.networks.encoder_runtime import relative_error, runtime_available  # noqa: E402
from scribmed.networks.prompt_coords import pad_points  # noqa: E402
from scribmed.networks.sam_registry import build_sam_backend  # noqa: E402
from scribmed.sam import EmbeddingCache  # noqa: E402
from scribmed.sam.decoder_finetune import slice_loss  # noqa: E402
from scribmed.sam.finetune_prompts import _SlicePrompt  # noqa: E402
from scribmed.sam.pseudo_labels import slice_logits  # noqa: E402

CLASSES = (1, 2, 3)


def pick_slices(layout: str, root: Path, n: int) -> list[tuple[Case, int]]:
    """``n`` (case, z) pairs whose slice has scribbles of every foreground class, from different cases."""
    cases = [c for c in open_dataset(layout, root) if c.has_scribble]
    out: list[tuple[Case, int]] = []
    for case in cases[:: max(1, len(cases) // n)]:
        scr = np.asarray(case.scribble)
        good = [z for z in range(scr.shape[0]) if all((scr[z] == k).any() for k in CLASSES)]
        if good:
            out.append((case, good[len(good) // 2]))
        if len(out) == n:
            break
    return out


def slice_prompt(backend, scribble: np.ndarray) -> _SlicePrompt:
    """10 positives per class spread over its scribble pixels, in the backend's input frame."""
    sets = []
    for k in CLASSES:
        rows, cols = np.nonzero(scribble == k)
        pick = np.linspace(0, len(rows) - 1, 10).round().astype(int)
        xy = np.stack([cols[pick], rows[pick]], 1).astype(np.float32)
        sets.append((backend.to_input_coords(xy, scribble.shape), np.ones(10)))
    coords, labels = pad_points(sets)
    return _SlicePrompt(0, 0, list(CLASSES), coords, labels)


def binary_dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice of two boolean masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def mean(xs: list[float]) -> float:
    return float(np.mean(xs)) if xs else float("nan")


def finetune_and_decode(torch_backend, items: list[dict], repeats: int) -> dict:
    """Sections 2-4: fine-tuning steps, the cache's saving and decoding, on PyTorch-encoded cached embeddings."""
    loss_fn = SamFinetuneLoss(4, ce_weight=1.0, dice_weight=0.5)
    step_s: dict[tuple[str, str], list[float]] = {}
    recompute: list[float] = []
    one_call, per_class = [], []
    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(tmp, torch_backend, progress=False)
        for it in items:
            cache.slice(it["case"], 0)
        opt = torch.optim.AdamW(torch_backend.mask_decoder.parameters(), lr=5e-5, weight_decay=1e-4)
        torch_backend.train()

        def step(it, resolution, embedding=None) -> None:
            emb = cache.slice(it["case"], 0) if embedding is None else embedding
            loss = slice_loss(torch_backend, emb, it["prompt"], it["scribble"], it["label"], loss_fn, resolution)
            opt.zero_grad()
            loss.backward()
            opt.step()

        # the same decoder in a SAM ViT frame (S = 1024: full resolution upsamples 4x more);
        # random weights and embedding, timing only
        torch.manual_seed(0)
        vit = build_sam_backend("vit_b", random_init=True,
                                encoder_config={"embed_dim": 48, "depth": 1, "num_heads": 2, "global_attn_indexes": (0,)})
        vit.mask_decoder.load_state_dict(torch_backend.mask_decoder.state_dict())
        vit.train()
        vit_opt = torch.optim.AdamW(vit.mask_decoder.parameters(), lr=5e-5, weight_decay=1e-4)
        vit_emb = torch.randn((1, 256, 64, 64), generator=torch.Generator().manual_seed(0)) * 0.1
        for it in items:
            it["vit_prompt"] = slice_prompt(vit, it["scribble"])

        def vit_step(it, resolution) -> None:
            loss = slice_loss(vit, vit_emb, it["vit_prompt"], it["scribble"], it["label"], loss_fn, resolution)
            vit_opt.zero_grad()
            loss.backward()
            vit_opt.step()

        for resolution in ("full", "low"):
            step(items[0], resolution)  # warm-up
            vit_step(items[0], resolution)
        for _ in range(repeats):
            for it in items:
                for resolution in ("full", "low"):
                    t0 = time.perf_counter()
                    step(it, resolution)
                    step_s.setdefault((it["dataset"], resolution), []).append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    vit_step(it, resolution)
                    step_s.setdefault((f"{it['dataset']} in a ViT frame (S=1024)", resolution), []).append(
                        time.perf_counter() - t0)
                t0 = time.perf_counter()
                step(it, "low", torch_backend.encode(torch_backend.preprocess(it["image"])))
                recompute.append(time.perf_counter() - t0)
        torch_backend.eval()
        with torch.no_grad():
            for _ in range(repeats):
                for it in items:
                    emb, sp = cache.slice(it["case"], 0), it["prompt"]
                    t0 = time.perf_counter()
                    torch_backend.decode(emb, sp.coords, sp.labels)
                    one_call.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for k in range(len(CLASSES)):
                        torch_backend.decode(emb, sp.coords[k : k + 1], sp.labels[k : k + 1])
                    per_class.append(time.perf_counter() - t0)

    steps = {f"{d}/{r}": mean(v) for (d, r), v in step_s.items()}
    groups = list(dict.fromkeys(d for d, _ in step_s))
    low_all = mean([x for (d, r), v in step_s.items() if r == "low" and "ViT" not in d for x in v])
    full_all = mean([x for (d, r), v in step_s.items() if r == "full" and "ViT" not in d for x in v])
    out = {
        "finetune_step_s_per_slice": steps,
        "finetune_step_full_over_low": {d: steps[f"{d}/full"] / steps[f"{d}/low"] for d in groups},
        "finetune_step_full_over_low_all": full_all / low_all,
        "finetune_step_plus_torch_encoder_s_per_slice": mean(recompute),
        "cache_saves": mean(recompute) / low_all,
        "decode_one_call_s_per_slice": mean(one_call),
        "decode_per_class_s_per_slice": mean(per_class),
    }
    print("\n| fine-tuning step, cached embedding | full resolution (today's path) | 256² (default) | full / 256² |")
    print("|---|---|---|---|")
    for d in groups:
        if f"{d}/low" in steps:
            print(f"| {d} | {steps[f'{d}/full']:.3f} s/slice | {steps[f'{d}/low']:.3f} s/slice | "
                  f"**{steps[f'{d}/full'] / steps[f'{d}/low']:.2f}x** |")
    print(f"| all slices, LiteMedSAM | {full_all:.3f} s/slice | {low_all:.3f} s/slice | **{full_all / low_all:.2f}x** |")
    print(f"\nstep + PyTorch encoder {mean(recompute):.3f} s/slice = {mean(recompute) / low_all:.2f}x the cached step")
    print(f"decoding 3 classes: one call {mean(one_call):.3f} s/slice, one call per class {mean(per_class):.3f} s/slice "
          f"({mean(per_class) / mean(one_call):.2f}x)")
    return out


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_root(ap, ("ACDC", "MSCMR"))
    ap.add_argument("--slices", type=int, default=4, help="slices per dataset")
    ap.add_argument("--repeats", type=int, default=3, help="passes over the slices")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "sam_speed.json")
    ap.add_argument("--encoder-only", action="store_true", help="only section 1 (encoders, pseudo-label Dice)")
    args = ap.parse_args(argv)
    datasets = []
    for name, layout in (("ACDC", "acdc-h5"), ("MSCMR", "mscmr")):
        root = dataset_dir(args, name, required=False)
        if root is not None:
            datasets.append((name, layout, root))
    if not datasets:
        sys.exit(f"error: {data_root(args)}: holds neither ACDC/ nor MSCMR/")
    runtimes = [r for r in ("openvino", "onnxruntime") if runtime_available(r)]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch_backend = build_sam_backend("lite_medsam")
        export_s, compiled = {}, {}
        with tempfile.TemporaryDirectory() as enc_cache:
            for r in runtimes:  # a fresh cache folder: the export itself is timed once
                t0 = time.perf_counter()
                compiled[r] = build_sam_backend("lite_medsam", encoder_runtime=r, encoder_cache=enc_cache)
                export_s[r] = time.perf_counter() - t0
    items = []
    for name, layout, root in datasets:
        for case, z in pick_slices(layout, root, args.slices):
            scr = np.asarray(case.scribble[z]).astype(np.int64)
            img = np.asarray(case.image[z : z + 1])
            one = Case(f"{case.case_id}_z{z}", case.patient_id, Path("<memory>"), loader=lambda a=CaseArrays(img): a)
            # the Dice term's dense target: the label, or (unlabelled MSCMR training subjects) the
            # scribble with unlabeled pixels as background; only the timing is measured here
            label = np.asarray(case.label[z]).astype(np.int64) if case.has_label else np.where(scr == 4, 0, scr)
            items.append({"dataset": name, "case": one, "image": img, "scribble": scr, "label": label,
                          "prompt": slice_prompt(torch_backend, scr)})
    print(f"{len(items)} slices: " + ", ".join(f"{it['case'].case_id} {it['image'].shape[1:]}" for it in items))

    # 1. encoder runtimes, interleaved per slice
    enc = {r: [] for r in ["torch", *runtimes]}
    errors = {r: 0.0 for r in runtimes}
    for it in items[:1]:  # warm-up
        for b in [torch_backend, *compiled.values()]:
            b.encode(b.preprocess(it["image"]))
    for _ in range(args.repeats):
        for it in items:
            t0 = time.perf_counter()
            ref = torch_backend.encode(torch_backend.preprocess(it["image"]))
            enc["torch"].append(time.perf_counter() - t0)
            for r, b in compiled.items():
                t0 = time.perf_counter()
                got = b.encode(b.preprocess(it["image"]))
                enc[r].append(time.perf_counter() - t0)
                errors[r] = max(errors[r], relative_error(got.numpy(), ref.numpy()))
    t_enc = {r: mean(v) for r, v in enc.items()}

    # 1b. batches of 4 slices of one dataset, as the embedding cache encodes a case; pseudo-label Dice
    batch_s = {r: [] for r in ["torch", *runtimes]}
    embeddings: dict[str, dict[int, torch.Tensor]] = {r: {} for r in ["torch", *runtimes]}
    batches = [[i for i, it in enumerate(items) if it["dataset"] == d][k : k + 4]
              for d in dict.fromkeys(it["dataset"] for it in items)
              for k in range(0, sum(it["dataset"] == d for it in items), 4)]
    backends = {"torch": torch_backend, **compiled}
    for _ in range(args.repeats):
        for group in batches:
            for r, b in backends.items():
                t0 = time.perf_counter()
                x = torch.cat([b.preprocess(items[i]["image"]) for i in group])
                emb = b.encode(x)
                batch_s[r].append((time.perf_counter() - t0) / len(group))
                for j, i in enumerate(group):
                    embeddings[r][i] = emb[j : j + 1]
    t_batch = {r: mean(v) for r, v in batch_s.items()}
    labelled = [i for i, it in enumerate(items) if it["dataset"] == "ACDC"]
    dice: dict[str, list[float]] = {r: [] for r in backends}
    torch_backend.eval()
    with torch.no_grad():
        for i in labelled:
            label = items[i]["label"]
            for r in backends:  # the same decoder on each runtime's embedding
                logits = slice_logits(torch_backend, embeddings[r][i], items[i]["scribble"], CARDIAC)
                for k in CLASSES:
                    if k in logits:
                        dice[r].append(binary_dice(logits[k] > 0, label == k))
    pl_dice = {r: mean(v) for r, v in dice.items()}
    pl_diff = {r: float(np.max(np.abs(np.asarray(dice[r]) - np.asarray(dice["torch"])))) if dice[r] else float("nan")
               for r in runtimes}

    result = {
        "backend": torch_backend.name,
        "slices": [{"case": it["case"].case_id, "dataset": it["dataset"], "hw": list(it["image"].shape[1:])}
                   for it in items],
        "repeats": args.repeats,
        "encoder_s_per_slice": t_enc,
        "encoder_speedup_over_torch": {r: t_enc["torch"] / t_enc[r] for r in runtimes},
        "encoder_batch4_s_per_slice": t_batch,
        "encoder_batch4_speedup_over_torch": {r: t_batch["torch"] / t_batch[r] for r in runtimes},
        "pseudo_label_dice": pl_dice,
        "pseudo_label_dice_max_abs_diff_vs_torch": pl_diff,
        "pseudo_label_dice_n": {r: len(v) for r, v in dice.items()},
        "encoder_max_rel_error": errors,
        "encoder_export_s": export_s,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "load_average": os.getloadavg(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    print("\n| encoder (preprocess + encode) | s/slice, 1 at a time | vs PyTorch | s/slice, batches of 4 | vs PyTorch "
          "| max rel. error | pseudo-label Dice (max abs. diff.) | export (once) |")
    print("|---|---|---|---|---|---|---|---|")
    print(f"| PyTorch float32 | {t_enc['torch']:.3f} | 1.00x | {t_batch['torch']:.3f} | 1.00x | - | "
          f"{pl_dice['torch']:.4f} | - |")
    for r in runtimes:
        default = " (default)" if r == "openvino" else ""
        print(f"| {r}{default} | {t_enc[r]:.3f} | {t_enc['torch'] / t_enc[r]:.2f}x | {t_batch[r]:.3f} | "
              f"**{t_batch['torch'] / t_batch[r]:.2f}x** | {errors[r]:.1e} | {pl_dice[r]:.4f} ({pl_diff[r]:.4f}) | "
              f"{export_s[r]:.1f} s |")
    print(f"(pseudo-label Dice: {len(dice['torch'])} class masks on {len(labelled)} ACDC slices)")
    if not args.encoder_only:  # 2./3./4. fine-tuning steps and decoding on cached embeddings
        result.update(finetune_and_decode(torch_backend, items, args.repeats))
    print(f"load average {os.getloadavg()[0]:.2f}, {torch.get_num_threads()} torch threads")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
