"""SAM speed on real ACDC slices with LiteMedSAM: cached embeddings vs recomputing them; batched decoding.

For a few slices that have scribbles of all three classes (``../shared/data/ACDC`` read with the
``acdc-h5`` layout, or ``--data``), with 10 positive points per class spread over the class
scribble, it times:

* (a) a fine-tuning-like step per slice: mask-decoder forward for the 3 classes in one batched
  call + BCE loss on the scribble pixels + backward + AdamW step, embedding read from an
  :class:`~scribmed.sam.EmbeddingCache` (float16 memmap);
* (b) the same step plus preprocessing and encoding the slice with LiteMedSAM's encoder (what a
  pipeline without the cache pays every epoch); prints (b)/(a);
* (c) decoder inference (no grad) per slice: 3 classes in one call vs one call per class.

Prints a table and writes JSON (default ``runs/bench/sam_speed.json``).

    python benchmarks/sam_speed.py [--data DIR] [--slices 6] [--repeats 2] [--out FILE]
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

from scribmed.data.case import Case, CaseArrays  # noqa: E402
from scribmed.data.layouts import open_dataset  # noqa: E402
from scribmed.networks.sam_backends import build_sam_backend, pad_points  # noqa: E402
from scribmed.sam import EmbeddingCache  # noqa: E402

CLASSES = (1, 2, 3)


def pick_slices(root: Path, n: int) -> list[tuple[object, int]]:
    """``n`` (case, z) pairs whose slice has scribbles of every foreground class, over several cases."""
    ds = open_dataset("acdc-h5", root)
    cases = list(ds)
    out: list[tuple[object, int]] = []
    for case in cases[:: max(1, len(cases) // n)]:
        scr = case.scribble
        good = [z for z in range(scr.shape[0]) if all((scr[z] == k).any() for k in CLASSES)]
        if good:
            out.append((case, good[len(good) // 2]))
        if len(out) == n:
            break
    return out


def prompts_for(backend, scribble: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """10 positives per class over its scribble pixels (S frame) + per-class scribble targets (256x256)."""
    hw = scribble.shape
    sets, targets = [], []
    for k in CLASSES:
        rows, cols = np.nonzero(scribble == k)
        pick = np.linspace(0, len(rows) - 1, 10).round().astype(int)
        xy = np.stack([cols[pick], rows[pick]], 1).astype(np.float32)
        sets.append((backend.to_input_coords(xy, hw), np.ones(10)))
        targets.append(scribble == k)
    coords, labels = pad_points(sets)
    return coords, labels, torch.from_numpy(np.stack(targets)[:, None].astype(np.float32))


def step(backend, opt, emb, coords, labels, target, hw, scribble_mask) -> float:
    low, _ = backend.decode(emb, coords, labels)
    logits = backend.postprocess(low, hw)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, target, weight=scribble_mask)
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "ACDC")
    ap.add_argument("--slices", type=int, default=6)
    ap.add_argument("--repeats", type=int, default=2, help="passes over the slices for (a)/(b) and (c)")
    ap.add_argument("--out", type=Path, default=REPO / "runs" / "bench" / "sam_speed.json")
    args = ap.parse_args(argv)
    if not (args.data / "ACDC_training_volumes").is_dir():
        sys.exit(f"{args.data}: ACDC_training_volumes/ not found (pass --data)")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        backend = build_sam_backend("lite_medsam")
    picks = pick_slices(args.data, args.slices)
    items = []
    for case, z in picks:
        scr = np.asarray(case.scribble[z])
        coords, labels, target = prompts_for(backend, scr)
        labelled = torch.from_numpy(np.isin(scr, (0, *CLASSES)).astype(np.float32))[None, None].expand_as(target)
        img = np.asarray(case.image[z : z + 1])
        one = Case(f"{case.case_id}_z{z}", case.patient_id, Path("<memory>"), loader=lambda a=CaseArrays(img): a)
        items.append((one, 0, img, coords, labels, target, labelled.contiguous()))
    print(f"{len(items)} ACDC slices: " + ", ".join(c.case_id for c, *_ in items))

    with tempfile.TemporaryDirectory() as tmp:
        cache = EmbeddingCache(tmp, backend, progress=False)
        t0 = time.perf_counter()
        embs = {}
        for case, z, *_ in items:
            embs[(case.case_id, z)] = cache.slice(case, z)  # one-slice cases: encoded once, not timed below
        t_fill = time.perf_counter() - t0
        opt = torch.optim.AdamW(backend.mask_decoder.parameters(), lr=5e-5, weight_decay=1e-4)
        backend.train()
        for case, z, img, coords, labels, target, m in items[:1]:  # warm-up
            step(backend, opt, cache.slice(case, z), coords, labels, target, img.shape[1:], m)

        # (a) vs (b), interleaved per slice so that load changes on a shared machine hit both alike
        calls0 = backend.encoder_calls
        t_a, t_b, t_enc = [], [], []
        for _ in range(args.repeats):
            for case, z, img, coords, labels, target, m in items:
                t0 = time.perf_counter()
                step(backend, opt, cache.slice(case, z), coords, labels, target, img.shape[1:], m)
                t_a.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                emb = backend.encode(backend.preprocess(img))
                t_enc.append(time.perf_counter() - t0)
                step(backend, opt, emb, coords, labels, target, img.shape[1:], m)
                t_b.append(time.perf_counter() - t0)
        assert backend.encoder_calls - calls0 == args.repeats * len(items)
        t_cached, t_recompute, t_encoder = (float(np.mean(t)) for t in (t_a, t_b, t_enc))
        backend.eval()

        # (c) decoder inference: batched vs one class at a time (interleaved)
        t_c1, t_c3 = [], []
        with torch.no_grad():
            for _ in range(args.repeats):
                for case, z, img, coords, labels, *_ in items:
                    t0 = time.perf_counter()
                    backend.decode(embs[(case.case_id, z)], coords, labels)
                    t_c1.append(time.perf_counter() - t0)
                    t0 = time.perf_counter()
                    for k in range(len(CLASSES)):
                        backend.decode(embs[(case.case_id, z)], coords[k : k + 1], labels[k : k + 1])
                    t_c3.append(time.perf_counter() - t0)
        t_batched, t_single = float(np.mean(t_c1)), float(np.mean(t_c3))
        stats = cache.stats()

    result = {
        "backend": backend.name,
        "cache_key": backend.cache_key,
        "slices": [c.case_id for c, *_ in items],
        "classes_per_slice": len(CLASSES),
        "points_per_class": 10,
        "cache_fill_s_total": t_fill,
        "cache_stats": stats,
        "finetune_step_cached_s_per_slice": t_cached,
        "finetune_step_recompute_s_per_slice": t_recompute,
        "encoder_s_per_slice": t_encoder,
        "recompute_over_cached": t_recompute / t_cached,
        "decode_batched_s_per_slice": t_batched,
        "decode_one_class_at_a_time_s_per_slice": t_single,
        "decoder_slices_per_s_batched": 1.0 / t_batched,
        "decoder_slices_per_s_single": 1.0 / t_single,
        "batched_speedup": t_single / t_batched,
        "torch_threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "platform": platform.platform(),
        "torch": torch.__version__,
    }
    rows = [
        ("(a) fine-tune step, cached embedding", f"{t_cached:.3f} s/slice"),
        ("(b) same + LiteMedSAM encoder", f"{t_recompute:.3f} s/slice"),
        ("    of which encoder", f"{t_encoder:.3f} s/slice"),
        ("    (b) / (a)", f"{t_recompute / t_cached:.2f}x"),
        ("(c) decode 3 classes, one call", f"{t_batched:.3f} s/slice  ({1 / t_batched:.2f} slices/s)"),
        ("    decode one class at a time", f"{t_single:.3f} s/slice  ({1 / t_single:.2f} slices/s)"),
        ("    batched speed-up", f"{t_single / t_batched:.2f}x"),
    ]
    width = max(len(r[0]) for r in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp_out = args.out.with_name(f".{args.out.name}.tmp")
    tmp_out.write_text(json.dumps(result, indent=2))
    os.replace(tmp_out, args.out)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()
