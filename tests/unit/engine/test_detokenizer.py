from server.engine.detokenizer import IncrementalDetokenizer


def test_multibyte_character_split_across_tokens_is_emitted_once_complete() -> None:
    emoji = "🦙".encode()  # 4 bytes
    detok = IncrementalDetokenizer()
    assert [detok.feed(emoji[:1]), detok.feed(emoji[1:3]), detok.feed(emoji[3:])] == ["", "", "🦙"]


def test_ascii_is_emitted_immediately() -> None:
    detok = IncrementalDetokenizer()
    assert detok.feed(b"Hello") == "Hello"
    assert detok.feed(b", world") == ", world"


def test_text_before_an_incomplete_character_is_not_held_back() -> None:
    detok = IncrementalDetokenizer()
    assert detok.feed(b"caf" + "é".encode()[:1]) == "caf"
    assert detok.feed("é".encode()[1:]) == "é"


def test_invalid_bytes_become_replacement_characters_instead_of_stalling() -> None:
    detok = IncrementalDetokenizer()
    assert detok.feed(b"\xffok") == "\ufffdok"


def test_unfinished_character_at_the_end_is_flushed_as_replacement() -> None:
    detok = IncrementalDetokenizer()
    assert detok.feed("日".encode()[:2]) == ""
    assert detok.flush() == "\ufffd"
