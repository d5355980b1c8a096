import os
import sys
from pathlib import Path

import pytest
import torch

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # test helpers (cifar_jpeg)


@pytest.fixture
def cli():
    """Run the CLI in-process and return click's Result (exit_code, stdout, stderr)."""
    from click.testing import CliRunner

    from acl_cli.cli import main

    def run(*args):
        return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)
    return run


# a small finished CSG run on the digits (1 epoch): shared by the tests that read one or copy it before changing it
SMALL_RUN = ["model.arch=resnet20", "model.csg={slice_shape: [16, 16, 3, 3], code_size: 72}", "data.name=digits",
             "data.val_split=0.2", "data.train_subset=64", "data.batch_size=32", "data.workers=0", "train.epochs=1",
             "train.progress=false"]


@pytest.fixture(scope="session")
def small_run(tmp_path_factory):
    from acl_cli.config import load_config
    from acl_cli.training import train

    run = tmp_path_factory.mktemp("small_run") / "run"
    train(load_config(None, SMALL_RUN), run, log=lambda *a, **k: None)
    return run
