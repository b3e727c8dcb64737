"""Test-only: a process that runs data_tools commands in forked children armed to die at a file-system step.

Importing the commands once and forking for each run makes a kill-point
sweep affordable (a fresh interpreter costs half a second per run). Reads
one JSON request per line on stdin, ``{"argv": [...], "roots": [...],
"at": k, "trace": path-or-null}`` (with ``"command": "streamed"`` or
``"atlas"``, the argv goes to that script's main instead of data_tools'), and answers one JSON line per request on
stdout: ``{"exit": code}`` or ``{"signal": number}``.
"""

import json
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(os.path.dirname(HERE)))  # the repository root

# Imported before forking, what the commands import when they run included: the children start warm.
import imagehash  # noqa: E402, F401
import scipy.sparse.csgraph  # noqa: E402, F401

import data_tools.clean  # noqa: E402, F401
import data_tools.crawl  # noqa: E402, F401
import data_tools.split  # noqa: E402, F401
from data_tools.cli import main  # noqa: E402

sys.path.insert(0, os.path.dirname(HERE))
from killpoint import atlas, steps, streamed  # noqa: E402

COMMANDS = {"data_tools": main, "streamed": streamed.main, "atlas": atlas.main}


def serve() -> None:
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                sys.stdout = open(os.devnull, "w")
                steps.arm(request["roots"], request["at"], request.get("trace"))
                code = COMMANDS[request.get("command", "data_tools")](request["argv"])
            except BaseException:
                traceback.print_exc()
            finally:
                sys.stderr.flush()
                os._exit(code)
        _, status = os.waitpid(pid, 0)
        answer = {"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status) else {"exit": os.WEXITSTATUS(status)}
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    serve()
