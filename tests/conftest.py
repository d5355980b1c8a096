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
