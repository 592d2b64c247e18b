"""The ``ptmon`` command's entry point: ``ptmon.cli`` imported with Ctrl-C deferred.

Importing the command line takes about half a second (numpy, the rule and ledger modules). A
KeyboardInterrupt raised in the middle of it leaves modules half-initialised, and some turn it
into errors of their own (numpy's "Importing the C-extensions failed"). So a Ctrl-C then is only
noted, and ends the command once the imports are done, as one later does. An address-space limit
below what the imports take is one line too, not an import traceback (a MemoryError, or the
loader failing to map an extension module).
"""

from __future__ import annotations

import signal
import sys

from .errors import loader_out_of_memory, memory_limit


def main() -> int:
    interrupted: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: interrupted.append(signum))
    try:
        from .cli import main as run
    except MemoryError:  # a ulimit -v below what the imports take (about 170 MiB)
        print(f"ptmon: error: out of memory while starting{memory_limit()}", file=sys.stderr)
        return 2
    except ImportError as exc:  # or the loader could not map an extension module under that limit
        if not loader_out_of_memory(exc):
            raise
        print(f"ptmon: error: out of memory while starting{memory_limit()}: {exc}", file=sys.stderr)
        return 2
    finally:
        signal.signal(signal.SIGINT, previous)
    if interrupted:
        print("ptmon: interrupted", file=sys.stderr)
        return 130
    return run()


if __name__ == "__main__":
    sys.exit(main())
