import pytest

from ue_resync import jobs


@pytest.mark.parametrize(
    ("raw", "unit", "reason"),
    [
        (b'{"course_unit_id": 42, "reason": "manual_trigger"}', 42, "manual_trigger"),
        (b'{"course_unit_id": "42"}', 42, "unknown"),
        (b'{"course_unit_id": 9223372036854775807, "reason": ""}', 2**63 - 1, "unknown"),
    ],
)
def test_parse_payload_accepts(raw, unit, reason):
    assert jobs.parse_payload(raw) == jobs.ResyncPayload(unit, reason)


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (None, "payload is empty"),
        (b"\xff\xfe", "not JSON"),
        (b"{", "not JSON"),
        (b"null", "JSON NoneType"),
        (b"[1]", "JSON list"),
        (b"{}", "must be an integer, got None"),
        (b'{"course_unit_id": true}', "must be an integer"),
        (b'{"course_unit_id": 1.0}', "must be an integer"),
        (b'{"course_unit_id": "1; DROP"}', "must be an integer"),
        (b'{"course_unit_id": 0}', "out of range"),
        (b'{"course_unit_id": 9223372036854775808}', "out of range"),
    ],
)
def test_parse_payload_rejects_with_a_reason(raw, message):
    with pytest.raises(jobs.InvalidJob, match=message.replace("(", r"\(")):
        jobs.parse_payload(raw)


@pytest.mark.parametrize(
    ("attempt", "tries", "expected"),
    [
        (1, 3, jobs.RetryDecision(jobs.Outcome.RETRY, 30)),
        (2, 3, jobs.RetryDecision(jobs.Outcome.RETRY, 60)),
        (3, 3, jobs.RetryDecision(jobs.Outcome.FAIL)),
        (3, 4, jobs.RetryDecision(jobs.Outcome.RETRY, 120)),
        (4, 4, jobs.RetryDecision(jobs.Outcome.FAIL)),
        (5, 9, jobs.RetryDecision(jobs.Outcome.RETRY, 120)),  # the last delay repeats
        (1, 1, jobs.RetryDecision(jobs.Outcome.FAIL)),
        (7, 3, jobs.RetryDecision(jobs.Outcome.FAIL)),  # past the last try (crash recoveries)
    ],
)
def test_retry_decision_is_laravels(attempt, tries, expected):
    assert jobs.retry_decision(attempt, tries, (30, 60, 120)) == expected


@pytest.mark.parametrize(
    ("value", "unit"),
    [
        (42, 42),
        ("42", 42),
        ("0042", 42),
        (0, None),
        ("-1", None),
        ("4x", None),
        (True, None),
        (None, None),
        (2**63, None),
        ("9223372036854775807", 2**63 - 1),
        (4.0, None),
    ],
)
def test_unit_id_is_the_ue_a_job_names_or_none(value, unit):
    assert jobs.unit_id(value) == unit
