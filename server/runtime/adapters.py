"""Adapters over the served model that come from the registry: their naming rule, and the
default adapter a rollout promoted, loaded again when its base model loads (after a restart
or a hot swap back to that base)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from loguru import logger

from artifacts.digest import sha256_file
from artifacts.registry import ModelRegistry, RegisteredVersion
from server.runtime.services import ServedModel

ADAPTER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
NAME_RULE = "1-64 letters, digits, '.', '_' or '-', starting with a letter or digit"


def default_name(entry: RegisteredVersion) -> str:
    """The name requests pick a registry adapter by: its registry name when that is a valid
    adapter name, else ``adapter-v3``."""
    return entry.name if ADAPTER_NAME.fullmatch(entry.name) else f"adapter-{entry.label}"


async def adopt_default_adapter(registry: ModelRegistry, served: ServedModel) -> None:
    """Load the registry's default adapter over ``served`` and make it what requests for the
    model get, when it was trained over this very file. Never fails the load: a missing or
    changed adapter file leaves the base serving, with an error in the log."""
    try:
        state = await asyncio.to_thread(registry.read)
        if state.default_adapter is None:
            return
        entry = state.get(state.default_adapter)
        if not entry.is_adapter or entry.base_sha256 != served.sha256:
            return  # promoted over another base
        if await asyncio.to_thread(sha256_file, Path(entry.model_path)) != entry.sha256:
            raise ValueError(f"{entry.model_path} changed since {entry.label} was registered")
        name = default_name(entry)
        if name == served.model_id or not 0 <= entry.scale <= 4:
            raise ValueError(f"{entry.label}: name {name!r} or scale {entry.scale} is unusable")
        await served.engine.load_adapter(name, Path(entry.model_path), entry.scale)
    except Exception as exc:
        logger.bind(event="default_adapter_failed").error(
            "the registry's default adapter was not loaded, the base model serves: {}", exc
        )
        return
    served.adapter_versions[name] = entry.version
    served.rollout.default_adapter = name
    logger.bind(event="default_adapter_loaded", adapter=name, version=entry.label).info(
        "requests for {} get adapter {} ({}) by default", served.model_id, name, entry.label
    )
