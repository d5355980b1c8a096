"""acl report of run folders someone edited or sent: whatever run.json, params.json, metrics.csv or a folder's
name hold, the report is valid markdown, CSV and JSON with nothing injected into it, or one line and exit 2."""
import csv
import io
import json
import os
import re
import stat
import tempfile
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acl_cli.cli import main

from test_sent_files import _one_line_exit_2

HEADER = "epoch,step,lr,train_loss,train_top1,train_top5,val_loss,val_top1,val_top5,epoch_time,eval_time,img_s\n"
ROW = "1,2,0.1,1.0,10,50,1.0,{top1},90,{epoch_time},1,{img_s}\n"
RECORD = {"splits": {"val": "20% of digits held out"}, "sessions": [{"host": "vm", "processes": 1}]}
PARAMS = {"total": 270000, "compression": 1.0}


def _run(folder: Path, run_json=None, params=None, metrics=None, seed=0, finished=True) -> Path:
    """A run folder as acl writes one (no checkpoints: report reads none), with any file replaced."""
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text(f"model:\n  arch: resnet20\ntrain:\n  seed: {seed}\n")
    (folder / "params.json").write_text(json.dumps(PARAMS) if params is None else params)
    (folder / "metrics.csv").write_text(
        HEADER + ROW.format(top1=50.5, epoch_time=2, img_s=100) if metrics is None else metrics)
    (folder / "run.json").write_text(json.dumps(RECORD) if run_json is None else run_json)
    if finished:
        (folder / "final.json").write_text("{}")
    return folder


def _cli(*args):
    return CliRunner().invoke(main, [str(a) for a in args], catch_exceptions=False)




def _strict_json(text: str):
    def refuse(constant):
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def _pipes(line: str) -> int:
    return len(re.findall(r"(?<!\\)\|", line))  # an escaped \| is inside a cell


def _check_markdown(text: str) -> None:
    """Tables whose rows have as many cells as their header, and no line that is anything but a table row,
    a blank line or the grouped table's caption."""
    for block in text.split("\n\n"):
        lines = block.splitlines()
        if lines[0].startswith("Grouped over seeds"):
            continue
        assert all(line.startswith("|") for line in lines), block
        assert len({_pipes(line) for line in lines}) == 1, block
    for line in text.splitlines():
        assert not line.startswith(("#", "<")), line


def _check_csv(text: str) -> None:
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert len({len(r) for r in rows}) == 1, rows
    for cell in (c for r in rows[1:] for c in r):
        if cell[:1] in ("=", "+", "-", "@", "\t", "\r", "\n") and cell != "-":
            assert re.fullmatch(r"-[0-9.e+-]+", cell), cell  # a negative number, never a formula


def _check(res, fmt: str) -> None:
    """Exit 0 with a valid report, or exit 2 with one line: never a traceback or exit 1."""
    if res.exit_code != 0:
        _one_line_exit_2(res)
        return
    {"json": _strict_json, "csv": _check_csv, "markdown": _check_markdown}[fmt](res.stdout.rstrip("\n"))


# ---- what a report shows stays in its cell


def test_markdown_cells_hold_no_line_breaks_html_or_pipes(tmp_path):
    hostile = "x|y\n# INJECTED\r\n<script>alert(1)</script> & \u2028<b>"
    record = {**RECORD, "splits": {"val": hostile}}
    runs = [_run(tmp_path / f"a|b\n# INJECTED <i>_seed{seed}", run_json=json.dumps(record), seed=seed)
            for seed in (0, 1)]
    for extra in ((), ("--by-seed",)):
        res = _cli("report", *runs, *extra)
        assert res.exit_code == 0, res.output
        _check_markdown(res.stdout.rstrip("\n"))
        assert "<" not in res.stdout and "\n# INJECTED" not in res.stdout
        assert "a\\|b # INJECTED &lt;i&gt;" in res.stdout  # the folder's name, and the group's
    res = _cli("report", *runs)
    assert "x\\|y # INJECTED &lt;script&gt;alert(1)&lt;/script&gt; &amp;  &lt;b&gt;" in res.stdout
    assert "Grouped over seeds" in res.stdout


def test_a_csv_cell_is_never_a_formula_and_a_negative_time_is_missing(tmp_path):
    record = {**RECORD, "splits": {"val": "@SUM(A1:A9)"}}
    metrics = HEADER + ROW.format(top1=50, epoch_time=-121, img_s=100)  # an edited time: minus two minutes
    runs = [_run(tmp_path / name, run_json=json.dumps(record), metrics=metrics) for name in ("=2+5", "+1", "-cmd")]
    res = _cli("report", *runs, "--format", "csv")
    assert res.exit_code == 0, res.output
    rows = list(csv.DictReader(io.StringIO(res.stdout)))
    assert [r["run"] for r in rows] == ["'=2+5", "'+1", "'-cmd"]
    # a negative time measures nothing: missing, never a formula either
    assert {(r["selected_on"], r["wall_min"], r["s_epoch"], r["csg"]) for r in rows} == {("'@SUM(A1:A9)", "", "", "-")}
    _check_csv(res.stdout)


@pytest.mark.parametrize("cell", ["nan", "inf", "-inf", "1e999"])
def test_json_never_holds_nan_or_infinity(tmp_path, cell):
    metrics = HEADER + ROW.format(top1=cell, epoch_time=cell, img_s=cell)
    res = _cli("report", _run(tmp_path / "r", metrics=metrics), "--format", "json")
    assert res.exit_code == 0, res.output
    (row,) = _strict_json(res.stdout)
    assert (row["best_top1"], row["final_top1"], row["wall_min"], row["img_s"]) == (None, None, None, None)
    assert _cli("report", tmp_path / "r", "--by-seed", "--format", "json").exit_code == 0


def test_a_top1_outside_0_to_100_and_sums_that_overflow_show_as_missing(tmp_path):
    metrics = HEADER + ROW.format(top1=40, epoch_time=1e308, img_s=1e308) + "2" + ROW.format(
        top1=1e300, epoch_time=1e308, img_s=1e308)[1:]
    res = _cli("report", _run(tmp_path / "r", metrics=metrics), "--format", "json")
    assert res.exit_code == 0, res.output
    (row,) = _strict_json(res.stdout)
    assert (row["best_top1"], row["final_top1"], row["wall_min"], row["img_s"]) == (40.0, None, None, None)


def test_a_lone_surrogate_or_an_undecodable_name_prints(tmp_path):
    run = _run(tmp_path / os.fsdecode(b"r\xff"), run_json='{"splits": {"val": "a\\ud800b"}}')
    for fmt in ("markdown", "csv", "json"):
        res = _cli("report", run, "--format", fmt)
        assert res.exit_code == 0, res.output
        assert "a?b" in res.stdout and "r?" in res.stdout


def test_the_plot_draws_names_as_text_not_tex(tmp_path):
    matplotlib = pytest.importorskip("matplotlib")
    run = _run(tmp_path / "lr$\\frac$")
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # text stays text in the SVG
        res = _cli("report", run, "--plot", tmp_path / "p.svg")
    assert res.exit_code == 0, res.output
    assert "lr$\\frac$" in (tmp_path / "p.svg").read_text()


# ---- numbers that are no numbers: one line, or shown as missing; never exit 1


@pytest.mark.parametrize("params", ['{"total": 1e999, "compression": 1.0}', '{"total": 1000, "compression": NaN}',
                                    '{"total": -5, "compression": 1.0}', '{"total": 1e30, "compression": 1.0}',
                                    '{"total": 1000, "compression": 1e999}', "[" * 100_000])
def test_params_json_that_is_no_count_is_one_line(tmp_path, params):
    run = _run(tmp_path / "r", params=params)
    _one_line_exit_2(_cli("report", run), "r: params.json is not readable")


@pytest.mark.parametrize("run_json", ["[" * 100_000, '{"splits": {"val": "v"}, "sessions": [{"processes": 1e999}]}',
                                      '{"splits": {"val": 1e999}, "sessions": {"-1": 2}}'])
def test_run_json_that_cannot_be_read_is_left_out(tmp_path, run_json):
    res = _cli("report", _run(tmp_path / "r", run_json=run_json), "--format", "json")
    assert res.exit_code == 0, res.output
    (row,) = _strict_json(res.stdout)
    assert row["best_top1"] == 50.5


# ---- the plot's file


def _device(path: Path) -> None:
    try:
        os.mknod(path, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # /dev/null's numbers
    except PermissionError:
        pytest.skip("cannot make a device node here")


@pytest.mark.parametrize("kind", ["fifo", "device", "symlink"])
@pytest.mark.parametrize("overwrite", [False, True])
def test_only_a_regular_file_is_replaced_by_the_plot(tmp_path, kind, overwrite):
    run, plot, target = _run(tmp_path / "r"), tmp_path / "p.png", tmp_path / "thesis.tex"
    target.write_text("three years of work\n")
    {"fifo": os.mkfifo, "device": _device, "symlink": lambda p: p.symlink_to(target)}[kind](plot)
    before = os.lstat(plot)
    _one_line_exit_2(_cli("report", run, "--plot", plot, *(["--overwrite"] if overwrite else [])))
    after = os.lstat(plot)
    assert (after.st_mode, after.st_ino) == (before.st_mode, before.st_ino)
    assert target.read_text() == "three years of work\n"


# ---- anything in the files: a valid report or one line

_SPICY = ["|", "\\|", "\n", "\r", "\u2028", "\x85", "\x1b[2J", "# INJECTED", "<script>", "&amp;", "=2+5", "@", "-",
          "$\\frac$", "nan", "inf", "-inf", "1e999", "-1e999", "1e308", "\ufeff", "é", "\u202e", '"', ",", "\\ud800"]
_text = st.lists(st.one_of(st.text(max_size=8), st.sampled_from(_SPICY)), max_size=6).map("".join)
_number = st.one_of(st.floats(), st.integers(-10**30, 10**30), st.sampled_from(["nan", "inf", "1e999", "-0", ""]),
                    _text)
_json = st.recursive(st.one_of(st.none(), st.booleans(), st.floats(), st.integers(), _text),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_text, inner, max_size=3),
                     max_leaves=8)
_deep = st.sampled_from([10, 2000, 100_000]).map(lambda n: "[" * n + "]" * (n % 7))
_record = st.builds(lambda val, processes, host: {"splits": {"val": val}, "sessions": [
    {"host": host, "processes": processes}]}, _json, _number, _text).map(json.dumps)
_run_json = st.one_of(_record, _json.map(json.dumps), _text, _deep)
_params = st.one_of(st.just(json.dumps(PARAMS)), st.one_of(  # half the examples get past params.json
    st.builds(lambda t, c: json.dumps({"total": t, "compression": c}), _number, _number), _json.map(json.dumps),
    _text, _deep))
_measure = st.floats(0, 1000).map(str)  # three times among the choices: most cells of a row are numbers
_metrics_row = st.lists(st.one_of(_measure, _measure, _measure, _number.map(str)), min_size=12, max_size=12).map(
    lambda cells: ",".join(["1", *cells[1:]]))
_metrics = st.one_of(st.lists(_metrics_row, max_size=3).map(lambda rows: HEADER + "\n".join(rows)), _text)
_name = _text.filter(lambda n: n not in ("", ".", "..") and "/" not in n and "\0" not in n
                     and len(os.fsencode(n)) < 200)


@settings(max_examples=int(os.environ.get("ACL_FUZZ_EXAMPLES", 30)), deadline=None,
          derandomize="ACL_FUZZ_EXAMPLES" not in os.environ,  # the same examples on every CI run
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(name=_name, run_json=_run_json, params=_params, metrics=_metrics, by_seed=st.booleans())
def test_any_run_folder_gives_a_valid_report_or_one_line(name, run_json, params, metrics, by_seed):
    with tempfile.TemporaryDirectory() as tmp:
        run = _run(Path(tmp) / name, run_json=run_json, params=params, metrics=metrics)
        for fmt in ("markdown", "csv", "json"):
            _check(_cli("report", run, "--format", fmt, *(["--by-seed"] if by_seed else [])), fmt)


@pytest.mark.parametrize("total, compression", [(1.5, 1.0), (True, 1.0), (100, -3), (100, 0), ("100", 1.0)])
def test_a_count_that_is_no_whole_number_or_a_ratio_that_is_none_is_refused_by_name(tmp_path, total, compression):
    run = _run(tmp_path / "r")
    params = json.loads((run / "params.json").read_text())
    (run / "params.json").write_text(json.dumps({**params, "total": total, "compression": compression}))
    res = _cli("report", run, "--format", "json")
    assert res.exit_code == 2 and res.output == f"error: {run}: params.json is not readable (cut short or edited?)\n"


def test_negative_speeds_and_times_show_as_missing(tmp_path):
    metrics = HEADER + ROW.format(top1=40, epoch_time=-8.6, img_s=-7.3)
    (row,) = _strict_json(_cli("report", _run(tmp_path / "r", metrics=metrics), "--format", "json").stdout)
    assert (row["best_top1"], row["wall_min"], row["s_epoch"], row["img_s"]) == (40.0, None, None, None)


def test_plot_and_table_into_one_file_is_refused(tmp_path):
    run = _run(tmp_path / "r")
    res = _cli("report", run, "--out", tmp_path / "s.png", "--plot", tmp_path / "s.png")
    assert res.exit_code == 2 and "--plot and --out name the same file" in res.output
    assert not (tmp_path / "s.png").exists()


@pytest.mark.parametrize("final", ["fifo", "folder", "empty"])
def test_a_final_json_that_is_no_file_is_no_finished_run(tmp_path, final):
    import os

    run = _run(tmp_path / "r")
    (run / "final.json").unlink()
    {"fifo": lambda p: os.mkfifo(p), "folder": lambda p: p.mkdir(), "empty": lambda p: p.write_text("")}[final](
        run / "final.json")
    res = _cli("report", run, "--format", "json")
    assert res.exit_code == 0, res.output
    assert _strict_json(res.stdout)[0]["status"] == "unfinished"


@pytest.mark.parametrize("trainable", [-1, 1.5, True, "10", None, 10**30, [5], {"n": 5}])
def test_a_trainable_count_that_is_none_shows_as_missing(tmp_path, trainable):
    run = _run(tmp_path / "r")
    params = json.loads((run / "params.json").read_text())
    (run / "params.json").write_text(json.dumps({**params, "trainable": trainable}))
    res = _cli("report", run, "--format", "json")
    assert res.exit_code == 0, res.output
    (row,) = _strict_json(res.stdout)
    assert row["trainable"] is None and row["params"] == params["total"]
    (run / "params.json").write_text(json.dumps({**params, "trainable": params["total"]}))
    (row,) = _strict_json(_cli("report", run, "--format", "json").stdout)
    assert row["trainable"] == params["total"]
