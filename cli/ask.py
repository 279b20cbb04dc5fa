"""``ggserve ask "question"``: a client of a running server's /v1/ask."""

from __future__ import annotations

import json

import httpx
import typer
from rich.console import Console

from cli.client_settings import resolve

console = Console()


def ask(
    question: str = typer.Argument(..., help="The question."),
    url: str | None = typer.Option(
        None, help="Server URL [default: GGSERVE_URL, else GGSERVE_HOST:PORT, from env or .env]."
    ),
    api_key: str | None = typer.Option(
        None, help="API key [default: GGSERVE_API_KEY from the environment or .env]."
    ),
    max_tokens: int | None = typer.Option(None, help="Cap on generated tokens."),
    stream: bool = typer.Option(True, help="Print tokens as they arrive."),
    as_json: bool = typer.Option(False, "--json", help="Print the raw JSON response."),
    timeout: float = typer.Option(300.0, help="Seconds to wait."),
) -> None:
    """Ask the running server; prints the answer, its sources and timings."""
    url, api_key = resolve(url, api_key)
    headers = {"X-API-KEY": api_key} if api_key else {}
    payload: dict[str, object] = {"question": question, "stream": stream and not as_json}
    if max_tokens:
        payload["max_tokens"] = max_tokens
    endpoint = url.rstrip("/") + "/v1/ask"
    try:
        if payload["stream"]:
            final = _stream(endpoint, payload, headers, timeout)
        else:
            response = httpx.post(endpoint, json=payload, headers=headers, timeout=timeout)
            _raise_for_error(response)
            final = response.json()
            if as_json:
                typer.echo(json.dumps(final, indent=2))
                return
            console.print(final["answer"])
    except httpx.HTTPError as exc:
        console.print(f"[red]cannot reach {url}: {exc}[/red]")
        raise typer.Exit(2) from exc
    _print_footer(final)


def _stream(
    endpoint: str, payload: dict[str, object], headers: dict[str, str], timeout: float
) -> dict[str, object]:
    final: dict[str, object] = {}
    with httpx.stream("POST", endpoint, json=payload, headers=headers, timeout=timeout) as resp:
        if resp.status_code != 200:
            resp.read()
            _raise_for_error(resp)
        event = "message"
        for line in resp.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                data = line[5:].removeprefix(" ")
                if event == "token":
                    console.print(data, end="", soft_wrap=True, markup=False, highlight=False)
                elif event == "done":
                    final = json.loads(data)
    console.print()
    return final


def _raise_for_error(response: httpx.Response) -> None:
    if response.status_code < 400:
        return
    try:
        error = response.json()["error"]
        message = f"{error['message']} (request_id {error.get('request_id')})"
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    console.print(f"[red]error {response.status_code}:[/red] {message}")
    raise typer.Exit(1)


def _print_footer(final: dict[str, object]) -> None:
    sources = final.get("sources") or []
    assert isinstance(sources, list)
    for source in sources:
        console.print(
            f"  [{source['n']}] {source['document']}"
            f"{' — ' + source['heading'] if source.get('heading') else ''}"
            f" (score {source['score']:.2f})",
            style="dim",
        )
    timings = final.get("timings")
    if isinstance(timings, dict):
        tps = timings.get("tokens_per_s")
        console.print(
            f"ttft {timings.get('ttft_ms')} ms · total {timings.get('total_ms')} ms"
            + (f" · {tps:.1f} tok/s" if tps else ""),
            style="dim",
        )
