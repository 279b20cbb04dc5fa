"""A small Dockerfile reader for the deploy checks: stages, instructions, ARGs, COPY sources.

Not a full parser: it understands what our Dockerfiles use (line continuations, comments,
``FROM x AS y``, ``ARG``/``ENV`` key=value, JSON and shell forms, ``COPY --from``).
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass, field
from pathlib import Path

_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}|\$(\w+)")


@dataclass
class Instruction:
    """One instruction with its keyword upper-cased and its arguments as written."""

    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str] | None:
        """The JSON array of ``CMD ["a", "b"]``-style arguments, or None for the shell form."""
        text = self.args.strip()
        if self.keyword == "HEALTHCHECK":
            text = text.split("CMD", 1)[1].strip() if "CMD" in text else ""
        if text.startswith("["):
            value = json.loads(text)
            assert isinstance(value, list)
            return [str(item) for item in value]
        return None


@dataclass
class Copy:
    """A COPY/ADD: where from (a stage name, or None for the build context), sources, dest."""

    from_stage: str | None
    sources: list[str]
    dest: str


@dataclass
class Stage:
    """A build stage: its base, its name and its instructions."""

    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def of(self, keyword: str) -> list[Instruction]:
        """Instructions of one kind, in order."""
        return [i for i in self.instructions if i.keyword == keyword]

    def copies(self) -> list[Copy]:
        """The stage's COPY and ADD instructions, parsed."""
        result = []
        for inst in self.of("COPY") + self.of("ADD"):
            words = shlex.split(inst.args)
            flags = [w for w in words if w.startswith("--")]
            paths = [w for w in words if not w.startswith("--")]
            if paths and paths[0].startswith("["):
                paths = json.loads(inst.args[inst.args.index("[") :])
            from_stage = next((f.split("=", 1)[1] for f in flags if f.startswith("--from=")), None)
            result.append(Copy(from_stage, paths[:-1], paths[-1]))
        return result

    def env(self) -> dict[str, str]:
        """ENV values set in this stage (``KEY=value`` form)."""
        values: dict[str, str] = {}
        for inst in self.of("ENV"):
            values.update(_key_values(inst.args))
        return values

    def arg_defaults(self) -> dict[str, str]:
        """ARG defaults declared in this stage."""
        values: dict[str, str] = {}
        for inst in self.of("ARG"):
            values.update(_key_values(inst.args))
        return values


@dataclass
class Dockerfile:
    """A parsed Dockerfile: global ARGs (before the first FROM) and its stages."""

    path: Path
    global_args: dict[str, str]
    stages: list[Stage]
    comments: list[str]

    def stage(self, name: str) -> Stage:
        """The stage called ``name``; KeyError when there is none."""
        for stage in self.stages:
            if stage.name == name:
                return stage
        raise KeyError(f"{self.path.name} has no stage {name!r}")

    @property
    def final(self) -> Stage:
        """The stage `docker build` produces without --target."""
        return self.stages[-1]

    def lineage(self, stage: Stage) -> list[Stage]:
        """The stage and the stages it is built FROM, nearest first."""
        chain = [stage]
        names = {s.name for s in self.stages}
        while chain[-1].base in names:
            chain.append(self.stage(chain[-1].base))
        return chain

    def resolve(self, text: str, stage: Stage | None = None) -> str:
        """Substitute ``${VAR}`` with ARG defaults (global, then the stage's own)."""
        values = dict(self.global_args)
        if stage is not None:
            for ancestor in reversed(self.lineage(stage)):
                values.update(ancestor.arg_defaults())

        def sub(match: re.Match[str]) -> str:
            name = match.group(1) or match.group(3)
            default = match.group(2)
            return values.get(name, default if default is not None else match.group(0))

        return _VAR.sub(sub, text)


def _key_values(args: str) -> dict[str, str]:
    values = {}
    for word in shlex.split(args):
        key, _, value = word.partition("=")
        values[key] = value
    return values


def _logical_lines(text: str) -> tuple[list[tuple[int, str]], list[str]]:
    lines: list[tuple[int, str]] = []
    comments: list[str] = []
    buffer, start = "", 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#"):
            comments.append(stripped)
            continue
        if not stripped and not buffer:
            continue
        if not buffer:
            start = number
        if stripped.endswith("\\"):
            buffer += stripped[:-1] + " "
            continue
        buffer += stripped
        lines.append((start, buffer))
        buffer = ""
    return lines, comments


def parse(path: Path) -> Dockerfile:
    """Read a Dockerfile into stages and instructions."""
    lines, comments = _logical_lines(path.read_text(encoding="utf-8"))
    global_args: dict[str, str] = {}
    stages: list[Stage] = []
    for number, line in lines:
        keyword, _, args = line.partition(" ")
        keyword = keyword.upper()
        if keyword == "FROM":
            words = args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(base=words[0], name=name))
        elif not stages:
            if keyword == "ARG":
                global_args.update(_key_values(args))
        else:
            stages[-1].instructions.append(Instruction(keyword, args.strip(), number))
    return Dockerfile(path=path, global_args=global_args, stages=stages, comments=comments)
