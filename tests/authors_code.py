"""The authors' own baseline modules (hamedomidvar/associativeconv, MIT), built from a fetched copy of their
repository, for tests that compare ours with theirs. Without the copy (CI has none) those tests skip.

The copy is a bare git directory (ACL_AUTHORS_REPO, default /work/.mirror/hamedomidvar+associativeconv/repo);
their CIFAR-10 ``models/`` and vendored ``groupy/`` are extracted with ``git archive`` into a temporary folder and
imported from there, as their main.py does. Their GrouPy uses ``np.int``, gone since numpy 1.24: it is put back
while their code runs.
"""
import contextlib
import importlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

MIRROR = Path(os.environ.get("ACL_AUTHORS_REPO", "/work/.mirror/hamedomidvar+associativeconv/repo"))
CIFAR = "Implementations/CIFAR10"

# our name -> (their model file, its constructor): the networks their comparison trained
THEIRS = {
    "resnet56_sep": ("resnet_sep", "resnet56"),
    "resnet56_crelu": ("resnet_crelu", "resnet56"),
    "resnet56_gcnn": ("resnet_gcnn", "resnet56"),
    "densenet_bc_40_48_sep": ("densenet_sep", "densenet_cifar"),
    "densenet_bc_40_48_crelu": ("densenet_crelu", "densenet_cifar_crelu"),
    "densenet_bc_40_48_gcnn": ("densenet_gcnn", "densenet_cifar_g"),
}

_loaded = {}


@contextlib.contextmanager
def old_numpy():
    had = "int" in np.__dict__
    np.int = int
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):  # their files print as they build
            warnings.simplefilter("ignore")
            yield
    finally:
        if not had:
            del np.int


def _extract(dest: Path) -> Path | None:
    if not (MIRROR / "HEAD").is_file() or shutil.which("git") is None:
        return None
    archive = subprocess.run(["git", "-C", str(MIRROR), "archive", "--format=tar", "HEAD", f"{CIFAR}/models",
                              f"{CIFAR}/groupy"], capture_output=True, timeout=120)
    if archive.returncode:
        return None
    with tarfile.open(fileobj=io.BytesIO(archive.stdout)) as tar:
        tar.extractall(dest, filter="data")
    return dest / CIFAR


def their_modules(tmp_path_factory) -> dict:
    """Their six model files as imported modules (``{file name: module}``), or a skip without the copy."""
    if "modules" not in _loaded:
        root = _extract(tmp_path_factory.mktemp("authors"))
        if root is None:
            _loaded["modules"] = None
        else:
            sys.path.insert(0, str(root))
            try:
                with old_numpy():
                    files = [file for file, _ in THEIRS.values()]
                    _loaded["modules"] = {file: importlib.import_module(f"models.{file}") for file in files}
            finally:  # their generic package names (models, groupy) leave nothing behind for other tests
                sys.path.remove(str(root))
                for name in [n for n in sys.modules if n.split(".")[0] in ("models", "groupy")]:
                    del sys.modules[name]
    if _loaded["modules"] is None:
        pytest.skip(f"the authors' repository is not fetched at {MIRROR} (set ACL_AUTHORS_REPO)")
    return _loaded["modules"]


def build_theirs(modules: dict, name: str):
    """Their network for our ``name``, built by their own constructor."""
    file, constructor = THEIRS[name]
    with old_numpy():
        return getattr(modules[file], constructor)()


def perturbed(model, seed: int):
    """``model`` with random weights everywhere and BN statistics that are not 0/1 (eval uses them), in place."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for key, t in model.state_dict().items():
            if key.endswith("running_var"):
                t.copy_(torch.rand(t.shape, generator=g) + 0.5)
            elif t.is_floating_point():
                t.copy_(torch.randn(t.shape, generator=g) * 0.2)
    return model
