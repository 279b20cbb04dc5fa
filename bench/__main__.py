"""``python -m bench NAME [args]``: run one benchmark, tool or experiment by name."""

from __future__ import annotations

import importlib
import sys

from bench.catalog import BY_NAME, COMMANDS

HEADINGS = {
    "benchmark": "benchmarks",
    "tool": "tools",
    "experiment": "experiments (one-off probes)",
}


def usage() -> str:
    """The command list: one line per command, grouped by kind."""
    lines = ["usage: python -m bench NAME [args]   (python -m bench NAME --help for its options)"]
    width = max(len(c.name) for c in COMMANDS)
    for kind, heading in HEADINGS.items():
        lines += ["", f"{heading}:"]
        lines += [f"  {c.name:{width}}  {c.summary}" for c in COMMANDS if c.kind == kind]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Dispatch to the command's ``main``; its return value becomes the exit status."""
    args = sys.argv[1:] if argv is None else argv
    if not args or args[0] in {"-h", "--help", "help"}:
        print(usage())
        return 0
    command = BY_NAME.get(args[0])
    if command is None:
        print(f"unknown command {args[0]!r}\n\n{usage()}", file=sys.stderr)
        return 2
    sys.argv = [f"python -m bench {command.name}", *args[1:]]  # argparse's prog in --help
    result = importlib.import_module(command.module).main(args[1:])
    return result if isinstance(result, int) else 0


if __name__ == "__main__":
    raise SystemExit(main())
