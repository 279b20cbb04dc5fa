"""``ggserve feedback``: curate captured responses and their ratings, then export datasets."""

from __future__ import annotations

import getpass
import json
import re
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from flywheel.export import EXPORT_FORMATS, ExportError, export_dataset
from server.feedback.records import CORRECTION_STATUSES, CorrectionStatus
from server.feedback.retention import purge_expired
from server.feedback.store import FeedbackFilter, FeedbackStore, StoredFeedback, StoreError
from server.settings import Settings

app = typer.Typer(help="Captured responses and feedback: list, show, label, export.")
console = Console(stderr=True)
out = Console(soft_wrap=True)

DbOption = typer.Option(None, "--db", help="Feedback database (default: GGSERVE_FEEDBACK_DB).")
SinceOption = typer.Option(None, help="Responses captured at/after this UTC date or datetime.")
UntilOption = typer.Option(None, help="Responses captured before this UTC date or datetime.")
_RATINGS = (-1, 1, 2, 3, 4, 5)
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # terminal escapes among them


def _fail(message: str) -> typer.Exit:
    console.print(f"[red]error:[/red] {message}", markup=True, highlight=False)
    return typer.Exit(1)


def _store(db: Path | None) -> FeedbackStore:
    try:
        return FeedbackStore(db or Settings().feedback_db, create=False)
    except StoreError as exc:
        raise _fail(str(exc)) from exc


def _text(value: str, param: str) -> str:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise typer.BadParameter("is not valid UTF-8", param_hint=param) from exc
    return value


def _when(value: str | None, param: str) -> float | None:
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(_text(value, param))
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD) or ISO datetime", param_hint=param
        ) from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def _key_id(value: str) -> str:
    value = _text(value, "--key-id").strip()
    if not value or len(value) > 200 or _CONTROL.search(value):
        raise typer.BadParameter(
            "must be an API key id as shown by 'feedback list' (non-empty, printable)",
            param_hint="--key-id",
        )
    return value


def _iso(epoch: float | None) -> str:
    return "" if epoch is None else time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch))


def _cell(text: str) -> str:
    """Stored text made safe for a terminal: no rich markup, no control characters."""
    return escape(_CONTROL.sub("\ufffd", text))


def _as_dict(item: StoredFeedback) -> dict[str, Any]:
    data = asdict(item)
    data["feedback"]["rating"] = {
        "value": item.feedback.rating.value,
        "scale": item.feedback.rating.scale,
        "polarity": item.feedback.rating.polarity,
    }
    return data


@app.command("list")
def list_(
    db: Path | None = DbOption,
    rating: int | None = typer.Option(None, help="Exact rating: -1/1 (thumbs) or 1-5 (stars)."),
    good: bool | None = typer.Option(
        None, "--good/--bad", help="Only positive (thumb up, 4-5 stars) or negative ratings."
    ),
    since: str | None = SinceOption,
    until: str | None = UntilOption,
    route: str | None = typer.Option(None, help="Route, e.g. /v1/ask."),
    model: str | None = typer.Option(None, help="Model version name, or a sha256 prefix."),
    status: str | None = typer.Option(None, help="Correction status: pending/accepted/rejected."),
    limit: int = typer.Option(50, min=1, max=100_000, help="Most rows shown."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Feedback on captured responses, newest first."""
    if rating is not None and rating not in _RATINGS:
        raise typer.BadParameter("use -1 or 1 (thumbs) or 1-5 (stars)", param_hint="--rating")
    if status is not None and status not in CORRECTION_STATUSES:
        raise typer.BadParameter(
            f"use one of {', '.join(CORRECTION_STATUSES)}", param_hint="--status"
        )
    where = FeedbackFilter(
        rating=rating,
        polarity=None if good is None else (1 if good else -1),
        since=_when(since, "--since"),
        until=_when(until, "--until"),
        route=None if route is None else _text(route, "--route"),
        model=None if model is None else _text(model, "--model"),
        status=status,
        limit=limit,
    )
    rows = _store(db).list_feedback(where)
    if as_json:
        for item in rows:
            out.print_json(json.dumps(_as_dict(item), ensure_ascii=False), indent=None)
        return
    table = Table("captured (UTC)", "route", "model", "rating", "correction")
    table.add_column("response id", no_wrap=True)  # whole, so it can be copied
    for item in rows:
        correction = item.feedback.correction or ""
        table.add_row(
            _iso(item.interaction.created_at),
            _cell(item.interaction.route),
            _cell(item.interaction.model.label),
            item.feedback.rating.label,
            _cell(f"({item.correction_status}) {correction[:80]}") if correction else "",
            _cell(item.interaction.response_id),
        )
    out.print(table)
    console.print(f"{len(rows)} row(s)")


@app.command("show")
def show(
    response_id: str = typer.Argument(..., help="The response id (as returned to the client)."),
    db: Path | None = DbOption,
) -> None:
    """One captured response with its feedback, as JSON."""
    store = _store(db)
    response_id = _text(response_id, "RESPONSE_ID")
    item = store.get_feedback(response_id)
    if item is not None:
        out.print_json(json.dumps(_as_dict(item), ensure_ascii=False))
        return
    interaction = store.get_interaction(response_id)
    if interaction is None:
        raise _fail(f"no captured response '{response_id}' in {store.path}")
    out.print_json(json.dumps({"interaction": asdict(interaction), "feedback": None}))


@app.command("label")
def label(
    response_id: str = typer.Argument(..., help="The response whose correction is labelled."),
    accept: bool = typer.Option(
        False, "--accept", help="Train on the correction (or the answer rated good)."
    ),
    reject: bool = typer.Option(False, "--reject", help="Never train on it."),
    reopen: bool = typer.Option(False, "--reopen", help="Back to pending."),
    by: str | None = typer.Option(None, help="Curator name recorded (default: $USER)."),
    db: Path | None = DbOption,
) -> None:
    """Curate one response for training (exactly one of the three flags).

    Labels its correction, or with none, its answer rated good: exports take a 👍 as a
    positive example only once a curator accepted it.
    """
    chosen = [
        name
        for name, flag in (("accepted", accept), ("rejected", reject), ("pending", reopen))
        if flag
    ]
    if len(chosen) != 1:
        raise typer.BadParameter("give exactly one of --accept, --reject, --reopen")
    status: CorrectionStatus = chosen[0]  # type: ignore[assignment]
    curator = _text(by, "--by") if by else getpass.getuser()
    try:
        item = _store(db).label(_text(response_id, "RESPONSE_ID"), status, by=curator)
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    out.print(f"{item.interaction.response_id}: correction {item.correction_status}")


@app.command("purge")
def purge(
    older_than_days: float | None = typer.Option(
        None,
        min=0.0,
        help="Delete responses captured more than N days ago (default: "
        "GGSERVE_CAPTURE_RETENTION_DAYS; 0 with the default means keep everything).",
    ),
    db: Path | None = DbOption,
) -> None:
    """Delete captured responses past retention, and their feedback; works with the server down.

    Deleted rows are overwritten on disk and the WAL is truncated. Run it from cron (or a
    Kubernetes CronJob) when a server runs with capture off: nothing else purges then.
    """
    settings = Settings()
    days = settings.capture_retention_days if older_than_days is None else older_than_days
    path = _store(db).path  # fails clearly when there is no database
    if days <= 0:
        out.print(f"{path}: retention is 0 (keep everything); nothing purged")
        return
    try:
        purged = purge_expired(path, days)
    except StoreError as exc:
        raise _fail(str(exc)) from exc
    out.print(f"{path}: purged {purged} response(s) captured more than {days:g} day(s) ago")


@app.command("export")
def export(
    fmt: str = typer.Option(..., "--format", help="sft, dpo or kto (TRL chat format)."),
    out_dir: Path = typer.Option(..., "--out", help="Folder for train/eval JSONL and the card."),
    eval_fraction: float = typer.Option(0.1, min=0.0, max=0.99, help="Share held out for eval."),
    seed: str = typer.Option("ggserve", help="Split seed; the same seed gives the same split."),
    include_positive: bool = typer.Option(
        False,
        help="SFT: also train on answers rated good that a curator accepted, not only "
        "accepted corrections.",
    ),
    uncurated_positive: bool = typer.Option(
        False,
        help="Take any client's 👍 as a positive (SFT with --include-positive, KTO), not only "
        "curator-accepted ones. Any key can then upvote what it wants trained.",
    ),
    key_id: list[str] | None = typer.Option(
        None, "--key-id", help="Only responses made with this API key id (repeatable)."
    ),
    since: str | None = SinceOption,
    until: str | None = UntilOption,
    db: Path | None = DbOption,
) -> None:
    """Write a dataset of the curated feedback for train-lora (and any TRL trainer).

    Every row keeps ``metadata.key_id`` and ``metadata.response_id``, so a tenant's rows can
    be removed from an export later (docs/flywheel.md, "Erasure after export").
    """
    if fmt not in EXPORT_FORMATS:
        raise typer.BadParameter(f"use one of {', '.join(EXPORT_FORMATS)}", param_hint="--format")
    try:
        report = export_dataset(
            _store(db),
            fmt,
            out_dir,
            eval_fraction=eval_fraction,
            split_seed=_text(seed, "--seed"),
            include_positive=include_positive,
            uncurated_positive=uncurated_positive,
            since=_when(since, "--since"),
            until=_when(until, "--until"),
            key_ids=None if not key_id else [_key_id(k) for k in key_id],
        )
    except (ExportError, StoreError, OSError) as exc:
        raise _fail(str(exc)) from exc
    counts = ", ".join(f"{name} {count}" for name, count in report.counts.items())
    skipped = ", ".join(f"{name} {count}" for name, count in report.skipped.items()) or "none"
    out.print(f"{fmt} → {out_dir}: {counts}; skipped: {skipped}")
    out.print(f"dataset sha256 {report.dataset_sha256}")
