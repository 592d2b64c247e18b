"""The ``ptmon`` command's entry point: ``ptmon.cli`` imported under a Ctrl-C guard.

Importing the command line takes about half a second (numpy, the rule and ledger modules); a
Ctrl-C in that time, or an address-space limit it exceeds, should end the command as one later
does, not with an import traceback.
"""

from __future__ import annotations

import sys


def main() -> int:
    try:
        from .cli import main as run
    except KeyboardInterrupt:
        print("ptmon: interrupted", file=sys.stderr)
        return 130
    except MemoryError:  # a ulimit -v below what the imports take (about 170 MiB)
        print("ptmon: error: out of memory while starting", file=sys.stderr)
        return 2
    return run()


if __name__ == "__main__":
    sys.exit(main())
