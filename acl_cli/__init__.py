"""acl: the Associative Convolutional Layers toolkit.

Library API (the CLI is a thin layer over it)::

    from acl_cli import create_model, materialize, load_config
    model = create_model("resnet56", num_classes=10, csg={"slice_shape": [12, 12, 3, 3], "code_size": 72})
"""
from .config import Config, load_config
from .csg import GeneratedConv2d, SliceGenerator, materialize
from .models import create_model, list_models, register_model

__all__ = ["Config", "GeneratedConv2d", "SliceGenerator", "create_model", "list_models", "load_config",
           "materialize", "register_model"]
__version__ = "0.1.0"
