"""SAMSPUNet (DESIGN 4.2 step 4): CBAM, CSF, modes, aux-only feature dropout, params, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scribmed.losses.samsp import SAMSPLoss
from scribmed.networks.samsp_unet import (
    CBAM,
    ChannelAttention,
    CrossScaleFusion,
    SAMSPOutput,
    SAMSPUNet,
    SpatialAttention,
)
from scribmed.networks.unet_dual import DualBranchUNet

FEATURES = (16, 32, 64, 128, 256)


def test_cbam_keeps_shape_and_attention_weights_are_in_open_unit_interval() -> None:
    torch.manual_seed(0)
    x = torch.randn(2, 16, 12, 10)
    ca, sa = ChannelAttention(16, reduction=8), SpatialAttention(7)
    w_c, w_s = ca(x), sa(x)
    assert w_c.shape == (2, 16, 1, 1) and w_s.shape == (2, 1, 12, 10)
    for w in (w_c, w_s):
        assert bool((w > 0).all()) and bool((w < 1).all())
    cbam = CBAM(16)
    y = cbam(x)
    assert y.shape == x.shape
    # CBAM = x * channel weights, then * spatial weights of that product.
    xc = x * cbam.channel(x)
    torch.testing.assert_close(y, xc * cbam.spatial(xc))
    with pytest.raises(ValueError):
        SpatialAttention(6)


def test_csf_returns_skip_width_at_skip_size() -> None:
    csf = CrossScaleFusion(skip_channels=16, deep_channels=32)
    out = csf(torch.randn(2, 16, 24, 20), torch.randn(2, 32, 12, 10))
    assert out.shape == (2, 16, 24, 20)


def _csf_params(skip: int, deep: int, reduction: int = 8) -> int:
    hidden = max(1, skip // reduction)
    mix = (skip + deep) * skip * 9 + 2 * skip  # 3x3 conv without bias + BN
    channel = 2 * skip * hidden  # two bias-free 1x1 convs
    spatial = 2 * 49  # 7x7 conv, 2 -> 1, no bias
    fuse = 2 * skip * skip + skip  # 1x1 conv with bias
    return mix + channel + spatial + fuse


def test_parameter_count_is_dual_unet_plus_shared_csf_plus_fusion_head() -> None:
    net = SAMSPUNet()
    total = sum(p.numel() for p in net.parameters())
    base = sum(p.numel() for p in DualBranchUNet(upsample="transpose").parameters())  # SAM-SP keeps transposed convs
    csf = sum(_csf_params(s, d) for s, d in zip(FEATURES[:-1], FEATURES[1:]))
    head = 2 * 16 * 16 * 9 + 2 * 16 + 16 * 4 + 4
    assert total == base + csf + head
    assert len(net.csf) == 4, "one CSF block per skip level, shared by both decoders"
    main_ids = {id(p) for p in net.main_decoder.parameters()}
    assert not main_ids & {id(p) for p in net.aux_decoder.parameters()}, "decoders must not share weights"
    print(f"SAMSPUNet parameters: {total} (DualBranchUNet: {base}, CSF: {csf}, fusion head: {head})")


def test_train_mode_returns_all_heads_and_bottleneck_eval_returns_fused() -> None:
    torch.manual_seed(0)
    net = SAMSPUNet(num_classes=4)
    x = torch.randn(2, 1, 64, 48)
    out = net(x)
    assert isinstance(out, SAMSPOutput)
    main, aux, fused, bottleneck = out
    assert main.shape == aux.shape == fused.shape == (2, 4, 64, 48)
    assert bottleneck.shape == (2, 256, 4, 3)
    net.eval()
    with torch.no_grad():
        pred = net(x)
        full = net.forward_all(x)
    assert isinstance(pred, torch.Tensor) and pred.shape == (2, 4, 64, 48)
    torch.testing.assert_close(pred, full.fused)


def test_rejects_bad_input() -> None:
    net = SAMSPUNet()
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(1, 1, 40, 32))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError):
        SAMSPUNet(aux_feature_dropout=1.0)


def test_feature_dropout_hits_the_aux_branch_only_and_only_in_training() -> None:
    net = SAMSPUNet(dropout=(0.0,) * 5, aux_feature_dropout=0.5)
    x = torch.randn(2, 1, 32, 32)
    seen: list[torch.Tensor] = []
    net.feature_dropout.register_forward_hook(lambda m, i, o: seen.append(o.detach()))

    net.train()
    torch.manual_seed(1)
    a = net.forward_all(x)
    torch.manual_seed(2)
    b = net.forward_all(x)
    # Encoder dropout is off, so only the aux branch (and the head that reads it) is random.
    torch.testing.assert_close(a.main, b.main)
    torch.testing.assert_close(a.bottleneck, b.bottleneck)
    assert not torch.allclose(a.aux, b.aux)
    assert not torch.allclose(a.fused, b.fused)
    # Five maps reach the aux decoder, each with whole channels zeroed (Dropout2d).
    assert len(seen) == 10
    zeroed = [(o.flatten(2).abs().sum(2) == 0).float().mean().item() for o in seen[:5]]
    assert all(0.1 < z < 0.9 for z in zeroed[1:]), zeroed

    net.eval()
    seen.clear()
    with torch.no_grad():
        c = net.forward_all(x)
        d = net.forward_all(x)
    torch.testing.assert_close(c.aux, d.aux)
    assert all(bool((o.flatten(2).abs().sum(2) > 0).all()) for o in seen)


def test_gradients_reach_every_part_through_the_samsp_loss() -> None:
    torch.manual_seed(0)
    net = SAMSPUNet(num_classes=4)
    x = torch.randn(2, 1, 32, 32)
    scribble = torch.full((2, 32, 32), 4)
    scribble[:, 2:6, 2:6] = 0
    scribble[:, 10:14, 10:14] = 1
    scribble[:, 18:22, 18:22] = 2
    scribble[:, 26:30, 26:30] = 3
    pseudo = torch.zeros(2, 32, 32, dtype=torch.long)
    pseudo[:, 8:16, 8:16] = 1
    pseudo[:, 16:24, 16:24] = 2
    pseudo[:, 24:32, 0:8] = 3
    total, _ = SAMSPLoss(4, ignore_index=4)(net(x), scribble, pseudo)
    total.backward()
    for name, p in net.named_parameters():
        assert p.grad is not None and bool(torch.isfinite(p.grad).all()), name
    parts: dict[str, nn.Module] = {
        "encoder": net.encoder,
        "main_decoder": net.main_decoder,
        "aux_decoder": net.aux_decoder,
        "fusion_head": net.fusion_head,
        **{f"csf{i}": m for i, m in enumerate(net.csf)},
        **{f"csf{i}.spatial": m.attention.spatial for i, m in enumerate(net.csf)},
        "main_out": net.main_decoder.out_conv,
        "aux_out": net.aux_decoder.out_conv,
    }
    for name, module in parts.items():
        assert any(float(p.grad.abs().sum()) > 0 for p in module.parameters()), f"no gradient in {name}"


def test_works_with_a_monai_sliding_window_inferer() -> None:
    from monai.inferers import SlidingWindowInferer

    net = SAMSPUNet(num_classes=3).eval()
    with torch.no_grad():
        y = SlidingWindowInferer(roi_size=(32, 32), sw_batch_size=2)(torch.randn(1, 1, 48, 40), net)
    assert y.shape == (1, 3, 48, 40)
