"""Print the dependencies pyproject.toml declares (plus chosen extras), one requirement a line.

The images install dependencies from this list in a layer that depends on pyproject.toml alone,
so a change to the code reinstalls only the final ``pip install --no-deps .`` layer.

    python deploy/docker/requirements.py pyproject.toml --extras convert > requirements.txt
"""

from __future__ import annotations

import argparse
import sys
import tomllib
from pathlib import Path


class UnknownExtraError(ValueError):
    """An extra was asked for that pyproject.toml does not define."""


def requirements(pyproject: Path, extras: list[str]) -> list[str]:
    """The project's dependencies followed by those of each extra, in declaration order."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    lines = list(project.get("dependencies", []))
    for extra in extras:
        if extra not in optional:
            known = ", ".join(sorted(optional)) or "none"
            raise UnknownExtraError(
                f"extra {extra!r} is not in {pyproject} (known extras: {known}); "
                "fix the EXTRAS build argument"
            )
        lines.extend(req for req in optional[extra] if req not in lines)
    return lines


def parse_extras(value: str) -> list[str]:
    """``"convert, gpu"`` → ``["convert", "gpu"]``; the empty string → ``[]``."""
    return [part.strip() for part in value.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    """Command-line entry: print the requirements, or a one-line error and exit 2."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pyproject", type=Path)
    parser.add_argument("--extras", default="", help="comma list of extras, e.g. 'convert'")
    args = parser.parse_args(argv)
    try:
        lines = requirements(args.pyproject, parse_extras(args.extras))
    except (OSError, KeyError, tomllib.TOMLDecodeError, UnknownExtraError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
