"""Test-only: the ``bagnet-keras`` command, SIGKILLed right after it commits its K-th part.

python tests/killpoint/compare.py K ARGS...
"""

import os
import signal
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))

from bagnet_keras.app.cli import main  # noqa: E402
from bagnet_keras.core import stream  # noqa: E402


def killed_after(k: int, argv: list) -> int:
    write = stream.PartStore.write
    committed = []

    def write_then_die(self, index, arrays, meta):
        write(self, index, arrays, meta)
        committed.append(index)
        if len(committed) == k:
            os.kill(os.getpid(), signal.SIGKILL)

    stream.PartStore.write = write_then_die
    return main(argv)


if __name__ == "__main__":
    sys.exit(killed_after(int(sys.argv[1]), sys.argv[2:]))
