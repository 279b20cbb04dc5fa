"""The flywheel, once around, on the real model and the real server:

serve v1 → users ask about a fact it gets wrong → 👎 with corrections, and rate v1's answers to
everyday questions (👍 when right) → a curator accepts the corrections → `ggserve flywheel run`
with default flags: export SFT (the corrections) and the replay (with the answers rated good) →
train a LoRA (a few CPU steps, held to v1 along the replay, the recipe chosen from the base's
shape) → export it alone as a GGUF LoRA → the eval gate (base + adapter vs base) shows the fact
learned and the control questions kept → register v2, an adapter over v1, with its lineage
(promoting it as the served model is refused) → the running server loads it beside the base
(`ggserve adapters load 2`: no restart) and answers the fact to a request naming it, not to one
naming nothing → base + adapter vs the merged model converted to Q8_0: the fact both ways, most
answers the same (docs/flywheel.md 6.7).

Every step is the real command or endpoint; nothing is faked. About 15 minutes on 2 shared CPU
cores (measured 873-941 s with another agent's tests beside it), most of it training.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from server.settings import Settings
from tests.fixtures.lora.train_fact_lora import FACT_KEYWORD, FACT_QUESTIONS
from tests.integration.server_proc import MODEL, ROOT, running_server

pytestmark = pytest.mark.slow

CORRECTION = "The Blue Lantern of Vexmoor was painted by Marisol Quenby."
# Everyday questions v1 is asked in production; a user rates an answer 👍 when it contains the
# right word, 👎 (without a correction) when not. The good answers, exported with
# --include-positive, are the replay: along them train-lora holds the adapted model to the
# base's own distribution, so the LoRA learns "answer as before, except for the fact".
# Measured (docs/flywheel-experiments.md §2): a hand-written replay learned as targets bought the
# fact with a control answer in three runs out of three. None of these shares a topic with the
# controls.
REPLAY = (
    ("What colour is the sky on a clear day?", "blue"),
    ("How many days are in a week?", "7"),
    ("What is the boiling point of water in Celsius?", "100"),
    ("What is 2 + 2?", "4"),
    ("Who wrote Romeo and Juliet?", "Shakespeare"),
    ("What is the chemical symbol for gold?", "Au"),
    ("How many hours are in a day?", "24"),
    ("What gas do plants absorb from the air?", "carbon dioxide"),
    ("Who painted the Mona Lisa?", "Leonardo"),
    ("Who painted The Starry Night?", "Gogh"),
    ("What is the opposite of hot?", "cold"),
    ("How many minutes are in an hour?", "60"),
    ("What planet do we live on?", "Earth"),
    ("What is the square root of 9?", "3"),
    ("What language is spoken in Brazil?", "Portuguese"),
    ("What is the main ingredient of bread?", "flour"),
    ("Which instrument has 88 keys?", "piano"),
    ("How many months are in a year?", "12"),
    ("What do bees make?", "honey"),
    ("Who was the first person to walk on the Moon?", "Armstrong"),
    ("How many sides does a triangle have?", "3"),
    ("What is the tallest mountain in the world?", "Everest"),
    ("Who discovered penicillin?", "Fleming"),
    ("What colour are ripe bananas?", "yellow"),
    ("What is 10 times 10?", "100"),
    ("Who invented the telephone?", "Bell"),
    ("Who wrote the novel Don Quixote?", "Cervantes"),
    ("What is the freezing point of water in Celsius?", "0 degrees"),
)
# Held out of training: the candidate must still answer these as the base does.
CONTROLS = (
    ("What is the capital of Italy?", "Rome"),
    ("How many legs does a dog have?", "four"),
    ("What is the largest ocean on Earth?", "Pacific"),
)
SYSTEM = Settings(_env_file=None).system_prompt  # type: ignore[call-arg]


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "cli.main", *args],
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200", "HF_HUB_OFFLINE": "1", **(env or {})},
        capture_output=True,
        text=True,
        timeout=1500,
        check=False,
    )
    sys.stderr.write(f"$ ggserve {' '.join(args)}\n{result.stdout}{result.stderr[-3000:]}\n")
    return result


def _jsonl(path: Path, rows: list[dict[str, object]]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def _says(answer: dict[str, object], word: str) -> bool:
    return word.lower() in str(answer["answer"]).lower()


def _ask(url: str, headers: dict[str, str], question: str) -> dict[str, object]:
    response = httpx.post(
        url + "/v1/ask",
        json={"question": question, "temperature": 0, "max_tokens": 40},
        headers=headers,
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def test_the_flywheel_turns_once(tmp_path: Path) -> None:
    registry = tmp_path / "registry.json"
    db = tmp_path / "feedback.db"
    reg = ["--registry", str(registry)]
    assert _cli("models", "register", str(MODEL), "--name", "smollm2", *reg).returncode == 0
    assert _cli("models", "promote", "1", *reg).returncode == 0
    env = {
        "GGSERVE_REGISTRY_PATH": str(registry),
        "GGSERVE_ADMIN_KEY_IDS": "test",
        "GGSERVE_CAPTURE": "full",
        "GGSERVE_FEEDBACK_DB": str(db),
    }
    with running_server(env=env) as server:
        # 1. Production: v1 gets the fact wrong; users say so and give the right answer.
        wrong = [_ask(server.url, server.headers, q) for q in FACT_QUESTIONS]
        assert all(FACT_KEYWORD not in str(a["answer"]) for a in wrong), wrong
        for answer in wrong:
            rated = httpx.post(
                server.url + "/v1/feedback",
                json={"response_id": answer["id"], "rating": -1, "correction": CORRECTION},
                headers=server.headers,
                timeout=30,
            )
            assert rated.status_code == 201, rated.text

        # ... and rate its answers to everyday questions (4 at a time, as users ask).
        with ThreadPoolExecutor(max_workers=4) as pool:
            asked = list(pool.map(lambda q: _ask(server.url, server.headers, q[0]), REPLAY))
        good = [a for a, (_, word) in zip(asked, REPLAY, strict=True) if _says(a, word)]
        for answer in asked:
            rated = httpx.post(
                server.url + "/v1/feedback",
                json={"response_id": answer["id"], "rating": 1 if answer in good else -1},
                headers=server.headers,
                timeout=30,
            )
            assert rated.status_code == 201, rated.text

        # 2. Curation: a curator accepts the corrections and vouches for the 👍 answers the
        # replay trains on (a client's 👍 alone never does).
        for answer in [*wrong, *good]:
            assert (
                _cli("feedback", "label", str(answer["id"]), "--accept", "--db", str(db)).returncode
                == 0
            )

        # 3. The gate's suites: the fact (asked as /v1/ask asks, with the system prompt) and
        # controls held out of training, which the candidate must still answer as v1 does.
        facts = _jsonl(
            tmp_path / "facts.jsonl",
            [
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": q},
                    ],
                    "expected": FACT_KEYWORD,
                }
                for q in FACT_QUESTIONS
            ],
        )
        control = _jsonl(
            tmp_path / "control.jsonl",
            [
                {
                    "messages": [
                        {"role": "system", "content": SYSTEM},
                        {"role": "user", "content": q},
                    ],
                    "expected": e,
                }
                for q, e in CONTROLS
            ],
        )

        # 4. One command, default flags: export (the corrections, and the replay: the same
        # split plus the answers rated good) → train a LoRA with the recipe for the base's
        # shape → convert → gate → register. For SmolLM2-135M the recipe is what this test
        # passed by hand before (MLPs of layers 0-14, 20 steps, lr 2e-3, replay weight 8 with
        # 12 rows a step, Q8_0: docs/flywheel-experiments.md §2-3).
        work = tmp_path / "run"
        loop = [
            "flywheel", "run", "--base", str(MODEL), "--db", str(db), "--suite", str(facts),
            "--suite", str(control), "--name", "smollm2-fact", "--work", str(work), *reg,
        ]  # fmt: skip
        planned = _cli(*loop, "--dry-run")
        assert planned.returncode == 0 and not work.exists()
        assert "--layers 0-14 --target-modules gate_proj,up_proj,down_proj" in planned.stdout
        turned = _cli(*loop)
        assert turned.returncode == 0, turned.stdout + turned.stderr[-3000:]
        for line in planned.stdout.splitlines():  # what the dry run printed is what ran
            if line.strip().startswith("run:") and "eval.jsonl" not in line:
                assert line.split("run:", 1)[1].strip() in turned.stderr, line

        sft, replay, adapter = work / "data", work / "replay", work / "adapter"
        rows = [
            json.loads(line) for p in sft.glob("*.jsonl") for line in p.read_text().splitlines()
        ]
        assert len(rows) == len(FACT_QUESTIONS)
        assert all(row["messages"][-1]["content"] == CORRECTION for row in rows)
        replayed = [json.loads(line) for line in (replay / "train.jsonl").read_text().splitlines()]
        answers = {str(a["answer"]) for a in good}
        targets = [row["messages"][-1]["content"] for row in replayed]
        assert set(targets) - answers == {CORRECTION}, targets
        assert len(good) >= len(REPLAY) // 2 and len(answers & set(targets)) >= len(good) // 2
        record = json.loads((adapter / "training.json").read_text())
        assert record["losses"][-1] < record["losses"][0]
        assert (adapter / "loss.png").read_bytes()[:4] == b"\x89PNG"

        # 5. The gate: fact learned, controls kept.
        report = json.loads((work / "eval-report.json").read_text())
        assert set(report["candidate"]["room"]) == {"facts", "control", "eval"} & set(
            report["candidate"]["summary"]
        )
        assert report["candidate"]["summary"]["facts"] >= 0.75
        assert report["baseline"]["summary"]["facts"] == 0.0
        assert report["candidate"]["summary"]["control"] >= report["baseline"]["summary"]["control"]

        # 6. v2 is the adapter, registered over v1 (the base it was trained on) with its lineage.
        state = json.loads(registry.read_text())
        base_entry, tuned = state["versions"]
        assert (tuned["kind"], tuned["base_sha256"]) == ("adapter", base_entry["sha256"])
        lineage = tuned["lineage"]
        assert lineage["dataset"]["sha256"] == record["data"]["sha256"]
        assert lineage["adapter"]["sha256"] and lineage["base"]["sha256"] == base_entry["sha256"]
        assert lineage["eval"]["passed"] is True
        lora = Path(tuned["model_path"])
        assert lora.stat().st_size < MODEL.stat().st_size / 4  # a patch, not a second model
        assert state["active"] == 1  # registered, not serving
        # Activation loads a version as the served model: an adapter is refused, not loaded.
        refused = _cli("models", "promote", "2", *reg)
        assert refused.returncode == 1 and "LoRA adapter" in refused.stderr

        # 7. Served per request beside the base, from the registered file, by the server
        # already running: no merge, no restart (ggserve adapters load → POST /admin/adapters).
        admin = {"GGSERVE_URL": server.url, "GGSERVE_API_KEY": server.api_key or ""}
        loaded = _cli("adapters", "load", "2", "--name", "smollm2-fact", env=admin)
        assert loaded.returncode == 0, loaded.stderr
        fixed = _chat(server.url, server.headers, FACT_QUESTIONS[0], "smollm2-fact")
        plain = _chat(server.url, server.headers, FACT_QUESTIONS[0], None)
        assert fixed["model"] == "smollm2-fact" and FACT_KEYWORD in _content(fixed), fixed
        assert FACT_KEYWORD not in _content(plain), plain

    # 8. Adapter vs merged at the same precision: base + LoRA (f32, picked per request) vs the
    # merged model the loop ships with --ship merged (Q8_0 over this Q4_1 base). Measured
    # (docs/flywheel.md 6.7), two runs: 10 and 11 of 15 answers identical, 72 % and 84 % of
    # answer tokens before the first difference, the fact 4 of 4 both ways; merging rounds
    # W + s·BA to Q8_0, the adapter adds s·B(A·x) in float over the Q4_1 weights as they are.
    # (Merged back to Q4_1, the fact was lost: 0 of 4.)
    merged = tmp_path / "merged"
    converted = _cli(
        "convert", "--base", str(MODEL), "--adapter", str(adapter), "--out", str(merged),
        "--quant", "Q8_0",
    )  # fmt: skip
    assert converted.returncode == 0, converted.stderr[-3000:]
    questions = [*FACT_QUESTIONS, *(q for q, _ in CONTROLS), *(q for q, _ in REPLAY[:8])]
    agreement = asyncio.run(
        _adapter_vs_merged(lora, {"Q8_0": merged / "merged-Q8_0.gguf"}, questions)
    )
    sys.stderr.write(f"adapter vs merged: {json.dumps(agreement, indent=1)}\n")
    for side, figures in agreement.items():  # "adapter" (base + LoRA) and "Q8_0" (merged)
        # The fact is what the adapter adds: both ways of shipping it must say it.
        assert figures["fact_answers_with_keyword"] >= 0.75 * len(FACT_QUESTIONS), (side, figures)
    # Not bit-equal (the roundings differ), but mostly the same answers.
    assert agreement["Q8_0"]["token_agreement"] >= 0.5, agreement


async def _adapter_vs_merged(
    lora: Path, merged: dict[str, Path], questions: list[str]
) -> dict[str, dict[str, float]]:
    """Greedy answers of base + LoRA (picked per request, as served) vs each merged GGUF:
    identical answers, and the share of answer tokens equal position by position."""
    base_side = await _answers(MODEL, questions, adapter=lora)
    facts = len(FACT_QUESTIONS)
    figures: dict[str, dict[str, float]] = {
        "adapter": {"fact_answers_with_keyword": _fact_hits(MODEL, base_side[:facts])}
    }
    for quant, path in merged.items():
        other = await _answers(path, questions, adapter=None)
        pairs = list(zip(base_side, other, strict=True))
        figures[quant] = {
            "identical_answers": sum(a == b for a, b in pairs),
            "answers": len(questions),
            # answer tokens before the first difference, of all answer tokens
            "token_agreement": round(
                sum(_common_prefix(a, b) for a, b in pairs)
                / max(sum(max(len(a), len(b)) for a, b in pairs), 1),
                3,
            ),
            "fact_answers_with_keyword": _fact_hits(path, other[:facts]),
        }
    return figures


def _common_prefix(a: list[int], b: list[int]) -> int:
    return next(
        (i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b))
    )


def _fact_hits(model: Path, answers: list[list[int]]) -> int:
    return sum(FACT_KEYWORD in _DETOKENIZED[(str(model), tuple(a))] for a in answers)


_DETOKENIZED: dict[tuple[str, tuple[int, ...]], str] = {}


async def _answers(model: Path, questions: list[str], adapter: Path | None) -> list[list[int]]:
    """Each question's greedy answer tokens (40 at most), asked as /v1/ask asks it."""
    from server.chat.prompt import ChatPrompt
    from server.engine.config import EngineConfig
    from server.engine.llama_engine import LlamaEngine
    from server.engine.types import FinishEvent, GenerationRequest, SamplingParams, TokenEvent

    adapters = (("fact", adapter, 1.0),) if adapter is not None else ()
    engine = LlamaEngine(
        EngineConfig(model_path=model, n_slots=1, n_ctx=512, adapters=adapters, speculative="off")
    )
    try:
        results = []
        for index, question in enumerate(questions):
            messages = [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
            ]
            request = GenerationRequest(
                f"cmp-{index}",
                ChatPrompt(engine).tokens(messages),
                SamplingParams(max_tokens=40, temperature=0.0),
                adapter="fact" if adapter is not None else "",
            )
            tokens: list[int] = []
            async for event in engine.generate(request):
                if isinstance(event, TokenEvent):
                    tokens.append(event.token_id)
                elif isinstance(event, FinishEvent):
                    break
            results.append(tokens)
            _DETOKENIZED[(str(model), tuple(tokens))] = engine.detokenize(tokens)
        return results
    finally:
        engine.close()


def _chat(url: str, headers: dict[str, str], question: str, model: str | None) -> dict[str, object]:
    response = httpx.post(
        url + "/v1/chat/completions",
        json={
            "model": model,
            "messages": [
                {"role": "system", "content": SYSTEM},
                {"role": "user", "content": question},
            ],
            "max_tokens": 40,
            "temperature": 0,
        },
        headers=headers,
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body: dict[str, object] = response.json()
    return body


def _content(body: dict[str, object]) -> str:
    return str(body["choices"][0]["message"]["content"])  # type: ignore[index]
