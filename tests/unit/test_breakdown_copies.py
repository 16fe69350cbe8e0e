"""bench.breakdown's copies of the element triggers, each without one guarantee: every copy
still finds the text it removes in the triggers as rendered, so the breakdown cannot silently
measure the real triggers under another name."""

from __future__ import annotations

import pytest

from bench.breakdown import DEFERRED_VARIANTS, VARIANTS, element_triggers


@pytest.mark.parametrize("name", [*VARIANTS, *DEFERRED_VARIANTS])
def test_each_copy_differs_from_the_real_triggers(name):
    real = element_triggers()
    _, make = {**VARIANTS, **DEFERRED_VARIANTS}[name]
    copy = make(real)
    assert copy != real
    assert "CREATE OR REPLACE FUNCTION resync.on_element_row()" in copy
