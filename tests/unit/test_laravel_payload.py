"""The reader of Laravel's queue payloads, on the shapes PHP's serialize() produces."""

from __future__ import annotations

import json

import pytest

from ue_resync.laravel_payload import (
    LaravelJob,
    PayloadError,
    PhpObject,
    exception_messages,
    exception_summary,
    read_job,
    sqlstate_of,
    unserialize,
)

CLASS = "App\\Jobs\\ResyncCourseUnitJob"


def php_string(text: str) -> str:
    return f's:{len(text.encode())}:"{text}";'


def command(unit: str = "i:42;", reason: str = "manual_trigger", prefix: str = "\0*\0") -> str:
    """A job object as Laravel 8 serializes it: protected properties, a Carbon delay."""
    props = [
        (php_string("tries"), "i:3;"),
        (php_string(f"{prefix}courseUnitId"), unit),
        (php_string(f"{prefix}reason"), php_string(reason)),
        (
            php_string("delay"),
            'O:25:"Illuminate\\Support\\Carbon":3:{s:4:"date";s:26:"2026-12-06 10:20:17.398827";'
            's:13:"timezone_type";i:3;s:8:"timezone";s:3:"UTC";}',
        ),
        (php_string("middleware"), "a:0:{}"),
        (php_string("chained"), 'a:1:{i:0;s:1:"x";}'),
        (php_string("afterCommit"), "N;"),
        (php_string("ratio"), "d:0.5;"),
        (php_string("flag"), "b:1;"),
    ]
    body = "".join(k + v for k, v in props)
    return f'O:{len(CLASS)}:"{CLASS}":{len(props)}:{{{body}}}'


def payload(cmd: str, name: str = CLASS, **extra: object) -> str:
    return json.dumps(
        {
            "uuid": "u-1",
            "displayName": name,
            "maxTries": 3,
            "data": {"commandName": name, "command": cmd},
            **extra,
        }
    )


def test_reads_unit_reason_tries_and_uuid():
    assert read_job(payload(command()), CLASS) == LaravelJob(42, "manual_trigger", 3, "u-1")


@pytest.mark.parametrize("prefix", ["", "\0*\0", f"\0{CLASS}\0"])
def test_public_protected_and_private_properties(prefix):
    assert read_job(payload(command(prefix=prefix)), CLASS).course_unit_id == 42


def test_string_lengths_are_bytes():
    job = read_job(payload(command(reason="révision annuelle")), CLASS)
    assert job.reason == "révision annuelle"


def test_another_class_is_not_ours():
    assert read_job(payload(command(), name="App\\Jobs\\SendReportJob"), CLASS) is None


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("{not json", "payload is not JSON"),
        (json.dumps({"data": "x"}), "no data object"),
        (payload("eyJpdiI6..."), "encrypted job"),
        (payload(command()[:-30]), "serialized command unreadable"),
        (payload(command(unit='s:3:"abc";')), "courseUnitId is 'abc'"),
        (payload(command(unit="i:0;")), "courseUnitId is 0"),
        (payload(command() + "x"), "trailing data"),
    ],
)
def test_unreadable_payloads_say_why(raw, message):
    with pytest.raises(PayloadError, match=message):
        read_job(raw, CLASS)


def test_unserialize_nested_values():
    obj = unserialize(command().encode())
    assert isinstance(obj, PhpObject) and obj.class_name == CLASS
    assert obj.props["chained"] == {0: "x"} and obj.props["ratio"] == 0.5
    assert obj.props["flag"] is True and obj.props["afterCommit"] is None
    assert obj.props["delay"].props["timezone"] == "UTC"


CHAINED = """PDOException: SQLSTATE[55P03]: Lock not available in /x/Connection.php:368
Stack trace:
#0 /x/Connection.php(368): PDOStatement->execute()
#1 {main}

Next Illuminate\\Database\\QueryException: SQLSTATE[55P03]: Lock not available (SQL: select 1)
Stack trace:
#0 {main}"""


def test_exception_text_without_its_stack_traces():
    assert exception_messages(CHAINED).splitlines() == [
        "PDOException: SQLSTATE[55P03]: Lock not available in /x/Connection.php:368",
        "Next Illuminate\\Database\\QueryException: SQLSTATE[55P03]: Lock not available "
        "(SQL: select 1)",
    ]
    assert exception_summary(CHAINED) == (
        "PDOException",
        "SQLSTATE[55P03]: Lock not available in /x/Connection.php:368",
    )
    assert exception_summary("something odd happened") == ("Exception", "something odd happened")


def test_sqlstate_of_a_query_exception():
    assert sqlstate_of(CHAINED) == "55P03"
    assert sqlstate_of("RuntimeException: validation failed") is None
