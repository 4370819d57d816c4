"""The mixed-precision and data-loader policy (scribmed.runtime.device) and every caller of it.

CPU: ``auto`` is float32, so a run with ``amp`` on computes bit for bit what a run with it off
does; ``bf16`` autocasts where the CPU has native bfloat16 and is refused elsewhere, checked with
``cpu_has_native_bf16`` forced both ways (the machine's own answer is not assumed). The dtype
choice on CUDA is checked with ``torch.cuda.is_bf16_supported`` mocked. Tests marked
``cuda`` run the real thing on a user's GPU.
"""

from __future__ import annotations

import contextlib
import warnings

import numpy as np
import pytest
import torch
from fakes import fake_backend

from scribmed.data.case import CARDIAC
from scribmed.data.phantoms import generate_cardiac
from scribmed.runtime import device as dev_mod
from scribmed.runtime.checkpoint import load_checkpoint
from scribmed.recipes.dmpls.config import DMPLSConfig
from scribmed.runtime.device import (
    AmpPolicy,
    amp_dtype,
    amp_enabled,
    amp_mode,
    amp_policy,
    loader_options,
)
from scribmed.recipes.dmpls.trainer import build_dmpls_trainer, train_dmpls

pytestmark = pytest.mark.usefixtures("one_thread", "restore_torch_flags")
cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
CUDA0 = torch.device("cuda", 0)


@pytest.fixture(scope="module")
def cases():
    return [p.to_case() for p in generate_cardiac(2, seed=2, size=(40, 48), slices=(2, 2), frames=("ED",))]


def tiny(**kw) -> DMPLSConfig:
    base = dict(iterations=3, batch_size=2, size=(32, 32), epoch_length=3, device="cpu", progress=False)
    base.update(kw)
    return DMPLSConfig(**base)


class Killed(RuntimeError):
    pass


def bf16(monkeypatch, supported: bool) -> None:
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: supported)


def cpu_bf16(monkeypatch, native: bool) -> None:
    """Force the CPU probe: ``native`` as if the CPU had (or lacked) AVX512-BF16/AMX."""
    monkeypatch.setattr(dev_mod, "cpu_has_native_bf16", lambda: native)


@pytest.fixture(params=[False, True], ids=["cpu-without-bf16", "cpu-with-bf16"])
def native(request, monkeypatch) -> bool:
    cpu_bf16(monkeypatch, request.param)
    return request.param


# ------------------------------------------------------------------------------ the policy


@pytest.mark.parametrize("request_", [True, False, None, "auto", "fp16", "off", torch.float16])
def test_cpu_is_float32_unless_bf16_is_asked(request_, native):
    policy = amp_policy("cpu", request_)
    assert policy == AmpPolicy("cpu", None) and not policy.enabled and policy.name == "off"
    assert amp_dtype(torch.device("cpu"), request_) is None and not amp_enabled(torch.device("cpu"), request_)
    assert policy.grad_scaler() is None
    assert isinstance(policy.autocast(), contextlib.nullcontext)  # not even autocast(enabled=False)


@pytest.mark.parametrize("request_", ["bf16", "bfloat16", torch.bfloat16])
def test_cpu_bf16_only_where_native(request_, monkeypatch):
    cpu_bf16(monkeypatch, True)
    policy = amp_policy("cpu", request_)
    assert policy == AmpPolicy("cpu", torch.bfloat16) and policy.name == "bf16" and policy.grad_scaler() is None
    with policy.autocast():
        assert torch.nn.functional.linear(torch.ones(2, 3), torch.ones(4, 3)).dtype == torch.bfloat16
    cpu_bf16(monkeypatch, False)
    with pytest.raises(ValueError, match="this CPU has no native bfloat16"):
        amp_policy("cpu", request_)


def test_the_cpu_probe_answers():
    assert isinstance(dev_mod.cpu_has_native_bf16(), bool)


def test_requests_and_their_spellings():
    assert [amp_mode(r) for r in (True, False, None, "AUTO", " on ", "false", "bfloat16", "half", torch.float16)] == [
        "auto", "off", "off", "auto", "auto", "off", "bf16", "fp16", "fp16"]
    for bad in ("fp8", "", 1.5, torch.int8):
        with pytest.raises(ValueError, match="amp must be one of"):
            amp_mode(bad)


def test_cuda_auto_is_bf16_where_supported_else_fp16(monkeypatch):
    bf16(monkeypatch, True)
    assert amp_dtype(CUDA0, "auto") is torch.bfloat16 and amp_dtype(CUDA0, True) is torch.bfloat16
    assert amp_dtype(CUDA0, "fp16") is torch.float16 and amp_dtype(CUDA0, "bf16") is torch.bfloat16
    assert amp_dtype(CUDA0, "off") is None and amp_dtype(CUDA0, False) is None
    bf16(monkeypatch, False)
    assert amp_dtype(CUDA0, "auto") is torch.float16
    with pytest.raises(ValueError, match="no native bfloat16"):
        amp_policy(CUDA0, "bf16")


def test_a_scaler_only_for_fp16(monkeypatch):
    bf16(monkeypatch, True)
    assert amp_policy(CUDA0, "bf16").grad_scaler() is None and not amp_policy(CUDA0, "auto").needs_scaler
    assert amp_policy(CUDA0, "off").grad_scaler() is None
    fp16 = amp_policy(CUDA0, "fp16")
    assert fp16.needs_scaler and fp16.name == "fp16"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # without CUDA the scaler warns and disables itself
        assert isinstance(fp16.grad_scaler(), torch.amp.GradScaler)


def test_loader_options(monkeypatch):
    assert loader_options("cpu") == {"num_workers": 0, "pin_memory": False, "persistent_workers": False}
    assert loader_options("cpu", 2) == {"num_workers": 2, "pin_memory": False, "persistent_workers": True}
    monkeypatch.setattr(dev_mod.os, "sched_getaffinity", lambda pid: set(range(16)))
    assert loader_options(CUDA0) == {"num_workers": 4, "pin_memory": True, "persistent_workers": True}
    assert loader_options(CUDA0, "auto", world_size=8)["num_workers"] == 2
    assert loader_options(CUDA0, 0) == {"num_workers": 0, "pin_memory": True, "persistent_workers": False}
    monkeypatch.setattr(dev_mod.os, "sched_getaffinity", lambda pid: {0, 1})
    assert loader_options(CUDA0)["num_workers"] == 2
    with pytest.raises(ValueError, match="num_workers"):
        loader_options("cpu", -1)


def test_config_fields_keep_old_records_loading():
    cfg = DMPLSConfig()
    assert cfg.amp is True and cfg.num_workers is None  # True = "auto"; None = auto workers
    assert DMPLSConfig(amp="bf16").to_dict()["amp"] == "bf16" and DMPLSConfig(num_workers="auto").num_workers is None
    old = {**DMPLSConfig().to_dict(), "amp": True, "num_workers": 0}  # what run.json / checkpoints hold
    assert DMPLSConfig.from_dict(old).num_workers == 0 and DMPLSConfig.from_dict(old).amp is True
    assert DMPLSConfig.from_dict({**old, "amp": False}).amp is False
    with pytest.raises(ValueError, match="amp must be one of"):
        DMPLSConfig(amp="fp8")
    with pytest.raises(ValueError, match="num_workers"):
        DMPLSConfig(num_workers=-1)


# ------------------------------------------------------------------------------ segmentor training on the CPU


def test_cpu_training_is_float32_unless_bf16_is_asked(cases, tmp_path, native):
    trainer, _ = build_dmpls_trainer(cases, [], CARDIAC, tmp_path / "built", tiny(amp="fp16"))
    assert trainer.scaler is None and not trainer.amp_policy.enabled and not trainer.amp
    assert trainer.data_loader.num_workers == 0 and not trainer.data_loader.pin_memory
    nets = {}
    for amp in ("off", True, "fp16"):
        res = train_dmpls(cases, cases[:1], CARDIAC, tmp_path / str(amp), tiny(amp=amp))
        ckpt = load_checkpoint(res.last_checkpoint)
        assert ckpt["scaler"] == {}
        nets[amp] = ckpt["network"]
    for amp in (True, "fp16"):
        assert all(torch.equal(nets["off"][k], nets[amp][k]) for k in nets["off"]), amp


def test_cpu_training_in_bf16_where_native(cases, tmp_path, monkeypatch):
    """Forced native: the forward pass autocasts (bf16 logits), the loss and weights stay float32."""
    cpu_bf16(monkeypatch, True)
    trainer, _ = build_dmpls_trainer(cases, [], CARDIAC, tmp_path / "built", tiny(amp="bf16"))
    assert trainer.amp_policy == AmpPolicy("cpu", torch.bfloat16) and trainer.scaler is None and not trainer.amp
    seen = []
    trainer.network.register_forward_hook(lambda m, i, out: seen.append(out[0].dtype))
    trainer.run()
    assert seen and set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in trainer.network.parameters())
    assert np.isfinite(float(trainer.state.output["loss"]))
    off = train_dmpls(cases, [], CARDIAC, tmp_path / "off", tiny(amp="off"))
    on = train_dmpls(cases, [], CARDIAC, tmp_path / "on", tiny(amp="bf16"))
    a, b = (load_checkpoint(r.last_checkpoint)["network"] for r in (off, on))
    assert any(not torch.equal(a[k], b[k]) for k in a)  # bf16 computed something else
    cpu_bf16(monkeypatch, False)
    with pytest.raises(ValueError, match="no native bfloat16"):
        build_dmpls_trainer(cases, [], CARDIAC, tmp_path / "refused", tiny(amp="bf16"))


def test_cpu_inference_follows_the_policy(cases, monkeypatch):
    from scribmed.networks.unet_dual import DualBranchUNet
    from scribmed.training.inference import predict_volume

    net = DualBranchUNet(1, 4)
    seen = []
    net.register_forward_hook(lambda m, i, out: seen.append((out[0] if isinstance(out, tuple) else out).dtype))
    image = np.asarray(cases[0].image, dtype=np.float32)
    for native, amp, dtype in ((False, "auto", torch.float32), (True, "auto", torch.float32),
                               (True, "bf16", torch.bfloat16)):
        cpu_bf16(monkeypatch, native)
        seen.clear()
        labels = predict_volume(net, image, size=(32, 32), device="cpu", amp=amp)
        assert labels.shape == image.shape and set(seen) == {dtype}, (native, amp)


# ------------------------------------------------------------------------------ SAM


def test_sam_encode_under_the_policy_on_cpu_is_float32(native):
    backend = fake_backend()
    key = backend.cache_key
    x = backend.preprocess(np.random.default_rng(0).random((2, 40, 48)).astype(np.float32))
    plain = backend.encode(x)
    assert backend.use_amp("auto") is backend and backend.amp == "auto" and not backend.amp_policy.enabled
    amped = backend.encode(x)
    assert amped.dtype == torch.float32 and torch.equal(plain, amped)
    assert backend.cache_key == key  # CPU embeddings keep their cache
    with pytest.raises(ValueError, match="amp must be one of"):
        backend.use_amp("fp8")
    if native:
        assert backend.use_amp("bf16").amp_policy.dtype is torch.bfloat16 and backend.cache_key == f"{key}-bf16"
        assert backend.encode(x).dtype == torch.float32
    else:
        with pytest.raises(ValueError, match="no native bfloat16"):
            backend.use_amp("bf16")


def test_reduced_precision_embeddings_are_keyed_apart(monkeypatch):
    import scribmed.networks.sam_backends as sb

    backend = fake_backend()
    key = backend.cache_key
    monkeypatch.setattr(sb, "amp_policy", lambda device, amp: AmpPolicy("cuda", torch.bfloat16))
    assert backend.cache_key == f"{key}-bf16"


def test_decoder_finetuning_on_cpu_is_unchanged_by_the_flag(cases, tmp_path, native):
    from scribmed.sam import EmbeddingCache
    from scribmed.sam.decoder_finetune import finetune_decoder
    from scribmed.sam.finetune_config import FinetuneConfig

    pseudo = {c.case_id: np.asarray(c.label).astype(np.uint8) for c in cases}
    decoders = {}
    for amp in ("off", "auto"):
        backend = fake_backend().use_amp(amp)
        cache = EmbeddingCache(tmp_path / "emb", backend, progress=False)
        finetune_decoder(backend, cache, cases[:1], [], pseudo, CARDIAC,
                         FinetuneConfig(epochs=1, progress=False), out_dir=tmp_path / amp, resume=False)
        assert torch.load(tmp_path / amp / "decoder_last.pt", weights_only=True)["scaler"] == {}
        decoders[amp] = backend.mask_decoder.state_dict()
    assert all(torch.equal(decoders["off"][k], decoders["auto"][k]) for k in decoders["off"])


def test_sam_stage_option():
    from scribmed.recipes.samsp.recipe import SAMSPRecipe
    from scribmed.sam.stage_config import SamStageConfig

    assert SamStageConfig().amp == "auto"
    recipe = SAMSPRecipe.from_options(sam_amp="off")
    assert recipe.sam.amp == "off"
    assert "amp" not in recipe.config_dict()["sam"]  # run.json as before the option (like device)
    with pytest.raises(ValueError, match="amp must be one of"):
        SamStageConfig(amp="fp8")


# ------------------------------------------------------------------------------ on a GPU


@cuda
@pytest.mark.parametrize("amp", ["fp16", "auto"])
def test_cuda_training_with_amp_and_resume(cases, tmp_path, monkeypatch, amp):
    from scribmed.recipes.dmpls.trainer import DMPLSTrainer

    cfg = tiny(device="cuda", amp=amp, iterations=4, epoch_length=2)
    policy = amp_policy(torch.device("cuda", torch.cuda.current_device()), amp)
    trainer, _ = build_dmpls_trainer(cases, [], CARDIAC, tmp_path / "built", cfg)
    assert trainer.amp_policy == policy and (trainer.scaler is not None) == policy.needs_scaler
    assert trainer.data_loader.pin_memory
    assert trainer.data_loader.num_workers == loader_options("cuda")["num_workers"]
    del trainer
    original = DMPLSTrainer._iteration

    def dying(self, engine, batch):
        if engine.state.iteration == 3:
            raise Killed("killed at iteration 3")
        return original(self, engine, batch)

    with monkeypatch.context() as m:
        m.setattr(DMPLSTrainer, "_iteration", dying)
        with pytest.raises(Killed):
            train_dmpls(cases, [], CARDIAC, tmp_path / "run", cfg)
    ckpt = load_checkpoint(tmp_path / "run" / "last.pt")
    assert ckpt["trainer"]["iteration"] == 2 and bool(ckpt["scaler"]) == policy.needs_scaler
    if policy.needs_scaler:  # the scaler comes back from last.pt
        again, _ = build_dmpls_trainer(cases, [], CARDIAC, tmp_path / "check", cfg)
        again.load_training_state(ckpt)
        assert again.scaler.get_scale() == pytest.approx(ckpt["scaler"]["scale"])
        del again
    resumed = train_dmpls(cases, [], CARDIAC, tmp_path / "run", cfg, resume=True)
    assert resumed.iterations == 4
    final = load_checkpoint(resumed.last_checkpoint)
    assert all(torch.isfinite(v).all() for v in final["network"].values() if v.is_floating_point())


@cuda
def test_cuda_sam_encode_and_finetune(cases, tmp_path):
    from scribmed.sam import EmbeddingCache
    from scribmed.sam.decoder_finetune import finetune_decoder
    from scribmed.sam.finetune_config import FinetuneConfig

    backend = fake_backend().to("cuda")
    key = backend.cache_key
    backend.use_amp("auto")
    name = amp_policy("cuda", "auto").name
    assert backend.cache_key == f"{key}-{name}"
    x = backend.preprocess(np.random.default_rng(0).random((2, 40, 48)).astype(np.float32))
    emb = backend.encode(x)
    assert emb.dtype == torch.float32 and emb.device.type == "cuda"
    backend.use_amp("off")
    torch.testing.assert_close(emb, backend.encode(x), atol=5e-2, rtol=5e-2)
    pseudo = {c.case_id: np.asarray(c.label).astype(np.uint8) for c in cases}
    backend.use_amp("fp16")
    cache = EmbeddingCache(tmp_path / "emb", backend, progress=False)
    cfg = FinetuneConfig(epochs=2, progress=False)
    finetune_decoder(backend, cache, cases[:1], [], pseudo, CARDIAC, cfg, out_dir=tmp_path / "ft", resume=False)
    last = torch.load(tmp_path / "ft" / "decoder_last.pt", weights_only=True)
    assert last["scaler"] and "scale" in last["scaler"]
    # a finished round resumes (with its scaler) to the same decoder
    before = {k: v.clone() for k, v in backend.mask_decoder.state_dict().items()}
    finetune_decoder(backend, cache, cases[:1], [], pseudo, CARDIAC, cfg, out_dir=tmp_path / "ft", resume=True)
    assert all(torch.equal(before[k], v) for k, v in backend.mask_decoder.state_dict().items())


def test_thread_share_splits_the_threads_between_workers():
    from scribmed.runtime.device import thread_share, usable_cores

    assert thread_share(2, total=2) == 1 and thread_share(1, total=2) == 2
    assert thread_share(3, total=8) == 2 and thread_share(4, total=2) == 1  # never below one
    assert thread_share(1) == torch.get_num_threads()
    assert usable_cores() >= 1


def test_recipes_refuse_bf16_on_a_cpu_without_it_before_any_work(monkeypatch):
    from scribmed.recipes import build

    cpu_bf16(monkeypatch, False)
    build("dmpls", device="cpu").check_device()
    build("samsp", device="cpu", sam_device="cpu").check_device()
    with pytest.raises(ValueError, match="no native bfloat16"):
        build("dmpls", device="cpu", amp="bf16").check_device()
    with pytest.raises(ValueError, match="no native bfloat16"):
        build("samsp", device="cpu", sam_device="cpu", sam_amp="bf16").check_device()
    cpu_bf16(monkeypatch, True)
    build("samsp", device="cpu", sam_device="cpu", amp="bf16", sam_amp="bf16").check_device()
