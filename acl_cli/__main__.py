import os
import sys

# ``python -m`` puts the working directory first on the import path; the ``acl`` command does not. Drop it,
# so both find the same modules, and a .py file lying beside a run cannot stand in for one a config names.
if sys.path and sys.path[0] in ("", os.getcwd()):
    del sys.path[0]

from .cli import run  # noqa: E402

run()
