"""A fuzzer of what a user can be sent or type (issue 31), through the real CLI: config files (acl config show,
acl count-params), --set values, checkpoints (acl eval, acl export, a distillation teacher, model.csg.init_from,
model.pretrained, acl import-original), shipped-config names and --out paths. Whatever they hold, acl exits 0,
or prints one line starting with "error: " and exits 2: never exit 1, never a traceback; and it writes nothing
but the output it was asked for (each example runs in a fresh folder that is its working and home directory).
ACL_FUZZ_EXAMPLES=N runs N examples per fuzzer instead of the default few (acl report has its own fuzzer in
test_report_hostile.py)."""
import contextlib
import copy
import dataclasses
import hashlib
import io
import os
import re
import stat
import tempfile
import typing
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner
from hypothesis import HealthCheck, Phase, event, example, given, settings
from hypothesis import strategies as st

from acl_cli.cli import main
from acl_cli.config import (CSGConfig, DataConfig, DistillConfig, ModelConfig, OptimConfig, ScheduleConfig,
                            TrainConfig, load_config)
from acl_cli.training import train

ROOT = Path(__file__).resolve().parents[1]
QUICKSTART = ROOT / "configs/quickstart.yaml"
EXAMPLES = int(os.environ.get("ACL_FUZZ_EXAMPLES", 25))
# derandomized unless a longer hunt is asked for: the suite (and CI) runs the same examples every time
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="ACL_FUZZ_EXAMPLES" not in os.environ,
                phases=[p for p in Phase if p != Phase.explain],  # minutes
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much,
                                       HealthCheck.large_base_example])
# a model and data small enough that a checkpoint that loads trains, evaluates and exports in well under a second
TINY = ["model.arch=resnet20", "model.num_classes=2", "model.csg={slice_shape: [4, 4, 3, 3], code_size: 8}",
        "data.name=synthetic", "data.synthetic_size=8", "data.image_size=8", "data.val_split=0.5", "data.batch_size=4",
        "data.workers=0", "train.epochs=1", "train.progress=false"]
TINY_DATA = [s for s in TINY if s.startswith("data.")] + ["train.progress=false"]


def _sets(items):
    return [a for s in items for a in ("--set", s)]


def _cli(*args):
    return CliRunner().invoke(main, [os.fsdecode(a) if isinstance(a, (bytes, os.PathLike)) else str(a) for a in args],
                              catch_exceptions=False)


def _check(res, what: str = "") -> None:
    """Exit 0, or exit 2 with exactly one line on stderr, "error: ...": never exit 1, never a traceback."""
    assert "Traceback" not in res.output, res.output
    if res.exit_code == 0:
        event(f"{what}: exit 0")  # pytest --hypothesis-show-statistics: how far the examples got
        return
    assert res.exit_code == 2, res.output
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    event(f"{what}: exit 2, {re.sub(r'/tmp/[^/ ]+', '', lines[0])[7:50]}")


# ---- each example in a folder of its own: its working directory and $HOME, compared before and after


@contextlib.contextmanager
def _sandbox():
    cwd, home = os.getcwd(), os.environ.get("HOME")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp).resolve()
        (tmp / "home").mkdir()
        os.chdir(tmp)
        os.environ["HOME"] = str(tmp / "home")  # ~ in a name or a path lands here
        try:
            yield tmp
        finally:
            os.chdir(cwd)
            if home is None:
                os.environ.pop("HOME", None)
            else:
                os.environ["HOME"] = home


def _tree(root: Path) -> dict[str, tuple]:
    """Every entry under ``root`` (links not followed, FIFOs never opened): kind and content."""
    found = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            mode = os.lstat(path).st_mode
            rel = path.relative_to(root).as_posix()
            if stat.S_ISLNK(mode):
                found[rel] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                found[rel] = ("file", hashlib.sha256(path.read_bytes()).hexdigest())
            else:
                found[rel] = (stat.S_IFMT(mode),)
    return found


def _only_changed(root: Path, before: dict, allowed: tuple[str, ...] = ()) -> None:
    """Nothing under ``root`` changed but the ``allowed`` paths (relative), what is under them, and the
    folders made to hold them."""
    after = _tree(root)

    def asked(rel: str) -> bool:
        return any(rel == a or rel.startswith(a + "/") or (a.startswith(rel + "/") and rel not in before)
                   for a in allowed)

    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k) and not asked(k))
    assert not changed, f"written besides {allowed}: {changed}"


# ---- plain values: every kind YAML and torch.save can hold, and the edges of each

_SPICY = ["\0", "\n", "\r\n", "#", "# comment", "'", '"', ":", ": ", "- ", "{", "}", "[", "]", "&a", "*a",
          "!!python/object", "%", "@", "`", "|", ">", "~", "~/x", "..", "../..", "/", "\t", "\x85", "\u2028", "\ufeff",
          "é", "\u202e",
          "nan", ".inf", "1e999", "0o10", "0x1F", "010", "1_000", "1:20", "yes", "off", "null", "resnet20", "cifar10",
          "synthetic", "auto", "cpu", "cuda:99", "authors", "all", "flat", "tile", "json:loads", "torchvision:nope",
          "timm:nope", "no_such_module_xyz:f", " ", ""]
_text = st.lists(st.one_of(st.text(max_size=6), st.sampled_from(_SPICY)), max_size=4).map("".join)
_int = st.one_of(st.integers(-3, 40), st.sampled_from([2**31, 2**32, 2**63 - 1, 2**63, -2**63 - 1, 2**64, 10**30,
                                                         10**400]))
_float = st.one_of(st.floats(), st.sampled_from([0.0, -0.0, 1e-400, 1e308, 0.5, 0.999999]))
_scalar = st.one_of(st.none(), st.booleans(), _int, _float, _text)
_plain = st.recursive(_scalar, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(
    st.one_of(_text, st.integers(-2, 2)), inner, max_size=3), max_leaves=8)


def _fields(cls) -> dict[str, typing.Any]:
    return {f.name: f for f in dataclasses.fields(cls)}


SECTIONS = {"model": ModelConfig, "model.csg": CSGConfig, "data": DataConfig, "optim": OptimConfig,
            "schedule": ScheduleConfig, "train": TrainConfig, "distill": DistillConfig}
KEYS = sorted(f"{section}.{name}" for section, cls in SECTIONS.items() for name in _fields(cls))
# values that get past a key's check, so that the fuzzer reaches what comes after it
_GOOD = {"model.arch": ["resnet20", "mobilenet_v2_cifar", "shufflenet_v2_0_5", "densenet_bc_40_12", "json:loads",
                        "torchvision:nope", "timm:nope", "no_such_module_xyz:factory", ":", "a:b:c"],
         "model.csg": [None, {"slice_shape": [4, 4, 3, 3], "code_size": 8}, {"slice_shape": [4, 4, 1, 1],
                                                                            "code_size": 1}],
         "model.csg.slice_shape": [[4, 4, 3, 3], [1, 1, 1, 1], [64, 64, 3, 3], [2**40, 1, 3, 3], [4, 4, 3], []],
         "model.csg.targets": ["authors", "all", ["block"], ["stem", "pointwise"], [], ["nope"]],
         "data.name": ["synthetic", "digits", "cifar10", "imagefolder"], "data.root": ["data", "~", "/nonexistent"],
         "train.device": ["cpu", "auto", "cuda:0"], "schedule.milestones": [[0.5], [1, 2], [2, 1], [0.5, 3]],
         "optim.betas": [[0.9, 0.999], [0.9], [1.0, 0.5]], "distill.teacher": ["t.pt", "~/t.pt", "dir", "fifo"]}


def _value_for(key: str):
    return st.one_of(_plain, st.sampled_from(_GOOD[key])) if key in _GOOD else _plain


def _section(section: str):
    names = sorted(_fields(SECTIONS[section]))
    pairs = st.one_of(*[st.tuples(st.just(n), _value_for(f"{section}.{n}")) for n in names],
                      st.tuples(_text, _plain))
    body = st.lists(pairs, max_size=5).map(dict)
    if section == "model":  # a csg block of its own keys too
        body = st.tuples(body, st.one_of(st.none(), _section("model.csg"), _plain)).map(
            lambda t: {**t[0], "csg": t[1]} if t[1] is not None else t[0])
    return st.one_of(body, body, body, _plain)


_BASES = ["quickstart", "cifar10/resnet20", "base/cifar10", "configs/quickstart.yaml", "self.yaml", "fifo", "dir",
          "loop", "dangling", "/dev/zero", "/dev/null", "../outside.yaml", "~/x.yaml", "", " ", "\0", 5, None, ["a"]]
_sections = st.builds(
    lambda sections, base, extra: {**sections, **({"base": base} if base is not None else {}), **extra},
    st.fixed_dictionaries({}, optional={s: _section(s) for s in SECTIONS if s != "model.csg"}),
    st.one_of(st.none(), st.sampled_from(_BASES), _text),
    st.dictionaries(_text, _plain, max_size=2))
TINY_CONFIG = load_config(QUICKSTART, TINY).to_dict()


def _set_dotted(tree: dict, key: str, value) -> None:
    node = tree
    parts = key.split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _drop_dotted(tree: dict, key: str) -> None:
    *parts, last = key.split(".")
    for part in parts:
        tree = tree.get(part) if isinstance(tree, dict) else None
    if isinstance(tree, dict):
        tree.pop(last, None)


def _mutated(edits) -> dict:
    """The tiny run's config (every key given) with a few settings changed, dropped or added."""
    data = copy.deepcopy(TINY_CONFIG)
    for key, value in edits:
        if isinstance(value, str) and value == "<drop>":
            _drop_dotted(data, key)
        else:
            _set_dotted(data, key, copy.deepcopy(value))
    return data


_setting = st.sampled_from(KEYS).flatmap(lambda k: st.tuples(st.just(k), st.one_of(
    _value_for(k), st.just("<drop>"))))
_config_data = st.one_of(_sections, st.lists(st.one_of(_setting, st.tuples(
    st.sampled_from(sorted(SECTIONS)).map(lambda s: s + ".x"), _plain)), max_size=3).map(_mutated))

# YAML that no dump writes: anchors and aliases, tags, merges, several documents, bombs, deep nesting
_RAW = ["&a {x: 1}", "*a", "*nope", "<<: *a", "<<: [*a, *a]", "!!python/object/apply:os.system ['true']",
        "!!python/name:os.system", "!!binary aGVsbG8=", "!!timestamp 2001-12-14", "!!set {a, b}", "!!omap [a: 1]",
        "!!float 1e999", "!!int 0x", "!!str", "!!float", "!!bool x", "!!timestamp", "!!int", "!custom 1",
        "? [a, b]\n: 1", "? {a: 1}\n: 2", "%YAML 1.1\n---",
        "---\na: 1\n---\nb: 2", "...", "\t- a", "{", "[", "a: [1, 2", "'unclosed", "\x00", "\ufeff", "\x85",
        "a: b: c", "- - - -", "model: &m {arch: resnet20}\ndata: *m"]
_BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n" for p, c in zip("abcdefgh", "bcdefghi"))
_deep = st.sampled_from([100, 2_000, 20_000]).flatmap(lambda n: st.sampled_from([
    "[" * n + "]" * n, "{a: " * n + "1" + "}" * n, "".join(f"{' ' * i}k{i}:\n" for i in range(min(n, 3000))) + "v",
    "- " * min(n, 3000) + "1"]))


def _dumped(data, flow: bool, unicode: bool) -> str:
    return yaml.safe_dump(data, default_flow_style=flow, allow_unicode=unicode, sort_keys=False)


def _splice(text: str, raw: list[str], at: list[int]) -> str:
    lines = text.splitlines()
    for snippet, i in zip(raw, at):
        lines.insert(i % (len(lines) + 1), snippet)
    return "\n".join(lines) + "\n"


_config_text = st.one_of(
    st.builds(_dumped, _config_data, st.booleans(), st.booleans()),
    st.builds(_splice, st.builds(_dumped, _config_data, st.booleans(), st.booleans()),
              st.lists(st.sampled_from(_RAW), min_size=1, max_size=3), st.lists(st.integers(0, 50), max_size=3)),
    st.lists(st.sampled_from(_RAW), min_size=1, max_size=4).map("\n".join),
    st.just(_BOMB), _deep, _text)
_config_file = st.one_of(_config_text.map(lambda t: t.encode("utf-8", "surrogatepass")), st.binary(max_size=64),
                         st.sampled_from([b"\xff\xfe", b"model:\n  arch: \xff\n", b"\x00" * 16]))


def _plant(tmp: Path) -> None:
    """What a folder someone works in holds: names a config, base, output or teacher may point at."""
    (tmp / "dir").mkdir()
    (tmp / "dir" / "config.yaml").write_text("model: {arch: resnet20}\n")
    os.mkfifo(tmp / "fifo")
    (tmp / "loop").symlink_to("loop")
    (tmp / "dangling").symlink_to("nowhere")
    (tmp / "notes.txt").write_text("three years of work\n")
    (tmp / "link_to_notes").symlink_to("notes.txt")
    (tmp / "link_to_dir").symlink_to("dir")


@FUZZ
@given(content=_config_file)
@example(content=b"optim:\n  lr: 1" + b"0" * 400 + b"\n")  # an int too large for a float setting
@example(content=b"model:\n  arch: resnet20\x00\n")  # a control character: PyYAML's reader refuses it at once
@example(content=b"base: loop\n")
@example(content=b"!!timestamp")  # PyYAML's constructors: AttributeError, KeyError (!!bool x), IndexError (!!float)
def test_any_config_file_is_shown_and_counted_or_one_line(content):
    with _sandbox() as tmp:
        _plant(tmp)
        (tmp / "self.yaml").write_bytes(content)
        before = _tree(tmp)
        for command in ("config show", "count-params"):
            _check(_cli(*command.split(), "--config", "self.yaml"), command)
        _only_changed(tmp, before)


# ---- --set KEY=VALUE on top of the quickstart

_key = st.one_of(st.sampled_from(KEYS), st.sampled_from(KEYS).map(lambda k: k.rsplit(".", 1)[0]),
                 st.lists(st.one_of(st.sampled_from(["model", "csg", "data", "arch", "0", "", " "]), _text),
                          min_size=1, max_size=4).map(".".join))
_yaml_value = st.one_of(_text, _plain.map(lambda v: yaml.safe_dump(v, default_flow_style=True).strip()),
                        st.sampled_from(_RAW), _deep)


@FUZZ
@given(sets=st.lists(st.tuples(_key, st.sampled_from(["=", "=", " = ", "==", ""]), _yaml_value).map("".join),
                     min_size=1, max_size=3))
@example(sets=["optim.lr=1" + "0" * 400])
@example(sets=["data.batch_size=!!int 0x", "optim.lr=!!float abc", "data.root=!!timestamp 2001-13-01"])
@example(sets=["data.root=!!bool x", "optim.lr=!!float", "train.seed=!!timestamp x"])
def test_any_set_value_is_shown_or_one_line(sets):
    with _sandbox() as tmp:
        before = _tree(tmp)
        _check(_cli("config", "show", "--config", QUICKSTART, *_sets(sets)), "config show")
        _only_changed(tmp, before)


# ---- checkpoints someone sent: acl's own (edited), anything torch.save writes, and the authors' format


def _quiet(*args, **kwargs):
    pass


class _Named(dict):
    """A fixture's dict that a failing example shows by its name, not its hundred tensors."""

    def __init__(self, name: str, value: dict):
        super().__init__(value)
        self.name = name

    def __repr__(self) -> str:
        return self.name

    def _repr_pretty_(self, printer, cycle) -> None:  # what hypothesis prints a failing example with
        printer.text(self.name)


@pytest.fixture(scope="module")
def good_state(tmp_path_factory) -> dict:
    """A real checkpoint of a tiny run, as plain data: the examples edit copies of it."""
    run = tmp_path_factory.mktemp("fuzz") / "run"
    train(load_config(QUICKSTART, TINY), run, log=_quiet)
    return _Named("good_state", torch.load(run / "best.pt", weights_only=True))


_small_tensor = st.one_of(
    st.lists(st.floats(width=32), max_size=4).map(lambda xs: torch.tensor(xs, dtype=torch.float32)),
    st.sampled_from([(), (0,), (1,), (2, 3), (1, 1, 1, 1), (4, 4, 3, 3)]).flatmap(lambda shape: st.sampled_from([
        torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int64, torch.uint8, torch.bool,
        torch.complex64]).map(lambda dtype: torch.zeros(shape, dtype=dtype))))
_saved = st.recursive(st.one_of(_scalar, _small_tensor, st.binary(max_size=4)), lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.lists(inner, max_size=2).map(tuple),
    st.dictionaries(st.one_of(_text, st.integers(-2, 2)), inner, max_size=3)), max_leaves=8)
_weights = st.dictionaries(st.one_of(_text, st.sampled_from(["csg.weight", "classifier.weight", "conv1.weight"])),
                           _small_tensor, max_size=4)


# one edit of a good checkpoint: (where, key, value); applied in order
_edit = st.one_of(
    st.tuples(st.just("top"), st.sampled_from(["format", "version", "config", "model", "progress", "classes",
                                               "input_shape", "optimizer", "imported"]), _saved),
    st.tuples(st.just("drop"), st.sampled_from(["format", "config", "model", "progress", "classes", "input_shape"]),
              st.none()),
    st.tuples(st.just("config"), st.sampled_from(KEYS), st.one_of(_plain, st.just("delete"))),
    st.sampled_from([("config", k, v) for k, vs in _GOOD.items() for v in vs]),
    st.tuples(st.just("weight"), st.integers(0, 200), st.one_of(_small_tensor, _saved, st.just("delete"))),
    st.tuples(st.just("extra"), st.one_of(_text, st.integers(-2, 2)), st.one_of(_small_tensor, _saved)),
    st.tuples(st.just("classes"), st.just(""), st.sampled_from([["class0", "class1"], ["class1", "class0"], ["a"],
                                                                [0, 1], "ab", 5, {"a": 1}, None, [None, None]])),
    st.tuples(st.just("input_shape"), st.just(""), st.sampled_from([[3, 8, 8], [3, 16, 16], [1, 8, 8], [], [3],
                                                                    [3, -1, 8], [3, 0, 8], [3, 10**12, 10**12],
                                                                    [1.5, 8, 8], "3x8x8", 5, [True, 8, 8]])))


def _edited(state: dict, edits) -> dict:
    state = copy.deepcopy(dict(state))  # a plain dict: torch.save would record the class _Named
    for where, key, value in edits:
        if where == "top":
            state[key] = value
        elif where == "drop":
            state.pop(key, None)
        elif where == "config" and isinstance(state.get("config"), dict):
            if isinstance(value, str) and value == "delete":
                _drop_dotted(state["config"], key)
            else:  # a copy: the strategies' own lists and dicts stay as drawn
                _set_dotted(state["config"], key, copy.deepcopy(value))
        elif where in ("weight", "extra") and isinstance(state.get("model"), dict) and state["model"]:
            if where == "extra":
                state["model"][key] = value
            else:
                name = sorted(state["model"])[key % len(state["model"])] if all(
                    isinstance(k, str) for k in state["model"]) else next(iter(state["model"]))
                if isinstance(value, str) and value == "delete":
                    del state["model"][name]
                else:
                    state["model"][name] = value
        elif where in ("classes", "input_shape"):
            state[where] = value
    return state


_checkpoint = st.one_of(
    st.lists(_edit, max_size=3).map(lambda edits: ("edited", edits)),
    st.lists(_edit, max_size=3).map(lambda edits: ("edited", edits)),
    st.fixed_dictionaries({}, optional={"format": st.one_of(st.just("acl-checkpoint"), _saved),
                                        "config": _saved, "model": st.one_of(_weights, _saved),
                                        "progress": _saved}).map(lambda d: ("saved", d)),
    _saved.map(lambda d: ("saved", d)),
    st.integers(1, 2000).map(lambda cut: ("truncated", cut)))


def _write_checkpoint(path: Path, good: dict, spec) -> None:
    kind, what = spec
    if kind == "truncated":  # a copy cut short, as an interrupted download leaves it
        buffer = io.BytesIO()
        torch.save(dict(good), buffer)
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) * what // 2001])
        return
    torch.save(_edited(good, what) if kind == "edited" else what, path)


@FUZZ
@given(spec=_checkpoint, fmt=st.sampled_from(["state_dict", "state_dict", "torchscript", "compact"]))
@example(spec=("edited", [("classes", "", 5)]), fmt="state_dict")  # classes that are no list
@example(spec=("truncated", 100), fmt="state_dict")  # torch's zip reader: OSError EINVAL
def test_any_checkpoint_evaluates_and_exports_or_one_line(good_state, spec, fmt):
    with _sandbox() as tmp:
        _plant(tmp)
        _write_checkpoint(tmp / "sent.pt", good_state, spec)
        before = _tree(tmp)
        _check(_cli("eval", "sent.pt", *_sets(TINY_DATA)), "eval")
        _only_changed(tmp, before)
        how = ["--compact"] if fmt == "compact" else ["--format", fmt]
        _check(_cli("export", "sent.pt", "--out", "out.pt", *how), "export")
        _only_changed(tmp, before, ("out.pt",))


@FUZZ
@given(spec=_checkpoint, role=st.sampled_from(["distill.teacher", "model.csg.init_from", "model.pretrained"]))
@example(spec=("saved", {"format": "acl-checkpoint"}), role="model.pretrained")  # a marker and nothing else
@example(spec=("edited", [("classes", "", 5)]), role="distill.teacher")
@example(spec=("edited", [("input_shape", "", 5)]), role="distill.teacher")  # a shape that is no list
def test_any_checkpoint_as_teacher_generator_or_weights_trains_or_is_one_line(good_state, spec, role):
    with _sandbox() as tmp:
        _plant(tmp)
        _write_checkpoint(tmp / "sent.pt", good_state, spec)
        before = _tree(tmp)
        _check(_cli("train", "--config", QUICKSTART, "--out", "run", *_sets(TINY), "--set", f"{role}=sent.pt"), role)
        _only_changed(tmp, before, ("run",))


@pytest.fixture(scope="module")
def authors_state(good_state) -> dict:
    """The good checkpoint's weights as the authors' code saves them (see test_authors_import.py)."""
    from test_authors_import import authors_resnet_state

    from acl_cli import create_model

    model = create_model("resnet20", 2, {"slice_shape": [4, 4, 3, 3], "code_size": 8})
    model.load_state_dict(good_state["model"])
    return _Named("authors_state", authors_resnet_state(model))


_authors_edit = st.one_of(
    st.tuples(st.just("top"), st.sampled_from(["net", "acc", "epoch"]), st.one_of(_saved, st.sampled_from([
        float("nan"), float("inf"), -1, 2**100, True, torch.tensor([1.0, 2.0]), torch.tensor(True),
        torch.tensor(1 + 2j)]))),
    st.tuples(st.just("drop"), st.sampled_from(["net", "acc", "epoch"]), st.none()),
    st.tuples(st.just("weight"), st.integers(0, 200), st.one_of(_small_tensor, _saved, st.just("delete"))),
    st.tuples(st.just("extra"), st.one_of(_text, st.integers(-2, 2), st.sampled_from([
        "module.stage_1.0.CSG.weight", "module.CLG.weight", "module.classifier.weight", "module.linear.weight",
        "CSG.weight", "module."])), _small_tensor))


def _authors_edited(net_state: dict, edits) -> dict:
    state = copy.deepcopy(dict(net_state))
    for where, key, value in edits:
        if where == "top":
            state[key] = value
        elif where == "drop":
            state.pop(key, None)
        elif isinstance(state.get("net"), dict) and state["net"]:
            if where == "extra":
                state["net"][key] = value
            else:
                name = sorted(state["net"], key=str)[key % len(state["net"])]
                if isinstance(value, str) and value == "delete":
                    del state["net"][name]
                else:
                    state["net"][name] = value
    return state


@FUZZ
@given(spec=st.one_of(st.lists(_authors_edit, max_size=3).map(lambda e: ("edited", e)),
                      st.lists(_authors_edit, max_size=3).map(lambda e: ("edited", e)),
                      st.dictionaries(st.sampled_from(["net", "acc", "epoch"]), st.one_of(_weights, _saved),
                                      max_size=3).map(lambda d: ("saved", d)),
                      _saved.map(lambda d: ("saved", d))),
       arch=st.sampled_from(["resnet20", "resnet20", "resnet32", "densenet_bc_40_12", "shufflenet_v2_0_5",
                             "mobilenet_v2_cifar", "resnet18", "nope", "torchvision:resnet18"]))
@example(spec=("edited", [("extra", 0, torch.zeros(1))]), arch="resnet20")  # a key that is no name
@example(spec=("edited", [("extra", "module.stage_1.0.CSG.weight", torch.tensor(0.))]), arch="resnet20")  # 0-d
def test_any_authors_file_imports_or_is_one_line(authors_state, spec, arch):
    with _sandbox() as tmp:
        _plant(tmp)
        kind, what = spec
        torch.save(_authors_edited(authors_state, what) if kind == "edited" else what, tmp / "ckpt.t7")
        before = _tree(tmp)
        _check(_cli("import-original", "ckpt.t7", "--arch", arch, "--out", "ours.pt"), "import")
        _only_changed(tmp, before, ("ours.pt",))


# ---- names: --config NAME and --out PATH

_name_part = st.one_of(st.sampled_from(["quickstart", "quickstart.yaml", "cifar10", "resnet20", "base", "configs",
                                        "imagenet", "..", ".", "", "~", "~root", "dir", "fifo", "loop", "dangling",
                                        "notes.txt", "link_to_notes", "link_to_dir", "self.yaml", "run", "tb",
                                        "best.pt", "last.pt", "config.yaml", "sent.pt", "x" * 300, "é" * 200,
                                        "a\nb", " ", "-x", "--help"]), _text)
_name = st.lists(_name_part, min_size=1, max_size=4).map("/".join).filter(lambda n: "\0" not in n)  # argv holds none


@FUZZ
@given(name=st.one_of(_name, _name.map(lambda n: "/" + n), st.just("x" * 5000)))
@example(name="cifar10/../quickstart")
@example(name="loop")  # a link to itself: Path.resolve() raises RuntimeError
def test_any_config_name_resolves_or_is_one_line(name):
    with _sandbox() as tmp:
        _plant(tmp)
        (tmp / "self.yaml").write_text("base: quickstart\n")
        before = _tree(tmp)
        _check(_cli("config", "show", "--config", name), "config show")
        _only_changed(tmp, before)


def _inside(path: str) -> bool:
    """Whether ``path`` is relative and stays in the folder it is relative to (and names something in it)."""
    if path.startswith("/"):
        return False
    depth = 0
    for part in path.split("/"):
        depth += -1 if part == ".." else 0 if part in ("", ".") else 1
        if depth < 0:
            return False
    return depth > 0


@FUZZ
@given(out=_name.filter(lambda n: _inside(n) and not n.startswith("-")), absolute=st.booleans(),
       overwrite=st.booleans(), fmt=st.sampled_from(["state_dict", "compact"]))
@example(out="new/..", absolute=False, overwrite=False, fmt="state_dict")  # no folder made for a file named ..
@example(out="new/" + "x" * 300, absolute=False, overwrite=False, fmt="state_dict")  # a name too long: no new/ left
@example(out="new/../out.pt", absolute=False, overwrite=False, fmt="state_dict")  # no new/ made to go through
def test_any_out_path_is_written_or_one_line(good_state, out, absolute, overwrite, fmt):
    with _sandbox() as tmp:
        _plant(tmp)
        torch.save(dict(good_state), tmp / "sent.pt")
        run = tmp / "run"  # an acl run: its files are never an export's output
        run.mkdir()
        (run / "run.json").write_text('{"sessions": []}')
        (run / "tb").mkdir()
        before = _tree(tmp)
        path = tmp / out if absolute else out
        assert Path(os.path.abspath(path)).is_relative_to(tmp), path  # the fuzzer writes in its folder only
        res = _cli("export", "sent.pt", "--out", path, *(["--compact"] if fmt == "compact" else []),
                   *(["--overwrite"] if overwrite else []))
        _check(res, "export")
        asked = os.path.relpath(os.path.realpath(tmp / out), tmp)  # through a link to a folder: in that folder
        _only_changed(tmp, before, (asked,) if res.exit_code == 0 else ())


def test_a_run_asks_git_about_the_clone_without_writing_to_it(monkeypatch):
    """Found by tracing the fuzzer's runs: a run records the clone's commit with git status, which took
    .git/index.lock and rewrote the index (a commit of the user's at that moment failed); now it only reads."""
    import subprocess

    from acl_cli import records

    calls, real = [], subprocess.run

    def run(args, *rest, **kwargs):
        calls.append(list(args))
        return real(args, *rest, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    records._git_commit()
    if not calls:
        pytest.skip("acl does not run from a git clone here")
    assert all("--no-optional-locks" in args for args in calls if "status" in args), calls
