"""Put a registered version in service without a restart.

The new model is loaded (and warmed) beside the one serving; only once it works does it become
current, and only then is the promotion written to the registry. Anything that goes wrong
before that — an unknown version, a file changed since it was registered, a load that fails —
leaves the old model serving and raises ``ActivationError`` with the reason. One activation at
a time: a second one while the first loads is refused, not queued.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, Literal, TypeVar

from artifacts.digest import sha256_file
from artifacts.registry import ModelRegistry, RegisteredVersion, RegistryError
from server.registry.deployment import ActiveModel, Deployment

T = TypeVar("T")
FailureKind = Literal["unknown_version", "busy", "file_changed", "load_failed"]


class ActivationError(Exception):
    """Why a version was not put in service; the old one still serves."""

    def __init__(self, kind: FailureKind, message: str) -> None:
        super().__init__(message)
        self.kind = kind


@dataclass(frozen=True)
class ActivationResult:
    """What changed."""

    version: str
    previous: str | None
    model_path: str
    load_s: float
    draining: int  # requests still finishing on the previous model


class ModelActivator(Generic[T]):
    """Loads a registry version with ``load`` and installs it into ``active``."""

    def __init__(
        self,
        registry: ModelRegistry,
        active: ActiveModel[T],
        load: Callable[[RegisteredVersion], Awaitable[T]],
    ) -> None:
        self.registry = registry
        self.active = active
        self._load = load
        self._busy = asyncio.Lock()

    async def activate(self, version: int, by: str, action: str = "promote") -> ActivationResult:
        """Load ``version`` beside the current model, switch to it, record the promotion."""
        if self._busy.locked():
            raise ActivationError("busy", "another model activation is in progress; retry later")
        async with self._busy:
            try:
                entry = (await asyncio.to_thread(self.registry.read)).get(version)
            except RegistryError as exc:
                raise ActivationError("unknown_version", str(exc)) from exc
            path = Path(entry.model_path)
            await self._check_file(entry, path)
            started = time.perf_counter()
            try:
                model = await self._load(entry)
            except Exception as exc:  # any load failure keeps the old model serving
                reason = str(exc) or type(exc).__name__
                raise ActivationError(
                    "load_failed",
                    f"{entry.label} did not load, the current model keeps serving: {reason}",
                ) from exc
            load_s = round(time.perf_counter() - started, 2)
            previous = self.active.install(Deployment(entry.label, model))
            await asyncio.to_thread(self.registry.promote, version, by, action)
            return ActivationResult(
                version=entry.label,
                previous=previous.version if previous else None,
                model_path=str(path),
                load_s=load_s,
                draining=previous.inflight if previous else 0,
            )

    async def _check_file(self, entry: RegisteredVersion, path: Path) -> None:
        if not await asyncio.to_thread(path.is_file):
            raise ActivationError(
                "file_changed", f"{entry.label}'s file {path} is gone; register it again"
            )
        actual = await asyncio.to_thread(sha256_file, path)
        if actual != entry.sha256:
            raise ActivationError(
                "file_changed",
                f"{path} changed since {entry.label} was registered (sha256 {actual[:12]}… "
                f"instead of {entry.sha256[:12]}…); register the new file as a new version",
            )
