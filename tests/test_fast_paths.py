"""The speed options work and keep checkpoints plain: AMP, channels_last, torch.compile (on CPU here)."""
import json

import pytest
import torch

from acl_cli import create_model
from acl_cli.checkpoint import load_checkpoint
from acl_cli.config import load_config
from acl_cli.training import train

BASE = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
        "data.val_split=0.2", "data.train_subset=128", "data.batch_size=32", "data.workers=0", "train.epochs=1",
        "train.progress=false"]


@pytest.mark.parametrize("extra", [["train.amp=bf16", "train.channels_last=true"], ["train.amp=fp16", "model.csg.init=scaled"],
                                   pytest.param(["train.compile=true"], marks=pytest.mark.slow)])
def test_options_train_and_save_plain_checkpoints(tmp_path, cli, extra):
    run = tmp_path / "run"
    final = train(load_config(None, BASE + extra), run, log=lambda *a: None)
    assert final["val_loss"] == final["val_loss"]  # finite, not NaN
    state = load_checkpoint(run / "last.pt")
    assert not any(k.startswith(("_orig_mod.", "module.")) for k in state["model"])
    assert (state["scaler"] is not None) == ("train.amp=fp16" in extra)
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    model.load_state_dict(state["model"])  # loads into a plain, uncompiled model
    res = json.loads(cli("eval", run / "last.pt", "--format", "json").output)
    assert res["samples"] == 359


def test_channels_last_generated_conv_matches():
    torch.manual_seed(0)
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72, "init": "scaled"}).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        expected = model(x)
        model.to(memory_format=torch.channels_last)
        got = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_compiled_csg_model_matches_eager():
    torch.manual_seed(0)
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72, "init": "scaled"})
    x = torch.randn(4, 3, 32, 32)
    expected = model(x)
    compiled = torch.compile(model, backend="eager")  # dynamo tracing of the generator hooks, no C++ build
    got = compiled(x)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)
    got.sum().backward()
    assert model.csg.weight.grad is not None and model.csg.weight.grad.abs().sum() > 0


def test_compiled_training_neither_recompiles_nor_splits_generation():
    """torch.compile traces the generator hooks once: a guard on parameter versions would recompile every
    step (and fall back to eager after 8), silently losing the speed compile is asked for."""
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    torch.manual_seed(0)
    model = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    compiled = torch.compile(model, backend=counting_backend)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    x = torch.randn(8, 3, 32, 32)

    def step():
        model.train()
        compiled(x).sum().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    step()
    after_first = len(graphs)
    linears = [n for g in graphs for n in g.graph.nodes if n.target is torch.nn.functional.linear]
    classifiers = sum(isinstance(m, torch.nn.Linear) for m in model.modules())
    assert len(linears) == classifiers + 1  # every kernel from one matrix product, inside the compiled region
    for _ in range(3):
        step()
    assert len(graphs) == after_first
    model.eval()
    with torch.no_grad():
        compiled(x)
        after_eval = len(graphs)
        compiled(x)
    step()
    model.eval()
    with torch.no_grad():
        compiled(x)
    assert len(graphs) == after_eval


@pytest.mark.parametrize("name", ["sgd", "adamw"])
def test_fused_optimizer_takes_the_same_steps(name):
    """optim.fused swaps torch's per-tensor-list kernels for one fused kernel; the updates must not change."""
    import copy

    from acl_cli.optim import build_optimizer

    torch.manual_seed(0)
    base = create_model("resnet20", csg={"slice_shape": [16, 16, 3, 3], "code_size": 72})
    x, y = torch.randn(8, 3, 32, 32), torch.randint(0, 10, (8,))
    trained = []
    for fused in (False, True):
        model = copy.deepcopy(base)
        opt = build_optimizer(model, load_config(None, [f"optim.name={name}", f"optim.fused={fused}"]).optim)
        assert bool(opt.defaults.get("fused")) == fused
        for _ in range(3):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
        trained.append(model.state_dict())
    start = base.state_dict()
    for key, value in trained[0].items():  # rounding differs (Adam magnifies it on tiny gradients), steps do not
        update = (value.double() - start[key].double()).abs().max()
        assert (trained[1][key].double() - value.double()).abs().max() <= 0.01 * update + 1e-6, key
    assert not torch.equal(trained[0]["csg.weight"], start["csg.weight"])  # it did train
