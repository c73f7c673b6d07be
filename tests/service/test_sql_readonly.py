"""POST /v1/query over real HTTP: read-only as ClickHouse enforces it, within limits, and
filtered to a tenant-bound key's tenant. Each refusal leaves every table as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from connectors.query_server import QueryError
from connectors.service.auth import Principal
from connectors.service.sql_guard import ReadOnlyGuard, SqlRefused, VettedSql, tenant_filters
from connectors.service.store import Store as ServiceStore
from dataflows.feedback import clickhouse_target
from tests.conftest import Store
from tests.service.conftest import RunningService, ServiceFactory
from tests.service.test_reads_data import seed, settings_for, table_counts, with_key


def _post(
    running: RunningService,
    sql: str,
    key: str | None = None,
    params: dict[str, object] | None = None,
) -> httpx.Response:
    with running.client(key) as client:
        return client.post("/v1/query", json={"sql": sql, "parameters": params or {}})


@pytest.fixture
def seeded(home: Path) -> Path:
    seed(home)
    return home


ONLY = "only one SELECT"
REFUSED = {
    "drop": ("DROP TABLE pulse.metrics", ONLY),
    "insert": ("INSERT INTO pulse.metrics (window) VALUES ('x')", ONLY),
    "create": ("CREATE TABLE pulse.x (a Int8) ENGINE = Memory", ONLY),
    "truncate": ("TRUNCATE TABLE pulse.alerts", ONLY),
    "alter": ("ALTER TABLE pulse.metrics DELETE WHERE 1", ONLY),
    "set": ("SET readonly = 0", ONLY),
    "settings override": ("SELECT count() FROM pulse.metrics SETTINGS readonly = 0", "readonly"),
    "file()": ("SELECT * FROM file('/etc/hostname', 'LineAsString')", "not allowed"),
    "url()": ("SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')", "not allowed"),
    "remote()": ("SELECT * FROM remote('127.0.0.1:9000', system.one)", "not allowed"),
    "s3()": ("SELECT * FROM s3('http://127.0.0.1:9/b/k', 'CSV')", "not allowed"),
    "merge()": ("SELECT count() FROM merge('pulse', '.*')", "not allowed"),
    "executable()": ("SELECT * FROM executable('x.sh', 'CSV', 'a String')", "not allowed"),
    "scalar file": ("SELECT file('/etc/hostname')", "not allowed"),
    "dictGet": ("SELECT dictGet('d', 'a', 1)", "not allowed"),
    "select then drop": ("SELECT 1; DROP TABLE pulse.metrics", "Multi-statements"),
    "drop then select": ("DROP TABLE pulse.metrics; SELECT 1", "Multi-statements"),
    "create then select": ("CREATE TABLE pulse.y (a Int8) ENGINE = Memory; SELECT 1", "Multi"),
    "explain": ("EXPLAIN SELECT 1", "only one SELECT"),
    "show": ("SHOW TABLES", "only one SELECT"),
    "format": ("SELECT 1 FORMAT CSV", "only one SELECT"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_writes_and_reaching_out_are_refused_and_tables_stay_intact(
    service: ServiceFactory, seeded: Path, case: str
) -> None:
    sql, reason = REFUSED[case]
    before = table_counts(seeded)
    running = service()
    response = _post(running, sql)
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]
    assert table_counts(seeded) == before
    assert "x" not in before and "y" not in before


def test_into_outfile_is_refused_and_writes_nothing(
    service: ServiceFactory, seeded: Path, tmp_path: Path
) -> None:
    target = tmp_path / "out.csv"
    response = _post(service(), f"SELECT * FROM pulse.metrics INTO OUTFILE '{target}'")
    assert response.status_code == 400
    assert "only one SELECT" in response.json()["detail"]
    assert not target.exists()


def test_a_select_answers_columns_and_rows_with_parameters(
    service: ServiceFactory, seeded: Path
) -> None:
    running = service()
    response = _post(
        running,
        "SELECT tenant, count() AS n FROM pulse.metrics WHERE model_id = {m:String} "
        "GROUP BY tenant ORDER BY tenant",
        params={"m": "m"},
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"columns": ["tenant", "n"], "rows": [["acme", 2], ["globex", 3]]}
    # client-side %(name)s placeholders too (what `pulse query` sends), WITH and UNION
    response = _post(
        running,
        "WITH t AS (SELECT window_start FROM pulse.metrics WHERE tenant = %(t)s) "
        "SELECT count() FROM t UNION ALL SELECT toUInt64(number) FROM numbers(2)",
        params={"t": "acme"},
    )
    assert response.status_code == 200, response.text
    assert sorted(r[0] for r in response.json()["rows"]) == [0, 1, 2]


def test_csv_output(service: ServiceFactory, seeded: Path) -> None:
    with service().client() as client:
        response = client.post(
            "/v1/query",
            params={"format": "csv"},
            json={"sql": "SELECT tenant, window_start FROM pulse.metrics "
                  "WHERE model_version = 'v1' ORDER BY tenant"},
        )  # fmt: skip
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert response.text.splitlines() == [
        "tenant,window_start",
        "acme,2026-01-05T10:00:00",
        "globex,2026-01-05T10:00:00",
    ]


def test_result_rows_beyond_the_limit_are_an_error(service: ServiceFactory, home: Path) -> None:
    running = service(settings_for(home, query_max_rows=5))
    assert _post(running, "SELECT number FROM numbers(5)").json()["rows"] == [[i] for i in range(5)]
    response = _post(running, "SELECT number FROM numbers(6)")
    assert response.status_code == 400
    assert "Limit for result exceeded" in response.json()["detail"]


def test_a_query_over_the_time_limit_is_stopped(service: ServiceFactory, home: Path) -> None:
    running = service(settings_for(home, query_timeout=1000))
    response = _post(running, "SELECT sum(number) FROM numbers(1000000000000)")
    assert response.status_code == 400
    assert "Timeout exceeded" in response.json()["detail"]


def test_a_long_query_holds_up_no_other_route(service: ServiceFactory, home: Path) -> None:
    """/v1/query runs on a client of its own: the shared one (readiness, silences) answers
    while a query runs, and sees it running."""
    import threading

    running = service(settings_for(home, query_timeout=5000))
    answers: list[httpx.Response] = []
    slow = threading.Thread(
        target=lambda: answers.append(
            _post(running, "SELECT sum(number) FROM numbers(1000000000000)")
        )
    )
    slow.start()
    seen = 0
    while not seen and slow.is_alive():
        seen = running.context.store.query(
            "SELECT count() FROM system.processes WHERE query LIKE '%numbers(1000000000000)%' "
            "AND query NOT LIKE '%system.processes%'"
        ).rows[0][0]
    slow.join()
    assert seen, "the shared client answered only once the long query was over"
    assert "Timeout exceeded" in answers[0].json()["detail"]


def test_a_syntax_error_is_clickhouses_first_line(service: ServiceFactory, home: Path) -> None:
    response = _post(service(), "SELEC 1")
    assert response.status_code == 400
    detail = response.json()["detail"]
    assert "Syntax error" in detail and "\n" not in detail


def test_a_tenant_bound_key_sees_only_its_tenant(service: ServiceFactory, seeded: Path) -> None:
    settings, acme = with_key(settings_for(seeded), "acme")
    running = service(settings)
    seen = {
        "plain": "SELECT DISTINCT tenant FROM pulse.metrics",
        "FINAL": "SELECT DISTINCT tenant FROM pulse.metrics FINAL",
        "alias and join": "SELECT DISTINCT a.tenant FROM pulse.metrics AS a "
        "JOIN pulse.metrics AS b ON a.model_version = b.model_version",
        "subquery": "SELECT DISTINCT tenant FROM (SELECT * FROM pulse.metrics)",
        "cte": "WITH x AS (SELECT tenant FROM pulse.metrics) SELECT DISTINCT tenant FROM x",
        "union": "SELECT tenant FROM pulse.metrics UNION DISTINCT SELECT tenant FROM pulse.alerts",
        "in": "SELECT DISTINCT tenant FROM pulse.alerts WHERE tenant IN "
        "(SELECT tenant FROM pulse.metrics)",
        "view": "SELECT DISTINCT tenant FROM pulse.late_counts",
        "no FROM": "SELECT 'acme' UNION DISTINCT SELECT tenant FROM pulse.metrics_late",
    }
    for name, sql in seen.items():
        response = _post(running, sql, acme)
        assert response.status_code == 200, (name, response.text)
        assert {r[0] for r in response.json()["rows"]} == {"acme"}, name
    counted = _post(running, "SELECT count() FROM pulse.metrics", acme).json()["rows"]
    assert counted == [[2]]
    # the operator's key (tenant "*") sees both
    for table in ("metrics", "late_counts", "alerts"):
        sql = f"SELECT DISTINCT tenant FROM pulse.{table} ORDER BY tenant"
        assert _post(running, sql).json()["rows"] == [["acme"], ["globex"]], table


@pytest.mark.parametrize(
    ("sql", "reason"),
    [
        (
            "SELECT count() FROM pulse.metrics SETTINGS additional_table_filters = {}",
            "Cannot modify 'additional_table_filters'",
        ),
        ("SELECT count() FROM pulse.dead_letters", "has no tenant column"),
        (
            "SELECT * FROM pulse.metrics WHERE "
            "(SELECT throwIf(count() > 0, 'has rows') FROM pulse.dead_letters) = 0",
            "has no tenant column",
        ),
        ("SELECT count() FROM pulse.deliveries", "has no tenant column"),
        ("SELECT name FROM system.tables", "has no tenant column"),
        ("SELECT count() FROM merge('pulse', '^metrics$')", "not allowed"),
        ("SELECT 1 WHERE 'x' IN (SELECT name FROM system.databases)", "has no tenant column"),
    ],
)
def test_a_tenant_bound_key_cannot_lift_its_filter(
    service: ServiceFactory, seeded: Path, sql: str, reason: str
) -> None:
    settings, acme = with_key(settings_for(seeded), "acme")
    response = _post(service(settings), sql, acme)
    assert response.status_code == 400, response.text
    assert reason in response.json()["detail"]


def test_the_query_scope_is_required(service: ServiceFactory, seeded: Path) -> None:
    settings, reader = with_key(settings_for(seeded), "acme", ("read",))
    running = service(settings)
    assert _post(running, "SELECT 1", reader).status_code == 403
    with running.client() as client:
        client.headers.pop("Authorization")
        assert client.post("/v1/query", json={"sql": "SELECT 1"}).status_code == 401


@pytest.mark.parametrize(
    "sql",
    [
        "DROP TABLE pulse.metrics",
        "INSERT INTO pulse.metrics (window) VALUES ('x')",
        "CREATE TABLE pulse.x (a Int8) ENGINE = Memory",
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:9/x', 'LineAsString')",
        "SELECT count() FROM pulse.metrics SETTINGS additional_table_filters = {}",
    ],
)
def test_clickhouse_itself_refuses_under_the_guards_settings(seeded: Path, sql: str) -> None:
    """The layer under the parser's checks: the same statements sent straight to the store
    with the guard's settings are refused by ClickHouse's readonly mode."""
    before = table_counts(seeded)
    with (
        _guard_and_filters(seeded) as (store, settings, _),
        pytest.raises(QueryError, match="readonly mode"),
    ):
        store.query(sql, None, settings)
    assert table_counts(seeded) == before


def test_clickhouse_filters_a_tenant_bound_keys_reads(seeded: Path) -> None:
    """The tenant's rows only, and no rows of a table without a tenant column, even in the
    analysis behind EXPLAIN QUERY TREE (which runs scalar subqueries)."""
    with _guard_and_filters(seeded) as (store, settings, unfiltered):
        rows = store.query("SELECT DISTINCT tenant FROM pulse.metrics", None, settings).rows
        assert rows == [["acme"]]
        for table in ("pulse.dead_letters", "system.tables"):
            assert store.query(f"SELECT count() FROM {table}", None, settings).rows == [[0]]
        assert store.query("SELECT count() FROM pulse.dead_letters").rows == [[1]]
        oracle = (
            "EXPLAIN QUERY TREE SELECT 1 WHERE "
            "(SELECT throwIf(count() > 0, 'has rows') FROM pulse.dead_letters) = 0"
        )
        store.query(oracle, None, settings)
        with pytest.raises(QueryError, match="has rows"):  # the `0` filters are why
            store.query(oracle, None, unfiltered)


@contextmanager
def _guard_and_filters(home: Path) -> Iterator[tuple[ServiceStore, dict[str, Any], dict[str, Any]]]:
    """A store of its own, the guard's settings for a key bound to acme, and the same
    with only the tenant filters (none on the tables without a tenant column)."""
    store = ServiceStore(clickhouse_target(settings_for(home)))
    try:
        guard = ReadOnlyGuard(store, "pulse", max_rows=100, timeout_ms=5000)
        tables = guard.tenant_tables()
        full = guard.settings(tenant_filters(tables, "acme", guard.other_tables(tables)))
        yield store, full, guard.settings(tenant_filters(tables, "acme"))
    finally:
        store.close()


def test_the_sql_pulse_query_and_pulse_alerts_send_passes_the_guard(
    service: ServiceFactory, seeded: Path
) -> None:
    """`pulse query` and `pulse alerts` read through this route: their SQL (client-side
    %(name)s and server-side {name:Type} parameters, LIMIT BY, FINAL) must pass."""
    from connectors import alert_report
    from connectors.drilldown import from_options

    running = service()
    drill = from_options(metric="accuracy", by="model_version", since="all", windows=("1m",))
    for sql, params in (
        drill.sql("pulse"),
        drill.coverage_sql("pulse"),
        alert_report.active_query("pulse"),
        alert_report.transitions_sql("pulse", 60_000, 10),
    ):
        response = _post(running, sql, params=params)
        assert response.status_code == 200, (sql, response.text)
        assert response.json()["rows"], sql
    sql, params = drill.coverage_sql("pulse")
    count, first, last = _post(running, sql, params=params).json()["rows"][0]
    assert (count, first, last) == (5, "2026-01-05 10:00:00", "2026-01-05 10:00:00")


ODD: list[tuple[str, dict[str, object]]] = [
    ("", {}),
    ("   ;", {}),
    ("-- only a comment", {}),
    ("/* unclosed", {}),
    ("SELECT 1 /*", {}),
    ("SELECT \x00", {}),
    ("SELECT {a:String}", {}),
    ("SELECT %(a)s", {}),
    ("SELECT %(a)s", {"a": {"b": [1, {"c": None}]}}),
    ("SELECT {a:UInt8}", {"a": "not a number"}),
    ("SELECT 1) UNION ALL (SELECT 2", {}),
    ("SELECT 1) INTO OUTFILE '/tmp/pulse-x' --", {}),
    ("SELECT 1 SETTINGS max_threads = 1", {}),
    ("SELECT * FROM pulse.nope", {}),
    ("SELECT sleepEachRow(1) FROM numbers(1)", {}),
]


@pytest.mark.parametrize(("sql", "params"), ODD)
def test_odd_input_is_answered_never_a_crash(
    service: ServiceFactory, home: Path, sql: str, params: dict[str, object]
) -> None:
    with service().client() as client:
        response = client.post("/v1/query", json={"sql": sql, "parameters": params})
    assert response.status_code in (200, 400, 422), response.text
    if response.status_code == 400:
        assert response.json()["detail"] and "\n" not in response.json()["detail"]
    assert not Path("/tmp/pulse-x").exists()


def test_sql_that_passed_is_checked_again_only_when_what_clickhouse_is_sent_changes(
    seeded: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checks are remembered for the SQL that passed them (a poller's query costs one
    statement), never for a refusal, and not past a change of tables: a table recreated
    without its tenant column is refused to the same SQL that read it before."""
    store = ServiceStore(clickhouse_target(settings_for(seeded)))
    sent: list[str] = []
    query = store.query

    def counted(sql: str, *args: Any) -> Any:
        sent.append(sql.split()[0] + " " + sql.split()[1])
        return query(sql, *args)

    monkeypatch.setattr(store, "query", counted)
    acme = Principal("acme-key", "acme", frozenset({"query"}))
    everyone = Principal("operator", "*", frozenset({"query"}))
    guard = ReadOnlyGuard(store, "pulse", max_rows=100, timeout_ms=5000)
    try:
        polled = "SELECT count() FROM pulse.metrics WHERE model_version = {v:String}"

        def statements(sql: str, principal: Principal, v: str = "v1") -> int:
            sent.clear()
            guard.run(sql, {"v": v}, principal)
            return len(sent)

        assert statements(polled, everyone) >= 4  # the checks, then the query
        assert statements(polled, everyone) == 1
        assert statements(polled, everyone, "v2") == 4  # another value: two formats, AST
        assert statements(polled, acme) > 3  # the tenant's filter is another key
        assert statements(polled, acme) == 3  # the table lists, then the query
        sent.clear()
        for _ in range(2):
            with pytest.raises(SqlRefused, match="no tenant column"):
                guard.run("SELECT count() FROM pulse.dead_letters", {}, acme)
        assert sent.count("EXPLAIN QUERY") == 2 and len(guard.vetted) == 3  # each refusal

        admin = Store(seeded)
        scratch = "SELECT count() FROM pulse.scratch"
        try:
            admin.open().command("CREATE TABLE pulse.scratch (tenant String) ENGINE = Memory")
            assert guard.run(scratch, {}, acme).rows == [[0]]
            assert statements(scratch, acme) == 3
            admin.open().command("DROP TABLE pulse.scratch")
            admin.open().command("CREATE TABLE pulse.scratch (a Int8) ENGINE = Memory")
            with pytest.raises(SqlRefused, match=r"table pulse\.scratch has no tenant column"):
                guard.run(scratch, {}, acme)
        finally:
            admin.open().command("DROP TABLE IF EXISTS pulse.scratch")
            admin.close()
    finally:
        store.close()


def test_the_sql_remembered_is_bounded_in_entries_and_characters() -> None:
    vetted = VettedSql(max_entries=2)
    keys = [VettedSql.key(f"SELECT {i}", {}, None) for i in range(3)]
    vetted.add(keys[0])
    vetted.add(keys[1])
    assert keys[0] in vetted  # now the most recently used
    vetted.add(keys[2])
    assert keys[1] not in vetted and keys[0] in vetted and keys[2] in vetted
    assert len(vetted) == 2
    held = VettedSql(max_entries=10, max_chars=40)
    short, long = VettedSql.key("SELECT 1", {}, None), VettedSql.key("SELECT 12345678", {}, None)
    held.add(VettedSql.key("SELECT " + "1" * 40, {}, None))  # over the bound alone
    assert len(held) == 0
    for key in (short, long, short, long, long):
        held.add(key)
    assert len(held) == 2 and held.chars == 23
    held.add(VettedSql.key("SELECT 12345678901234567890", {}, None))  # 27 more: 2 go
    assert short not in held and long not in held and held.chars == 27
    bound = VettedSql.key("SELECT {v:String}", {"v": "a"}, None)
    assert bound != VettedSql.key("SELECT {v:String}", {"v": "b"}, None)
    assert bound != VettedSql.key("SELECT {v:String}", {"v": "a"}, "{'pulse.metrics': '0'}")
