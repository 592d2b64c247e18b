"""The ``ptmon`` command's entry point: ``ptmon.cli`` imported with Ctrl-C deferred.

Importing the command line takes about half a second (numpy, the rule and ledger modules). A
KeyboardInterrupt raised in the middle of it leaves modules half-initialised, and some turn it
into errors of their own (numpy's "Importing the C-extensions failed"). So a Ctrl-C then is only
noted, and ends the command once the imports are done, as one later does. An address-space limit
below what the imports take is one line too, not an import traceback.
"""

from __future__ import annotations

import signal
import sys


def main() -> int:
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        from .cli import main as run
    except MemoryError:  # a ulimit -v below what the imports take (about 170 MiB)
        print("ptmon: error: out of memory while starting", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        print("ptmon: interrupted", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
