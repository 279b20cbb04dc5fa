"""The promote stage: put a registered version in service, or go back to the one before it.

With a server URL, the running server loads the version beside the one serving and switches
(``POST /admin/models/activate``, done by ``server/registry/activation.py``), and records the
promotion once the new model is up. Without one, only the registry's pointer moves; the server
follows it at its next start.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import httpx

from artifacts.registry import ModelRegistry, RegisteredVersion

Action = Literal["promote", "rollback"]
ACTIVATE_PATH = "/admin/models/activate"
ACTIVATE_TIMEOUT_S = 600  # the server loads and warms the model before it answers


class PromoteError(Exception):
    """The server could not be reached or refused the switch; the message says why."""


@dataclass(frozen=True)
class Activated:
    """What the server reports after a switch."""

    version: str
    model: str
    load_s: float
    previous: str | None


def rollback_target(registry: Path) -> RegisteredVersion:
    """The version that served before the active one (RegistryError when there is none)."""
    return ModelRegistry(registry).rollback_target()


def switch_pointer(registry: Path, version: int, by: str, action: Action) -> RegisteredVersion:
    """Make ``version`` active in the registry file only (RegistryError when unknown)."""
    return ModelRegistry(registry).promote(version, by, action)


def activate_on_server(url: str, version: int, action: Action, api_key: str | None) -> Activated:
    """Ask the server at ``url`` to load ``version`` and switch to it; PromoteError if not."""
    headers = {"X-API-KEY": api_key} if api_key else {}
    try:
        response = httpx.post(
            url.rstrip("/") + ACTIVATE_PATH,
            json={"version": version, "action": action},
            headers=headers,
            timeout=ACTIVATE_TIMEOUT_S,
        )
    except httpx.HTTPError as exc:
        raise PromoteError(f"cannot reach {url}: {exc}") from exc
    if response.status_code != 200:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:300]
        raise PromoteError(f"the server refused ({response.status_code}): {message}")
    body = response.json()
    return Activated(
        version=body["version"],
        model=body["model"],
        load_s=body["load_s"],
        previous=body["previous"],
    )
