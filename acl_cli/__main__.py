"""The ``acl`` command (``python -m acl_cli`` and the installed ``acl`` script)."""
from acl_cli import interrupts

interrupts.install()  # first: a Ctrl-C while the CLI's modules load is held for the import, never lost


def main() -> None:
    from acl_cli.cli import run

    run()


if __name__ == "__main__":
    import os
    import sys

    # ``python -m`` puts the working directory first on the import path; the ``acl`` command does not. Drop it,
    # so both find the same modules, and a .py file lying beside a run cannot stand in for one a config names.
    if sys.path and sys.path[0] in ("", os.getcwd()):
        del sys.path[0]
    main()
