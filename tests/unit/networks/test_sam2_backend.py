"""SAM2 backends on a tiny randomly initialised model of the ``sam2`` package's own classes (no download).

The gold test: our preprocess -> encode -> decode -> postprocess equals ``SAM2ImagePredictor``
(``set_image`` + ``predict(..., return_logits=True)``) on the same ``SAM2Base``'s weights.
"""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

sam2 = pytest.importorskip("sam2")
from sam2.build_sam import build_sam2  # noqa: E402
from sam2.modeling.backbones.hieradet import Hiera  # noqa: E402
from sam2.sam2_image_predictor import SAM2ImagePredictor  # noqa: E402

from scribmed.data.errors import DataError  # noqa: E402
from scribmed.networks.sam2_backend import (  # noqa: E402
    Sam2Backend,
    build_sam2_backend,
    pack_embedding,
    unpack_embedding,
)
from scribmed.networks.sam_architectures import (  # noqa: E402
    HIERA_CONFIGS,
    SAM2_BACKENDS,
    SAM2_CHECKPOINT_FILES,
    SAM2_MISSING,
)
from scribmed.networks.sam_registry import BACKENDS, build_sam_backend  # noqa: E402

pytestmark = [pytest.mark.usefixtures("one_thread"),
              pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:FutureWarning")]

#: A tiny Hiera at a 256 input: embeddings (128, 16, 16), low-resolution logits 64 x 64.
TINY = {"embed_dim": 8, "num_heads": 1, "stages": (1, 1, 2, 1), "global_att_blocks": (3,), "window_spec": (4, 4, 4, 2),
        "window_pos_embed_bkg_spatial_size": (4, 4), "d_model": 32, "image_size": 256}
CONFIG_DIR = Path(sam2.__file__).parent / "configs"


def _overrides(cfg: dict) -> list[str]:
    """The hydra overrides that make ``build_sam2`` build the ``cfg`` model."""
    e, d = cfg["embed_dim"], cfg["d_model"]
    trunk = {k: cfg[k] for k in ("embed_dim", "num_heads", "stages", "global_att_blocks", "window_spec",
                                 "window_pos_embed_bkg_spatial_size")}
    out = [f"++model.image_size={cfg['image_size']}", f"++model.image_encoder.neck.d_model={d}",
           f"++model.image_encoder.neck.position_encoding.num_pos_feats={d}",
           f"++model.image_encoder.neck.backbone_channel_list=[{8 * e},{4 * e},{2 * e},{e}]"]
    for key, value in trunk.items():
        text = f"[{','.join(str(v) for v in value)}]" if isinstance(value, tuple) else str(value)
        out.append(f"++model.image_encoder.trunk.{key}={text}")
    return out


def reference(version: str = "sam2.1", cfg: dict = TINY, seed: int = 0) -> torch.nn.Module:
    """``sam2.build_sam2``'s own ``SAM2Base`` (image predictor post-processing on), random weights made non-trivial."""
    torch.manual_seed(seed)
    folder = "sam2.1" if version == "sam2.1" else "sam2"
    model = build_sam2(f"configs/{folder}/{version}_hiera_t.yaml", None, device="cpu",
                       hydra_overrides_extra=_overrides(cfg))
    with torch.no_grad():  # default inits leave biases / norms at 0 / 1: perturb them so every path matters
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name or "pos_embed" in name:
                p.add_(0.2 * torch.randn_like(p))
        for p in model.sam_mask_decoder.output_hypernetworks_mlps.parameters():
            p.mul_(4.0)
    return model.eval()


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """(SAM2Base, its checkpoint file, our backend loaded from that file)."""
    ref = reference()
    path = tmp_path_factory.mktemp("sam2") / "sam2.1_tiny.pt"
    torch.save({"model": ref.state_dict()}, path)  # Meta's file layout
    return ref, path, build_sam_backend("sam2.1_hiera_t", checkpoint=path, encoder_config=TINY)


def _predictor(ref: torch.nn.Module) -> SAM2ImagePredictor:
    pred = SAM2ImagePredictor(ref)
    s = ref.image_size
    pred._bb_feat_sizes = [(s // 4, s // 4), (s // 8, s // 8), (s // 16, s // 16)]  # it hard-codes 1024's
    return pred


# ------------------------------------------------------------------------------------------
# the gold test
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("hw", [(90, 120), (256, 256)])
def test_matches_sam2_image_predictor(pair, hw):
    ref, _, ours = pair
    rng = np.random.default_rng(hw[0])
    image = rng.normal(100, 30, hw).astype(np.float32)
    x = ours.preprocess(image[None])
    emb = ours.encode(x)
    assert x.shape == (1, 3, 256, 256) and emb.shape == (1, 128, 16, 16) == (1, *ours.embedding_shape)
    pred = _predictor(ref)
    grey = (image - image.min()) / (image.max() - image.min())  # what our preprocess scales to
    pred.set_image(np.repeat(grey[..., None], 3, axis=2))  # float HWC: ToTensor does not rescale it
    image_embed, s0, s1 = unpack_embedding(emb)
    torch.testing.assert_close(image_embed, pred._features["image_embed"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s0, pred._features["high_res_feats"][0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s1, pred._features["high_res_feats"][1], atol=1e-5, rtol=1e-5)

    h, w = hw
    pts = rng.uniform(0, [w - 1, h - 1], (3, 4, 2)).astype(np.float32)
    labels = np.array([[1, 1, 0, 1], [1, 0, 0, 1], [1, 1, 1, 1]])
    boxes = np.array([[5, 4, w * 0.6, h * 0.7], [w * 0.2, h * 0.3, w - 2, h - 3], [0, 0, w - 1, h - 1]], np.float32)
    in_pts = torch.from_numpy(ours.to_input_coords(pts, hw)).float()
    in_boxes = torch.from_numpy(ours.to_input_boxes(boxes, hw)).float()
    cases = {
        "points": (dict(point_coords=pts, point_labels=labels), dict(point_coords=in_pts, point_labels=labels)),
        "boxes": (dict(box=boxes), dict(boxes=in_boxes)),
        "points+boxes": (dict(point_coords=pts, point_labels=labels, box=boxes),
                         dict(point_coords=in_pts, point_labels=labels, boxes=in_boxes)),
    }
    for what, (theirs_kw, ours_kw) in cases.items():
        for multimask in (False, True):
            masks, iou, low = pred.predict(multimask_output=multimask, return_logits=True, **theirs_kw)
            with torch.no_grad():
                our_low, our_iou = ours.decode(emb, multimask_output=multimask,
                                               **{k: torch.as_tensor(v) for k, v in ours_kw.items()})
                full = ours.postprocess(our_low, hw)
            m = 3 if multimask else 1
            assert our_low.shape == (3, m, 64, 64) and our_iou.shape == (3, m) and full.shape == (3, m, h, w)
            np.testing.assert_allclose(our_low.clamp(-32, 32).numpy(), low, atol=1e-5, rtol=1e-5, err_msg=what)
            np.testing.assert_allclose(our_iou.numpy(), iou, atol=1e-5, rtol=1e-5, err_msg=what)
            np.testing.assert_allclose(full.numpy(), masks, atol=1e-5, rtol=1e-5, err_msg=what)
            assert np.abs(masks).max() > 0.5  # logits that mean something, not a degenerate model
    # a previous call's low-resolution logits as mask input, with points
    first, _, low = pred.predict(point_coords=pts[:1], point_labels=labels[:1], multimask_output=False,
                                 return_logits=True)
    masks, iou, low2 = pred.predict(point_coords=pts[:1], point_labels=labels[:1], mask_input=low,
                                    multimask_output=False, return_logits=True)
    with torch.no_grad():
        our_low, our_iou = ours.decode(emb, in_pts[:1], torch.as_tensor(labels[:1]),
                                       mask_inputs=torch.from_numpy(low)[None])
    np.testing.assert_allclose(our_low.clamp(-32, 32).numpy()[0], low2, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(our_iou.numpy()[0], iou, atol=1e-5, rtol=1e-5)
    # the predictor's fall-back to the best of three when a single mask is unstable: force it on both
    theirs_kw, ours_kw = cases["points"]
    with torch.no_grad():
        plain, _ = ours.decode(emb, **{k: torch.as_tensor(v) for k, v in ours_kw.items()})
    for model in (ours.mask_decoder, ref.sam_mask_decoder):
        model.dynamic_multimask_stability_thresh = 2.0  # never stable
    try:
        masks, iou, low = pred.predict(multimask_output=False, return_logits=True, **theirs_kw)
        with torch.no_grad():
            our_low, our_iou = ours.decode(emb, **{k: torch.as_tensor(v) for k, v in ours_kw.items()})
    finally:
        for model in (ours.mask_decoder, ref.sam_mask_decoder):
            model.dynamic_multimask_stability_thresh = 0.98
    assert not torch.allclose(plain, our_low)  # the fall-back changed the answer ...
    np.testing.assert_allclose(our_low.clamp(-32, 32).numpy(), low, atol=1e-5, rtol=1e-5)  # ... the same way
    np.testing.assert_allclose(our_iou.numpy(), iou, atol=1e-5, rtol=1e-5)


def test_rgb_uint8_matches_sam2_image_predictor(pair):
    ref, _, ours = pair
    rgb = np.random.default_rng(4).integers(0, 256, (3, 70, 50), dtype=np.uint8)  # (3, H, W), e.g. microscopy
    emb = ours.encode(ours.preprocess(rgb[None]))
    pred = _predictor(ref)
    pred.set_image(np.ascontiguousarray(rgb.transpose(1, 2, 0)))  # HWC uint8: ToTensor divides by 255
    image_embed, s0, _ = unpack_embedding(emb)
    torch.testing.assert_close(image_embed, pred._features["image_embed"], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(s0, pred._features["high_res_feats"][0], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------------
# architecture and configs
# ------------------------------------------------------------------------------------------


def test_same_architecture_as_sam2base_image_path(pair):
    ref, _, ours = pair
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mapped = {}
    for key, value in ours.state_dict().items():
        comp, sub = key.split(".", 1)
        if comp == "image_encoder":
            official = ("sam_mask_decoder." + sub if sub.startswith("conv_s") else
                        sub if sub == "no_mem_embed" else "image_encoder." + sub.removeprefix("backbone."))
        else:
            official = "sam_" + key
        mapped[official] = tuple(value.shape)
    image_path = {k: v for k, v in theirs.items() if k.startswith(("image_encoder.", "sam_")) or k == "no_mem_embed"}
    assert mapped == image_path
    for attr in ("dynamic_multimask_via_stability", "dynamic_multimask_stability_delta",
                 "dynamic_multimask_stability_thresh", "pred_obj_scores", "use_high_res_features",
                 "use_multimask_token_for_obj_ptr"):
        assert getattr(ours.mask_decoder, attr) == getattr(ref.sam_mask_decoder, attr), attr
    assert ours.mask_decoder.iou_prediction_head.sigmoid_output is True
    assert not hasattr(ours.mask_decoder, "conv_s0")  # the image path owns the projections
    assert ref.directly_add_no_mem_embed and ref.use_high_res_features_in_sam


def _yaml_trunk(path: Path) -> dict:
    model = yaml.safe_load(path.read_text())["model"]
    trunk = {k: v for k, v in model["image_encoder"]["trunk"].items() if k != "_target_"}
    defaults = {k: p.default for k, p in inspect.signature(Hiera.__init__).parameters.items()}
    full = {k: tuple(trunk.get(k, defaults[k])) if isinstance(trunk.get(k, defaults[k]), (list, tuple))
            else trunk.get(k, defaults[k]) for k in HIERA_CONFIGS["hiera_t"]}
    neck = model["image_encoder"]["neck"]
    return {"trunk": full, "neck": neck, "model": model, "scalp": model["image_encoder"]["scalp"]}


@pytest.mark.parametrize("name", sorted(SAM2_BACKENDS))
def test_published_configs_match_the_packages_yaml(name):
    version, arch = name.split("_", 1)
    got = _yaml_trunk(CONFIG_DIR / version / f"{name}.yaml")
    assert got["trunk"] == HIERA_CONFIGS[arch]
    neck = got["neck"]
    e = HIERA_CONFIGS[arch]["embed_dim"]
    assert neck["d_model"] == 256 and neck["backbone_channel_list"] == [8 * e, 4 * e, 2 * e, e]
    assert neck["fpn_top_down_levels"] == [2, 3] and neck["fpn_interp_model"] == "nearest" and got["scalp"] == 1
    assert neck["position_encoding"]["num_pos_feats"] == 256 and neck["position_encoding"]["normalize"] is True
    model = got["model"]
    for key in ("directly_add_no_mem_embed", "use_high_res_features_in_sam", "iou_prediction_use_sigmoid",
                "pred_obj_scores", "pred_obj_scores_mlp", "use_multimask_token_for_obj_ptr"):
        assert model[key] is True, key
    assert model["image_size"] == 1024
    assert SAM2_CHECKPOINT_FILES[name] == {"hiera_t": f"{version}_hiera_tiny.pt", "hiera_s": f"{version}_hiera_small.pt",
                                           "hiera_b+": f"{version}_hiera_base_plus.pt",
                                           "hiera_l": f"{version}_hiera_large.pt"}[arch]
    assert BACKENDS[name] == arch


def test_pack_unpack_is_lossless():
    g = torch.Generator().manual_seed(0)
    e, s0, s1 = torch.randn(2, 32, 4, 4, generator=g), torch.randn(2, 4, 16, 16, generator=g), torch.randn(2, 8, 8, 8, generator=g)
    packed = pack_embedding(e, s0, s1)
    assert packed.shape == (2, 128, 4, 4)
    for a, b in zip(unpack_embedding(packed), (e, s0, s1)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="packed SAM2 embedding"):
        unpack_embedding(torch.zeros(1, 100, 4, 4))


# ------------------------------------------------------------------------------------------
# checkpoints, options, errors
# ------------------------------------------------------------------------------------------


def test_checkpoint_keys_and_versions(tmp_path, pair):
    ref, path, ours = pair
    for key, value in ref.state_dict().items():  # every image-path tensor came from the file
        if key.startswith("sam_mask_decoder.conv_s"):
            assert torch.equal(ours.image_encoder.state_dict()[key.removeprefix("sam_mask_decoder.")], value)
        elif key.startswith("sam_"):
            comp, sub = key.removeprefix("sam_").split(".", 1)
            assert torch.equal(getattr(ours, comp).state_dict()[sub], value), key
        elif key.startswith("image_encoder."):
            assert torch.equal(ours.image_encoder.backbone.state_dict()[key.removeprefix("image_encoder.")], value)
    assert torch.equal(ours.image_encoder.no_mem_embed, ref.no_mem_embed)
    # DDP prefixes and a backend's own state_dict() load too
    torch.save({"state_dict": {f"module.{k}": v for k, v in ref.state_dict().items()}}, tmp_path / "ddp.pt")
    build_sam_backend("sam2.1_hiera_t", tmp_path / "ddp.pt", encoder_config=TINY)
    torch.save(ours.state_dict(), tmp_path / "own.pt")
    again = build_sam_backend("sam2.1_hiera_t", tmp_path / "own.pt", encoder_config=TINY)
    assert all(torch.equal(a, b) for a, b in zip(again.state_dict().values(), ours.state_dict().values()))
    # a SAM 2 file for a SAM 2.1 name (and back) says which name to use
    torch.save({"model": reference("sam2").state_dict()}, tmp_path / "v2.pt")
    with pytest.raises(DataError, match=r"v2\.pt: holds SAM 2 weights but backend sam2\.1_hiera_t is SAM 2\.1: "
                                        r"use backend sam2_hiera_t"):
        build_sam_backend("sam2.1_hiera_t", tmp_path / "v2.pt", encoder_config=TINY)
    with pytest.raises(DataError, match=r"holds SAM 2\.1 weights but backend sam2_hiera_t is SAM 2: use backend sam2\.1_hiera_t"):
        build_sam_backend("sam2_hiera_t", path, encoder_config=TINY)
    assert build_sam_backend("sam2_hiera_t", tmp_path / "v2.pt", encoder_config=TINY).name == "sam2_hiera_t"


def test_mismatched_sam2_checkpoints_are_clear_errors(tmp_path, pair):
    deeper = reference(cfg={**TINY, "stages": (1, 1, 3, 1)})
    torch.save({"model": deeper.state_dict()}, tmp_path / "deeper.pt")
    with pytest.raises(DataError, match=r"deeper\.pt: checkpoint does not match backend sam2\.1_hiera_t: \d+ missing, "
                                        r"[1-9]\d* unexpected, \d+ shape-mismatched keys; its image encoder looks like "
                                        r"a Hiera of width 8 with 6 blocks, which matches no published SAM2 config") as err:
        build_sam_backend("sam2.1_hiera_t", tmp_path / "deeper.pt", encoder_config=TINY)
    assert "\n" not in str(err.value)
    with pytest.raises(DataError, match=r"[1-9]\d* shape-mismatched"):
        build_sam_backend("sam2.1_hiera_t", pair[1], encoder_config={**TINY, "embed_dim": 16})
    # SAM 1 weights given to a SAM2 backend, SAM2 weights given to a SAM 1 backend
    sam_build = pytest.importorskip("segment_anything.build_sam")
    torch.save(sam_build._build_sam(32, 2, 2, [1]).state_dict(), tmp_path / "vit.pth")
    with pytest.raises(DataError, match=r"vit\.pth: .*looks like SAM 1 \(a ViT of width 32 and depth 2.*\); use a SAM 1 backend"):
        build_sam_backend("sam2.1_hiera_l", tmp_path / "vit.pth", encoder_config=TINY)
    with pytest.raises(DataError, match=r"looks like SAM2 \(a Hiera of width 8 with 5 blocks.*\); use a sam2 backend"):
        build_sam_backend("vit_b", pair[1], encoder_config={"embed_dim": 32, "depth": 2, "num_heads": 2,
                                                            "global_attn_indexes": (1,)})
    torch.save({"model": {"a.weight": torch.zeros(2)}}, tmp_path / "other.pt")
    with pytest.raises(DataError, match=r"other\.pt: no SAM2 weights found"):
        build_sam_backend("sam2_hiera_s", tmp_path / "other.pt", encoder_config=TINY)
    with pytest.raises(DataError, match=r"nope\.pt: checkpoint file not found"):
        build_sam_backend("sam2_hiera_s", tmp_path / "nope.pt", encoder_config=TINY)


def test_published_hiera_is_recognised_in_errors(tmp_path):
    from scribmed.networks.sam_checkpoint import _guess_hiera

    fake = {"trunk.patch_embed.proj.weight": torch.zeros(144, 3, 7, 7),
            **{f"trunk.blocks.{i}.norm1.weight": torch.zeros(1) for i in range(48)}}
    assert _guess_hiera(fake) == "Hiera L (width 144, 48 blocks: sam2_hiera_l / sam2.1_hiera_l)"


@pytest.mark.parametrize("name", sorted(SAM2_BACKENDS))
def test_sam2_backend_without_checkpoint_is_an_error(name):
    with pytest.raises(ValueError, match=rf"SAM backend '{re.escape(name)}' needs the SAM 2(\.1)? Hiera-\w\+? checkpoint "
                                         rf"\({re.escape(SAM2_CHECKPOINT_FILES[name])}\).*--sam-checkpoint"):
        build_sam_backend(name)


def test_options_and_runtimes():
    with pytest.raises(ValueError, match="random_init applies"):
        build_sam2_backend("sam2_hiera_t", checkpoint="x.pt", random_init=True)
    with pytest.raises(ValueError, match="unknown encoder_config keys"):
        build_sam_backend("sam2_hiera_t", encoder_config={"depth": 3}, random_init=True)
    with pytest.raises(ValueError, match="image_size must be a multiple of 32"):
        build_sam_backend("sam2_hiera_t", encoder_config={**TINY, "image_size": 200}, random_init=True)
    with pytest.raises(ValueError, match="unknown SAM2 backend"):
        build_sam2_backend("sam3_hiera_t", random_init=True)
    backend = build_sam_backend("sam2_hiera_t", encoder_config=TINY, random_init=True, encoder_runtime="auto")
    assert isinstance(backend, Sam2Backend) and backend.encoder_runtime == "torch"
    assert backend.cache_key.startswith("sam2_hiera_t-random-") and backend.cache_key.endswith("-imagenet256v1")
    with pytest.raises(ValueError, match=r"sam2_hiera_t: the openvino encoder runtime does not support SAM2"):
        backend.use_encoder_runtime("openvino")
    with pytest.raises(ValueError, match="unknown encoder runtime"):
        backend.use_encoder_runtime("tensorrt")
    with pytest.raises(ValueError, match="unknown encoder runtime"):
        build_sam_backend("vit_b", random_init=True, encoder_runtime="tensorrt",
                          encoder_config={"embed_dim": 32, "depth": 1, "num_heads": 2, "global_attn_indexes": (0,)})


def test_missing_sam2_package_is_a_clear_error(monkeypatch):
    monkeypatch.setitem(__import__("sys").modules, "sam2", None)  # `import sam2` now raises ImportError
    with pytest.raises(ImportError, match=re.escape(SAM2_MISSING)):
        build_sam_backend("sam2.1_hiera_t", encoder_config=TINY, random_init=True)
    with pytest.raises(ValueError, match=re.escape("pip install 'scribmed[sam2]'")):  # a one-line CLI error too
        build_sam_backend("sam2.1_hiera_t", encoder_config=TINY, random_init=True)


def test_decoder_features_follow_the_decoders_upscaling(pair):
    from scribmed.sam.instance_stage import decoder_features

    ref, _, ours = pair
    image = np.random.default_rng(6).random((1, 40, 40)).astype(np.float32)
    emb = ours.encode(ours.preprocess(image))
    feats = decoder_features(ours, emb[0])  # the backend's own method is used
    assert feats.shape == (1, 4, 64, 64)
    image_embed, s0, s1 = unpack_embedding(emb)
    dec = ref.sam_mask_decoder  # what predict_masks does to the transformer's output, here without prompts
    with torch.no_grad():
        src = image_embed + ref.sam_prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1)
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        expected = act2(dc2(act1(ln1(dc1(src) + s1))) + s0)
    torch.testing.assert_close(feats, expected)
    with pytest.raises(ValueError, match=r"embedding must be \(1, 128, 16, 16\)"):
        ours.decoder_features(torch.zeros(1, 256, 16, 16))
