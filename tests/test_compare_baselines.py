"""scripts/compare_baselines.sh: the paper's comparison (original, CSG, separable, CReLU, p4 group conv) on one
split and schedule, checked through its dry run and the real acl's reading of each printed command."""
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from acl_cli.config import load_config, resolve_config_path

ROOT = Path(__file__).resolve().parents[1]
ACL = f"{sys.executable} -m acl_cli"


def _dry_run(tmp_path, **env):
    return subprocess.run(["bash", "scripts/compare_baselines.sh", str(tmp_path / "data #1"), "8",
                           str(tmp_path / "out")], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "ACL": ACL, "DRY_RUN": "1", **env})


def _jobs(stdout):
    """(run folder name, the config acl would train) of each printed acl train command."""
    jobs = []
    for line in stdout.splitlines():
        if " train " in line:
            argv = shlex.split(line)
            sets = [argv[i + 1] for i, a in enumerate(argv) if a == "--set"]
            cfg = load_config(resolve_config_path(argv[argv.index("--config") + 1]), sets)
            jobs.append((Path(argv[argv.index("--out") + 1]).name, cfg))
    return jobs


@pytest.mark.parametrize("family, csg", [("resnet56", "resnet56_csg_12_72"),
                                         ("densenet_bc_40_48", "densenet_bc_40_48_csg_12_72"),
                                         ("resnet20", "resnet20_csg_16_72")])
def test_one_family_five_networks_on_one_split_and_schedule(tmp_path, family, csg):
    env = {"FAMILY": family, "TRAIN_SUBSET": "500"}
    if family == "resnet20":
        env["CSG"] = csg
    res = _dry_run(tmp_path, **env)
    assert res.returncode == 0, res.stderr
    jobs = _jobs(res.stdout)
    assert [name for name, _ in jobs] == [family, csg, f"{family}_sep", f"{family}_crelu", f"{family}_gcnn"]
    archs = [cfg.model.arch for _, cfg in jobs]
    assert archs == [family, family, f"{family}_sep", f"{family}_crelu", f"{family}_gcnn"]
    assert [cfg.model.csg is not None for _, cfg in jobs] == [False, True, False, False, False]
    assert jobs[1][1].model.csg.init == "scaled"
    for _, cfg in jobs:  # one split, one schedule, one subset: only the network differs
        assert (cfg.data.root, cfg.data.val_split, cfg.data.split_seed, cfg.data.train_subset, cfg.train.epochs) == \
            (str(tmp_path / "data #1"), 0.1, 0, 500, 8)
        assert (cfg.optim, cfg.schedule) == (jobs[0][1].optim, jobs[0][1].schedule)
    assert f"report {tmp_path / 'out'}/* " in res.stdout.replace("'", "")


@pytest.mark.parametrize("env, why", [({"FAMILY": "../resnet56"}, "FAMILY and CSG name shipped configs"),
                                      ({"FAMILY": "resnet56 x"}, "FAMILY and CSG name shipped configs"),
                                      ({"FAMILY": "nosuch"}, "no shipped config cifar10/nosuch"),
                                      ({"CSG": "resnet56_csg_9_9"}, "no shipped config cifar10/resnet56_csg_9_9"),
                                      ({"TRAIN_SUBSET": "1e4"}, "TRAIN_SUBSET"),
                                      ({"CSG_INIT": "x: y"}, "CSG_INIT must name an init"),
                                      ({"CSG": "resnet56"}, "CSG must name a CSG config of resnet56 (resnet56_csg_...)"),
                                      ({"CSG": "resnet56_sep"}, "CSG must name a CSG config of resnet56"),
                                      ({"CSG": "resnet20_csg_16_72"}, "CSG must name a CSG config of resnet56")])
def test_bad_variables_are_one_line_and_nothing_is_made(tmp_path, env, why):
    res = _dry_run(tmp_path, **env)
    assert res.returncode == 2 and why in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert not (tmp_path / "out").exists()
