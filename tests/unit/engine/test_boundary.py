"""The validation boundary in front of llama.cpp: every bad value is refused, naming its field."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from server.engine import boundary
from server.engine.types import InvalidRequestError, SamplingParams

N_VOCAB = 49152


def _param_of(call: object, *args: object) -> str | None:
    with pytest.raises(InvalidRequestError) as info:
        call(*args)  # type: ignore[operator]
    return info.value.param


@given(st.lists(st.integers(), max_size=20))
def test_token_ids_pass_exactly_when_all_in_the_vocabulary(tokens: list[int]) -> None:
    if all(0 <= t < N_VOCAB for t in tokens):
        boundary.check_token_ids(tokens, N_VOCAB)
    else:
        assert _param_of(boundary.check_token_ids, tokens, N_VOCAB) == "prompt"


@pytest.mark.parametrize("token", [-1, N_VOCAB, 99_999_999, 2**63, True])
def test_the_ids_that_crashed_llama_cpp_are_refused(token: int) -> None:
    assert _param_of(boundary.check_token_id, token, N_VOCAB) == "prompt"


@given(st.text())
def test_well_formed_text_passes(text: str) -> None:
    # hypothesis' text() never yields lone surrogates: everything it makes encodes as UTF-8
    boundary.check_text(text)


@pytest.mark.parametrize("text", ["\ud800", "ok \udfff", "a\udc80b"])
def test_lone_surrogates_are_refused_naming_the_field(text: str) -> None:
    assert _param_of(boundary.check_text, text, "messages[0].content") == "messages[0].content"


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"messages": [{"role": "user", "content": "\ud800"}]}, "messages[0].content"),
        ({"prompt": ["fine", "bad \udfff"]}, "prompt[1]"),
        ({"logit_bias": {"\ud800": 1}}, "logit_bias"),
        ({"a": {"b": [1, 2, {"c": "x\udc00"}]}}, "a.b[2].c"),
        ("\ud800", "body"),
    ],
)
def test_the_first_bad_string_of_a_json_body_is_named(body: object, path: str) -> None:
    assert boundary.lone_surrogate_path(body) == path


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
        lambda children: st.lists(children) | st.dictionaries(st.text(), children),
    )
)
def test_json_without_surrogates_has_no_bad_path(body: object) -> None:
    assert boundary.lone_surrogate_path(body) is None


@given(
    st.lists(
        st.tuples(st.integers(-10, N_VOCAB + 10), st.floats(allow_nan=True)),
        max_size=8,
    )
)
def test_logit_bias_passes_only_in_range_and_finite(bias: list[tuple[int, float]]) -> None:
    ok = all(0 <= t < N_VOCAB and math.isfinite(b) and abs(b) <= 100 for t, b in bias)
    if ok:
        boundary.check_logit_bias(bias, N_VOCAB)
    else:
        assert _param_of(boundary.check_logit_bias, bias, N_VOCAB) == "logit_bias"


def test_logit_bias_with_too_many_entries_is_refused() -> None:
    bias = [(i, 1.0) for i in range(boundary.MAX_LOGIT_BIAS_ENTRIES + 1)]
    assert _param_of(boundary.check_logit_bias, bias, N_VOCAB) == "logit_bias"


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"temperature": math.inf}, "temperature"),
        ({"temperature": math.nan}, "temperature"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
        ({"min_p": math.nan}, "min_p"),
        ({"repeat_penalty": math.inf}, "repeat_penalty"),
        ({"repeat_penalty": 0.0}, "repeat_penalty"),
        ({"presence_penalty": 3.0}, "presence_penalty"),
        ({"frequency_penalty": -math.inf}, "frequency_penalty"),
        ({"top_k": 2**40}, "top_k"),
        ({"top_k": -1}, "top_k"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"logit_bias": ((5, math.inf),)}, "logit_bias"),
        ({"stop": ("\ud800",)}, "stop"),
        ({"stop": ("x" * 600,)}, "stop"),
        ({"grammar": "root ::= " + "(" * 100 + '"a"' + ")" * 100}, "grammar"),
        ({"grammar": 'root ::= "a"\x00'}, "grammar"),
        ({"grammar": "root ::= " + '"a" ' * 20000}, "grammar"),
    ],
)
def test_sampling_values_that_would_reach_c_out_of_range_are_refused(
    changes: dict[str, object], param: str
) -> None:
    params = SamplingParams(**changes)  # type: ignore[arg-type]
    assert _param_of(boundary.check_sampling, params, N_VOCAB) == param


def test_default_and_typical_sampling_parameters_pass() -> None:
    boundary.check_sampling(SamplingParams(), N_VOCAB)
    boundary.check_sampling(
        SamplingParams(
            temperature=0.0,
            top_k=0,
            stop=("\n\n", "User:"),
            logit_bias=((1, -100.0), (2, 100.0)),
            grammar='root ::= "(" [a-z]{1,10} ")" # parens in literals do not nest',
        ),
        N_VOCAB,
    )


def test_parentheses_inside_literals_and_classes_do_not_count_as_nesting() -> None:
    literal = '"' + "(" * 200 + '"'
    boundary.check_grammar(f'root ::= {literal} [()] "\\"("')


@pytest.mark.parametrize("n", [-1, 21, True])
def test_n_probs_outside_0_to_20_are_refused(n: int) -> None:
    assert _param_of(boundary.check_n_probs, n, N_VOCAB) == "top_logprobs"


@pytest.mark.parametrize(
    ("parts", "path"),
    [
        (("messages", 0, "content"), "messages[0].content"),
        (("tools", 1, "function", "parameters"), "tools[1].function.parameters"),
        (("prompt", 2), "prompt[2]"),
        ((0,), "[0]"),
        ((), ""),
    ],
)
def test_field_paths_are_written_as_openai_writes_them(
    parts: tuple[object, ...], path: str
) -> None:
    assert boundary.field_path(parts) == path
