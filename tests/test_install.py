"""Installed, not cloned: a wheel built from the repository, installed into a fresh environment, run from an
empty directory, finds the shipped configs by name."""
import os
import shutil
import subprocess
import sys
import sysconfig
import tarfile
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = sorted(p.relative_to(ROOT / "configs").as_posix() for p in (ROOT / "configs").rglob("*.yaml"))


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """An sdist and the wheel built from it (python -m build), from a copy of the tracked files."""
    pytest.importorskip("build")
    src = tmp_path_factory.mktemp("src")
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    for name in filter(None, tracked.decode().split("\0")):
        if (ROOT / name).is_file():
            (src / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, src / name)
    out = tmp_path_factory.mktemp("dist")
    res = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--no-isolation", "--outdir", str(out),
                          str(src)], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    return next(out.glob("*.tar.gz")), next(out.glob("*.whl"))


def test_the_sdist_and_the_wheel_hold_every_config(dist):
    sdist, wheel = dist
    with tarfile.open(sdist) as tar:
        in_sdist = sorted(n.split("/configs/", 1)[1] for n in tar.getnames() if "/configs/" in n and n.endswith(".yaml"))
    with zipfile.ZipFile(wheel) as whl:
        in_wheel = sorted(n.removeprefix("acl_cli/configs/") for n in whl.namelist() if n.startswith("acl_cli/configs/"))
    assert in_sdist == in_wheel == CONFIGS


def test_an_installed_wheel_runs_the_shipped_configs_from_an_empty_directory(dist, tmp_path):
    _, wheel = dist
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True, timeout=120)
    python = env_dir / "bin" / "python"
    purelib = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # the dependencies (torch and the rest) from this environment, so nothing is downloaded; a path added by a
    # .pth line is not a site directory, so the editable install's own .pth (acl_cli from the clone) is not read
    Path(purelib, "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    res = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-index",
                          "-q", str(wheel)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    def acl(*args):
        return subprocess.run([str(env_dir / "bin" / "acl"), *map(str, args)], cwd=empty, env=env, capture_output=True,
                              text=True, timeout=600)

    where = subprocess.run([str(python), "-c", "import acl_cli.config as c; print(c.shipped_configs_dir())"], cwd=empty,
                           env=env, capture_output=True, text=True, check=True).stdout.strip()
    assert where == str(Path(purelib, "acl_cli", "configs"))  # the installed package's, not the clone's
    listed = acl("config", "list")
    assert listed.returncode == 0, listed.stderr
    assert [line.split()[0] for line in listed.stdout.splitlines()] == [c.removesuffix(".yaml") for c in CONFIGS]
    line = next(line for line in listed.stdout.splitlines() if line.startswith("cifar10/resnet56_csg_12_72 "))
    assert "ResNet-56 with a 12x12x3x3 CSG, code 72 (160,450 params)" in line
    counted = acl("count-params", "--config", "cifar10/resnet56_csg_12_72")
    assert counted.returncode == 0 and "160,450" in counted.stdout, counted.stderr
    trained = acl("train", "--config", "quickstart", "--set", "train.epochs=1", "--set", "train.progress=false")
    assert trained.returncode == 0, trained.stderr[-2000:]
    assert trained.stdout.splitlines()[0].startswith("config: ") and "(the shipped config quickstart)" in trained.stdout
    assert (empty / "runs" / "quickstart" / "best.pt").is_file()
    wrong = acl("config", "show", "--config", "cifar10/resnet57_csg_12_72")
    assert wrong.returncode == 2 and "closest shipped configs: cifar10/resnet56_csg_12_72" in wrong.stderr
