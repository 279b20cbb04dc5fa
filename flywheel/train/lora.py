"""The LoRA training loop: chat conversations in, a PEFT adapter that ``ggserve convert`` takes out.

Only the assistant's final answer is learned (the prompt tokens are masked with -100, as TRL's
``completion_only_loss`` does). Each batch is padded on the left so every answer ends at the
same position: only the logits of the answer window are computed, since SmolLM2's 49k-wide LM
head over the prompt tokens would cost more than the whole LoRA on a CPU.

Replay conversations (answers the base already gives and users rated good) are not learned as
targets: along each replayed answer the adapted model is held to the base model's own next-token
distribution (KL divergence, the base computed with the adapter switched off). Measured on
SmolLM2-135M (docs/flywheel-experiments.md §2): cross-entropy on the base's own greedy answers
memorised them and broke held-out answers ("The capital of Italy is Italy.") even without the new
fact, while the KL anchor kept the held-out answers' margins where the base had them. Every step
takes ``batch_size`` rows to learn and, when there is a replay, ``replay_batch_size`` rows to
anchor, so the few corrections are seen at every step however large the replay.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from convert.errors import ConvertError
from flywheel.train.data import Message

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

    # The defaults are the recipe measured on the flywheel loop (docs/flywheel-experiments.md
    # §2): a few corrections learned and a replay held to the base on SmolLM2-135M. Learned as
    # targets at 1.5e-3 (the old default) the corrections broke held-out answers in every run.
    steps: int = 16
    batch_size: int = 4
    # 12, not 4: with 4 the replay's drift ended 6x higher and a control answer kept its lead by
    # 0.06 log-prob, which another CPU's kernels then lost (docs/flywheel-experiments.md §3).
    replay_batch_size: int = 12
    replay_weight: float = 8.0  # of the KL drift against the cross-entropy
    stop_loss: float = 0.0  # stop once a step's loss on the data is at or below this; 0 = never
    rank: int = 16
    alpha: float = 32.0
    learning_rate: float = 4e-4
    seed: int = 0
    target_modules: tuple[str, ...] = DEFAULT_TARGET_MODULES
    layers: tuple[int, ...] = ()  # decoder layers the LoRA patches; () = all of them

    def check(self) -> None:
        """Raise ConvertError naming the first value out of range."""
        limits: list[tuple[str, float, float, float]] = [
            ("steps", self.steps, 1, 100_000),
            ("batch_size", self.batch_size, 1, 512),
            ("replay_batch_size", self.replay_batch_size, 1, 512),
            ("replay_weight", self.replay_weight, 0.0, 1e3),
            ("stop_loss", self.stop_loss, 0.0, 100.0),
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
        if any(not 0 <= layer < 10_000 for layer in self.layers):
            raise ConvertError(
                f"layers {list(self.layers)} include one outside [0, 9999]",
                "give decoder layer numbers, e.g. 0-9",
            )


@dataclass
class Encoded:
    """One conversation as token ids and the length of its answer (the learned tail)."""

    ids: list[int]
    answer_tokens: int


@dataclass
class TrainingRun:
    """What the loop produced: the PEFT model, the loss and the replay drift of every step."""

    model: Any  # peft.PeftModel
    losses: list[float] = field(default_factory=list)  # cross-entropy on the learned answers
    drift: list[float] = field(default_factory=list)  # KL(base || adapted) on the replay
    device: str = "cpu"


def parse_layers(text: str) -> tuple[int, ...]:
    """``--layers``: ``"0-9"``, ``"0,2,4"`` or a mix → sorted layer numbers; ``""`` → all."""
    layers: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        low, _, high = part.partition("-")
        try:
            first, last = int(low), int(high or low)
        except ValueError:
            raise ConvertError(
                f"--layers {text!r}: {part!r} is not a layer number or range", "e.g. 0-9 or 0,2,4"
            ) from None
        if first < 0 or last < first or last - first > 10_000:
            raise ConvertError(f"--layers {text!r}: {part!r} is not a valid range", "e.g. 0-9")
        layers.update(range(first, last + 1))
    return tuple(sorted(layers))


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
    replay: Sequence[Sequence[Message]] = (),
    device: str = "cpu",
    on_step: StepCallback | None = None,
) -> TrainingRun:
    """Wrap ``model`` in a fresh LoRA, learn ``conversations``' answers and keep ``replay``'s.

    Repeatable per seed. The loss recorded and reported for a step is the cross-entropy on the
    learned answers; the replay's KL drift is recorded beside it (both are minimised together).
    """
    import torch
    from peft import LoraConfig, get_peft_model

    hp.check()
    encoded = [encode(tokenizer, c, f"row {i + 1}") for i, c in enumerate(conversations)]
    anchored = [encode(tokenizer, c, f"replay row {i + 1}") for i, c in enumerate(replay)]
    _seed_everything(hp.seed)
    depth = _decoder_depth(model)
    if depth is not None and any(layer >= depth for layer in hp.layers):
        raise ConvertError(
            f"layers {list(hp.layers)}: the base has {depth} decoder layers (0-{depth - 1})",
            f"choose layers below {depth}",
        )
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
            layers_to_transform=list(hp.layers) or None,
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
    learn_order = batch_order(len(encoded), hp.steps, hp.batch_size, hp.seed)
    replay_order = (
        batch_order(len(anchored), hp.steps, hp.replay_batch_size, hp.seed + 1) if anchored else []
    )
    for step, rows in enumerate(learn_order):
        batch = left_padded([encoded[i] for i in rows], pad)
        loss = answer_cross_entropy(peft_model, [t.to(device) for t in batch])
        total = loss
        if anchored:
            drift = replay_drift(
                peft_model,
                [t.to(device) for t in left_padded([anchored[i] for i in replay_order[step]], pad)],
            )
            total = loss + hp.replay_weight * drift
            run.drift.append(float(drift.item()))
        total.backward()
        optimizer.step()
        optimizer.zero_grad()
        if not math.isfinite(float(total.item())):
            raise ConvertError(
                f"the loss became {float(total.item())} at step {step + 1}",
                "lower --learning-rate",
            )
        run.losses.append(float(loss.item()))
        if on_step is not None:
            on_step(step + 1, hp.steps, run.losses[-1])
        if run.losses[-1] <= hp.stop_loss:
            # Learned enough: every further step on a few corrections mostly spreads them
            # into unrelated answers (docs/flywheel-experiments.md §2).
            break
    peft_model.eval()
    return run


def answer_cross_entropy(model: Any, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean cross-entropy of ``model`` on the labelled answer tokens of a left-padded batch."""
    import torch

    logits = _answer_logits(model, batch)
    labels = batch[3]
    return torch.nn.functional.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
    )


def replay_drift(model: Any, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Mean KL(base || adapted) over the answer tokens of a left-padded replay batch.

    The base's distribution is the same PEFT model with its adapter switched off, so no second
    copy of the weights is held. Zero before the first step, since the LoRA starts as a no-op.
    """
    import torch

    with torch.no_grad(), model.disable_adapter():
        base = _answer_logits(model, batch).log_softmax(-1)
    adapted = _answer_logits(model, batch).log_softmax(-1)
    per_token = (base.exp() * (base - adapted)).sum(-1)
    mask = batch[3] != -100
    return (per_token * mask).sum() / mask.sum()


def _answer_logits(model: Any, batch: Sequence[torch.Tensor]) -> torch.Tensor:
    """Float logits predicting each position of the answer window (the labels' columns)."""
    input_ids, attention, positions, labels = batch
    return (
        model(
            input_ids=input_ids,
            attention_mask=attention,
            position_ids=positions,
            logits_to_keep=labels.shape[1] + 1,
        )
        .logits[:, :-1]
        .float()
    )


def _seed_everything(seed: int) -> None:
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _decoder_depth(model: Any) -> int | None:
    depth = getattr(getattr(model, "config", None), "num_hidden_layers", None)
    return depth if isinstance(depth, int) else None


def _linear_names(model: Any) -> list[str]:
    import torch

    names = {
        n.rsplit(".", 1)[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)
    }
    return sorted(names)


def _missing_modules(model: Any, targets: Sequence[str]) -> list[str]:
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    return [t for t in targets if t not in present]
