"""The model registry: every servable version with its lineage, kept in one JSON file.

    base ─▶ adapter ─▶ dataset sha256 ─▶ eval results ─▶ promoted at / by

A version is a full model (``kind="model"``) or a GGUF LoRA over a base (``kind="adapter"``):
then ``model_path``/``sha256`` are the adapter file's, ``base_sha256`` the GGUF it applies over
(a server refuses to apply it over another one) and ``scale`` its strength.

Versions are numbered 1, 2, 3 … in registration order and never renumbered. ``active`` names
the version in service; ``history`` lists every promotion and rollback, newest last, so a
rollback goes back to what served before. Each change is a read-modify-write under an
exclusive ``flock`` on a side file and lands with write-to-temp, fsync, rename: the CLI and a
running server may change the registry at the same time and a crash never leaves half a file.
Standard library only, so the server can read it without torch; ``server/registry`` puts a
version in service, this module only records it.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

SCHEMA_VERSION = 1
MAX_NAME_CHARS = 128
KINDS = ("model", "adapter")


class RegistryError(ValueError):
    """The registry cannot do what was asked; the message says why and what to do."""


@dataclass
class Lineage:
    """Where a version came from: each part None when unknown (e.g. a downloaded base)."""

    base: dict[str, Any] | None = None  # {"path", "sha256"}
    adapter: dict[str, Any] | None = None  # {"path", "sha256"}
    dataset: dict[str, Any] | None = None  # {"path", "sha256", "rows"}
    training: dict[str, Any] | None = None  # {"steps", "seed", "final_loss", ...}
    conversion: dict[str, Any] | None = None  # manifest gate summary
    eval: dict[str, Any] | None = None  # eval gate summary (candidate vs baseline)


@dataclass
class RegisteredVersion:
    """One registered GGUF: a model, or a LoRA adapter over the base whose sha256 it names."""

    version: int
    name: str
    model_path: str
    sha256: str
    created_at: str
    lineage: Lineage = field(default_factory=Lineage)
    promoted_at: str | None = None  # the latest promotion
    promoted_by: str | None = None
    kind: str = "model"  # "model" | "adapter"; files written before adapters read as models
    base_sha256: str | None = None  # an adapter's base GGUF (None for a model)
    scale: float = 1.0  # an adapter's strength when applied

    @property
    def is_adapter(self) -> bool:
        return self.kind == "adapter"

    @property
    def label(self) -> str:
        """``v3``: how logs, metrics and /v1/models name the version."""
        return f"v{self.version}"

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RegisteredVersion:
        """Parse one entry of the file; RegistryError naming what is malformed."""
        try:
            lineage = Lineage(**data.get("lineage", {}))
            kind = str(data.get("kind", "model"))
            base_sha256 = data.get("base_sha256")
            if kind not in KINDS:
                raise ValueError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
            if (kind == "adapter") != isinstance(base_sha256, str):
                raise ValueError("an adapter, and only an adapter, names its base_sha256")
            return cls(
                version=int(data["version"]),
                name=str(data["name"]),
                model_path=str(data["model_path"]),
                sha256=str(data["sha256"]),
                created_at=str(data["created_at"]),
                lineage=lineage,
                promoted_at=data.get("promoted_at"),
                promoted_by=data.get("promoted_by"),
                kind=kind,
                base_sha256=base_sha256,
                scale=float(data.get("scale", 1.0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise RegistryError(f"registry entry is malformed ({exc!r})") from exc


@dataclass
class HistoryEntry:
    """One promotion or rollback."""

    action: str  # "promote" | "rollback"
    version: int
    previous: int | None
    at: str
    by: str


@dataclass
class RegistryState:
    """The whole file."""

    versions: list[RegisteredVersion] = field(default_factory=list)
    active: int | None = None
    history: list[HistoryEntry] = field(default_factory=list)
    schema: int = SCHEMA_VERSION
    # The adapter version applied by default over the active model (a promoted challenger).
    default_adapter: int | None = None
    # Every champion/challenger decision with its figures (server/rollout), oldest first.
    rollouts: list[dict[str, Any]] = field(default_factory=list)

    def get(self, version: int) -> RegisteredVersion:
        """The entry of ``version``; RegistryError listing the known ones when absent."""
        for entry in self.versions:
            if entry.version == version:
                return entry
        known = ", ".join(v.label for v in self.versions) or "none"
        raise RegistryError(f"no version {version} in the registry (known: {known})")

    @property
    def active_version(self) -> RegisteredVersion | None:
        """The entry in service, if one was promoted."""
        return None if self.active is None else self.get(self.active)


def now() -> str:
    """UTC time as ISO 8601, seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


class ModelRegistry:
    """The registry file at ``path`` (created on the first registration)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> RegistryState:
        """The current state; an empty registry when the file does not exist yet."""
        try:
            text = self.path.read_bytes().decode("utf-8")
        except FileNotFoundError:
            return RegistryState()
        except OSError as exc:
            raise RegistryError(f"cannot read the registry {self.path}: {exc.strerror}") from exc
        except UnicodeDecodeError as exc:
            raise RegistryError(
                f"the registry {self.path} is corrupt (not UTF-8); restore it from a backup"
            ) from exc
        try:
            data = json.loads(text)
            if not isinstance(data, dict):
                raise ValueError("not a JSON object")
            return RegistryState(
                versions=[RegisteredVersion.from_dict(v) for v in data.get("versions", [])],
                active=data.get("active"),
                history=[HistoryEntry(**h) for h in data.get("history", [])],
                schema=int(data.get("schema", SCHEMA_VERSION)),
                default_adapter=data.get("default_adapter"),
                rollouts=list(data.get("rollouts", [])),
            )
        except (ValueError, TypeError) as exc:
            raise RegistryError(
                f"the registry {self.path} is corrupt ({exc}); restore it from a backup"
            ) from exc

    def register(
        self,
        model_path: Path,
        sha256: str,
        *,
        name: str,
        lineage: Lineage | None = None,
        base_sha256: str | None = None,
        scale: float = 1.0,
    ) -> RegisteredVersion:
        """Add a version (the next number) for the GGUF at ``model_path``; not yet active. With
        ``base_sha256`` it is an adapter applied over that base at ``scale``."""
        if not name.strip() or len(name) > MAX_NAME_CHARS or not name.isprintable():
            raise RegistryError(f"a version name must be 1-{MAX_NAME_CHARS} printable characters")
        if base_sha256 == sha256:
            raise RegistryError(f"{model_path} cannot be an adapter over itself")
        if not 0.0 < scale <= 4.0:
            raise RegistryError(f"an adapter's scale is {scale}; give one in (0, 4]")
        with self._locked() as state:
            for existing in state.versions:
                if existing.sha256 == sha256:
                    raise RegistryError(
                        f"{model_path} is already registered as {existing.label} "
                        f"(same sha256 {sha256[:12]}…)"
                    )
            entry = RegisteredVersion(
                version=max((v.version for v in state.versions), default=0) + 1,
                name=name,
                model_path=str(model_path.resolve()),
                sha256=sha256,
                created_at=now(),
                lineage=lineage or Lineage(),
                kind="model" if base_sha256 is None else "adapter",
                base_sha256=base_sha256,
                scale=scale,
            )
            state.versions.append(entry)
        return entry

    def promote(self, version: int, by: str, action: str = "promote") -> RegisteredVersion:
        """Make ``version`` the active one and record who did it when."""
        with self._locked() as state:
            entry = state.get(version)
            at = now()
            state.history.append(HistoryEntry(action, version, state.active, at, by))
            state.active = version
            entry.promoted_at, entry.promoted_by = at, by
            if state.default_adapter is not None:  # an adapter applies to one base only
                adapter = state.get(state.default_adapter)
                if adapter.base_sha256 != entry.sha256:
                    state.default_adapter = None
        return entry

    def record_rollout(
        self, decision: dict[str, Any], *, promoted: int | None = None, to_base: bool = False
    ) -> None:
        """Append a rollout's ending with its figures; with ``promoted`` (the challenger's
        adapter version), that adapter becomes what the active model serves by default; with
        ``to_base``, the base model itself won and no adapter is the default any more."""
        with self._locked() as state:
            if to_base and state.default_adapter is not None:
                at, by = now(), f"rollout {decision.get('id', '?')}"
                state.history.append(
                    HistoryEntry("rollback", state.default_adapter, state.default_adapter, at, by)
                )
                state.default_adapter = None
            if promoted is not None:
                entry = state.get(promoted)  # RegistryError when unknown
                if not entry.is_adapter:
                    raise RegistryError(f"{entry.label} is not an adapter version")
                at, by = now(), f"rollout {decision.get('id', '?')}"
                state.history.append(
                    HistoryEntry("promote", promoted, state.default_adapter, at, by)
                )
                entry.promoted_at, entry.promoted_by = at, by
                state.default_adapter = promoted
            state.rollouts.append(decision)

    def rollback_target(self) -> RegisteredVersion:
        """The version that served before the active one (RegistryError when there is none)."""
        state = self.read()
        if state.active is None:
            raise RegistryError("no version is active: nothing to roll back")
        for item in reversed(state.history):
            if item.version == state.active and item.previous is not None:
                return state.get(item.previous)
        raise RegistryError(f"v{state.active} has no earlier version to roll back to")

    @contextlib.contextmanager
    def _locked(self) -> Iterator[RegistryState]:
        """Read, let the caller change, write back atomically; all under an exclusive lock."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        lock_path = self.path.with_name(self.path.name + ".lock")
        with lock_path.open("a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                state = self.read()
                yield state
                self._write(state)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, state: RegistryState) -> None:
        temporary = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        with temporary.open("w", encoding="utf-8") as handle:
            json.dump(asdict(state), handle, indent=2)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, self.path)
