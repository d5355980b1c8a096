"""acl: the Associative Convolutional Layers toolkit.

Library API (the CLI is a thin layer over it)::

    from acl_cli import create_model, evaluate_checkpoint, load_config, materialize, train
    model = create_model("resnet56", num_classes=10, csg={"slice_shape": [12, 12, 3, 3], "code_size": 72})
    final = train(load_config("configs/quickstart.yaml"), "runs/notebook")  # what acl train does
    metrics = evaluate_checkpoint("runs/notebook", split="val")             # what acl eval does

The names are imported on first use (PEP 562), so ``import acl_cli.cli`` does not load torch: the command
line answers Ctrl-C cleanly from its first moment.
"""
from importlib import import_module

_EXPORTS = {"Config": ".config", "load_config": ".config", "GeneratedConv2d": ".csg", "SliceGenerator": ".csg",
            "materialize": ".csg", "convert": ".csg", "create_model": ".models", "list_models": ".models",
            "register_model": ".models", "build_model": ".models.build", "train": ".training",
            "evaluate_checkpoint": ".evaluate", "load_model": ".evaluate"}
__all__ = sorted(_EXPORTS)
__version__ = "0.1.0"


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module 'acl_cli' has no attribute {name!r}")
