import pytest

from ue_resync import durations


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("90", 90),
        ("30s", 30),
        ("2m", 120),
        ("2min", 120),
        ("1.5h", 5400),
        ("250ms", 0.25),
        ("1d", 86400),
        (" 3 s ", 3),
    ],
)
def test_parse_duration(text, seconds):
    assert durations.parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "soon", "3 weeks", "1e3"])
def test_parse_duration_rejects(text):
    with pytest.raises(ValueError, match="not a duration"):
        durations.parse_duration(text)


@pytest.mark.parametrize("text", ["-3s", " -5m", "-0"])
def test_parse_duration_says_a_duration_is_never_negative(text):
    with pytest.raises(ValueError, match="a duration cannot be negative"):
        durations.parse_duration(text)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(None, "-"), (0.0042, "4 ms"), (12.44, "12.4 s"), (185, "3 min 5 s"), (7800, "2 h 10 min")],
)
def test_human_duration(seconds, text):
    assert durations.human_duration(seconds) == text
