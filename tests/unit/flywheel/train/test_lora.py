"""The LoRA loop on a tiny random Llama: it learns, it is repeatable, it learns only answers."""

from __future__ import annotations

from typing import Any

import pytest

from convert.errors import ConvertError
from flywheel.train.lora import (
    Encoded,
    Hyperparameters,
    batch_order,
    encode,
    left_padded,
    train,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")


@pytest.fixture(autouse=True)
def one_thread() -> Any:
    """A model this small trains fastest on one thread, above all on a busy machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


class CharTokenizer:
    """A chat template that appends each message: '<role>text|', then '<assistant>' to prompt."""

    pad_token_id = 0

    def apply_chat_template(
        self,
        messages: list[dict[str, str]],
        add_generation_prompt: bool = False,
        tokenize: bool = True,
        return_dict: bool = False,
    ) -> list[int]:
        text = "".join(f"<{m['role']}>{m['content']}|" for m in messages)
        if add_generation_prompt:
            text += "<assistant>"
        return [1 + ord(c) % 60 for c in text]


def _tiny_model(seed: int = 0, initializer_range: float = 0.02) -> Any:
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(
        vocab_size=64,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=initializer_range,
    )
    return transformers.LlamaForCausalLM(config)


def _chat(question: str, answer: str) -> list[dict[str, str]]:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


DATA = [_chat("who?", "quenby"), _chat("sky?", "blue"), _chat("legs?", "eight")]
FAST = Hyperparameters(steps=20, batch_size=2, rank=4, alpha=8, learning_rate=3e-2, seed=7)


def _answer_loss(model: Any) -> float:
    """Mean loss over the answers of every row at once: the same batch before and after."""
    rows = [encode(CharTokenizer(), c, "row") for c in DATA]
    ids, attention, positions, labels = left_padded(rows, pad_id=0)
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=attention, position_ids=positions).logits
    logits = logits[:, -labels.shape[1] - 1 : -1]
    return float(
        torch.nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=-100
        )
    )


def test_the_answer_loss_falls_and_the_base_weights_stay_frozen() -> None:
    model = _tiny_model()
    before_weights = model.model.layers[0].self_attn.q_proj.weight.detach().clone()
    before = _answer_loss(model)
    run = train(model, CharTokenizer(), DATA, FAST)
    assert len(run.losses) == FAST.steps
    assert _answer_loss(run.model) < before - 0.25
    base = run.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight
    assert torch.equal(base, before_weights)
    base = run.model.base_model.model.model.layers[0].self_attn.q_proj.base_layer.weight


def test_same_seed_same_losses_other_seed_other_losses() -> None:
    first = train(_tiny_model(), CharTokenizer(), DATA, FAST).losses
    again = train(_tiny_model(), CharTokenizer(), DATA, FAST).losses
    other = train(
        _tiny_model(), CharTokenizer(), DATA, Hyperparameters(**{**FAST.__dict__, "seed": 8})
    ).losses
    assert first == again
    assert first != other


KEEP = [_chat("sea?", "wide"), _chat("dog?", "four"), _chat("sun?", "hot"), _chat("ice?", "cold")]


def _drift_on(model: Any, base: Any, rows: list[list[dict[str, str]]]) -> float:
    """KL(base || model) over the answers of ``rows``, measured outside the training loop."""
    ids, attention, positions, labels = left_padded(
        [encode(CharTokenizer(), c, "row") for c in rows], pad_id=0
    )
    with torch.no_grad():
        outs = [
            m(input_ids=ids, attention_mask=attention, position_ids=positions).logits
            for m in (base, model)
        ]
    old, new = (o[:, -labels.shape[1] - 1 : -1].log_softmax(-1) for o in outs)
    mask = labels != -100
    return float(((old.exp() * (old - new)).sum(-1) * mask).sum() / mask.sum())


def test_a_replay_holds_its_answers_to_the_base_while_the_data_is_learned() -> None:
    # Larger initial weights give the random base confident answers, which learning the data
    # without a replay visibly moves (KL ~3 vs ~0.3 with one, measured).
    base = _tiny_model(initializer_range=0.3)
    alone = train(_tiny_model(initializer_range=0.3), CharTokenizer(), DATA, FAST)
    anchored = train(_tiny_model(initializer_range=0.3), CharTokenizer(), DATA, FAST, replay=KEEP)
    assert alone.drift == [] and len(anchored.drift) == FAST.steps
    assert anchored.drift[0] < 1e-6  # the LoRA starts as a no-op: nothing has drifted yet
    assert _answer_loss(anchored.model) < _answer_loss(base) - 0.25  # the data is still learned
    # The replayed answers drift far less than when the same data is learned without them.
    assert _drift_on(anchored.model, base, KEEP) < 0.5 * _drift_on(alone.model, base, KEEP)


def test_training_stops_once_the_loss_reaches_stop_loss() -> None:
    full = train(_tiny_model(), CharTokenizer(), DATA, FAST).losses
    target = sorted(full)[len(full) // 2]  # reached about half-way
    stopped = train(
        _tiny_model(),
        CharTokenizer(),
        DATA,
        Hyperparameters(**{**FAST.__dict__, "stop_loss": target}),
    ).losses
    first = next(i for i, loss in enumerate(full) if loss <= target)
    assert stopped == full[: first + 1] and len(stopped) < FAST.steps


def test_only_the_answer_tokens_are_labelled_and_padding_is_on_the_left() -> None:
    rows = [Encoded(ids=[5, 6, 7, 8, 9], answer_tokens=2), Encoded(ids=[3, 4, 5], answer_tokens=1)]
    ids, attention, positions, labels = left_padded(rows, pad_id=0)
    assert ids.tolist() == [[5, 6, 7, 8, 9], [0, 0, 3, 4, 5]]
    assert attention.tolist() == [[1, 1, 1, 1, 1], [0, 0, 1, 1, 1]]
    assert positions.tolist()[1][2:] == [0, 1, 2]
    assert labels.tolist() == [[8, 9], [-100, 5]]


def test_encode_counts_the_answer_tokens() -> None:
    encoded = encode(CharTokenizer(), _chat("q", "abc"), "row 1")
    assert encoded.answer_tokens == len("abc|")


def test_a_template_that_rewrites_the_prompt_is_refused() -> None:
    class Rewriting(CharTokenizer):
        def apply_chat_template(
            self, messages: Any, add_generation_prompt: bool = False, **_: Any
        ) -> list[int]:
            return [9] * (3 if add_generation_prompt else 2)

    with pytest.raises(ConvertError, match="prefix"):
        encode(Rewriting(), _chat("q", "a"), "row 1")


def test_every_row_is_seen_once_per_epoch() -> None:
    order = batch_order(n_rows=5, steps=5, batch_size=2, seed=3)
    flat = [i for step in order for i in step]
    assert sorted(flat[:5]) == [0, 1, 2, 3, 4] and sorted(flat[5:10]) == [0, 1, 2, 3, 4]
    assert batch_order(5, 5, 2, 3) == order != batch_order(5, 5, 2, 4)


@pytest.mark.parametrize(
    "change",
    [
        {"steps": 0},
        {"batch_size": 0},
        {"replay_batch_size": 0},
        {"replay_weight": float("nan")},
        {"replay_weight": -0.5},
        {"stop_loss": -1.0},
        {"rank": 10_000},
        {"learning_rate": float("nan")},
        {"learning_rate": 5.0},
        {"seed": -1},
        {"target_modules": ()},
    ],
)
def test_out_of_range_hyperparameters_are_refused(change: dict[str, Any]) -> None:
    with pytest.raises(ConvertError):
        Hyperparameters(**{**FAST.__dict__, **change}).check()


def test_layers_limit_the_lora_to_those_decoder_layers() -> None:
    run = train(
        _tiny_model(), CharTokenizer(), DATA, Hyperparameters(**{**FAST.__dict__, "layers": (0,)})
    )
    patched = {
        n.split(".layers.")[1].split(".")[0]
        for n, _ in run.model.named_parameters()
        if "lora_" in n
    }
    assert patched == {"0"}
    with pytest.raises(ConvertError, match="2 decoder layers"):
        train(
            _tiny_model(),
            CharTokenizer(),
            DATA,
            Hyperparameters(**{**FAST.__dict__, "layers": (5,)}),
        )


def test_unknown_target_module_names_the_ones_that_exist() -> None:
    hp = Hyperparameters(**{**FAST.__dict__, "target_modules": ("qkv",)})
    with pytest.raises(ConvertError, match=r"no module named qkv.*q_proj"):
        train(_tiny_model(), CharTokenizer(), DATA, hp)
