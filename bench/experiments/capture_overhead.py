"""How much capture costs: submit() on the event loop, and the writer thread's throughput.

    python -m bench capture_overhead [--records 20000]

Records are full-level /v1/ask-sized (a 600-character prompt with an email and a phone number
to redact, a 400-character answer, two sources). Prints one line per figure.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from flywheel.export import export_dataset
from server.feedback.capture import CaptureWriter
from server.feedback.records import Feedback, Interaction, ModelVersion, Rating
from server.feedback.store import FeedbackStore

MODEL = ModelVersion("SmolLM2-135M-Instruct.Q4_1", "b179c9523d0e" + "0" * 52)


def record(i: int) -> Interaction:
    question = f"Question {i}: write to ana{i}@example.com or call +34 612 345 {i % 1000:03d}. "
    return Interaction(
        response_id=f"r{i}",
        key_id="bench",
        route="/v1/ask",
        model=MODEL,
        level="full",
        messages=[
            {"role": "system", "content": "You are a helpful assistant. Answer concisely."},
            {"role": "user", "content": question * 6},
        ],
        answer="An answer of about four hundred characters. " * 9,
        sources=[{"n": 1, "document": "a.md", "snippet": "text " * 40, "score": 0.8}] * 2,
        params={"temperature": 0.2, "max_tokens": 256},
        latency_ms=1234.5,
        prompt_tokens=180,
        completion_tokens=90,
        finish_reason="stop",
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--records", type=int, default=20_000)
    args = parser.parse_args(argv)
    records = [record(i) for i in range(args.records)]
    with tempfile.TemporaryDirectory() as folder:
        store = FeedbackStore(Path(folder) / "feedback.db")
        writer = CaptureWriter(lambda: store, level="full", max_queue=args.records + 1)
        writer.start()
        costs: list[float] = []
        started = time.perf_counter()
        for item in records:
            t0 = time.perf_counter_ns()
            writer.submit(item)
            costs.append((time.perf_counter_ns() - t0) / 1000)
        submitted = time.perf_counter() - started
        writer.flush(timeout=600)
        total = time.perf_counter() - started
        writer.close()
        costs.sort()
        print(f"records: {args.records} (full level, ~1.9 kB of text each before redaction)")
        print(
            f"submit() on the caller: median {statistics.median(costs):.1f} µs, "
            f"p99 {costs[int(len(costs) * 0.99)]:.1f} µs, max {costs[-1]:.0f} µs"
        )
        print(f"all submitted in {submitted:.2f} s; all on disk after {total:.2f} s")
        print(f"writer throughput (redact + insert, WAL): {args.records / total:.0f} records/s")
        size = sum(p.stat().st_size for p in Path(folder).iterdir())
        print(f"database size: {size / 1e6:.1f} MB ({size / args.records:.0f} B/record)")
        for i in range(0, args.records, 2):
            rating = Rating.parse(-1 if i % 4 else 1)
            store.put_feedback(Feedback(f"r{i}", "bench", rating, correction=f"fix {i}"))
            if i % 4:
                store.label(f"r{i}", "accepted", by="bench")
        for fmt in ("sft", "dpo", "kto"):
            started = time.perf_counter()
            report = export_dataset(store, fmt, Path(folder) / fmt)
            print(
                f"export {fmt}: {sum(report.counts.values())} examples from "
                f"{args.records // 2} rated responses in {time.perf_counter() - started:.2f} s"
            )


if __name__ == "__main__":
    main()
