"""`ditlens` command line: thin subcommands over the library.

    parser.py    the parser, one function per subcommand (torch-free: --help is instant)
    options.py   the shared option groups and the checks made before anything loads
    run.py       prompts, pipeline, settings, scorers and printing, shared by the subcommands
    commands.py  generate, find, disrupt, segment, demo, sweep, app
    transport.py transport, interpolate
    bench.py     bench findings|transport

Bad input exits with code 2 and a one-paragraph message (no traceback); set DITLENS_DEBUG=1
to see the traceback anyway.
"""

from __future__ import annotations

import os
import sys

from .examples import EXAMPLES
from .options import UsageError, check_args
from .parser import build_parser

__all__ = ["EXAMPLES", "UsageError", "build_parser", "main"]

#: commands whose --out folder is replaced as a whole under a lock (docs/outputs.md); sweep
#: resumes into its folder
REPLACED_OUTPUTS = ("demo", "generate", "find", "disrupt", "segment", "transport", "interpolate", "bench")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "bench" and args.out is None:
        args.out = f"runs/bench-{args.suite}"  # held under the lock like every replaced output
    try:
        check_args(args)
        from contextlib import nullcontext

        from ..io.outputs import output_lock

        # the output folder is checked and locked before any work: a refused or busy --out is
        # said at once, and a second run on it cannot start while this one works
        with output_lock(args.out) if args.command in REPLACED_OUTPUTS else nullcontext():
            args.func(args)
    except (ValueError, OSError) as err:  # OSError: missing file, disk full, unwritable folder, ...
        if os.environ.get("DITLENS_DEBUG"):
            raise
        print(f"ditlens {args.command}: error: {_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if os.environ.get("DITLENS_DEBUG"):
            raise
        kept = (
            "finished items are kept; run it again to resume"
            if args.command == "sweep"
            else "nothing of this run was written; an earlier result in its output folder is kept"
        )
        print(f"ditlens {args.command}: interrupted (Ctrl+C): {kept}.", file=sys.stderr)
        return 130
    return 0


def _error_message(err: Exception) -> str:
    """One paragraph; an OSError in its own words and the path it names, not "[Errno 28] ..."."""
    if not isinstance(err, OSError) or err.strerror is None:
        return str(err)
    if err.filename is None or str(err.filename) in err.strerror:
        return err.strerror
    return f"{err.strerror}: {str(err.filename)!r}"
