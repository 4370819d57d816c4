"""Mask-decoder fine-tuning round on a FAKE tiny SAM backend and a phantom: encoders frozen,
one batched decode per slice, selection by validation Dice, atomic checkpoints, exact resume."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from segment_anything.modeling import MaskDecoder, PromptEncoder, TwoWayTransformer
from torch import nn

from scribmed.data.case import CARDIAC
from scribmed.data.errors import DataError
from scribmed.data.phantoms import generate_cardiac
from scribmed.losses.sam_finetune import SamFinetuneLoss
from scribmed.networks.sam_backends import SamBackend
from scribmed.sam import EmbeddingCache
from scribmed.sam import decoder_finetune as dft
from scribmed.sam.decoder_checkpoint import decoder_state_path, load_decoder
from scribmed.sam.decoder_finetune import finetune_decoder
from scribmed.sam.finetune_config import FinetuneConfig

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, GRID = 32, 16  # embedding (32, 16, 16): the real SAM modules at a tiny width


class TinyEncoder(nn.Module):
    """(N, 3, 256, 256) -> (N, 32, 16, 16): 16x average pooling and a 1x1 conv."""

    def __init__(self) -> None:
        super().__init__()
        gen = torch.Generator().manual_seed(0)
        self.conv = nn.Conv2d(3, DIM, 1)
        with torch.no_grad():
            self.conv.weight.copy_(torch.randn(self.conv.weight.shape, generator=gen))
            self.conv.bias.copy_(torch.randn(self.conv.bias.shape, generator=gen))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(nn.functional.avg_pool2d(x, 256 // GRID))


def fake_backend(seed: int = 0) -> SamBackend:
    """segment_anything's PromptEncoder + MaskDecoder (1-layer transformer) at width 32."""
    torch.manual_seed(seed)
    prompt = PromptEncoder(embed_dim=DIM, image_embedding_size=(GRID, GRID), input_image_size=(256, 256),
                           mask_in_chans=4)
    decoder = MaskDecoder(
        num_multimask_outputs=3,
        transformer=TwoWayTransformer(depth=1, embedding_dim=DIM, mlp_dim=32, num_heads=2),
        transformer_dim=DIM,
        iou_head_depth=2,
        iou_head_hidden_dim=16,
    )
    backend = SamBackend("fake", TinyEncoder(), prompt, decoder, 256, "minmax")
    backend.embedding_shape = (DIM, GRID, GRID)
    backend.image_encoder.requires_grad_(False)
    return backend.eval()


@pytest.fixture(scope="module")
def cases():
    phantoms = generate_cardiac(3, seed=3, size=(48, 56), slices=(3, 3), frames=("ED",))
    out = [p.to_case() for p in phantoms]
    # one slice without any foreground scribble (background + unlabeled only): must be skipped
    scribble = out[0].scribble
    scribble[2][np.isin(scribble[2], [1, 2, 3])] = CARDIAC.ignore_index
    return out


@pytest.fixture(scope="module")
def pseudo(cases):
    """A deliberately imperfect pseudo label: the truth with the myocardium dropped on odd slices."""
    out = {}
    for c in cases:
        pl = c.label.astype(np.int64).copy()
        pl[1::2][pl[1::2] == 2] = 0
        out[c.case_id] = pl
    return out




def state(module: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def run(tmp_path: Path, cases, pseudo, out: str = "round1", backend=None, **cfg):
    backend = backend or fake_backend()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    config = FinetuneConfig(**{"epochs": 2, "lr": 1e-3, "progress": False, **cfg})
    result = finetune_decoder(backend, cache, cases[:2], cases[2:], pseudo, CARDIAC, config, tmp_path / out)
    return backend, result


def test_only_decoder_trains_and_best_is_saved_and_loadable(tmp_path, cases, pseudo):
    backend = fake_backend()
    enc0, prompt0, dec0 = state(backend.image_encoder), state(backend.prompt_encoder), state(backend.mask_decoder)
    backend, result = run(tmp_path, cases, pseudo, backend=backend)
    assert same(state(backend.image_encoder), enc0) and same(state(backend.prompt_encoder), prompt0)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.history[0]["train_loss"] is None and all(h["val_reference"] == "label" for h in result.history)
    scores = [h["val_dice"] for h in result.history]
    assert all(0.0 <= s <= 1.0 for s in scores)
    assert result.selected_epoch == int(np.argmax(scores))  # argmax: first of ties
    assert result.best_val_dice == pytest.approx(max(scores))
    # slices: 3 + 3 in the training cases, one without a foreground scribble -> 5 per epoch
    assert [h["train_slices"] for h in result.history[1:]] == [5, 5] and result.history[1]["steps"] == 5
    assert result.history[2]["train_loss"] < result.history[1]["train_loss"]
    assert set(result.history[1]["train_terms"]) == {"ce", "dice"}
    assert result.best_path == decoder_state_path(tmp_path / "round1") and result.best_path.is_file()
    assert result.last_path == decoder_state_path(tmp_path / "round1", "last") and result.last_path.is_file()
    assert not [p for p in result.best_path.parent.iterdir() if p.name.startswith(".")]  # no temp files left
    # the backend holds the selected decoder, requires_grad flags are back, decoder trained
    best = torch.load(result.best_path, map_location="cpu", weights_only=True)
    assert best["epoch"] == result.selected_epoch and best["config"]["lr"] == 1e-3
    fresh = fake_backend()
    meta = load_decoder(fresh, result.best_path)
    assert meta["epoch"] == result.selected_epoch
    assert same(state(fresh.mask_decoder), state(backend.mask_decoder))
    assert all(p.requires_grad for p in backend.mask_decoder.parameters())
    assert not any(p.requires_grad for p in backend.image_encoder.parameters())
    last = torch.load(result.last_path, map_location="cpu", weights_only=True)
    assert last["epoch"] == 2 and "optimizer" in last and "torch" in last["rng"]
    if result.selected_epoch:
        assert not same(state(backend.mask_decoder), dec0)


def test_one_batched_decoder_call_per_slice_in_seeded_order(tmp_path, cases, pseudo):
    calls: list[tuple[int, int]] = []

    def recording(seed: int) -> SamBackend:
        backend = fake_backend()
        original = backend.decode

        def decode(embedding, point_coords=None, point_labels=None, **kw):
            calls.append((int(point_coords.shape[0]), int(embedding.float().sum().mul(1e3).round())))
            return original(embedding, point_coords, point_labels, **kw)

        backend.decode = decode  # type: ignore[method-assign]
        return backend

    run(tmp_path, cases, pseudo, "a", backend=recording(0), epochs=1, validate_initial=False)
    first = list(calls)
    # 5 training slices + 3 validation slices, one call each with all scribbled classes
    assert len(first) == 8
    classes = [len({int(v) for v in np.unique(c.scribble[z])} & {1, 2, 3}) for c in cases[:2] for z in range(3)]
    assert sorted(k for k, _ in first[:5]) == sorted(k for k in classes if k)
    calls.clear()  # (same seed, same order: see the resume test)
    run(tmp_path, cases, pseudo, "c", backend=recording(0), epochs=1, validate_initial=False, seed=5)
    assert sorted(calls[:5]) == sorted(first[:5]) and calls[:5] != first[:5]


def test_resume_after_a_crash_gives_the_uninterrupted_decoder(tmp_path, cases, pseudo, monkeypatch):
    full, full_result = run(tmp_path, cases, pseudo, "full", batch_slices=2)
    real_epoch = dft._train_epoch

    def crash_in_epoch_two(*args, **kwargs):
        if args[-1] == 2:
            raise KeyboardInterrupt("killed during epoch 2")
        return real_epoch(*args, **kwargs)

    monkeypatch.setattr(dft, "_train_epoch", crash_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, cases, pseudo, "crash", batch_slices=2)
    assert torch.load(tmp_path / "crash" / "decoder_last.pt", weights_only=True)["epoch"] == 1
    monkeypatch.setattr(dft, "_train_epoch", real_epoch)
    resumed, result = run(tmp_path, cases, pseudo, "crash", batch_slices=2)
    assert same(state(resumed.mask_decoder), state(full.mask_decoder))
    assert result.selected_epoch == full_result.selected_epoch
    drop = {"seconds"}
    assert [{k: v for k, v in h.items() if k not in drop} for h in result.history] == [
        {k: v for k, v in h.items() if k not in drop} for h in full_result.history
    ]
    assert full_result.history[1]["steps"] == 3  # 5 slices in steps of 2
    # a finished round resumes to the same answer without training
    again, result2 = run(tmp_path, cases, pseudo, "crash", batch_slices=2)
    assert same(state(again.mask_decoder), state(full.mask_decoder)) and len(result2.history) == 3
    # other settings must not silently continue that run
    with pytest.raises(ValueError, match="resume=False"):
        run(tmp_path, cases, pseudo, "crash", batch_slices=2, lr=1e-4)


def test_ties_keep_the_earlier_epoch(tmp_path, cases, pseudo, monkeypatch):
    monkeypatch.setattr(dft, "_validate", lambda *a, **k: {"val_dice": 0.5, "val_reference": "label"})
    backend = fake_backend()
    dec0 = state(backend.mask_decoder)
    backend, result = run(tmp_path, cases, pseudo, backend=backend)
    assert result.selected_epoch == 0 and result.best_val_dice == 0.5
    assert same(state(backend.mask_decoder), dec0)  # the starting decoder, loaded back
    assert [h["new_best"] for h in result.history] == [True, False, False]
    trained = torch.load(result.last_path, weights_only=True)["model"]
    assert not same(trained, {f"mask_decoder.{k}": v for k, v in dec0.items()})  # it did train


def test_unlabeled_validation_case_scored_against_pseudo_label(tmp_path, cases, pseudo):
    unlabeled = generate_cardiac(3, seed=3, size=(48, 56), slices=(3, 3), frames=("ED",))[2]
    unlabeled.label = None
    val = unlabeled.to_case()
    val.has_label = False
    backend = fake_backend()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    config = FinetuneConfig(epochs=1, progress=False)
    with pytest.warns(UserWarning, match="pseudo label"):
        result = finetune_decoder(backend, cache, cases[:2], [val], pseudo, CARDIAC, config, tmp_path / "r")
    assert result.history[0]["val_reference"] == "pseudo_label"
    assert result.history[0]["val_cases_scored_against_pseudo_label"] == [val.case_id]


def test_no_validation_cases_selects_the_last_epoch(tmp_path, cases, pseudo):
    backend = fake_backend()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    config = FinetuneConfig(epochs=1, progress=False, ce_weight=1.0, dice_weight=0.0)
    result = finetune_decoder(backend, cache, cases[:2], [], {}, CARDIAC, config, tmp_path / "r")
    assert result.selected_epoch == 1 and math.isnan(result.best_val_dice)


def test_bad_inputs(tmp_path, cases, pseudo):
    backend = fake_backend()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    config = FinetuneConfig(epochs=1, progress=False)
    with pytest.raises(ValueError, match="no pseudo label"):
        finetune_decoder(backend, cache, cases[:2], cases[2:], {}, CARDIAC, config, tmp_path / "a")
    bare = generate_cardiac(1, seed=1, size=(48, 56), slices=(3, 3), frames=("ED",), scribbles=False)[0].to_case()
    with pytest.raises(DataError, match="no scribble"):
        finetune_decoder(backend, cache, [bare], cases[2:], pseudo, CARDIAC, config, tmp_path / "b")
    wrong = {k: v[:, :10] for k, v in pseudo.items()}
    with pytest.raises(ValueError, match="shape"):
        finetune_decoder(backend, cache, cases[:2], cases[2:], wrong, CARDIAC, config, tmp_path / "c")
    with pytest.raises(ValueError, match="unknown FinetuneConfig keys"):
        FinetuneConfig.from_dict({"epochs": 1, "learning_rate": 1.0})
    assert FinetuneConfig.from_dict(FinetuneConfig(lr=1e-4).to_dict()) == FinetuneConfig(lr=1e-4)
    with pytest.raises(ValueError, match="negatives"):
        FinetuneConfig(negatives="random")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="junk.pt"):
        load_decoder(backend, junk)
    torch.save({"model": {"mask_decoder.nope": torch.zeros(1)}}, tmp_path / "other.pt")
    with pytest.raises(DataError, match="do not fit"):
        load_decoder(backend, tmp_path / "other.pt")


def test_validation_case_without_scribble_is_prompted_from_its_label(tmp_path, cases, pseudo):
    """MSCMR-like val subjects (label, no scribble): seeded synthetic scribbles inside their structures."""
    from scribmed.sam.decoder_validation import validation_scribble

    val = generate_cardiac(1, seed=7, size=(48, 56), slices=(3, 3), frames=("ED",), scribbles=False)[0].to_case()
    assert not val.has_scribble and val.has_label
    s1, s2 = validation_scribble(val, CARDIAC), validation_scribble(val, CARDIAC)
    assert s1.shape == val.label.shape and np.array_equal(s1, s2)  # same strokes every round and rerun
    drawn = s1 != CARDIAC.ignore_index
    assert set(np.unique(s1[drawn])) >= {1, 2, 3}
    assert np.array_equal(s1[drawn & (s1 > 0)], val.label[drawn & (s1 > 0)])  # strokes lie in their class
    backend = fake_backend()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    result = finetune_decoder(backend, cache, cases[:2], [val], pseudo, CARDIAC,
                              FinetuneConfig(epochs=1, progress=False), tmp_path / "r")
    assert result.history[-1]["val_reference"] == "label" and math.isfinite(result.best_val_dice)
    neither = generate_cardiac(1, seed=7, size=(48, 56), slices=(3, 3), frames=("ED",), scribbles=False)[0]
    neither.label = None
    bare = neither.to_case()
    bare.has_label = False
    with pytest.raises(DataError, match="neither a scribble nor a label"):
        validation_scribble(bare, CARDIAC)


# --- the loss at the decoder's low resolution (default) vs the slice's full resolution ---------


def test_loss_resolution_low_uses_the_decoder_frame_and_full_the_slice(tmp_path, cases, pseudo, monkeypatch):
    shapes: list[tuple[int, ...]] = []
    real = SamFinetuneLoss.forward

    def spy(self, logits, scribble, classes, pseudo_label=None):
        shapes.append((tuple(logits.shape[1:]), tuple(scribble.shape), tuple(pseudo_label.shape)))
        return real(self, logits, scribble, classes, pseudo_label)

    monkeypatch.setattr(SamFinetuneLoss, "forward", spy)
    _, low = run(tmp_path, cases, pseudo, "low", epochs=2)
    # fake backend: S = 256, logits 64x64; a 48x56 slice is 219x256 in S, so 55x64 in the logits
    assert set(shapes) == {((55, 64), (55, 64), (55, 64))}
    shapes.clear()
    _, full = run(tmp_path, cases, pseudo, "full", epochs=2, loss_resolution="full")
    assert set(shapes) == {((48, 56), (48, 56), (48, 56))}
    for result in (low, full):
        assert result.history[2]["train_loss"] < result.history[1]["train_loss"]
    assert low.history[1]["train_loss"] != full.history[1]["train_loss"]
    assert FinetuneConfig().loss_resolution == "low"
    with pytest.raises(ValueError, match="loss_resolution must be one of"):
        FinetuneConfig(loss_resolution="half")


def test_low_res_frame_of_real_geometries():
    from scribmed.sam.finetune_prompts import low_res_hw

    class Geometry:
        def __init__(self, s):
            self.input_size = s

        resized_hw = SamBackend.resized_hw

    assert low_res_hw(Geometry(256), (216, 256)) == (216, 256)  # LiteMedSAM, ACDC-sized: 1:1
    assert low_res_hw(Geometry(256), (428, 512)) == (214, 256)
    assert low_res_hw(Geometry(1024), (512, 512)) == (256, 256)  # SAM ViT: S / 4
    assert low_res_hw(Geometry(1024), (154, 224)) == (176, 256)


def test_resize_scribble_keeps_every_drawn_class():
    from scribmed.transforms.sparse_resize import resize_label_nearest, resize_scribble

    ignore = CARDIAC.ignore_index
    scribble = np.full((100, 120), ignore, np.int64)
    scribble[10, 5:115] = 0  # 1-pixel lines, on rows and columns nearest-neighbour halving skips
    scribble[30, 20:60] = 1
    scribble[40:90, 70] = 2
    scribble[55, 80:83] = 3
    small = resize_scribble(scribble, (50, 60), ignore)
    assert small.shape == (50, 60)
    assert set(np.unique(small)) == {0, 1, 2, 3, ignore}
    assert not {0, 1, 2} & set(np.unique(resize_label_nearest(scribble, (50, 60))))  # plain nearest loses them
    assert (small[15, 10:30] == 1).all() and (small[20:45, 35] == 2).all()
    assert resize_scribble(scribble, (100, 120), ignore) is scribble
    big = resize_scribble(scribble, (200, 240), ignore)
    assert (big[60:62, 40:120] == 1).all() and (big == 1).sum() == 160


def test_runs_recorded_before_loss_resolution_resume_as_full(tmp_path, cases, pseudo):
    run(tmp_path, cases, pseudo, "old", epochs=1, loss_resolution="full")
    last = decoder_state_path(tmp_path / "old", "last")
    ckpt = torch.load(last, map_location="cpu", weights_only=True)
    # as written before the option existed (version 1: a format tag, no schema, no weak keys)
    del ckpt["schema"], ckpt["identity"]["config"]["loss_resolution"]
    del ckpt["identity"]["weak_prompts"], ckpt["identity"]["supervision"]
    torch.save({"format": "scribmed-sam-decoder-v1", **ckpt}, last)
    with pytest.raises(ValueError, match="other cases, backend or settings"):
        run(tmp_path, cases, pseudo, "old", epochs=2)
    _, result = run(tmp_path, cases, pseudo, "old", epochs=2, loss_resolution="full")
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
