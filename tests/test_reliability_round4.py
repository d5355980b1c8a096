"""Issue 31, round 4: code a run folder names, files a run or an output path can lose, settings compared as
they ran, and inputs that used to exit 1 with a traceback behind --debug."""
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from acl_cli.checkpoint import FORMAT, load_checkpoint
from acl_cli.config import load_config
from acl_cli.training import train

from test_authors_import import _trained_like, authors_resnet_state
from test_sent_files import ROOT, SETS, SMALL, _one_line_exit_2, quiet


@pytest.fixture
def finished_run(small_run):
    return small_run


def _copy(run: Path, dst: Path) -> Path:
    shutil.copytree(run, dst, ignore=shutil.ignore_patterns(".lock"))
    return dst


def _committed(finished_run: Path, tmp_path: Path) -> Path:
    """A run as results/ commits it: best.pt, no last.pt (and no lock)."""
    run = _copy(finished_run, tmp_path / "committed")
    (run / "last.pt").unlink()
    return run


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
            and not p.is_symlink()}


# ---- code a run folder names


def _with_config(path: Path, **sections) -> None:
    state = torch.load(path, weights_only=True)
    for key, value in sections.items():
        state["config"][key] = value
    torch.save(state, path)


def test_resume_imports_no_teacher_module_a_run_names(tmp_path, finished_run):
    work = tmp_path / "work"
    run = _copy(finished_run, work / "run")
    (work / "evil.py").write_text("open('PWNED', 'w').write('ran')\n"
                                  "def make(num_classes=10):\n    raise SystemExit('built')\n")
    (work / "w.pth").write_bytes(b"")
    _with_config(run / "last.pt", distill={"arch": "evil:make", "pretrained": "w.pth", "alpha": 0.9,
                                           "temperature": 4.0, "teacher": None})
    res = subprocess.run([sys.executable, "-m", "acl_cli", "train", "--resume", "run", "--set", "train.epochs=2"],
                         cwd=work, env={**os.environ, "PYTHONPATH": str(work)}, capture_output=True, text=True,
                         timeout=300)
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip() == ("error: run names distill.arch 'evil:make': building it imports the module "
                                  "'evil', which runs that module's code; if you trust it, add --allow-import evil")
    assert not (work / "PWNED").exists()


def test_one_gate_names_every_module_a_stored_config_builds():
    from acl_cli.models.external import BUILT_FROM, check_import_allowed, modules_imported
    from acl_cli.errors import UserError

    stored = {"model": {"arch": "mine.nets:big"}, "distill": {"arch": "theirs:teacher"}}
    assert BUILT_FROM == ("model.arch", "distill.arch")
    assert modules_imported(stored) == {"model.arch": "mine.nets", "distill.arch": "theirs"}
    check_import_allowed(stored, stored, "run", ["mine.nets", "theirs"])
    with pytest.raises(UserError, match="names model.arch 'mine.nets:big'.*--allow-import mine.nets$"):
        check_import_allowed(stored, stored, "run", ["theirs"])
    # a module the user names on the command line (an override) is theirs: no opt-in
    check_import_allowed(stored, {"model": {"arch": "resnet20"}, "distill": {"arch": "other:t"}}, "run", [])


# ---- a run's files and output paths


@pytest.mark.parametrize("name", ["best.pt", "metrics.csv", "run.json"])
def test_export_never_replaces_a_file_of_a_committed_run(tmp_path, cli, finished_run, name):
    run = _committed(finished_run, tmp_path)
    before = _tree(run)
    line = _one_line_exit_2(cli("export", run, "--out", run / name, "--overwrite", "--compact"))
    assert ("replace the checkpoint it reads" if name == "best.pt" else "a file of the acl run directory") in line
    assert _tree(run) == before


def test_import_original_never_replaces_a_file_of_a_committed_run(tmp_path, cli, finished_run):
    run = _committed(finished_run, tmp_path)
    src = tmp_path / "ckpt.t7"
    torch.save(authors_resnet_state(_trained_like("resnet20", None)), src)
    before = _tree(run)
    for name in ("best.pt", "tb/x"):
        _one_line_exit_2(cli("import-original", src, "--arch", "resnet20", "--out", run / name, "--overwrite"),
                         "a file of the acl run directory")
    assert _tree(run) == before
    res = cli("import-original", src, "--arch", "resnet20", "--out", run / "imported.pt")  # a new file beside: fine
    assert res.exit_code == 0, res.output


@pytest.mark.parametrize("fmt", ["state_dict", "torchscript", "onnx", "compact"])
def test_export_never_writes_through_a_planted_temp_name(tmp_path, cli, finished_run, fmt):
    if fmt == "onnx":
        pytest.importorskip("onnxscript")
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    out = tmp_path / "m.out"
    (tmp_path / ".m.out.tmp").symlink_to(victim)  # the name acl used to write ONNX through
    args = ("--compact",) if fmt == "compact" else ("--format", fmt)
    res = cli("export", finished_run, "--out", out, *args)
    assert res.exit_code == 0, res.output
    assert victim.read_text() == "keep me"
    assert out.is_file() and not out.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == [".m.out.tmp", "m.out", "victim.txt"]


@pytest.mark.parametrize("kind", ["fifo", "device"])
def test_overwrite_replaces_only_a_regular_file(tmp_path, cli, finished_run, kind):
    pytest.importorskip("matplotlib")
    if kind == "fifo":
        out = tmp_path / "out.png"
        os.mkfifo(out)
    else:  # a device node of our own (never /dev/null: a regression would replace the machine's)
        out = tmp_path / "null.pt"
        try:
            os.mknod(out, 0o666 | stat.S_IFCHR, os.makedev(1, 3))
        except PermissionError:
            pytest.skip("making a device node needs root")
    src = tmp_path / "ckpt.t7"
    torch.save(authors_resnet_state(_trained_like("resnet20", None)), src)
    mode = os.stat(out).st_mode
    commands = [("export", finished_run, "--out", out, "--overwrite"),
                ("import-original", src, "--arch", "resnet20", "--out", out, "--overwrite")]
    if kind == "fifo":
        commands.append(("report", finished_run, "--plot", out, "--overwrite"))
    for args in commands:
        _one_line_exit_2(cli(*args), "a FIFO" if kind == "fifo" else "a device")
        assert os.stat(out).st_mode == mode


def test_a_hard_link_at_the_lock_is_refused_and_left_as_it_is(tmp_path, cli, finished_run):
    run = _copy(finished_run, tmp_path / "run")
    thesis = tmp_path / "thesis.txt"
    thesis.write_text("three years of work\n")
    os.link(thesis, run / ".lock")
    _one_line_exit_2(cli("train", "--resume", run, "--set", "train.epochs=2"), ".lock: it is a hard link")
    assert thesis.read_text() == "three years of work\n"


def test_a_lock_acl_did_not_write_is_never_truncated(tmp_path, cli, finished_run):
    run = _copy(finished_run, tmp_path / "run")
    (run / ".lock").write_text("my notes\n")
    _one_line_exit_2(cli("train", "--resume", run, "--set", "train.epochs=2"), "acl did not write it")
    assert (run / ".lock").read_text() == "my notes\n"
    (run / ".lock").write_text("12345\n")  # a lock a killed acl left: taken over
    assert cli("train", "--resume", run, "--set", "train.epochs=2").exit_code == 0


def test_only_acl_temp_files_are_cleaned(tmp_path, cli, finished_run):
    notes = "a user's file that happens to end in .tmp"
    # a new run in a folder holding .notes.tmp: the folder is not empty, so it is refused and kept
    folder = tmp_path / "new"
    folder.mkdir()
    (folder / ".notes.tmp").write_text(notes)
    _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", folder, *SETS),
                     "not empty and is not an acl run", ".notes.tmp")
    assert sorted(p.name for p in folder.iterdir()) == [".notes.tmp"]
    # --overwrite of a run holding one: refused, kept
    run = _copy(finished_run, tmp_path / "run")
    (run / ".notes.tmp").write_text(notes)
    _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run, "--overwrite", *SETS),
                     ".notes.tmp")
    # a resume keeps it and removes only a cut-short write of acl's own (mkstemp's name)
    (run / ".last.pt.x1y2_z3w.tmp").write_bytes(b"cut short")
    assert cli("train", "--resume", run, "--set", "train.epochs=2").exit_code == 0
    assert (run / ".notes.tmp").read_text() == notes and not (run / ".last.pt.x1y2_z3w.tmp").exists()


# ---- settings compared as they ran


def test_config_diff_compares_resolved_configs(tmp_path, cli, finished_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = tmp_path / "mine.yaml"  # the run's own settings, without num_classes (the arch's default)
    cfg = load_checkpoint(finished_run / "last.pt")["config"]
    del cfg["model"]["num_classes"]
    import yaml
    mine.write_text(yaml.safe_dump(cfg))
    res = cli("config", "diff", finished_run, "--config", mine)
    assert res.exit_code == 0 and res.output == "", res.output
    # a null block is one line, never a line whose two sides are equal
    res = cli("config", "diff", finished_run, "--config", mine, "--set", "model.csg=null")
    assert res.exit_code == 1 and res.output == "model.csg: {…} -> null\n", res.output
    # --all: a relative data root is compared as train would store it (absolute, from the working directory)
    cfg["data"]["root"] = "data"
    mine.write_text(yaml.safe_dump(cfg))
    ran = load_config(finished_run / "config.yaml").data.root
    res = cli("config", "diff", finished_run, "--config", mine, "--all")
    assert res.output == f"data.root: {ran!r} -> {str(tmp_path / 'data')!r}\n", res.output


def test_config_diff_resolves_a_relative_teacher(tmp_path, cli, finished_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    _copy(finished_run, tmp_path / "T0")
    student = tmp_path / "student"
    train(load_config(None, SMALL + ["distill.teacher=T0"]), student, log=quiet)
    res = cli("config", "diff", student, "--config", student / "config.yaml", "--set", "distill.teacher=T0")
    assert res.exit_code == 0 and res.output == "", res.output


def test_config_diff_errors_are_2_never_1(tmp_path, cli):
    (tmp_path / "bad.yaml").write_text("model: [")
    res = cli("config", "diff", tmp_path / "bad.yaml", "--config", "quickstart")
    assert res.exit_code == 2 and res.stderr.startswith("error: "), res.output


def test_a_teacher_linked_to_a_running_run_is_refused(tmp_path, finished_run):
    from acl_cli.errors import UserError
    from acl_cli.rundir import RunLock

    teacher_run = _copy(finished_run, tmp_path / "teacher")
    link = tmp_path / "teacher.pt"
    link.symlink_to(teacher_run / "best.pt")
    with RunLock(teacher_run), pytest.raises(UserError, match="being trained by a running acl process"):
        train(load_config(None, SMALL + [f"distill.teacher={link}"]), tmp_path / "student", log=quiet)
    assert not (tmp_path / "student").exists()


def test_config_says_which_file_it_read(tmp_path, cli, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "quickstart.yaml").write_text(f"base: {ROOT / 'configs/quickstart.yaml'}\n"
                                              "data: {batch_size: 100000}\n")  # refused after the line
    res = cli("train", "--config", "quickstart", "--out", "r")
    assert res.output.splitlines()[0] == "config: quickstart.yaml", res.output
    # a sweep's output folder named like a shipped config does not hide it
    (tmp_path / "cifar10" / "resnet20").mkdir(parents=True)
    res = cli("config", "show", "--config", "cifar10/resnet20")
    assert res.exit_code == 0 and "arch: resnet20" in res.output, res.output
    res = cli("config", "show", "--config", "cifar10")
    _one_line_exit_2(res, "cifar10 is a directory, not a config file")


# ---- one line and exit 2


LONG = "a" * 300


@pytest.mark.parametrize("args,message", [
    (("train", "--config", LONG), "not a usable file name (File name too long)"),
    (("count-params", "--config", LONG), "not a usable file name"),
    (("count-params", "--arch", "resnet20", "--set", 'data.root="a\\0b"'), "data.root: a NUL byte is not allowed"),
    (("train", "--config", "nul.yaml"), "'base' must be a file name"),
    (("count-params", "--arch", "resnet20", "--slice-shape", "16,16,3,3", "--code-size", "4611686018427387904"),
     "cannot build resnet20 with these settings"),
    (("eval", "format_only.pt"), "format_only.pt is not a complete acl checkpoint (its config is missing"),
    (("train", "--config", "quickstart", "--out", "r", "--set", "distill.teacher=format_only.pt"),
     "is not a complete acl checkpoint"),
    (("train", "--config", "quickstart", "--out", "nested"), "nested is not empty and is not an acl run"),
])
def test_one_line_and_exit_2(tmp_path, cli, monkeypatch, args, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "nul.yaml").write_text('base: "quick\\0start"\n')
    torch.save({"format": FORMAT}, tmp_path / "format_only.pt")
    (tmp_path / "nested").mkdir()
    (tmp_path / "nested" / "run.json").write_text("[" * 100_000)
    before = _tree(tmp_path)
    line = _one_line_exit_2(cli(*args), message)
    assert len(line) < 400, line
    assert _tree(tmp_path) == before


@pytest.mark.parametrize("env,message", [
    ({"WORLD_SIZE": "2"}, "WORLD_SIZE=2 but RANK is not set"),
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc': expected a whole number"),
    ({"WORLD_SIZE": "2", "RANK": "0"}, "MASTER_ADDR and MASTER_PORT are not set"),
    ({"WORLD_SIZE": "2", "RANK": "5", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}, "RANK=5 is outside 0..1"),
])
def test_torchrun_variables_are_checked(tmp_path, cli, monkeypatch, env, message):
    for key in ("RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", tmp_path / "r", *SETS),
                     message)
    assert not (tmp_path / "r").exists()


def test_a_mangled_last_pt_is_one_line_on_resume(tmp_path, cli, finished_run):
    run = _copy(finished_run, tmp_path / "run")
    state = torch.load(run / "last.pt", weights_only=True)
    del state["rng"]
    torch.save(state, run / "last.pt")
    before = _tree(run)
    _one_line_exit_2(cli("train", "--resume", run, "--set", "train.epochs=2"), "cannot be resumed")
    assert _tree(run) == before


def test_report_out_writes_a_regular_file_only(tmp_path, cli, finished_run):
    out = tmp_path / "report.md"
    res = cli("report", finished_run, "--out", out)
    assert res.exit_code == 0 and res.output == "", res.output
    assert out.read_text() == cli("report", finished_run).output
    _one_line_exit_2(cli("report", finished_run, "--out", out), "already exists; give another path or add --overwrite")
    victim = tmp_path / "victim"
    victim.write_text("mine")
    link = tmp_path / "link.md"
    link.symlink_to(victim)
    fifo = tmp_path / "fifo.md"
    os.mkfifo(fifo)
    for path, message in ((link, "it is a symbolic link"), (fifo, "a FIFO"),
                          (finished_run / "metrics.csv", "a file of the acl run directory")):
        _one_line_exit_2(cli("report", finished_run, "--out", path, "--overwrite"), message)
    assert victim.read_text() == "mine" and fifo.is_fifo()


# ---- found by the red team of round 4


def test_a_path_up_out_of_a_missing_folder_is_refused_before_anything(tmp_path, cli, finished_run, monkeypatch):
    monkeypatch.chdir(tmp_path)
    exp = _copy(finished_run, tmp_path / "exp1")
    notes = (exp / "config.yaml").read_text() + "# my notes\n"
    (exp / "config.yaml").write_text(notes)
    before = _tree(tmp_path)
    for args in (("train", "--config", "exp1/config.yaml", "--out", "nosuch/../exp1", "--overwrite"),
                 ("train", "--config", ROOT / "configs/quickstart.yaml", "--out", "junk/..", "--overwrite", *SETS),
                 ("train", "--config", ROOT / "configs/quickstart.yaml", "--out", "junk/../new", *SETS),
                 ("export", "exp1", "--out", "nosuch/../exp1/best.pt", "--overwrite"),
                 ("export", "exp1/best.pt", "--out", "nosuch/../src.pt", "--compact")):
        _one_line_exit_2(cli(*args), "does not exist, so '..' after it cannot be followed")
    assert _tree(tmp_path) == before and sorted(p.name for p in tmp_path.iterdir()) == ["exp1"]


@pytest.mark.parametrize("name", ["best.pt", "final.json"])
def test_overwrite_never_removes_a_folder_named_like_a_run_file(tmp_path, cli, finished_run, name):
    run = _copy(finished_run, tmp_path / "run")
    (run / name).unlink()
    (run / name).mkdir()
    (run / name / "thesis.txt").write_text("precious")
    _one_line_exit_2(cli("train", "--config", ROOT / "configs/quickstart.yaml", "--out", run, "--overwrite", *SETS),
                     f"besides the run it holds {name}")
    assert (run / name / "thesis.txt").read_text() == "precious"


def test_a_stored_arch_that_names_no_module_gets_no_import_advice():
    from acl_cli.errors import UserError
    from acl_cli.models.external import check_import_allowed

    stored = {"model": {"arch": " evilmod:net"}}
    with pytest.raises(UserError, match="' evilmod' is not a module name, so nothing can be imported") as e:
        check_import_allowed(stored, stored, "run", [])
    assert "--allow-import" not in str(e.value)


def test_report_out_refuses_a_missing_folder_before_reading(tmp_path, cli, finished_run):
    _one_line_exit_2(cli("report", finished_run, "--out", tmp_path / "nd" / "deep" / "r.md"),
                     "the folder", "does not exist")
    assert not (tmp_path / "nd").exists()


def test_a_last_pt_that_is_a_fifo_is_named_as_one(tmp_path, cli, finished_run):
    run = _copy(finished_run, tmp_path / "run")
    (run / "last.pt").unlink()
    os.mkfifo(run / "last.pt")
    _one_line_exit_2(cli("train", "--resume", run, "--set", "train.epochs=2"), "last.pt is a FIFO")


def test_a_record_holding_nan_is_not_kept_as_json_it_is_not(tmp_path, finished_run):
    import json

    from acl_cli.errors import UserError
    from acl_cli.files import read_json

    (tmp_path / "r.json").write_text('{"sessions": [{"loader": NaN}]}')
    with pytest.raises(UserError, match="is not valid JSON"):
        read_json(tmp_path / "r.json")
    run = _copy(finished_run, tmp_path / "run")
    (run / "run.json").write_text('{"sessions": [{"loader": NaN}]}')
    train(load_config(None, SMALL + ["train.epochs=2"]), run, resume=True, log=quiet)
    json.loads((run / "run.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in run.json"))
