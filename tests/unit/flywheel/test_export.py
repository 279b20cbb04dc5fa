"""Export: TRL field conventions per format, curation honoured, de-dup, stable split, card."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from flywheel.export import ExportError, export_dataset
from server.feedback.records import Feedback, Interaction, Rating
from server.feedback.store import FeedbackStore

Add = Callable[..., Interaction]


def rows(folder: Path, split: str) -> list[dict[str, Any]]:
    """The training fields of each row (its provenance ``metadata`` is checked on its own)."""
    return [
        {k: v for k, v in json.loads(line).items() if k != "metadata"}
        for line in (folder / f"{split}.jsonl").read_text().splitlines()
    ]


def metadata(folder: Path) -> list[dict[str, Any]]:
    return [
        json.loads(line)["metadata"]
        for split in ("train", "eval")
        for line in (folder / f"{split}.jsonl").read_text().splitlines()
    ]


def all_rows(folder: Path) -> list[dict[str, Any]]:
    return rows(folder, "train") + rows(folder, "eval")


def is_message_list(value: object, roles: set[str] | None = None) -> bool:
    return (
        isinstance(value, list)
        and bool(value)
        and all(
            isinstance(m, dict)
            and set(m) == {"role", "content"}
            and isinstance(m["content"], str)
            and (roles is None or m["role"] in roles)
            for m in value
        )
    )


@pytest.fixture
def curated(store: FeedbackStore, add: Add) -> FeedbackStore:
    """Six rated responses: accepted, rejected and pending corrections, thumbs, 3 stars."""
    add("accepted", "¿Capital de Zembla?", created_at=1_700_000_000.0)
    add("rejected", "¿Capital de Ruritania?", created_at=1_700_000_100.0)
    add("pending", "¿Capital de Freedonia?", created_at=1_700_000_200.0)
    add("up", "¿Cuánto es 2+2?", answer="4", created_at=1_700_000_300.0)
    add("neutral", "¿Color del cielo?", answer="Azul", created_at=1_700_000_400.0)
    add("metadata", level="metadata", messages=None, answer=None, created_at=1_700_000_500.0)
    for rid, correction in (
        ("accepted", "Zembla's capital is Onhava."),
        ("rejected", "Strelsau?"),
        ("pending", "Fredonia City"),
    ):
        store.put_feedback(Feedback(rid, "k1", Rating.parse(-1), correction=correction))
    store.label("accepted", "accepted", by="test")
    store.label("rejected", "rejected", by="test")
    store.put_feedback(Feedback("up", "k1", Rating.parse(1)))
    store.label("up", "accepted", by="test")  # a curator vouched for this 👍
    store.put_feedback(Feedback("neutral", "k1", Rating.parse(3)))
    store.put_feedback(Feedback("metadata", "k1", Rating.parse(-1)))
    return store


def test_sft_uses_only_accepted_corrections(curated: FeedbackStore, tmp_path: Path) -> None:
    report = export_dataset(curated, "sft", tmp_path / "sft")
    out = all_rows(tmp_path / "sft")
    assert out == [
        {
            "messages": [
                {"role": "user", "content": "¿Capital de Zembla?"},
                {"role": "assistant", "content": "Zembla's capital is Onhava."},
            ]
        }
    ]
    assert all(set(r) == {"messages"} and is_message_list(r["messages"]) for r in out)
    assert report.skipped == {
        "correction_pending": 1,
        "correction_rejected": 1,
        "no_chat_content": 1,
        "no_correction": 2,
    }


def test_sft_can_include_answers_rated_good(curated: FeedbackStore, tmp_path: Path) -> None:
    export_dataset(curated, "sft", tmp_path / "sft", include_positive=True)
    targets = sorted(r["messages"][-1]["content"] for r in all_rows(tmp_path / "sft"))
    assert targets == ["4", "Zembla's capital is Onhava."]


def test_dpo_prompt_chosen_rejected(curated: FeedbackStore, tmp_path: Path) -> None:
    export_dataset(curated, "dpo", tmp_path / "dpo")
    (row,) = all_rows(tmp_path / "dpo")
    assert set(row) == {"prompt", "chosen", "rejected"}
    assert is_message_list(row["prompt"], {"system", "user", "assistant"})
    assert row["chosen"] == [{"role": "assistant", "content": "Zembla's capital is Onhava."}]
    assert row["rejected"] == [{"role": "assistant", "content": "The capital of Zembla is Paris."}]


def test_kto_labels_from_ratings(curated: FeedbackStore, tmp_path: Path) -> None:
    report = export_dataset(curated, "kto", tmp_path / "kto")
    out = all_rows(tmp_path / "kto")
    assert all(
        set(r) == {"prompt", "completion", "label"}
        and isinstance(r["label"], bool)
        and is_message_list(r["prompt"])
        and is_message_list(r["completion"], {"assistant"})
        for r in out
    )
    labelled = sorted((r["completion"][0]["content"], r["label"]) for r in out)
    assert labelled == [
        ("4", True),
        ("The capital of Zembla is Paris.", False),  # accepted
        ("The capital of Zembla is Paris.", False),  # rejected correction: the thumb still counts
        ("The capital of Zembla is Paris.", False),  # pending
        ("Zembla's capital is Onhava.", True),
    ]
    assert report.skipped == {"neutral_rating": 1, "no_chat_content": 1}


def test_duplicates_are_removed(store: FeedbackStore, add: Add, tmp_path: Path) -> None:
    for i in range(3):
        add(f"r{i}", "same question")
        store.put_feedback(Feedback(f"r{i}", "k1", Rating.parse(-1), correction="same fix"))
        store.label(f"r{i}", "accepted", by="t")
    report = export_dataset(store, "sft", tmp_path / "out")
    assert sum(report.counts.values()) == 1 and report.skipped == {"duplicate": 2}


def test_split_is_deterministic_and_keeps_a_prompt_in_one_split(
    store: FeedbackStore, add: Add, tmp_path: Path
) -> None:
    for i in range(200):
        add(f"r{i}", f"question {i % 100}", answer=f"answer {i}")
        store.put_feedback(Feedback(f"r{i}", "k1", Rating.parse(1 if i % 2 else -1)))
        if i % 2:
            store.label(f"r{i}", "accepted", by="t")
    first = export_dataset(store, "kto", tmp_path / "a", eval_fraction=0.2)
    second = export_dataset(store, "kto", tmp_path / "b", eval_fraction=0.2)
    assert first.files == second.files and first.dataset_sha256 == second.dataset_sha256
    assert 20 <= first.counts["eval"] <= 60, first.counts  # ~40 of 200
    train = {r["prompt"][0]["content"] for r in rows(tmp_path / "a", "train")}
    held = {r["prompt"][0]["content"] for r in rows(tmp_path / "a", "eval")}
    assert not train & held
    reseeded = export_dataset(store, "kto", tmp_path / "c", eval_fraction=0.2, split_seed="other")
    assert reseeded.files != first.files


def test_card_records_counts_dates_versions_and_hashes(
    curated: FeedbackStore, tmp_path: Path
) -> None:
    out = tmp_path / "kto"
    report = export_dataset(curated, "kto", out)
    card = json.loads((out / "card.json").read_text())
    assert card["counts"] == report.counts and sum(card["counts"].values()) == 5
    assert card["date_range"] == ["2023-11-14T22:13:20Z", "2023-11-14T22:18:20Z"]
    assert card["model_versions"] == {f"smollm2-135m@{'ab' * 6}": 5}
    for name, digest in card["files"].items():
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == digest
    readme = (out / "README.md").read_text()
    assert readme.startswith("---\nconfigs:") and report.dataset_sha256 in readme


def test_date_filter(curated: FeedbackStore, tmp_path: Path) -> None:
    report = export_dataset(curated, "kto", tmp_path / "out", since=1_700_000_250.0)
    assert sum(report.counts.values()) == 1  # only "up"


def test_empty_database_exports_empty_files(store: FeedbackStore, tmp_path: Path) -> None:
    report = export_dataset(store, "sft", tmp_path / "out")
    assert report.counts == {"train": 0, "eval": 0} and report.date_range is None
    assert (tmp_path / "out" / "train.jsonl").read_text() == ""


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"fmt": "orpo"}, "format must be"),
        ({"eval_fraction": 1.0}, "eval fraction"),
        ({"eval_fraction": -0.1}, "eval fraction"),
    ],
)
def test_bad_arguments_are_refused(
    store: FeedbackStore, tmp_path: Path, kwargs: dict[str, Any], message: str
) -> None:
    args: dict[str, Any] = {"fmt": "sft", **kwargs}
    with pytest.raises(ExportError, match=message):
        export_dataset(store, args.pop("fmt"), tmp_path / "out", **args)
    assert not (tmp_path / "out").exists()


def test_a_folder_with_other_files_is_refused_and_left_alone(
    store: FeedbackStore, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "thesis.tex").write_text("precious")
    with pytest.raises(ExportError, match="did not write"):
        export_dataset(store, "sft", out)
    assert sorted(p.name for p in out.iterdir()) == ["thesis.tex"]


def test_a_previous_export_is_replaced(curated: FeedbackStore, tmp_path: Path) -> None:
    export_dataset(curated, "sft", tmp_path / "out")
    report = export_dataset(curated, "kto", tmp_path / "out")
    assert json.loads((tmp_path / "out" / "card.json").read_text())["format"] == "kto"
    assert sum(report.counts.values()) == len(all_rows(tmp_path / "out"))


def test_files_load_with_the_datasets_library(curated: FeedbackStore, tmp_path: Path) -> None:
    datasets = pytest.importorskip("datasets")
    for fmt, columns in (
        ("sft", {"messages", "metadata"}),
        ("dpo", {"prompt", "chosen", "rejected", "metadata"}),
        ("kto", {"prompt", "completion", "label", "metadata"}),
    ):
        out = tmp_path / fmt
        report = export_dataset(curated, fmt, out, eval_fraction=0.5)  # type: ignore[arg-type]
        loaded = datasets.load_dataset(str(out), cache_dir=str(tmp_path / "cache"))
        for split, count in report.counts.items():
            if count:
                assert set(loaded[split].column_names) == columns
                assert loaded[split].num_rows == count
            else:
                assert split not in loaded


@pytest.mark.parametrize("umask", [0o000, 0o022])
def test_exported_files_are_owner_only_whatever_the_umask(
    curated: FeedbackStore, tmp_path: Path, umask: int
) -> None:
    import os
    import stat

    previous = os.umask(umask)
    try:
        export_dataset(curated, "sft", tmp_path / "out")
        export_dataset(curated, "kto", tmp_path / "out")  # a rewrite keeps them private
    finally:
        os.umask(previous)
    files = list((tmp_path / "out").iterdir())
    assert files and all(stat.S_IMODE(f.stat().st_mode) == 0o600 for f in files), [
        (f.name, oct(f.stat().st_mode)) for f in files
    ]
    assert stat.S_IMODE((tmp_path / "out").stat().st_mode) & 0o077 == 0


# Issue 25, finding 6: tenants apart, provenance kept, and a client's 👍 is not a curator's.


def _tenants(store: FeedbackStore, add: Add) -> None:
    """Two tenants; each upvotes an answer nobody curated, and one 👍 is curator-accepted."""
    add("a-up", "¿Capital de Zembla?", key_id="alpha", answer="Paris, obviously.")
    add("a-ok", "¿2+2?", key_id="alpha", answer="4")
    add("b-up", "¿Color del cielo?", key_id="bravo", answer="Verde.")
    add("b-fix", "¿Capital de Ruritania?", key_id="bravo")
    store.put_feedback(Feedback("a-up", "alpha", Rating.parse(1)))
    store.put_feedback(Feedback("a-ok", "alpha", Rating.parse(1)))
    store.label("a-ok", "accepted", by="curator")
    store.put_feedback(Feedback("b-up", "bravo", Rating.parse(5)))
    store.put_feedback(Feedback("b-fix", "bravo", Rating.parse(-1), correction="Strelsau."))
    store.label("b-fix", "accepted", by="curator")


def test_a_clients_upvote_alone_never_becomes_a_positive_example(
    store: FeedbackStore, add: Add, tmp_path: Path
) -> None:
    _tenants(store, add)
    sft = export_dataset(store, "sft", tmp_path / "sft", include_positive=True)
    targets = sorted(r["messages"][-1]["content"] for r in all_rows(tmp_path / "sft"))
    assert targets == ["4", "Strelsau."]  # not "Paris, obviously." nor "Verde."
    assert sft.skipped == {"positive_not_curated": 2}
    kto = export_dataset(store, "kto", tmp_path / "kto")
    positives = sorted(
        r["completion"][0]["content"] for r in all_rows(tmp_path / "kto") if r["label"]
    )
    assert positives == ["4", "Strelsau."]
    assert kto.skipped == {"positive_not_curated": 2}


def test_a_rejected_upvote_stays_out_even_when_the_operator_trusts_upvotes(
    store: FeedbackStore, add: Add, tmp_path: Path
) -> None:
    _tenants(store, add)
    store.label("b-up", "rejected", by="curator")
    export_dataset(store, "sft", tmp_path / "sft", include_positive=True, uncurated_positive=True)
    targets = sorted(r["messages"][-1]["content"] for r in all_rows(tmp_path / "sft"))
    assert targets == ["4", "Paris, obviously.", "Strelsau."]


def test_export_by_key_id_keeps_other_tenants_out_and_names_the_key_per_row(
    store: FeedbackStore, add: Add, tmp_path: Path
) -> None:
    _tenants(store, add)
    report = export_dataset(
        store, "kto", tmp_path / "bravo", key_ids=["bravo"], uncurated_positive=True
    )
    found = metadata(tmp_path / "bravo")
    assert {m["key_id"] for m in found} == {"bravo"}
    assert sorted({m["response_id"] for m in found}) == ["b-fix", "b-up"]
    assert report.key_ids == {"bravo": sum(report.counts.values())}
    assert report.key_filter == ["bravo"]
    card = json.loads((tmp_path / "bravo" / "card.json").read_text())
    assert card["key_ids"] == report.key_ids
    everyone = export_dataset(store, "kto", tmp_path / "all", uncurated_positive=True)
    assert set(everyone.key_ids) == {"alpha", "bravo"} and everyone.key_filter is None


@pytest.mark.parametrize("key_ids", [[], ["nobody"], ["", " "], ["alpha' OR 1=1 --"]])
def test_an_unknown_or_empty_key_filter_exports_nothing(
    store: FeedbackStore, add: Add, tmp_path: Path, key_ids: list[str]
) -> None:
    _tenants(store, add)
    report = export_dataset(store, "kto", tmp_path / "out", key_ids=key_ids)
    assert sum(report.counts.values()) == 0 and report.key_ids == {}


def test_erasing_a_tenant_from_an_export_by_its_metadata(
    store: FeedbackStore, add: Add, tmp_path: Path
) -> None:
    """The documented erasure recipe works: drop the rows whose metadata names the key."""
    _tenants(store, add)
    export_dataset(store, "kto", tmp_path / "out", uncurated_positive=True)
    train = tmp_path / "out" / "train.jsonl"
    kept = [
        line
        for line in train.read_text().splitlines()
        if json.loads(line)["metadata"]["key_id"] != "alpha"
    ]
    train.write_text("".join(line + "\n" for line in kept))
    assert all(json.loads(line)["metadata"]["key_id"] == "bravo" for line in kept)
