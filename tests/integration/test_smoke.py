from tests import catalog


def test_insert_syncs_parent_inline(conn):
    u = catalog.unit(conn)
    catalog.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalog.element(conn, u, credits=2, cm=4, td=4, tp=2)
    assert catalog.totals(conn, u) == (5, 14, 9, 7, 30, 2)
    assert catalog.jobs(conn) == []
