"""The package layout: one job per module, imports flowing one way, and runs written before a move still
working after it."""
import ast
import re
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OLD_RUN = ROOT / "tests" / "fixtures" / "run_b23f870"


def _imports(path: Path, package: str) -> set[str]:
    """The acl_cli modules a file imports at its top level."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.level:
            base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
            if node.module:
                found.add(f"{base}.{node.module}")
            else:  # from . import a, b: submodules or members of the package
                found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def test_the_config_module_knows_nothing_of_the_models_and_no_module_imports_in_a_circle():
    graph = {}
    for path in (ROOT / "acl_cli").rglob("*.py"):
        module = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
        graph[module] = {m for m in _imports(path, package) if m.startswith("acl_cli")}
    assert not any(m.startswith("acl_cli.models") for m in graph["acl_cli.config"])

    edges = {m: {d if d in graph else d.rsplit(".", 1)[0] for d in deps} for m, deps in graph.items()}  # a member -> its module

    def reaches(start: str, target: str, seen: set) -> bool:
        for dep in edges[start] - seen:
            seen.add(dep)
            if dep == target or reaches(dep, target, seen):
                return True
        return False
    assert [m for m in edges if reaches(m, m, set())] == []


def test_no_private_name_is_imported_across_modules():
    for path in list((ROOT / "acl_cli").rglob("*.py")) + list((ROOT / "scripts").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").startswith("acl_cli")):
                private = [a.name for a in node.names if a.name.startswith("_") and a.name != "__version__"]
                assert not private, f"{path.name} imports {private} from {node.module}"


def test_a_run_written_before_the_split_still_evaluates_resumes_and_reports(tmp_path, cli):
    run = tmp_path / "run"
    shutil.copytree(OLD_RUN, run)
    res = cli("eval", run, "--format", "json")
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["samples"] == 359
    res = cli("train", "--resume", run)
    assert res.exit_code == 0, res.output
    assert "epoch   2/2" in res.output
    assert [line.split(",")[0] for line in (run / "metrics.csv").read_text().splitlines()] == ["epoch", "1", "2"]
    res = cli("report", run, "--format", "json")
    assert res.exit_code == 0 and json.loads(res.output)[0]["epochs"] == "2/2"


LIMITS = {"module": 500, "class": 250, "function": 60}  # lines, acl_cli only (tests, scripts, fixtures excluded)


def _too_long() -> list[str]:
    over = []
    for path in sorted((ROOT / "acl_cli").rglob("*.py")):
        name = path.relative_to(ROOT).as_posix()
        source = path.read_text()
        if source.count("\n") > LIMITS["module"]:
            over.append(f"{name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            kind = "class" if isinstance(node, ast.ClassDef) else \
                "function" if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) else None
            if kind and node.end_lineno - node.lineno + 1 > LIMITS[kind]:
                over.append(f"{name}: {kind} {node.name} has {node.end_lineno - node.lineno + 1} lines")
    return over


def test_no_module_class_or_function_is_over_its_limit():
    assert _too_long() == []


def test_the_limits_check_finds_a_long_function(tmp_path, monkeypatch):
    """The check above can fail: a 61-line function in a module of the package is named."""
    package = tmp_path / "acl_cli"
    package.mkdir()
    body = "".join(f"    x{i} = {i}\n" for i in range(60))
    (package / "long.py").write_text(f"def long():\n{body}")
    monkeypatch.setattr(__import__(__name__), "ROOT", tmp_path)
    assert _too_long() == ["acl_cli/long.py: function long has 61 lines"]


def test_the_readme_code_map_names_every_module_and_no_other():
    readme = (ROOT / "README.md").read_text()
    table = readme.split("### Code map", 1)[1].split("\n#", 1)[0]
    named = set()
    for line in table.splitlines():
        if line.startswith("| `"):
            first, *_ = line.strip("|").split("|")
            modules = re.findall(r"`([\w/]+(?:\.py)?)`", first)
            package = modules[0] if len(modules) == 1 and modules[0].endswith("/") else ""
            named.update(m for m in modules if m.endswith(".py"))
            if package:  # a package's row names its modules in the second column
                named.update(package + m for m in re.findall(r"`(\w+\.py)`", line.split("|", 2)[2]))
                named.add(package + "__init__.py")
    present = {p.relative_to(ROOT / "acl_cli").as_posix() for p in (ROOT / "acl_cli").rglob("*.py")}
    assert named == present
