"""DualBranchUNet: architecture as DESIGN 4.1, modes, feature dropout, gradients."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from scribmed.networks import DualBranchUNet

FEATURES = (16, 32, 64, 128, 256)


def _conv_block_params(cin: int, cout: int) -> int:
    # two 3x3 convs with bias + two BatchNorms (weight, bias)
    return (cin * cout * 9 + cout) + 2 * cout + (cout * cout * 9 + cout) + 2 * cout


def _expected_params(in_ch: int, num_classes: int, feats: tuple[int, ...], upsample: str = "bilinear") -> int:
    enc = sum(_conv_block_params(cin, cout) for cin, cout in zip((in_ch, *feats[:-1]), feats))
    dec = 0
    for deep, skip in zip(feats[:0:-1], feats[-2::-1]):
        # 2x2 transposed conv, or a 1x1 conv before bilinear upsampling (no parameters)
        dec += deep * skip * (4 if upsample == "transpose" else 1) + skip
        dec += _conv_block_params(2 * skip, skip)
    dec += feats[0] * num_classes * 9 + num_classes  # 3x3 output conv
    return enc + 2 * dec


def test_parameter_count_matches_the_described_architecture() -> None:
    net = DualBranchUNet()
    assert sum(p.numel() for p in net.parameters()) == _expected_params(1, 4, FEATURES) == 2_447_064
    transpose = DualBranchUNet(upsample="transpose")
    assert sum(p.numel() for p in transpose.parameters()) == _expected_params(1, 4, FEATURES, "transpose") == 2_708_184
    assert sum(p.numel() for p in net.main_decoder.parameters()) == sum(
        p.numel() for p in net.aux_decoder.parameters()
    )
    main_ids = {id(p) for p in net.main_decoder.parameters()}
    assert not main_ids & {id(p) for p in net.aux_decoder.parameters()}, "decoders must not share weights"


def test_dropout_placement() -> None:
    net = DualBranchUNet()
    enc_p = [m.p for m in net.encoder.modules() if isinstance(m, nn.Dropout)]
    assert enc_p == pytest.approx([0.05, 0.1, 0.2, 0.3, 0.5])
    for dec in (net.main_decoder, net.aux_decoder):
        assert all(m.p == 0.0 for m in dec.modules() if isinstance(m, nn.Dropout))
    assert isinstance(net.feature_dropout, nn.Dropout2d) and net.feature_dropout.p == 0.5


def test_train_mode_returns_both_eval_returns_main() -> None:
    torch.manual_seed(0)
    net = DualBranchUNet(num_classes=4)
    x = torch.randn(2, 1, 64, 48)
    out = net(x)
    assert isinstance(out, tuple) and len(out) == 2
    assert out[0].shape == out[1].shape == (2, 4, 64, 48)
    net.eval()
    with torch.no_grad():
        main = net(x)
        both = net.forward_both(x)
    assert isinstance(main, torch.Tensor) and main.shape == (2, 4, 64, 48)
    torch.testing.assert_close(main, both[0])
    with torch.no_grad():  # feature dropout is off in eval: aux deterministic
        torch.testing.assert_close(both[1], net.forward_both(x)[1])


def test_full_size_input() -> None:
    net = DualBranchUNet(num_classes=5).eval()
    with torch.no_grad():
        assert net(torch.randn(1, 1, 256, 256)).shape == (1, 5, 256, 256)


def test_feature_dropout_hits_all_five_maps_only_in_training() -> None:
    torch.manual_seed(1)
    net = DualBranchUNet()
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    net.feature_dropout.register_forward_hook(lambda m, i, o: seen.append((i[0].detach(), o.detach())))
    net.train()
    net(torch.randn(2, 1, 32, 32))
    assert [o.shape[1] for _, o in seen] == list(FEATURES)
    for inp, out in seen:
        zeroed = (out == 0).flatten(2).all(-1) & ~(inp == 0).flatten(2).all(-1)
        assert zeroed.any(), "some channels must be dropped as a whole"
        kept = ~(out == 0).flatten(2).all(-1)
        torch.testing.assert_close(out[kept], 2.0 * inp[kept])  # survivors scaled by 1/(1-p)
    seen.clear()
    net.eval()
    net.forward_both(torch.randn(2, 1, 32, 32))
    assert len(seen) == 5 and all(torch.equal(i, o) for i, o in seen)


def test_main_branch_does_not_see_feature_dropout() -> None:
    a = DualBranchUNet(aux_feature_dropout=0.5)
    b = DualBranchUNet(aux_feature_dropout=0.0)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 1, 32, 32)
    torch.manual_seed(3)
    main_a, aux_a = a(x)
    torch.manual_seed(3)
    main_b, aux_b = b(x)
    torch.testing.assert_close(main_a, main_b)
    assert not torch.allclose(aux_a, aux_b)


def test_gradients_reach_encoder_and_both_decoders() -> None:
    net = DualBranchUNet()
    main, aux = net(torch.randn(2, 1, 32, 32))
    (main.square().mean() + aux.square().mean()).backward()
    for part in (net.encoder, net.main_decoder, net.aux_decoder):
        grads = [p.grad for p in part.parameters()]
        assert all(g is not None for g in grads) and any(g.abs().sum() > 0 for g in grads)


def test_works_with_monai_sliding_window_inference() -> None:
    from monai.inferers import sliding_window_inference

    net = DualBranchUNet().eval()
    with torch.no_grad():
        out = sliding_window_inference(torch.randn(1, 1, 80, 96), (64, 64), 2, net)
    assert out.shape == (1, 4, 80, 96)


def test_bad_inputs_raise() -> None:
    net = DualBranchUNet()
    with pytest.raises(ValueError, match="divisible by 16"):
        net(torch.randn(1, 1, 40, 40))
    with pytest.raises(ValueError, match="expected input"):
        net(torch.randn(1, 3, 32, 32))
    with pytest.raises(ValueError):
        DualBranchUNet(features=(16, 32), dropout=(0.1,))
