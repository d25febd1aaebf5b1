"""``streamscore`` (and ``python -m streamscore_cli``): holds a SIGTERM that comes while the
product is still importing (see :mod:`streams.early_stop`), then runs the command."""

from __future__ import annotations

import sys

from streams.early_stop import hold_sigterm


def main() -> int:
    hold_sigterm()
    from streamscore_cli.main import main as run_command

    return run_command()


if __name__ == "__main__":
    sys.exit(main())
