"""Hostile and broken input, resync.requests rows: NULL, negative, zero, huge and unknown ids;
reasons long, empty, in other scripts, right-to-left, emoji, control characters; run_at in the
far past or future, 'infinity', garbage. Each is queued, or refused at INSERT with a clear SQL
error and nothing queued.

How many inputs of each kind were tried is written to the terminal at the end of the module."""

from __future__ import annotations

import datetime as dt
from collections import Counter
from typing import Any

import psycopg
from hypothesis import given
from hypothesis import strategies as st

from support import catalogue
from tests.hostile import TRIED, fuzz
from tests.hostile import report_inputs_tried as report_inputs_tried  # autouse

DEFAULT = object()


unit_ids = st.one_of(
    st.tuples(st.just("id_null"), st.none()),
    st.tuples(st.just("id_negative"), st.integers(-(2**63), -1)),
    st.tuples(st.just("id_zero"), st.just(0)),
    st.tuples(st.just("id_unknown"), st.integers(10**6, 2**63 - 1)),
    st.tuples(
        st.just("id_beyond_bigint"), st.integers(2**63, 2**80) | st.integers(-(2**80), -(2**63) - 1)
    ),
    st.tuples(st.just("id_existing"), st.just(-1)),  # replaced by a real UE's id
)


control = st.characters(min_codepoint=1, max_codepoint=31) | st.sampled_from("\x7f\u200b\ufeff")


reasons = st.one_of(
    st.tuples(st.just("reason_default"), st.just(DEFAULT)),
    st.tuples(st.just("reason_null"), st.none()),
    st.tuples(st.just("reason_empty"), st.just("")),
    st.tuples(st.just("reason_sane"), st.from_regex(r"[a-z0-9_.:/ -]{1,100}", fullmatch=True)),
    st.tuples(st.just("reason_long"), st.text("abc", min_size=101, max_size=5000)),
    st.tuples(
        st.just("reason_other_script"), st.sampled_from(["réessai", "повтор", "再同期", "ΑΒΓ"])
    ),
    st.tuples(
        st.just("reason_rtl"),
        st.sampled_from(["مزامنة", "סנכרון", "a\u202eb", "\u200fabc", "x\u202bשלום\u202c"]),
    ),
    st.tuples(
        st.just("reason_emoji"), st.text(st.sampled_from("😀🔥👍🏽🧪 a"), min_size=1, max_size=30)
    ),
    st.tuples(
        st.just("reason_control"),
        st.tuples(st.text("ab", max_size=5), control, st.text("ab", max_size=5)).map("".join),
    ),
    st.tuples(
        st.just("reason_any_text"),
        st.text(
            st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00"), max_size=300
        ),
    ),
)


run_ats = st.one_of(
    st.tuples(st.just("run_at_default"), st.just(DEFAULT)),
    st.tuples(st.just("run_at_null"), st.none()),
    st.tuples(
        st.just("run_at_extreme"),
        st.sampled_from(
            [
                "infinity",
                "-infinity",
                "4713-01-01 BC",
                "0001-01-01",
                "294276-12-31 23:59:59+00",
                "294277-01-01",
                "epoch",
                "yesterday",
                "tomorrow",
                "now",
            ]
        ),
    ),
    st.tuples(st.just("run_at_garbage"), st.sampled_from(["", "soon", "2024-13-45", "∞", "1e9"])),
    st.tuples(
        st.just("run_at_date"),
        st.datetimes(min_value=dt.datetime(1, 1, 2)).map(lambda d: d.isoformat() + "+00"),
    ),
)


# What a refused request may raise: data exceptions (22), integrity violations (23), a value of
# the wrong type (42804). Never an internal error, never our own code failing (P0001, XX000).
CLEAR_CLASSES = ("22", "23")


def test_fuzzed_requests_are_queued_or_refused_clearly(conn: psycopg.Connection) -> None:
    unit = catalogue.unit(conn)
    seen: Counter[str] = Counter()

    @fuzz(250)
    @given(unit_ids, reasons, run_ats)
    def request(uid: tuple[str, Any], reason: tuple[str, Any], run_at: tuple[str, Any]) -> None:
        kinds = (uid[0], reason[0], run_at[0])
        for k in kinds:
            seen[k] += 1
            TRIED[f"requests.{k}"] += 1
        value = unit if uid[0] == "id_existing" else uid[1]
        cols, marks, params = ["course_unit_id"], ["%s"], [value]
        for name, (_, v) in (("reason", reason), ("run_at", run_at)):
            if v is not DEFAULT:
                cols.append(name)
                marks.append("%s")
                params.append(v)
        before = conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone()[0]
        try:
            row = conn.execute(
                f"INSERT INTO resync.requests ({', '.join(cols)}) VALUES ({', '.join(marks)}) "
                "RETURNING job_id, run_at::text",
                params,
            ).fetchone()
        except psycopg.Error as exc:
            message = str(exc).strip()
            assert exc.sqlstate and (
                exc.sqlstate[:2] in CLEAR_CLASSES or exc.sqlstate == "42804"
            ), f"{kinds}: unclear error [{exc.sqlstate}] {message}"
            assert message and len(message.splitlines()[0]) < 300, f"{kinds}: {message!r}"
            after = conn.execute("SELECT count(*) FROM resync.pgqueuer").fetchone()[0]
            assert after == before, f"{kinds}: refused, yet a job was queued"
            seen["refused"] += 1
            return
        # Accepted: a queued job for that very UE, due at run_at (or now, when in the past).
        job_id, stored_run_at = row
        job = conn.execute(
            "SELECT status::text, headers ->> 'course_unit_id', "
            # Due at run_at, or at the request's time when run_at is past.
            "execute_after = %(run_at)s::timestamptz "
            "OR execute_after BETWEEN %(run_at)s::timestamptz AND now(), "
            "execute_after > now() + interval '100 years' "
            "FROM resync.pgqueuer WHERE id = %(job)s",
            {"run_at": stored_run_at, "job": job_id},
        ).fetchone()
        assert job is not None and job[0] == "queued" and job[1] == str(value), (kinds, job)
        assert job[2], (kinds, stored_run_at)
        # Never due (more than a century ahead, or 'infinity'): refused since finding 3.
        assert not job[3], (kinds, stored_run_at)
        seen["accepted"] += 1
        conn.execute("DELETE FROM resync.pgqueuer WHERE id = %s", (job_id,))

    request()
    assert seen["accepted"] and seen["refused"], dict(seen)
    print(f"requests: {dict(seen)}")
