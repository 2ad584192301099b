"""``python -m jaxrnn.launch``: start N local processes of one command as one distributed JAX
program.

    python -m jaxrnn.launch -n 2 -- jaxrnn train --task digits --epochs 1
    python -m jaxrnn.launch -n 4 --timeout 600 -- python my_script.py

This module is the command line only (a front door beside ``jaxrnn.cli``); the runner is
:func:`jaxrnn.parallel.launch.launch`. Each process gets ``JAXRNN_COORDINATOR=127.0.0.1:PORT``
(a free port), ``JAXRNN_NUM_PROCESSES`` and ``JAXRNN_PROCESS_ID``, which ``jaxrnn train`` (and
:func:`jaxrnn.parallel.initialize`) reads; output is streamed with a ``[rank i]`` prefix. When
one process exits with an error, the others are stopped at once and the launcher exits with that
status and a message naming the rank; after ``--timeout`` seconds everything is stopped and the
exit status is 124.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from jaxrnn.parallel.launch import launch


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--" in argv:
        split = argv.index("--")
        own, command = argv[:split], argv[split + 1:]
    else:
        own, command = argv, []
    p = argparse.ArgumentParser(
        prog="python -m jaxrnn.launch", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="python -m jaxrnn.launch -n N [--timeout S] [--port P] -- COMMAND ...")
    p.add_argument("-n", "--num-processes", type=int, required=True,
                   help="number of local processes")
    p.add_argument("--timeout", type=float, default=None,
                   help="stop every process after this many seconds (exit status 124)")
    p.add_argument("--port", type=int, default=None,
                   help="coordinator port on 127.0.0.1 (default: a free one)")
    p.add_argument("--grace", type=float, default=5.0,
                   help="seconds between SIGTERM and SIGKILL when stopping (default 5)")
    args = p.parse_args(own)
    if not command:
        p.error("expected the command to run after '--', e.g. -- jaxrnn train --task digits")
    if args.num_processes < 1:
        p.error(f"-n: expected an integer >= 1, got {args.num_processes}")
    if args.port is not None and not 0 < args.port < 65536:
        p.error(f"--port: expected a port in 1..65535, got {args.port}")
    try:
        result = launch(command, args.num_processes, timeout=args.timeout, port=args.port,
                        grace=args.grace)
    except ValueError as e:  # a coordinator port already in use
        print(f"python -m jaxrnn.launch: error: --{e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxrnn.launch: interrupted; stopped every process", file=sys.stderr)
        return 130
    return result.returncode


if __name__ == "__main__":
    sys.exit(main())
