"""``ggserve rollout start|status|stop``: a champion/challenger rollout on a running server
(``/admin/rollout``). The challenger is an adapter; the rollout promotes it or rolls it back
by itself from live traffic (docs/flywheel.md, "Rollout")."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from artifacts.names import REGISTRY
from artifacts.registry import ModelRegistry, RegistryError
from cli.admin_client import KeyOption, UrlOption, call, console

app = typer.Typer(help="Champion/challenger rollouts on live traffic.", no_args_is_help=True)
out = Console()


@app.command("start")
def start(
    challenger: str = typer.Argument(..., help="A loaded adapter's name (ggserve adapters)."),
    version: int | None = typer.Option(
        None, help="Load this registry adapter version first (named CHALLENGER)."
    ),
    registered: Path | None = typer.Option(
        None, help="Load the registry's adapter version of this GGUF file first (with --registry)."
    ),
    registry: Path = typer.Option(
        REGISTRY, "--registry", envvar="GGSERVE_REGISTRY_PATH", help="Registry, for --registered."
    ),
    share: float = typer.Option(0.5, help="Share of the traffic sent to the challenger."),
    sticky: str = typer.Option(
        "user", help="Keep each 'user' of a key, or each 'key', on one arm."
    ),
    alpha: float = typer.Option(0.05, help="P(a wrong promote or rollback)."),
    tau: float = typer.Option(0.1, help="Prior scale of the expected difference (0.1: 10 points)."),
    min_samples: int = typer.Option(30, help="Requests per arm before any decision."),
    max_samples: int = typer.Option(5000, help="Challenger requests before stopping undecided."),
    error_margin: float = typer.Option(0.02, help="Error rate allowed above the champion's."),
    slow_margin: float = typer.Option(0.05, help="Share above the champion's p95 TTFT allowed."),
    ttft_warmup: int = typer.Option(50, help="Champion requests that fix its p95 TTFT."),
    ttft_tolerance: float = typer.Option(
        0.0, help="The slow threshold is the champion's p95 × (1 + this)."
    ),
    url: str | None = UrlOption,
    api_key: str | None = KeyOption,
) -> None:
    """Send SHARE of the traffic to CHALLENGER; it is promoted or rolled back on its own."""
    if registered is not None:
        version = registered_version(registry, registered)
    if version is not None:
        loaded = {a["name"]: a["version"] for a in call("GET", "/admin/adapters", url, api_key)}
        if loaded.get(challenger) != version:  # a rerun after a failed start skips the load
            body = {"version": version, "name": challenger}
            call("POST", "/admin/adapters", url, api_key, json=body, timeout=300)
    policy = {
        "alpha": alpha,
        "tau": tau,
        "ttft_warmup": ttft_warmup,
        "min_samples": min_samples,
        "max_samples": max_samples,
        "error_margin": error_margin,
        "slow_margin": slow_margin,
        "ttft_tolerance": ttft_tolerance,
    }
    body = {"challenger": challenger, "share": share, "sticky": sticky, "policy": policy}
    run = call("POST", "/admin/rollout", url, api_key, json=body)
    champion = run["champion"]["adapter"] or "the base model"
    out.print(f"rollout {run['id']}: {challenger} challenges {champion} on {share:.0%} of traffic")


@app.command("status")
def status(
    watch: float = typer.Option(0.0, help="Refresh every WATCH seconds until it ends (0: once)."),
    url: str | None = UrlOption,
    api_key: str | None = KeyOption,
) -> None:
    """The running (or last) rollout: each arm's figures, the intervals, the verdict."""
    while True:
        run = call("GET", "/admin/rollout", url, api_key)
        show(run)
        if watch <= 0 or run["status"] != "running":
            return
        time.sleep(watch)


@app.command("stop")
def stop(url: str | None = UrlOption, api_key: str | None = KeyOption) -> None:
    """End the running rollout without a decision: the champion keeps serving."""
    run = call("DELETE", "/admin/rollout", url, api_key)
    out.print(f"rollout {run['id']} stopped; {run['champion']['adapter'] or 'the base'} serves")


def registered_version(registry: Path, adapter: Path) -> int:
    """The newest adapter version of ``registry`` registered from the file ``adapter``."""
    try:
        state = ModelRegistry(registry).read()
    except RegistryError as exc:
        console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(1) from exc
    path = str(adapter.resolve())
    found = [v.version for v in state.versions if v.is_adapter and v.model_path == path]
    if not found:
        console.print(
            f"[red]error:[/red] {adapter} is not a registered adapter in {registry}; register "
            "it with 'ggserve models register FILE --base BASE'",
            soft_wrap=True,
        )
        raise typer.Exit(1)
    return max(found)


def show(run: dict[str, Any]) -> None:
    """A rollout as the terminal shows it."""
    champion = run["champion"]["adapter"] or "base"
    out.print(
        f"rollout {run['id']} [bold]{run['status']}[/bold]: {run['challenger']['adapter']} vs "
        f"{champion}, {run['share']:.0%} to the challenger — {run['reason']}"
    )
    arms = Table("arm", "requests", "errors", "rated", "👎", "above p95 TTFT")
    for name, arm in run["arms"].items():
        arms.add_row(
            name,
            str(arm["requests"]),
            str(arm["errors"]),
            str(arm["rated"]),
            str(arm["thumbs_down"]),
            f"{arm['slow']}/{arm['timed']}",
        )
    out.print(arms)
    intervals = Table("metric (challenger − champion)", "estimate", "always-valid interval")
    for name, interval in run["intervals"].items():
        intervals.add_row(
            name,
            f"{interval['estimate']:+.3f}",
            f"[{interval['low']:+.3f}, {interval['high']:+.3f}]",
        )
    out.print(intervals)
