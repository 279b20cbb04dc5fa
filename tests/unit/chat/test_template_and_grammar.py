import pytest

from server.chat.json_grammar import json_object_grammar, json_schema_grammar
from server.chat.template import CHATML_TEMPLATE, ChatTemplate
from server.engine.types import InvalidRequestError


def test_json_object_grammar_has_a_root_rule() -> None:
    assert "root" in json_object_grammar()


def test_json_schema_grammar_encodes_required_property_names() -> None:
    schema = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "population": {"type": "integer"}},
        "required": ["city", "population"],
    }
    rules = dict(
        line.split(" ::= ", 1) for line in json_schema_grammar(schema).splitlines() if line
    )
    assert rules["root"] == '"{" space city-kv "," space population-kv "}" space'
    assert rules["city-kv"].startswith('"\\"city\\"" space ":"')


def test_bad_schema_gives_an_invalid_request_error() -> None:
    with pytest.raises(InvalidRequestError, match="JSON schema"):
        json_schema_grammar({"type": "object", "properties": {"x": {"$ref": "#/missing/x"}}})
    with pytest.raises(InvalidRequestError, match="must be an object"):
        json_schema_grammar(["not", "a", "schema"])  # type: ignore[arg-type]


def test_template_renders_messages_and_generation_prompt() -> None:
    template = ChatTemplate(CHATML_TEMPLATE, bos_token="<s>", eos_token="</s>")
    text = template.render([{"role": "user", "content": "Hi"}])
    assert text == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n"


def test_missing_template_falls_back_to_chatml() -> None:
    template = ChatTemplate(None, bos_token="", eos_token="")
    assert template.is_fallback
    assert "<|im_start|>system\nS<|im_end|>" in template.render(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}]
    )


def test_template_sees_bos_eos_and_raise_exception() -> None:
    source = (
        "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'tool' %}"
        "{{ raise_exception('no tools') }}{% endif %}{{ m['content'] }}{{ eos_token }}{% endfor %}"
    )
    template = ChatTemplate(source, bos_token="<s>", eos_token="</s>")
    assert template.render([{"role": "user", "content": "x"}]) == "<s>x</s>"
    with pytest.raises(InvalidRequestError, match="no tools"):
        template.render([{"role": "tool", "content": "x"}])


def test_messages_without_content_are_rejected_with_the_index() -> None:
    template = ChatTemplate(None, bos_token="", eos_token="")
    with pytest.raises(InvalidRequestError, match=r"messages\[1\]"):
        template.render([{"role": "user", "content": "a"}, {"role": "user"}])
    with pytest.raises(InvalidRequestError, match="empty"):
        template.render([])


def test_schema_strings_exclude_control_characters_as_llama_cpp_does() -> None:
    """The Python port let a raw newline into a string (not JSON); llama.cpp's C++ does not."""
    rules = dict(
        line.split(" ::= ", 1)
        for line in json_schema_grammar(
            {"type": "object", "properties": {"a": {"type": "string"}}}
        ).splitlines()
        if line
    )
    assert rules["char"].startswith('[^"\\\\\\x7F\\x00-\\x1F]')


def test_tool_call_grammars_use_the_same_string_rule() -> None:
    from server.chat.tools.grammar import tool_call_grammar
    from server.chat.tools.spec import ToolSpec

    spec = ToolSpec("f", "", {"type": "object", "properties": {"q": {"type": "string"}}})
    assert "\\x00-\\x1F" in tool_call_grammar([spec], parallel=False)


def test_strict_violations_name_every_unenforced_keyword() -> None:
    from server.chat.json_grammar import strict_violations

    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": 0},
            "e": {"type": "string", "format": "email"},
            "d": {"type": "string", "format": "date"},
        },
        "$defs": {"x": {"type": "array", "uniqueItems": True}},
    }
    assert sorted(strict_violations(schema)) == [
        "schema.$defs.x.uniqueItems",
        "schema.properties.e.format",
        "schema.properties.n.minimum",
    ]


def test_check_answer_accepts_valid_and_names_what_is_wrong() -> None:
    from server.chat.json_grammar import check_answer

    schema = {"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}
    assert check_answer('{"n": 2}', schema) is None
    assert "not JSON" in (check_answer('{"n": 2', schema) or "")
    assert "'n' is a required property" in (check_answer("{}", schema) or "")
    assert "n" in (check_answer('{"n": "two"}', schema) or "")
    assert check_answer("[1]", None) == "the answer is not a JSON object"
    assert "not JSON" in (check_answer('{"a": "x\ny"}', None) or "")  # raw newline in a string


def test_a_schema_converts_once_whatever_its_key_order() -> None:
    from server.chat.json_grammar import _schema_grammar

    schema = {"type": "object", "properties": {"cache_probe_a": {"type": "integer"}}}
    reordered = {"properties": {"cache_probe_a": {"type": "integer"}}, "type": "object"}
    before = _schema_grammar.cache_info()
    assert json_schema_grammar(schema) == json_schema_grammar(reordered)
    after = _schema_grammar.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (1, 1)


def test_tool_call_grammars_are_cached_per_family_and_tools() -> None:
    from server.chat.tools.formats import format_named
    from server.chat.tools.formats.base import _cached_grammar
    from server.chat.tools.spec import ToolSpec

    tool = ToolSpec("cache_probe", "", {"type": "object", "properties": {"x": {"type": "string"}}})
    before = _cached_grammar.cache_info()
    hermes = format_named("hermes").grammar([tool], parallel=False)
    assert format_named("hermes").grammar([tool], parallel=False) == hermes
    assert format_named("mistral").grammar([tool], parallel=False) != hermes
    after = _cached_grammar.cache_info()
    assert (after.misses - before.misses, after.hits - before.hits) == (2, 1)
