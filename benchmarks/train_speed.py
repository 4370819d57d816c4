"""DMPLS training speed: seconds per iteration and the share of time spent waiting for data.

Runs the real training engine (``build_dmpls_trainer``: slice cache, seeded sampler, DMPLS
augmentation, DataLoader, dual-branch U-Net, DMPLS loss, SGD) at the paper's batch 12 and
256x256 on a few real ACDC volumes (``ACDC/``, ``acdc-h5``, in the data folder: ``--data-root DIR``
or ``$SCRIBMED_DATA``), or on cardiac phantoms with ``--synthetic``. A few warm-up iterations are
excluded. The time between ``GET_BATCH_STARTED`` and ``GET_BATCH_COMPLETED`` is the data wait;
``ITERATION_STARTED``..``ITERATION_COMPLETED`` is the step (forward, loss, backward, SGD).

With ``--reference`` it also times a re-implementation of the reference code's step and
scribmed's steps in turn on the same batches. The reference step uses the reference network (the
same U-Net with 1x1 conv + bilinear up-steps, as WSL4MIS runs it) and its pseudo-label Dice, which
one-hot encodes the ``(B, 1, H, W)`` pseudo label into ``(B, C, 1, H, W)`` so every class term
broadcasts to a ``(B, B, H, W)`` product (wasted work). scribmed's
steps: ``scribmed`` NCHW float32 (``--no-channels-last``), ``scribmed_cl`` channels-last float32,
``scribmed_cl_bf16`` channels-last under bfloat16 autocast (timed by default only where the CPU
has native bfloat16, or on CUDA: emulated it is several times slower), and ``default``, the step
the recipe's defaults run on this device (channels-last, mixed precision as ``amp_policy`` resolves
``--amp auto`` here). Compute only: the reference's per-sample HDF5 reading and scipy resizing are
not included.

Usage::

    python benchmarks/train_speed.py [--data-root DIR | --synthetic] [--iterations 5] [--warmup 1] [--cases 3]
        [--reference] [--variants scribmed,scribmed_cl,scribmed_cl_bf16,default]

Prints a table and writes ``runs/bench/train_speed.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from ignite.engine import Events

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.data_root import add_data_root, dataset_dir  # noqa: E402
from scribmed.data.case import CARDIAC  # noqa: E402
from scribmed.recipes.dmpls.config import DMPLSConfig  # noqa: E402
from scribmed.recipes.dmpls.trainer import build_dmpls_trainer  # noqa: E402
from scribmed.runtime.device import cpu_has_native_bf16, resolve_device  # noqa: E402


def load_cases(n: int, acdc: Path | None):
    """First ``n`` ACDC h5 volumes of the ``acdc`` folder, or ``n`` phantom volumes when it is ``None``."""
    if acdc is not None:
        from scribmed.data.layouts import open_dataset

        ds = open_dataset("acdc-h5", acdc)
        return ds.cases[:n], f"ACDC h5 ({n} volumes)"
    from scribmed.data.phantoms import generate_cardiac

    cases = [p.to_case() for p in generate_cardiac((n + 1) // 2, seed=0)][:n]
    return cases, f"cardiac phantoms ({n} volumes)"


def time_engine(cases, cfg: DMPLSConfig, warmup: int, out_dir: Path) -> dict:
    """Run the engine for ``warmup + timed`` iterations and time data waits and steps."""
    t0 = time.perf_counter()
    trainer, _ = build_dmpls_trainer(cases, [], CARDIAC, out_dir, cfg)
    setup_s = time.perf_counter() - t0
    marks: dict[str, float] = {}
    waits: list[float] = []
    steps: list[float] = []
    totals: list[float] = []

    def mark(name):
        def handler(engine):
            marks[name] = time.perf_counter()

        return handler

    trainer.add_event_handler(Events.GET_BATCH_STARTED, mark("get_start"))
    trainer.add_event_handler(Events.GET_BATCH_COMPLETED, mark("get_done"))
    trainer.add_event_handler(Events.ITERATION_STARTED, mark("it_start"))

    @trainer.on(Events.ITERATION_COMPLETED)
    def _record(engine):
        now = time.perf_counter()
        waits.append(marks["get_done"] - marks["get_start"])
        steps.append(now - marks["it_start"])
        totals.append(now - marks["get_start"])

    trainer.run()
    w, s, t = waits[warmup:], steps[warmup:], totals[warmup:]
    return {
        "setup_s (cache + build)": setup_s,
        "slices_cached": len(trainer.slice_cache),
        "iterations_timed": len(t),
        "s_per_iteration": statistics.mean(t),
        "s_per_iteration_median": statistics.median(t),
        "step_s": statistics.mean(s),
        "data_wait_s": statistics.mean(w),
        "data_wait_share": sum(w) / sum(t),
        "trainer": trainer,
    }


def _reference_dice_loss(probs: torch.Tensor, target_b1hw: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Soft Dice as the reference step computes it, including its (B, B, H, W) broadcast."""
    one_hot = torch.cat([(target_b1hw == i).unsqueeze(1) for i in range(n_classes)], dim=1).float()  # (B,C,1,H,W)
    loss = probs.new_zeros(())
    smooth = 1e-5
    for i in range(n_classes):
        score, tgt = probs[:, i], one_hot[:, i]  # (B,H,W) and (B,1,H,W) -> products are (B,B,H,W)
        intersect = torch.sum(score * tgt)
        y_sum = torch.sum(tgt * tgt)
        z_sum = torch.sum(score * score)
        loss = loss + 1 - (2 * intersect + smooth) / (z_sum + y_sum + smooth)
    return loss / n_classes


def _reference_network(base: torch.nn.Module) -> torch.nn.Module:
    """The reference code's network: the same U-Net, but every decoder up-step is 1x1 conv + bilinear."""
    from scribmed.networks.unet_dual import DualBranchUNet

    torch.manual_seed(0)
    return DualBranchUNet(base.in_channels, base.num_classes, upsample="bilinear")


def time_steps_interleaved(trainer, batches, warmup: int, n_classes: int, ignore_index: int,
                           variants: tuple[str, ...]) -> dict:
    """Time the reference-style step and scribmed's step(s) in turn on the same batches.

    ``reference``: the reference network (bilinear up-steps), its loss with the ``(B, B, H, W)``
    Dice broadcast, NCHW float32. ``scribmed``: scribmed's network and loss, NCHW float32
    (``--no-channels-last``); ``scribmed_cl``: the same in channels-last; ``scribmed_cl_bf16``:
    channels-last with bfloat16 autocast; ``default``: the trainer's own memory format and
    :attr:`amp_policy`. Each gets its own network and optimiser; rotating the order every
    iteration makes the ratios robust to other load. Compute only (forward, loss, backward, SGD).
    """
    import copy

    from scribmed.training.inference import unwrap_network
    from scribmed.losses.dmpls import DMPLSLoss

    base = unwrap_network(trainer.network)
    nets = {"reference": _reference_network(base).train()}
    for name in variants:
        nets[name] = copy.deepcopy(base).train()  # the trainer's network may already be channels-last
        fmt = torch.channels_last if "_cl" in name or (name == "default" and trainer.channels_last) \
            else torch.contiguous_format
        nets[name] = nets[name].to(memory_format=fmt)
    opts = {n: torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9, weight_decay=1e-4) for n, m in nets.items()}
    dmpls = DMPLSLoss(n_classes, ignore_index, generator=torch.Generator().manual_seed(0))
    ce = torch.nn.CrossEntropyLoss(ignore_index=ignore_index)
    gen = torch.Generator().manual_seed(0)

    def autocast(name: str, device_type: str):
        if name == "default":
            return trainer.amp_policy.autocast()
        return torch.autocast(device_type, dtype=torch.bfloat16, enabled=name.endswith("bf16"))

    def scribmed_step(name, x, s):
        if "_cl" in name or (name == "default" and trainer.channels_last):
            x = x.contiguous(memory_format=torch.channels_last)
        with autocast(name, x.device.type):
            out1, out2 = nets[name](x)
        loss, _ = dmpls(out1.float(), out2.float(), s)
        opts[name].zero_grad(set_to_none=True)
        loss.backward()
        opts[name].step()

    def reference_step(name, x, s):
        out1, out2 = nets["reference"](x)
        p1, p2 = torch.softmax(out1, 1), torch.softmax(out2, 1)
        beta = torch.rand((), generator=gen).item()
        pseudo = torch.argmax(beta * p1.detach() + (1 - beta) * p2.detach(), dim=1, keepdim=False)
        loss_ce = 0.5 * (ce(out1, s) + ce(out2, s))
        loss_pse = 0.5 * (
            _reference_dice_loss(p1, pseudo.unsqueeze(1), n_classes) + _reference_dice_loss(p2, pseudo.unsqueeze(1), n_classes)
        )
        loss = loss_ce + 0.5 * loss_pse
        opts["reference"].zero_grad()
        loss.backward()
        opts["reference"].step()

    order = [("reference", reference_step), *[(n, scribmed_step) for n in variants]]
    times: dict[str, list[float]] = {name: [] for name, _ in order}
    for i, batch in enumerate(batches):
        x, s = batch["image"], batch["scribble"]
        rotated = order[i % len(order):] + order[: i % len(order)]
        for name, step in rotated:
            t0 = time.perf_counter()
            step(name, x, s)
            if x.is_cuda:
                torch.cuda.synchronize()
            times[name].append(time.perf_counter() - t0)
    out = {f"{n}_step_s": statistics.mean(t[warmup:]) for n, t in times.items()}
    out["iterations_timed"] = len(batches) - warmup
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=5, help="timed iterations")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--cases", type=int, default=3, help="volumes to cache")
    ap.add_argument("--batch-size", type=int, default=12)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--num-workers", type=int, default=0)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--reference", action="store_true", help="also time the reference-style step")
    ap.add_argument("--variants", default=None,
                    help="scribmed steps timed against the reference, of scribmed, scribmed_cl, scribmed_cl_bf16, "
                    "default (default: all four where bfloat16 is native, else without scribmed_cl_bf16)")
    add_data_root(ap, ("ACDC",))
    ap.add_argument("--synthetic", action="store_true", help="cardiac phantoms instead of ACDC (no data needed)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "train_speed.json")
    args = ap.parse_args(argv)

    device = resolve_device(args.device)
    native_bf16 = device.type == "cuda" or cpu_has_native_bf16()
    cases, source = load_cases(args.cases, None if args.synthetic else dataset_dir(args, "ACDC"))
    total = args.warmup + args.iterations
    cfg = DMPLSConfig(
        iterations=total, batch_size=args.batch_size, size=(args.size, args.size), epoch_length=total,
        num_workers=args.num_workers, device=args.device, progress=False,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        res = time_engine(cases, cfg, args.warmup, Path(tmp) / "run")
    trainer = res.pop("trainer")
    report = {
        "benchmark": "train_speed",
        "data": source,
        "device": str(trainer.state.device),
        "torch_threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "config": {k: cfg.to_dict()[k] for k in ("batch_size", "size", "num_workers", "amp", "channels_last")},
        "native_bf16": native_bf16,
        "default_precision": trainer.amp_policy.name,
        "scribmed": res,
    }
    if args.reference:
        batches = []
        sampler_epoch = trainer.sampler.epoch
        trainer.sampler.set_epoch(0)
        for batch in trainer.data_loader:
            batches.append({k: v.to(trainer.state.device) for k, v in batch.items() if k in ("image", "scribble")})
            if len(batches) == total:
                break
        trainer.sampler.set_epoch(sampler_epoch)
        names = args.variants or ("scribmed,scribmed_cl," + ("scribmed_cl_bf16," if native_bf16 else "") + "default")
        variants = tuple(v.strip() for v in names.split(",") if v.strip())
        ref = time_steps_interleaved(trainer, batches, args.warmup, CARDIAC.num_classes, CARDIAC.ignore_index, variants)
        report["interleaved_steps"] = ref
        report["speedup_vs_reference"] = {v: ref["reference_step_s"] / ref[f"{v}_step_s"] for v in variants}

    rows = [
        ("data", source),
        ("device / threads", f"{report['device']} / {report['torch_threads']}"),
        ("native bfloat16", "yes" if native_bf16 else "no (AVX512-BF16/AMX absent: --amp auto is float32)"),
        ("default precision", report["default_precision"]),
        ("batch x size", f"{args.batch_size} x {args.size}^2"),
        ("cache + build (s)", f"{res['setup_s (cache + build)']:.2f} ({res['slices_cached']} slices)"),
        ("s / iteration (mean)", f"{res['s_per_iteration']:.3f}"),
        ("s / iteration (median)", f"{res['s_per_iteration_median']:.3f}"),
        ("step (s)", f"{res['step_s']:.3f}"),
        ("data wait (s)", f"{res['data_wait_s']:.4f}"),
        ("data wait share", f"{100 * res['data_wait_share']:.2f} %"),
    ]
    if args.reference:
        rows.append(("interleaved: reference-style step (s)", f"{ref['reference_step_s']:.3f}"))
        for v in variants:
            rows.append((f"interleaved: {v} step (s)", f"{ref[f'{v}_step_s']:.3f}  "
                         f"({report['speedup_vs_reference'][v]:.2f}x the reference)"))
        if "default" in variants:
            rows.append(("DEFAULT STEP vs the reference", f"{report['speedup_vs_reference']['default']:.2f}x"))
    width = max(len(r[0]) for r in rows)
    print("\nDMPLS training speed")
    for name, value in rows:
        print(f"  {name:<{width}}  {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1, default=str))
    print(f"\nwrote {args.out}")
    return report


if __name__ == "__main__":
    main()
