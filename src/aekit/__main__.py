"""`aekit` and `python -m aekit`: the command line's entry point.

`aekit models`, `aekit --version` and `aekit --help` are answered from the recipe table and
the command table (`aekit.commands`), which import no torch; everything else goes to
`aekit.cli`, whose imports (torch among them) take about two seconds on a small CPU.
"""

from __future__ import annotations

import os
import sys


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv == ["models"]:
        from aekit.recipes import recipe_table

        print(recipe_table())
        return 0
    if argv == ["--version"]:
        from aekit.version import __version__

        print(f"aekit {__version__}")
        return 0
    if argv in ([], ["-h"], ["--help"]):
        from aekit.commands import top_parser

        top_parser()[0].print_help()
        return 0 if argv else 2
    from aekit.cli import main as cli_main

    return cli_main(argv)


def run() -> int:
    """The console script: `main`, quiet when its reader goes away (`aekit models | head`)."""
    try:
        return main()
    except BrokenPipeError:
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(run())
