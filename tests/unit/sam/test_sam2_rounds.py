"""A tiny random SAM2 backend through the SAM pipeline: pseudo-label rounds and a decoder fine-tuning step.

Non-square phantom slices (48 x 64) check that the prompts land in SAM2's square frame.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.ndimage import binary_dilation

pytest.importorskip("sam2")

from scribmed.data.case import CARDIAC  # noqa: E402
from scribmed.data.layouts import open_dataset  # noqa: E402
from scribmed.data.phantoms import generate_cardiac, write_phantom_dataset  # noqa: E402
from scribmed.losses.sam_finetune import SamFinetuneLoss  # noqa: E402
from scribmed.networks.sam_registry import build_sam_backend  # noqa: E402
from scribmed.sam import EmbeddingCache  # noqa: E402
from scribmed.sam.decoder_checkpoint import load_decoder  # noqa: E402
from scribmed.sam.decoder_finetune import slice_loss  # noqa: E402
from scribmed.sam.finetune_config import FinetuneConfig  # noqa: E402
from scribmed.sam.finetune_prompts import _case_prompts, _prompter  # noqa: E402
from scribmed.sam.rounds import run_pseudo_label_rounds  # noqa: E402
from scribmed.sam.stage_config import RoundsConfig  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = {"embed_dim": 8, "num_heads": 1, "stages": (1, 1, 2, 1), "global_att_blocks": (3,), "window_spec": (4, 4, 4, 2),
        "window_pos_embed_bkg_spatial_size": (4, 4), "d_model": 32, "image_size": 256}


def tiny_sam2(seed: int = 0):
    torch.manual_seed(seed)
    return build_sam_backend("sam2.1_hiera_t", encoder_config=TINY, random_init=True, encoder_runtime="auto")


def decoder_state(backend) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in backend.mask_decoder.state_dict().items()}


class PromptSpy:
    """Records the prompts of every decoder call (in the backend's input frame) and decodes them."""

    def __init__(self, backend) -> None:
        self.calls: list[tuple[torch.Tensor, torch.Tensor, object]] = []
        self.original = backend.decode
        backend.decode = self

    def __call__(self, embedding, point_coords=None, point_labels=None, boxes=None, mask_inputs=None,
                 multimask_output=False):
        self.calls.append((point_coords.clone(), point_labels.clone(), boxes))
        return self.original(embedding, point_coords, point_labels, boxes, mask_inputs, multimask_output)


@pytest.fixture(scope="module")
def phantom_root(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("phantom") / "acdc"
    return write_phantom_dataset("cardiac", "acdc-h5", out, n_patients=3, seed=3, size=(48, 64), slices=(2, 2),
                                 frames=("ED",))


def test_pseudo_label_and_finetuning_rounds_with_sam2(phantom_root, tmp_path):
    ds = open_dataset("acdc-h5", phantom_root)
    backend = tiny_sam2()
    spy = PromptSpy(backend)
    start = decoder_state(backend)
    cfg = FinetuneConfig(epochs=1, n_points=3, lr=1e-3, progress=False, validate_initial=False)
    out = tmp_path / "run"
    config = RoundsConfig(backend, rounds=1, finetune_config=cfg, cache_dir=tmp_path / "cache")
    res = run_pseudo_label_rounds(ds, out, config, train_patients=["patient001"], val_patients=["patient003"],
                                  progress=False)
    assert backend.encoder_calls == 4 and res.encoder_slices == 4  # train + val slices, once over both rounds
    assert [e["round"] for e in res.quality["rounds"]] == [0, 1]
    assert set(res.quality["rounds"][0]["dice"]) == {"RV", "Myo", "LV"}
    label = np.asarray(open_dataset("acdc-h5", phantom_root).cases_of(["patient001"])[0].label)
    from scribmed.data.nifti import read_label_nifti

    for r in (0, 1):
        pred = read_label_nifti(out / f"round_{r}" / "patient001_frame01.nii.gz").array
        assert pred.shape == label.shape == (2, 48, 64)
    # the embeddings are SAM2's packed ones, cached once
    npy = sorted((tmp_path / "cache").glob("*/*.npy"))
    assert npy and all(np.load(p, mmap_mode="r").shape[1:] == (128, 16, 16) for p in npy)
    # fine-tuning moved the decoder; the selected decoder file loads back into a fresh SAM2 backend
    tuned = decoder_state(backend)
    assert any(not torch.equal(tuned[k], start[k]) for k in start)
    fresh = tiny_sam2()
    load_decoder(fresh, res.decoders[1])
    assert all(torch.equal(v, tuned[k]) for k, v in decoder_state(fresh).items())
    assert fresh.cache_key == backend.cache_key  # a decoder file never changes the embeddings' key
    # every positive point sits on its class's scribble pixel: prompts are in SAM2's square frame
    scribbles = [np.asarray(c.scribble) for c in ds.cases_of(["patient001", "patient003"])]
    assert len(spy.calls) >= 6  # round 0, training, validation, round 1
    for coords, labels, _ in spy.calls:
        pixels = backend.from_input_coords(coords.numpy(), (48, 64))
        assert np.all(coords.numpy() < 256) and coords[..., 0].max() > 64  # stretched to the 256 frame
        np.testing.assert_allclose(pixels, np.round(pixels), atol=1e-3)
        rows = [p[lab == 1] for lab, p in zip(labels.numpy(), np.round(pixels).astype(int))]

        def on_one_class(s2d: np.ndarray) -> bool:  # points follow the skeleton of the 1-px dilated scribble
            near = {k: binary_dilation(s2d == k, np.ones((3, 3), bool)) for k in (1, 2, 3)}
            return all(any(near[k][r[:, 1], r[:, 0]].all() for k in near) for r in rows)

        assert any(on_one_class(s[z]) for s in scribbles for z in range(2))


def test_one_decoder_finetuning_step_lowers_the_loss(tmp_path):
    backend = tiny_sam2(seed=1)
    case = generate_cardiac(1, seed=3, size=(48, 64), slices=(2, 2), frames=("ED",))[0].to_case()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    prompter = _prompter(CARDIAC, FinetuneConfig(n_points=4), backend.prompt_input_size)
    sp = _case_prompts(0, np.asarray(case.scribble), prompter)[0]
    loss_fn = SamFinetuneLoss(CARDIAC.ignore_index, 1.0, 0.5, 0.0)
    emb = cache.slice(case, sp.z)
    scribble, label = np.asarray(case.scribble)[sp.z], np.asarray(case.label)[sp.z]
    backend.mask_decoder.train()
    optimizer = torch.optim.AdamW(backend.mask_decoder.parameters(), lr=1e-3)
    losses = []
    for _ in range(2):
        optimizer.zero_grad()
        loss = slice_loss(backend, emb, sp, scribble, label, loss_fn)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    after = float(slice_loss(backend, emb, sp, scribble, label, loss_fn).detach())
    assert after < losses[0]
    assert backend.image_encoder.no_mem_embed.grad is None  # the image path is never trained
