"""The p4 group convolution: GrouPy's outputs for the same weights, and equivariance under quarter turns."""
import pytest
import torch

from acl_cli.models.p4_conv import P4ConvP4, p4_filter_bank, rotate_p4, weight_from_groupy, weight_to_groupy
from authors_code import old_numpy, their_modules


@pytest.fixture(scope="module")
def groupy_p4(tmp_path_factory):
    """GrouPy's P4ConvP4 class, as vendored in the authors' repository (imported with their model files)."""
    return their_modules(tmp_path_factory)["resnet_gcnn"].p4_conv.P4ConvP4


@pytest.mark.parametrize("stride,side", [(1, 8), (2, 9), (2, 8)])
def test_outputs_equal_groupy_for_the_same_weights(groupy_p4, stride, side):
    torch.manual_seed(0)
    with old_numpy():
        theirs = groupy_p4(3, 5, ksize=3, stride=stride, pad=1)
    ours = P4ConvP4(3, 5, 3, stride=stride, padding=1)
    with torch.no_grad():
        theirs.bias.normal_()  # GrouPy starts it at zero: a bias that is not would show a wrong broadcast
        ours.weight.copy_(weight_from_groupy(theirs.weight))
        ours.bias.copy_(theirs.bias)
        x = torch.randn(2, 12, side, side)
        expected = theirs(x)  # (N, out, 4, H, W): field-major, as our channels
        torch.testing.assert_close(ours(x), expected.reshape(2, 20, *expected.shape[-2:]), rtol=0, atol=1e-5)
    assert torch.equal(weight_to_groupy(ours.weight), theirs.weight)
    assert ours.weight.shape == (5, 12, 3, 3) and theirs.weight.shape == (5, 3, 4, 3, 3)


@pytest.mark.parametrize("turns", [1, 2, 3])
@pytest.mark.parametrize("stride,side", [(1, 8), (1, 7), (2, 9)])
def test_rotating_the_input_rotates_the_output_and_cycles_its_orientations(turns, stride, side):
    torch.manual_seed(turns)
    conv = P4ConvP4(3, 5, 3, stride=stride, padding=1)
    with torch.no_grad():
        conv.bias.normal_()
        x = torch.randn(2, 12, side, side)
        y = conv(x)
        torch.testing.assert_close(conv(rotate_p4(x, turns)), rotate_p4(y, turns), rtol=0, atol=1e-5)
        assert (conv(torch.rot90(x, turns, dims=(2, 3))) - rotate_p4(y, turns)).abs().max() > 0.1  # cycling matters


def test_two_layers_stay_equivariant_and_a_strided_even_grid_does_not():
    """What the networks stack: equivariance composes; a stride-2 conv on an even grid samples other pixels
    after a turn (the CIFAR networks' 32 -> 16 -> 8 downsampling), so it only holds on odd grids."""
    torch.manual_seed(0)
    first, second = P4ConvP4(2, 3, 3, padding=1), P4ConvP4(3, 4, 3, stride=2, padding=1)
    with torch.no_grad():
        odd, even = torch.randn(1, 8, 9, 9), torch.randn(1, 8, 8, 8)
        net = lambda x: second(torch.relu(first(x)))  # noqa: E731
        torch.testing.assert_close(net(rotate_p4(odd)), rotate_p4(net(odd)), rtol=0, atol=1e-5)
        assert (net(rotate_p4(even)) - rotate_p4(net(even))).abs().max() > 0.1


def test_the_bank_is_four_turns_of_each_filter_and_the_action_is_a_group_action():
    torch.manual_seed(0)
    weight = torch.randn(2, 8, 3, 3)
    bank = p4_filter_bank(weight)
    assert bank.shape == (8, 8, 3, 3)
    torch.testing.assert_close(bank[0::4], weight, rtol=0, atol=0)  # orientation 0: the filters themselves
    quarter = torch.rot90(weight.reshape(2, 2, 4, 3, 3).roll(1, dims=2), 1, dims=(3, 4)).reshape(2, 8, 3, 3)
    torch.testing.assert_close(bank[1::4], quarter, rtol=0, atol=0)
    x = torch.randn(1, 8, 5, 6)
    assert torch.equal(rotate_p4(rotate_p4(x, 1), 3), x) and torch.equal(rotate_p4(x, 4), x)
    assert torch.equal(rotate_p4(rotate_p4(x, 1), 1), rotate_p4(x, 2)) and rotate_p4(x).shape == (1, 8, 6, 5)
    five = torch.randn(4, 3, 4, 3, 3)
    assert torch.equal(weight_to_groupy(weight_from_groupy(five)), five)
    conv = P4ConvP4(2, 2, 3)  # eagerly one gather (channels_last filters too), the same bank
    assert torch.equal(conv.filter_bank(), p4_filter_bank(conv.weight))
    conv.to(memory_format=torch.channels_last)
    assert not conv.weight.is_contiguous() and torch.equal(conv.filter_bank(), p4_filter_bank(conv.weight))


def test_gradients_reach_the_filters_and_the_layer_reads_like_a_conv():
    conv = P4ConvP4(4, 2, 3, padding=1)
    conv(torch.randn(2, 16, 6, 6)).square().sum().backward()
    assert conv.weight.grad.abs().sum() > 0 and conv.bias.grad.abs().sum() > 0
    assert isinstance(conv, torch.nn.Conv2d) and sum(p.numel() for p in conv.parameters()) == 2 * 16 * 9 + 2
    assert "p4: 4 -> 2 fields (16 -> 8 channels)" in repr(conv)
    # GrouPy's Xavier-normal over (out, in, 4, k, k): std sqrt(2 / ((in + out) * 4 * k * k))
    big = P4ConvP4(64, 64, 3)
    assert big.weight.std().item() == pytest.approx((2 / ((64 + 64) * 36)) ** 0.5, rel=0.02)
    assert torch.equal(big.bias, torch.zeros(64))
    with pytest.raises(ValueError, match="square kernel"):
        P4ConvP4(1, 1, (3, 1))
