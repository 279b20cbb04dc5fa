"""The LoRA training loop: chat conversations in, a PEFT adapter that ``ggserve convert`` takes out.

Only the assistant's final answer is learned (the prompt tokens are masked with -100, as TRL's
``completion_only_loss`` does). Each batch is padded on the left so every answer ends at the
same position: only the logits of the answer window are computed, since SmolLM2's 49k-wide LM
head over the prompt tokens would cost more than the whole LoRA on a CPU.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convert.errors import ConvertError
from convert.train.data import Message

if TYPE_CHECKING:
    import torch

DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)
MAX_SEQUENCE_TOKENS = 1024

StepCallback = Callable[[int, int, float], None]  # (step done, total steps, loss)


@dataclass(frozen=True)
class Hyperparameters:
    """What the run learns with; recorded in ``training.json`` so a run can be repeated."""

    steps: int = 32
    batch_size: int = 4
    rank: int = 8
    alpha: float = 16.0
    learning_rate: float = 1.5e-3
    seed: int = 0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES

    def check(self) -> None:
        """Raise ConvertError naming the first value out of range."""
        limits: list[tuple[str, float, float, float]] = [
            ("steps", self.steps, 1, 100_000),
            ("batch_size", self.batch_size, 1, 512),
            ("rank", self.rank, 1, 256),
            ("alpha", self.alpha, 1e-3, 1e4),
            ("learning_rate", self.learning_rate, 1e-7, 1.0),
            ("seed", self.seed, 0, 2**32 - 1),
        ]
        for name, value, low, high in limits:
            if not (low <= value <= high) or (isinstance(value, float) and math.isnan(value)):
                raise ConvertError(
                    f"{name} is {value}, outside [{low:g}, {high:g}]", f"pass a {name} in range"
                )
        if not self.target_modules:
            raise ConvertError("no target modules given", "e.g. q_proj,v_proj")


@dataclass
class Encoded:
    """One conversation as token ids and the length of its answer (the learned tail)."""

    ids: list[int]
    answer_tokens: int


@dataclass
class TrainingRun:
    """What the loop produced: the PEFT model and the loss of every step."""

    model: Any  # peft.PeftModel
    losses: list[float] = field(default_factory=list)
    device: str = "cpu"


def encode(tokenizer: Any, conversation: Sequence[Message], where: str) -> Encoded:
    """Token ids of the whole conversation with the chat template, and how many are the answer."""
    prompt = tokenizer.apply_chat_template(
        list(conversation[:-1]), add_generation_prompt=True, tokenize=True, return_dict=False
    )
    full = tokenizer.apply_chat_template(list(conversation), tokenize=True, return_dict=False)
    prompt, full = list(prompt), list(full)
    if full[: len(prompt)] != prompt or len(full) <= len(prompt):
        raise ConvertError(
            f"{where}: the chat template does not render the prompt as a prefix of the "
            "conversation, so the answer tokens cannot be told apart",
            "use a base whose chat template appends each message (ChatML, Llama 3, ...)",
        )
    if len(full) > MAX_SEQUENCE_TOKENS:
        raise ConvertError(
            f"{where}: {len(full)} tokens, more than the {MAX_SEQUENCE_TOKENS} trained on",
            "shorten the conversation or drop the row",
        )
    return Encoded(ids=full, answer_tokens=len(full) - len(prompt))


def batch_order(n_rows: int, steps: int, batch_size: int, seed: int) -> list[list[int]]:
    """Row indices of every step: the rows shuffled once per epoch with ``seed``, then cut."""
    rng = random.Random(seed)
    order: list[int] = []
    while len(order) < steps * batch_size:
        epoch = list(range(n_rows))
        rng.shuffle(epoch)
        order.extend(epoch)
    return [order[s * batch_size : (s + 1) * batch_size] for s in range(steps)]


def left_padded(
    rows: Sequence[Encoded], pad_id: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Input ids, attention mask, position ids and answer labels of ``rows``, padded on the left.

    Labels cover the last ``window`` positions (the longest answer); the prompt tail inside that
    window of a shorter answer is ignored (-100).
    """
    import torch

    width = max(len(r.ids) for r in rows)
    window = max(r.answer_tokens for r in rows)
    input_ids = torch.tensor([[pad_id] * (width - len(r.ids)) + r.ids for r in rows])
    attention = torch.tensor([[0] * (width - len(r.ids)) + [1] * len(r.ids) for r in rows])
    labels = input_ids[:, width - window :].clone()
    for index, row in enumerate(rows):
        labels[index, : window - row.answer_tokens] = -100
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    return input_ids, attention, positions, labels


def pick_device(requested: str) -> str:
    """``auto`` → ``cuda`` when a GPU is visible, else ``cpu``; an explicit choice is checked."""
    if requested not in ("auto", "cpu", "cuda"):
        raise ConvertError(f"unknown device {requested!r}", "choose auto, cpu or cuda")
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConvertError("--device cuda but no CUDA GPU is visible", "use --device cpu or auto")
    return requested


def train(
    model: Any,
    tokenizer: Any,
    conversations: Sequence[Sequence[Message]],
    hp: Hyperparameters,
    *,
    device: str = "cpu",
    on_step: StepCallback | None = None,
) -> TrainingRun:
    """Wrap ``model`` in a fresh LoRA and train it on ``conversations``; repeatable per seed."""
    import torch
    from peft import LoraConfig, get_peft_model

    hp.check()
    encoded = [encode(tokenizer, c, f"row {i + 1}") for i, c in enumerate(conversations)]
    _seed_everything(hp.seed)
    missing = _missing_modules(model, hp.target_modules)
    if missing:
        raise ConvertError(
            f"the base has no module named {', '.join(missing)}",
            f"choose target modules among {', '.join(_linear_names(model)[:12])}",
        )
    peft_model = get_peft_model(
        model,
        LoraConfig(
            r=hp.rank,
            lora_alpha=hp.alpha,  # type: ignore[arg-type]  # peft accepts floats
            target_modules=list(hp.target_modules),
            lora_dropout=0.0,
            task_type="CAUSAL_LM",
        ),
    )
    peft_model.to(device)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    optimizer = torch.optim.AdamW(
        [p for p in peft_model.parameters() if p.requires_grad], lr=hp.learning_rate
    )
    peft_model.train()
    run = TrainingRun(model=peft_model, device=device)
    for step, rows in enumerate(batch_order(len(encoded), hp.steps, hp.batch_size, hp.seed)):
        input_ids, attention, positions, labels = (
            t.to(device) for t in left_padded([encoded[i] for i in rows], pad)
        )
        logits = peft_model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            logits_to_keep=labels.shape[1] + 1,
        ).logits[:, :-1]
        loss = torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]).float(), labels.reshape(-1), ignore_index=-100
        )
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        value = float(loss.item())
        if not math.isfinite(value):
            raise ConvertError(
                f"the loss became {value} at step {step + 1}", "lower --learning-rate"
            )
        run.losses.append(value)
        if on_step is not None:
            on_step(step + 1, hp.steps, value)
    peft_model.eval()
    return run


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _linear_names(model: Any) -> list[str]:
    import torch

    names = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    return sorted(names)


def _missing_modules(model: Any, targets: Sequence[str]) -> list[str]:
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [t for t in targets if t not in present]
