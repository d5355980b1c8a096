"""The shell scripts with hostile input: paths that YAML would cut or retype in --set (a data root or teacher with
# in it, quotes, colons, $), grid values that would leave OUT_DIR or become YAML syntax, and archives for
scripts/gpu_results.sh whose members are links, absolute or leave the folder. Paths are checked with the real acl
resolving each printed command's config, not with a stand-in."""
import json
import os
import shlex
import stat
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
ACL = f"{sys.executable} -m acl_cli"
# each would be cut at " #", read as another string, a number, null or a mapping, or break the quoting
HOSTILE = ["data #2", "it's", 'say "hi"', "a: b", "$HOME and `id`", "#", " lead and trail ", "x'#'y\"z:$"]
PLAIN = ["-1/2024/null", "a.b/c_d+e-f"]  # safe characters with a /: left plain, and still the very same string


def _script(name, *args, **env):
    return subprocess.run(["bash", str(ROOT / "scripts" / name), *map(str, args)], cwd=ROOT, capture_output=True,
                          text=True, env={**os.environ, "ACL": ACL, **env}, timeout=120)


def _trains(stdout):
    return [shlex.split(line) for line in stdout.splitlines() if " train " in line]


def _resolved(cli, argv):
    """What the real acl makes of a printed acl command's --config and --set values (acl config show)."""
    sets = [x for i, a in enumerate(argv) if a == "--set" for x in ("--set", argv[i + 1])]
    shown = cli("config", "show", "--config", argv[argv.index("--config") + 1], *sets)
    assert shown.exit_code == 0, (argv, shown.output)
    return yaml.safe_load(shown.stdout)


@pytest.mark.parametrize("root", HOSTILE + PLAIN + ["null", "2024", "~", "-x"])
def test_the_data_root_reaches_acl_exactly(tmp_path, cli, root):
    res = _script("sweep_depth.sh", root, 3, tmp_path / "out", DRY_RUN="1", DEPTHS="20")
    assert res.returncode == 0, res.stderr
    jobs = _trains(res.stdout)
    assert len(jobs) == 2
    for argv in jobs:  # acl expands a leading ~ (a string "~", not YAML's null)
        assert _resolved(cli, argv)["data"]["root"] == os.path.expanduser(root)
    absolute = str(tmp_path / root)
    res = _script("compare_csg_optim.sh", absolute, 3, tmp_path / "out", DRY_RUN="1", VARIANTS="2:1e-3")
    assert res.returncode == 0, res.stderr
    jobs = _trains(res.stdout)
    assert len(jobs) == 3 and all(_resolved(cli, argv)["data"]["root"] == absolute for argv in jobs)
    if root in PLAIN:  # what the README and the other tests read stays as typed
        assert all(f"data.root={absolute}" in argv for argv in jobs)


def test_the_data_root_survives_the_sbatch_hop(tmp_path, cli):
    """The sbatch file runs the script again on a node, with the root it carries."""
    root = tmp_path / HOSTILE[-1]
    out = tmp_path / "out"
    res = _script("sweep_depth.sh", "--sbatch", root, 3, out, DEPTHS="20")
    assert res.returncode == 0, res.stderr
    text = (out / "sweep.sbatch").read_text()
    task = "TASK_INDEX=$SLURM_ARRAY_TASK_ID exec bash"
    assert text.count(task) == 1
    (out / "sweep.sbatch").write_text(text.replace(task, "DRY_RUN=1 exec bash"))  # print the jobs instead
    done = subprocess.run(["bash", str(out / "sweep.sbatch")], capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "DEPTHS"})
    assert done.returncode == 0, done.stderr
    jobs = _trains(done.stdout)
    assert len(jobs) == 2 and all(_resolved(cli, argv)["data"]["root"] == str(root) for argv in jobs)


def test_the_teacher_in_an_out_dir_with_hostile_characters(tmp_path, cli):
    out = tmp_path / "runs #1 it's: $x"
    res = _script("results_cifar10.sh", "DATA #2", 3, out, DRY_RUN="1", DISTILL="1")
    assert res.returncode == 0, res.stderr
    made = {Path(a[a.index("--out") + 1]).name: _resolved(cli, a) for a in _trains(res.stdout)}
    assert made["resnet20_csg_16_72_distill"]["distill"]["teacher"] == str(out / "resnet20")
    assert {m["data"]["root"] for m in made.values()} == {"DATA #2"}


def test_gpu_acceptance_quotes_its_data_root(cli):
    root = "/scratch/cifar #2 it's"
    res = subprocess.run(["bash", str(ROOT / "scripts" / "gpu_acceptance.sh"), "/tmp/out"], cwd=ROOT, text=True,
                         env={**os.environ, "DRY_RUN": "1", "DATA_ROOT": root}, capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    commands = [shlex.split(line.rsplit(" > ", 1)[0]) for line in res.stdout.splitlines()]
    roots = {_resolved(cli, c)["data"]["root"] for c in commands if "data.name=cifar10" in c}
    assert roots == {root}


@pytest.mark.parametrize("script,args,env,says", [
    ("sweep_depth.sh", ["a\nb", 3], {}, "DATA_ROOT holds a line break"),
    ("sweep_depth.sh", ["", 3], {}, "DATA_ROOT is empty"),
    ("results_cifar10.sh", ["d", 3, "a\rb"], {"DISTILL": "1"}, "OUT_DIR holds a line break"),
    ("sweep_depth.sh", ["d", 3], {"DEPTHS": "20]"}, "DEPTHS must hold positive integers"),
    ("sweep_depth.sh", ["d", 3], {"CODE": "72, layout: tile"}, "SLICE and CODE must hold positive integers"),
    ("sweep_code_slice.sh", ["d", 3], {"ARCH": "../../escape"}, "job name '../../escape'"),
    ("sweep_code_slice.sh", ["d", 3], {"ARCH": ".hidden"}, "job name '.hidden'"),
    ("sweep_code_slice.sh", ["d", 3], {"ARCH": "resnet20 #x"}, "job name 'resnet20 #x'"),
    ("compare_layouts.sh", ["d", 3], {"SETTINGS": "16:72 #"}, "SETTINGS (SLICE:CODE) must hold positive integers"),
    ("results_cifar10.sh", ["d", 3], {"CONFIGS": "../../escape"}, "job name '../../escape'"),
    ("compare_csg_optim.sh", ["d", 3], {"CSG_INIT": "scaled #x"}, "CSG_INIT must name an init"),
    ("compare_csg_optim.sh", ["d", 3], {"TRAIN_SUBSET": "500 #x"}, "TRAIN_SUBSET must hold positive integers"),
    ("compare_csg_optim.sh", ["d", 3], {"VARIANTS": "1:[2]"}, "VARIANTS entries are LR_SCALE:WEIGHT_DECAY"),
])
def test_input_yaml_or_a_folder_name_cannot_carry_is_one_line_and_exit_2(tmp_path, script, args, env, says):
    args = args + [tmp_path / "out"] if len(args) == 2 else args
    before = sorted(tmp_path.iterdir())
    for mode in (["--list"], []):  # --list too: a job's name is its folder, made when it runs
        res = _script(script, *mode, *args, **{"DRY_RUN": "1", **env})
        assert res.returncode == 2 and res.stderr.startswith("error: ") and says in res.stderr, res.stderr
        assert res.stderr.count("\n") == 1 and res.stdout == ""
    assert sorted(tmp_path.iterdir()) == before


# ---- scripts/gpu_results.sh: the images are unpacked into a new folder, from an archive that cannot escape it

def _files(top: Path) -> dict[str, str]:
    """Every path under top, with what it is (a link's target): what a test compares before and after."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(top):
        for name in dirnames + filenames:
            p = Path(dirpath, name)
            found[str(p.relative_to(top))] = os.readlink(p) if p.is_symlink() else p.read_bytes().hex() if p.is_file() else "dir"
    return found


def _gpu_results(tmp_path, zip_path, **env):
    (tmp_path / "tmp").mkdir(exist_ok=True)
    full = {k: v for k, v in os.environ.items() if k != "DATA_DIR"}
    full.update({"ZIP": str(zip_path), "TMPDIR": str(tmp_path / "tmp"), "ACL": "true", "PYTHON": sys.executable,
                 "RUNS": str(tmp_path / "runs"), "POLL_S": "0.1", **env})
    return subprocess.run(["bash", "scripts/gpu_results.sh", "3", str(tmp_path / "out")], cwd=ROOT,
                          capture_output=True, text=True, env=full, timeout=300)


def _zip(path: Path, member: zipfile.ZipInfo | str, data: bytes = b"x") -> Path:
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("train/cat/0001.jpg", b"an image")
        z.writestr(member, data)
    return path


def _link(name: str, target: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16  # how zip -y stores a symbolic link: its target as the data
    info.create_system = 3  # Unix
    return info


@pytest.mark.parametrize("member,says", [
    ("../evil", "would be written outside the folder"),
    ("train/../../../evil", "would be written outside the folder"),
    ("ABSOLUTE", "would be written outside the folder"),
    ("LINK", "is a symbolic link"),
])
@pytest.mark.parametrize("data_dir", [False, True], ids=["tmp", "DATA_DIR"])
def test_an_archive_member_that_would_escape_the_folder_is_refused(tmp_path, member, says, data_dir):
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    if member == "ABSOLUTE":
        member = str(tmp_path / "abs_evil")
    if member == "LINK":  # unpacked as a link, the image written next would go through it to the victim
        member = _link("train/cat/link.jpg", str(victim))
    zip_path = _zip(tmp_path / "data.zip", member, b"planted by the archive")
    (tmp_path / "tmp").mkdir()
    before = _files(tmp_path)
    env = {"DATA_DIR": str(tmp_path / "data")} if data_dir else {}
    res = _gpu_results(tmp_path, zip_path, **env)
    assert res.returncode == 2, res.stderr
    assert res.stderr.startswith("error: ZIP member ") and says in res.stderr and res.stderr.count("\n") == 1
    assert _files(tmp_path) == before  # nothing written anywhere: no evil file, no data folder, no runs, no out
    assert victim.read_text() == "untouched" and zipfile.is_zipfile(zip_path)


def test_a_broken_archive_is_one_line(tmp_path):
    (tmp_path / "data.zip").write_bytes(b"not a zip")
    res = _gpu_results(tmp_path, tmp_path / "data.zip")
    assert res.returncode == 2 and res.stderr.startswith("error: ZIP ") and res.stderr.count("\n") == 1, res.stderr
    assert list((tmp_path / "tmp").iterdir()) == [] and not (tmp_path / "runs").exists()


def test_an_existing_data_dir_is_refused_not_added_to(tmp_path):
    (tmp_path / "data" / "train" / "dog").mkdir(parents=True)
    (tmp_path / "data" / "train" / "dog" / "stale.jpg").write_bytes(b"stale")
    zip_path = _zip(tmp_path / "data.zip", "train/cat/0002.jpg")
    before = _files(tmp_path)
    res = _gpu_results(tmp_path, zip_path, DATA_DIR=str(tmp_path / "data"))
    assert res.returncode == 2 and "DATA_DIR" in res.stderr and res.stderr.count("\n") == 1, res.stderr
    assert _files(tmp_path) == {**before, "tmp": "dir"} and not (tmp_path / "runs").exists()


STAND_IN = '''
import json, os, sys, yaml
args = sys.argv[1:]
if args[:1] == ["plan"]:  # acl's decision: a fresh folder is trained
    print("train")
if args[:1] == ["train"]:
    root = yaml.safe_load(next(a for a in args if a.startswith("data.root=")).split("=", 1)[1])
    files = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    with open(os.environ["TRACE"], "a") as f:
        f.write(json.dumps({"root": root, "files": files}) + "\\n")
'''


def test_the_images_are_unpacked_into_a_new_folder_never_one_left_there(tmp_path):
    """The old fixed folder ${TMPDIR}/acl-cifar10-jpeg, planted with an extra image and a link where an image of
    the archive lands: the runs train on the archive's images alone, and the link's target is untouched."""
    if torch.cuda.is_available():
        pytest.skip("the step profile after the runs would run for real")
    victim = tmp_path / "victim.txt"
    victim.write_text("untouched")
    fixed = tmp_path / "tmp" / "acl-cifar10-jpeg" / "train" / "cat"
    fixed.mkdir(parents=True)
    (fixed / "planted.jpg").write_bytes(b"stale")
    (fixed / "0001.jpg").symlink_to(victim)
    planted = _files(tmp_path / "tmp")
    stand_in = tmp_path / "acl_stand_in.py"
    stand_in.write_text(STAND_IN)
    trace = tmp_path / "trace.jsonl"
    res = _gpu_results(tmp_path, _zip(tmp_path / "data.zip", "train/dog/0002.jpg"), TRACE=str(trace),
                       ACL=f"{sys.executable} {stand_in}")
    assert res.returncode == 1, res.stderr  # the step profile needs CUDA; the runs come before it
    calls = [json.loads(line) for line in trace.read_text().splitlines()]
    assert len(calls) == 12  # the two pairs, the CSG configs at twice the lr, the six baselines
    for call in calls:
        assert call["files"] == ["train/cat/0001.jpg", "train/dog/0002.jpg"], call
        assert Path(call["root"]).parent == tmp_path / "tmp" and Path(call["root"]).name != "acl-cifar10-jpeg"
    assert victim.read_text() == "untouched"
    assert _files(tmp_path / "tmp") == planted  # the new folder is gone at exit, the old one as it was


# ---- found by the red team of round 4: files the scripts write with a redirect


def test_a_job_log_that_is_a_link_is_never_written_through(tmp_path):
    stand_in = tmp_path / "acl.sh"  # plans to train; "trains" by printing
    stand_in.write_text('[ "$1" = plan ] && echo train && exit 0\n[ "$1" = report ] && exit 0\necho trained\n')
    victim = tmp_path / "thesis.txt"
    victim.write_text("three years")
    out = tmp_path / "out"
    out.mkdir()
    (out / "resnet20.log").symlink_to(victim)
    res = _script("sweep_depth.sh", tmp_path / "data", 1, out, DEPTHS="20", ACL=f"sh {stand_in}")
    assert res.returncode == 1, res.stderr
    assert f"FAILED resnet20: its log {out / 'resnet20.log'} is a symbolic link" in res.stderr
    assert victim.read_text() == "three years"
    assert "start resnet20_csg" in res.stdout  # the other jobs still ran


@pytest.mark.parametrize("setting", ["SBATCH_TIME", "SBATCH_MEM", "SBATCH_CPUS", "SBATCH_GPUS",
                                     "SBATCH_MAX_PARALLEL"])
def test_sbatch_settings_cannot_add_lines_to_the_job_file(tmp_path, setting):
    out = tmp_path / "out"
    res = _script("sweep_depth.sh", "--sbatch", tmp_path / "data", 1, out, DEPTHS="20",
                  **{setting: f"1\ntouch {tmp_path / 'PWN'}"})
    assert res.returncode == 2 and res.stderr.startswith(f"error: {setting} ") and \
        len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (out / "sweep.sbatch").exists() and not (tmp_path / "PWN").exists()


def test_the_job_file_is_never_written_through_a_link(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("mine")
    (out / "sweep.sbatch").symlink_to(victim)
    res = _script("sweep_depth.sh", "--sbatch", tmp_path / "data", 1, out, DEPTHS="20")
    assert res.returncode == 2 and "sweep.sbatch is a symbolic link" in res.stderr, res.stderr
    assert victim.read_text() == "mine"


@pytest.mark.parametrize("kind", ["hard link", "fifo", "directory"])
def test_a_job_log_that_is_not_the_scripts_own_file_is_left_alone(tmp_path, kind):
    stand_in = tmp_path / "acl.sh"
    stand_in.write_text('[ "$1" = plan ] && echo train && exit 0\n[ "$1" = report ] && exit 0\necho trained\n')
    mine = tmp_path / "thesis.txt"
    mine.write_text("three years")
    out = tmp_path / "out"
    out.mkdir()
    log = out / "resnet20.log"
    {"hard link": lambda: os.link(mine, log), "fifo": lambda: os.mkfifo(log), "directory": log.mkdir}[kind]()
    res = _script("sweep_depth.sh", tmp_path / "data", 1, out, DEPTHS="20", ACL=f"sh {stand_in}")
    assert res.returncode == 1 and "FAILED resnet20: its log" in res.stderr, res.stderr
    assert mine.read_text() == "three years"


@pytest.mark.parametrize("script", ["results_cifar10.sh", "compare_baselines.sh"])
def test_a_dry_run_of_one_task_prints_its_command_and_makes_nothing(tmp_path, script):
    """DRY_RUN=1 with TASK_INDEX (a SLURM task's dry run): that job's command, and nothing made or run."""
    out = tmp_path / "out"
    res = _script(script, tmp_path / "no data", 3, out, DRY_RUN="1", TASK_INDEX="1")
    assert res.returncode == 0, res.stderr
    (line,) = res.stdout.splitlines()
    argv = shlex.split(line)
    assert argv[:4] == [*shlex.split(ACL), "train"] and argv[argv.index("--out") + 1].startswith(str(out))
    assert not out.exists()


@pytest.mark.parametrize("env, why", [
    ({"SEEDS": "18446744073709551617"}, "SEEDS must be below 2^32, got '18446744073709551617'"),
    ({"SEEDS": "4294967296"}, "SEEDS must be below 2^32"),
    ({"TASK_INDEX": "18446744073709551617"}, "TASK_INDEX must be below 2^32"),
    ({"SEEDS": "1 01"}, "SEEDS names seed 1 twice"),
    ({"TRAIN_SUBSET": "99999999999999999999"}, "TRAIN_SUBSET must be below 2^32"),
])
def test_numbers_bash_would_wrap_and_repeated_seeds_are_refused_before_anything(tmp_path, env, why):
    res = _script("compare_baselines.sh", tmp_path / "d", 3, tmp_path / "out", DRY_RUN="1", **env)
    assert res.returncode == 2 and res.stderr == f"error: {why}" + res.stderr.split(why, 1)[1], res.stderr
    assert res.stderr.count("\n") == 1 and res.stdout == "" and not (tmp_path / "out").exists()
    res = _script("compare_baselines.sh", tmp_path / "d", 99999999999, tmp_path / "out", DRY_RUN="1")
    assert res.returncode == 2 and "EPOCHS must be below 2^32" in res.stderr


def test_seeds_just_below_two_to_the_32_are_taken(tmp_path):
    res = _script("results_cifar10.sh", tmp_path / "d", 3, tmp_path / "out", DRY_RUN="1", SEEDS="4294967295",
                  CONFIGS="resnet20")
    assert res.returncode == 0, res.stderr
    (line,) = [x for x in res.stdout.splitlines() if " train " in x]
    assert line.endswith(" --set train.seed=4294967295 ")


@pytest.mark.parametrize("kind", ["file", "fifo"])
def test_an_out_dir_that_is_no_folder_is_refused_before_any_job(tmp_path, kind):
    out = tmp_path / "out"
    out.write_text("mine") if kind == "file" else os.mkfifo(out)
    for script in ("results_cifar10.sh", "compare_baselines.sh"):
        res = _script(script, tmp_path / "d", 3, out, DRY_RUN="1")
        assert res.returncode == 2 and res.stderr == \
            f"error: OUT_DIR '{str(out)[:60]}' is not a folder: name a folder (or a new one)\n"  # 60: a long path cut
        assert res.stdout == ""
    assert out.is_fifo() or out.read_text() == "mine"
