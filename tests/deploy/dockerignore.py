"""Docker's .dockerignore rules, enough to ask "is this path left out of the build context?"."""

from __future__ import annotations

import re
from pathlib import Path


def _regex(pattern: str) -> re.Pattern[str]:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


class DockerIgnore:
    """Patterns of one .dockerignore; the last matching pattern decides, ``!`` re-includes."""

    def __init__(self, path: Path) -> None:
        self.rules: list[tuple[bool, re.Pattern[str], str]] = []
        for raw in path.read_text(encoding="utf-8").splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            include = line.startswith("!")
            pattern = line[1:].strip() if include else line
            pattern = pattern.strip("/")
            self.rules.append((include, _regex(pattern), pattern))

    def ignores(self, relative: str) -> bool:
        """True when ``relative`` (a path inside the context) is not sent to the engine."""
        parts = relative.strip("/").split("/")
        # A pattern matching a parent folder leaves out everything under it.
        candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
        ignored = False
        for include, regex, _ in self.rules:
            if any(regex.match(candidate) for candidate in candidates):
                ignored = not include
        return ignored
