from support import catalogue


def test_insert_syncs_parent_inline(conn):
    u = catalogue.unit(conn)
    catalogue.element(conn, u, credits=3, cm=10, td=5, tp=5)
    catalogue.element(conn, u, credits=2, cm=4, td=4, tp=2)
    assert catalogue.totals(conn, u) == (5, 14, 9, 7, 30, 2)
    assert catalogue.jobs(conn) == []
