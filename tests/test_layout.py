"""The package layout: one job per module, imports flowing one way, and runs written before a move still
working after it."""
import ast
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
