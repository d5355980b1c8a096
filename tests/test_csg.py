"""The CSG core: layouts, equivalence with plain convs, one generator, caching, materialize."""
import math

import pytest
import torch
import torch.nn.functional as F

from acl_cli import create_model, materialize
from acl_cli.csg import GeneratedConv2d, SliceGenerator, attach_generator


def _authors_flat_kernel(slices, out_c, in_c, slice_shape):
    """Element-wise transcription of the authors' rule: concatenate the slices, read row-major, crop."""
    s0, s1, kh, kw = slice_shape
    n_in = math.ceil(in_c / s1) * s1
    flat = slices.reshape(-1)
    kernel = torch.empty(out_c, in_c, kh, kw)
    for o in range(out_c):
        for i in range(in_c):
            for h in range(kh):
                for w in range(kw):
                    kernel[o, i, h, w] = flat[((o * n_in + i) * kh + h) * kw + w]
    return kernel


@pytest.mark.parametrize("slice_shape,in_c,out_c", [((4, 4, 3, 3), 6, 10), ((3, 5, 3, 3), 7, 8), ((2, 2, 1, 1), 5, 3)])
def test_flat_layout_matches_authors_reshape_rule(slice_shape, in_c, out_c):
    gen = SliceGenerator(slice_shape, code_size=7, layout="flat")
    conv = GeneratedConv2d(gen, in_c, out_c, slice_shape[2:])
    assert conv.num_slices == math.ceil(out_c / slice_shape[0]) * math.ceil(in_c / slice_shape[1])
    slices = conv.codes @ gen.weight.T
    expected = _authors_flat_kernel(slices.detach(), out_c, in_c, slice_shape)
    assert torch.equal(conv.weight.detach(), expected)


def test_tile_layout_places_each_code_in_its_block():
    s0, s1 = 4, 3
    gen = SliceGenerator((s0, s1, 3, 3), code_size=5, layout="tile")
    conv = GeneratedConv2d(gen, 7, 10, 3)  # grid 3 x 3, last row and column cropped
    gi, gj = conv.grid
    assert (gi, gj) == (3, 3)
    with torch.no_grad():
        for i in range(gi):
            for j in range(gj):
                conv.codes.zero_()
                conv.codes[i * gj + j] = torch.randn(5)
                kernel = conv.weight
                block = (conv.codes[i * gj + j] @ gen.weight.T).reshape(s0, s1, 3, 3)
                rows, cols = slice(i * s0, min((i + 1) * s0, 10)), slice(j * s1, min((j + 1) * s1, 7))
                torch.testing.assert_close(kernel[rows, cols], block[: rows.stop - rows.start, : cols.stop - cols.start])
                outside = kernel.clone()
                outside[rows, cols] = 0
                assert not outside.any()
    assert conv.unused_codes() == 0


@pytest.mark.parametrize("layout", ["flat", "tile"])
@pytest.mark.parametrize("stride,padding,dilation,bias", [(1, 1, 1, False), (2, 1, 1, True), (1, 2, 2, True), (2, 0, 1, False)])
def test_generated_conv_equals_conv2d_with_generated_kernel(layout, stride, padding, dilation, bias):
    gen = SliceGenerator((8, 8, 3, 3), code_size=16, layout=layout)
    conv = GeneratedConv2d(gen, 12, 20, 3, stride=stride, padding=padding, dilation=dilation, bias=bias)
    if bias:
        torch.nn.init.normal_(conv.bias)
    x = torch.randn(2, 12, 9, 9)
    expected = F.conv2d(x, conv.weight, conv.bias, stride, padding, dilation)
    ref = torch.nn.Conv2d(12, 20, 3, stride, padding, dilation, bias=bias)
    with torch.no_grad():
        ref.weight.copy_(conv.weight)
        if bias:
            ref.bias.copy_(conv.bias)
    torch.testing.assert_close(conv(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(ref(x), expected, rtol=1e-5, atol=1e-5)


def test_gradients_reach_codes_and_generator():
    gen = SliceGenerator((4, 4, 3, 3), code_size=6)
    conv = GeneratedConv2d(gen, 4, 8, 3, padding=1)
    conv(torch.randn(2, 4, 5, 5)).square().sum().backward()
    assert conv.codes.grad is not None and conv.codes.grad.abs().sum() > 0
    assert gen.weight.grad is not None and gen.weight.grad.abs().sum() > 0


def test_kernel_must_match_slice_window():
    gen = SliceGenerator((4, 4, 3, 3), code_size=6)
    with pytest.raises(ValueError, match="does not match"):
        GeneratedConv2d(gen, 4, 8, 1)


def test_generator_registered_once():
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    sd = model.state_dict()
    generator_keys = [k for k, v in sd.items() if v.shape == (16 * 16 * 9, 72)]
    assert generator_keys == ["csg.weight"]
    params = list(model.parameters())
    assert len(params) == len({id(p) for p in params})
    assert sum(1 for p in params if p is model.csg.weight) == 1
    assert sum(1 for name, _ in model.named_modules() if name.endswith("csg")) == 1


def test_one_matrix_product_per_forward_and_eval_cache(monkeypatch):
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    calls = []
    original = SliceGenerator.generate
    monkeypatch.setattr(SliceGenerator, "generate", lambda self, *a: calls.append(1) or original(self, *a))
    linear_calls = []
    real_linear = F.linear
    monkeypatch.setattr(F, "linear", lambda *a, **k: linear_calls.append(1) or real_linear(*a, **k))
    x = torch.randn(4, 3, 32, 32)
    model(x)
    # one generate (one F.linear over all codes) + the classifier's F.linear
    assert len(calls) == 1 and len(linear_calls) == 1 + 1
    model.eval()
    with torch.no_grad():
        a = model(x)
        b = model(x)
    assert len(calls) == 2  # second eval pass reused the cached kernels
    assert torch.equal(a, b)


def test_eval_cache_invalidates_after_optimizer_step():
    torch.manual_seed(0)
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72, "init": "scaled"})
    opt = torch.optim.SGD(model.parameters(), lr=0.5)
    x = torch.randn(8, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        before = model(x)
    model.train()
    F.cross_entropy(model(x), torch.arange(8) % 10).backward()
    opt.step()
    model.eval()
    with torch.no_grad():
        after = model(x)
        reference = materialize(model)(x)
    assert not torch.allclose(before, after)
    torch.testing.assert_close(after, reference, rtol=1e-4, atol=1e-5)
    # an in-place change made while staying in eval mode is seen too
    with torch.no_grad():
        model.csg.weight.mul_(0.5)
        changed = model(x)
        reference = materialize(model)(x)
    assert not torch.allclose(after, changed)
    torch.testing.assert_close(changed, reference, rtol=1e-4, atol=1e-5)


def test_lone_layer_outside_a_model_forward():
    gen = SliceGenerator((4, 4, 3, 3), code_size=6)
    conv = GeneratedConv2d(gen, 4, 8, 3, padding=1)
    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = conv

        def forward(self, x):
            return self.conv(x)

    model = attach_generator(Net(), gen)
    x = torch.randn(1, 4, 5, 5)
    torch.testing.assert_close(model(x), conv(x), rtol=0, atol=0)


def test_unused_codes_get_no_gradient_in_flat_layout():
    model = create_model("resnet56", csg={"slice_shape": [12, 12, 3, 3], "code_size": 72})
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    dead = sum(int((layer.codes.grad.abs().sum(1) == 0).sum()) for layer in model.csg.layers)
    reported = sum(layer.unused_codes() for layer in model.csg.layers)
    assert dead == reported == 105  # the authors' ResNet-56 12x12x3x3/72 loses 105 of its 861 codes
    tile = create_model("resnet56", csg={"slice_shape": [12, 12, 3, 3], "code_size": 72, "layout": "tile"})
    assert sum(layer.unused_codes() for layer in tile.csg.layers) == 0


def test_init_schemes():
    torch.manual_seed(0)
    authors = create_model("resnet56", csg={"slice_shape": [12, 12, 3, 3], "code_size": 72})
    codes = torch.cat([layer.codes.detach() for layer in authors.csg.layers])
    assert abs(codes.std().item() - 1.0) < 0.02 and abs(codes.mean().item() - 1e-3) < 0.01
    assert abs(authors.csg.weight.std().item() - math.sqrt(2 / 72)) < 0.01  # kaiming_normal
    scaled = create_model("resnet56", csg={"slice_shape": [12, 12, 3, 3], "code_size": 72, "init": "scaled"})
    layer = scaled.stage3[1].conv_a
    expected = math.sqrt(2 / (9 * 64))
    assert abs(layer.weight.detach().std().item() / expected - 1) < 0.1



@pytest.mark.parametrize("layout", ["flat", "tile"])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gathered_kernels_equal_each_layer_assembled_values_and_gradients(layout, channels_last):
    """The eager path moves every generated value with one gather; values and gradients must be exactly those
    of assembling each layer on its own, including crops and non-square slices."""
    torch.manual_seed(0)
    gen = SliceGenerator((3, 5, 3, 3), code_size=6, layout=layout)
    layers = [GeneratedConv2d(gen, i, o, 3) for i, o in [(7, 8), (5, 3), (10, 12), (1, 1)]]
    params = [gen.weight, *(layer.codes for layer in layers)]
    kernels = gen.generate(channels_last)
    slices = F.linear(torch.cat([layer.codes for layer in layers]), gen.weight).split([lr.num_slices for lr in layers])
    assembled = [layer.assemble(chunk) for layer, chunk in zip(layers, slices, strict=True)]
    for kernel, expected in zip(kernels, assembled, strict=True):
        assert torch.equal(kernel, expected)
        assert kernel.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    weights = [torch.randn_like(k) for k in kernels]
    grads = torch.autograd.grad(sum((k * w).sum() for k, w in zip(kernels, weights, strict=True)), params)
    reference = torch.autograd.grad(sum((k * w).sum() for k, w in zip(assembled, weights, strict=True)), params)
    for got, expected in zip(grads, reference, strict=True):
        assert torch.equal(got, expected)


def test_channels_last_input_gets_channels_last_kernels_and_generation_cost_does_not_grow_with_depth():
    from acl_cli.bench import kernels_per_step

    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    seen = []
    model.stage2[0].conv_a.register_forward_pre_hook(lambda m, a: seen.append(m.generator.kernel(m)))
    model.to(memory_format=torch.channels_last)
    model(torch.randn(2, 3, 32, 32).contiguous(memory_format=torch.channels_last))
    assert seen[-1].is_contiguous(memory_format=torch.channels_last)

    def extra_kernels(arch):  # kernels a CSG training step launches beyond its original twin's
        counts = []
        for csg in ({"slice_shape": [16, 16, 3, 3], "code_size": 72}, None):
            torch.manual_seed(0)
            net = create_model(arch, csg=csg)
            opt = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, foreach=True)
            x, y = torch.randn(2, 3, 32, 32), torch.tensor([0, 1])

            def step(net=net, opt=opt, x=x, y=y):
                F.cross_entropy(net(x), y).backward()
                opt.step()
                opt.zero_grad(set_to_none=True)

            step()
            counts.append(kernels_per_step(step, torch.device("cpu")))
        return counts[0] - counts[1]

    # a constant (cat, matmul, gather and their backward), not a copy per generated layer
    assert extra_kernels("resnet20") == extra_kernels("resnet56") <= 12
