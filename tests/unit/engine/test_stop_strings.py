from server.engine.stop_strings import StopStringMatcher


def stream(matcher: StopStringMatcher, pieces: list[str]) -> tuple[str, bool]:
    out = []
    for piece in pieces:
        check = matcher.feed(piece)
        out.append(check.text)
        if check.stopped:
            return "".join(out), True
    out.append(matcher.flush())
    return "".join(out), False


def test_text_without_stop_strings_passes_through_unchanged() -> None:
    matcher = StopStringMatcher(())
    assert matcher.feed("hello").text == "hello"
    assert matcher.flush() == ""


def test_stop_string_split_across_pieces_is_never_emitted() -> None:
    text, stopped = stream(StopStringMatcher(["###"]), ["Answer: 4", "#", "#", "# more"])
    assert (text, stopped) == ("Answer: 4", True)


def test_possible_stop_prefix_is_held_then_released_when_it_diverges() -> None:
    matcher = StopStringMatcher(["STOP"])
    assert matcher.feed("go ST").text == "go "  # "ST" might start "STOP"
    assert matcher.feed("ART").text == "START"
    assert matcher.flush() == ""


def test_held_prefix_is_released_at_end_of_stream() -> None:
    text, stopped = stream(StopStringMatcher(["\n\nUser:"]), ["fine", "\n\n"])
    assert (text, stopped) == ("fine\n\n", False)


def test_earliest_of_several_stop_strings_wins() -> None:
    text, stopped = stream(StopStringMatcher(["world", "lo w"]), ["hello world"])
    assert (text, stopped) == ("hel", True)


def test_nothing_is_emitted_after_a_stop() -> None:
    matcher = StopStringMatcher(["x"])
    assert matcher.feed("axb").text == "a"
    assert matcher.feed("more").text == ""
    assert matcher.flush() == ""


def test_empty_stop_strings_are_ignored() -> None:
    text, stopped = stream(StopStringMatcher(["", "END"]), ["abc"])
    assert (text, stopped) == ("abc", False)
