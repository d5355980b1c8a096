"""The README is the front door: CI runs its quickstart commands verbatim, so they cannot drift apart."""
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ci_runs_the_readme_install_and_test_commands_verbatim():
    readme = (ROOT / "README.md").read_text()
    quickstart = readme.split("## Quickstart", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```bash\n(.*?)```", quickstart, flags=re.S)
    install, tests = blocks[0].strip(), blocks[1].strip()
    assert "pip install" in install and "acl train --config configs/quickstart.yaml" in install
    assert tests == ".venv/bin/python -m pytest -q"
    ci_lines = (ROOT / ".ci" / "run").read_text().splitlines()
    assert install in ci_lines and ci_lines[-1] == tests  # the tests last: their status is CI's
    assert "set -euo pipefail" in ci_lines
