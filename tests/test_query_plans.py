"""Every query on a hot path reads only the rows it needs, however long the history behind it.

The hot paths are accepting a job (the server's rules, its role and member rules and access roles, and the
quota reservation), dispatching, polling, delivering, ending a job, the last word after a restart, ``/usage``,
``/history`` and pruning. Each test runs them for real on a SQLite file that holds a long history, captures every
statement SQLite actually executed (``set_trace_callback``, with the parameters expanded), and checks it two ways:

- **its plan** (``EXPLAIN QUERY PLAN``): no ``SCAN`` of a table. A ``SCAN`` through an index is allowed only
  for the partial indexes of :data:`LIVE_INDEXES`, which hold nothing but the rows a hot path acts on (live
  jobs; ended jobs still owing their member a last word), so reading all of them is reading what is needed.
  Every other read must be a ``SEARCH`` (a primary key, or an index range).
- **its work**: a ``SEARCH`` can still walk a member's whole history (``guild_id = ? AND user_id = ?`` over
  every job they ever had looks the same in a plan as over their live ones), so the same operations also
  run on a file with a short one, counting the virtual machine steps of each statement (SQLite's
  progress handler). A statement may not do markedly more work because finished jobs, old usage and other
  servers' rules piled up: see :data:`SLACK`. Steps are counted, not timed. One statement reads a member's
  history by design, ``/history``'s count of its pages: it is held to reading the index alone, and no further
  than the pages reach (:data:`COUNTS_HISTORY`).

The same hot paths run on PostgreSQL too, with ``auto_explain`` reporting the plan of every statement the server
runs (those inside ``reserve_job`` and the triggers included) and ``enable_seqscan = off``, so that even on a
small table the planner only reads a whole table where no index can serve the query: no hot-path plan may read all of
one of :data:`HOT_TABLES` (a ``Seq Scan``, or a whole index but the live partial ones).
"""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bot import db
from bot.db import JobKind, JobStatus, NewJob, Provider, QuotaLimits, QuotaRefusal, SqliteStore, Store, work
from bot.db.alerts import alert_channel
from bot.db.history import MAX_PAGE, PAGE_SIZE, HistoryPage, member_history
from bot.db.postgres import PostgresStore, server_log
from bot.db.report import count_refusal

GUILD = 71
USER = 72
CHANNEL = 73
NOW = datetime(2025, 6, 15, 12, 0, tzinfo=UTC).timestamp()
DAY = 86_400.0
#: The process doing the runner's work in the hot paths below.
OWNER = "host:1:0a1b2c3d"
#: Every limit is set, so every check runs (and passes, except where a test wants a refusal).
LIMITS = QuotaLimits(
    user_daily=1_000,
    guild_daily=100_000,
    max_concurrent=50,
    cooldown=0.5,
    user_monthly=10_000,
    guild_monthly=1_000_000,
)

#: Partial indexes that hold only rows a hot path acts on: scanning one of them is reading what is needed.
LIVE_INDEXES = frozenset({"jobs_member_live", "jobs_final_word_owed"})
#: How much more work a statement may do with the history than without: a B-tree a level deeper costs a few
#: steps per lookup, never a step per row of history.
SLACK = (1.5, 300)
#: Virtual machine steps between two calls of the progress handler.
STEP = 10
#: How the one hot-path statement that reads a member's history begins: ``/history`` counts the member's jobs in
#: the server to say how many pages there are. Its work grows with the history, up to the last page; it is
#: checked to read the index alone and to stop there instead of being held to :data:`SLACK`.
COUNTS_HISTORY = "SELECT count(*) FROM ( SELECT 1 FROM jobs WHERE guild_id"


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@dataclass
class Statement:
    sql: str
    steps: int = 0


@dataclass
class Capture:
    """The statements each named operation executed, in order, with their virtual machine steps."""

    operations: dict[str, list[Statement]] = field(default_factory=dict)
    current: list[Statement] | None = None

    def trace(self, sql: str) -> None:
        if self.current is None:
            return
        if self.current and self.current[-1].sql == sql:
            return  # the same statement again: SQLite traces a trigger under its statement
        self.current.append(Statement(sql))

    def progress(self) -> int:
        if self.current:
            self.current[-1].steps += STEP
        return 0


class Recorder:
    """Runs operations on a store and records what SQLite did for each."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.capture = Capture()

    @asynccontextmanager
    async def recording(self) -> AsyncIterator[None]:
        conn = self.store._conn  # the aiosqlite connection: its callbacks run in the connection's thread
        await conn.set_trace_callback(self.capture.trace)
        await conn.set_progress_handler(self.capture.progress, STEP)
        try:
            yield
        finally:
            await conn.set_progress_handler(None, STEP)  # type: ignore[arg-type]
            await conn.set_trace_callback(None)  # type: ignore[arg-type]

    async def run(self, name: str, operation: Callable[[], Awaitable[object]]) -> object:
        self.capture.current = self.capture.operations.setdefault(name, [])
        try:
            return await operation()
        finally:
            self.capture.current = None


def request(user_id: int = USER, **overrides: object) -> NewJob:
    fields: dict[str, object] = {
        "guild_id": GUILD,
        "channel_id": CHANNEL,
        "user_id": user_id,
        "kind": JobKind.GENERATE,
        "prompt": "a lighthouse at dusk",
        "model": "flux-dev",
        "size": "1:1",
        "count": 1,
        "provider": Provider.BFL,
        "interaction_application_id": 1,
        "interaction_token": "token",
    } | overrides
    return NewJob(**fields)  # type: ignore[arg-type]


def history_rows(member_jobs: int, others: int) -> list[tuple[object, ...]]:
    """Finished jobs of the member (and of other members of the server) over past days, one tuple per job:
    user, prompt, created, status, error code, result, posted at, message, charged, day, task, finished."""
    statuses = ("posted", "failed", "lost")
    rows: list[tuple[object, ...]] = []
    for n in range(member_jobs + others):
        at = NOW - 400 * DAY + n * 600.0
        status = statuses[n % 3]
        posted = status == "posted"
        rows.append(
            (
                USER if n < member_jobs else 1_000 + n % 97,
                f"old prompt {n}",
                at,
                status,
                None if posted else "provider_error",
                json.dumps({"images": [f"https://cdn.example/{n}.png"], "seed": n}) if posted else None,
                at + 30.0 if posted else None,
                5_000_000 + n if posted else None,
                1 if posted else 0,
                datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%d"),
                f"old-task-{n}",
                at + 20.0,
            )
        )
    return rows


#: How :func:`other_servers_rules` are written, by table; parameters (guild, role or member, value, time).
RULE_INSERTS = {
    "role_limits": "INSERT INTO role_limits (guild_id, role_id, user_daily, updated_at, updated_by) "
    "VALUES ($1, $2, $3, $4, 1)",
    "member_limits": "INSERT INTO member_limits (guild_id, user_id, max_count, updated_at, updated_by) "
    "VALUES ($1, $2, $3, $4, 1)",
    "access_roles": "INSERT INTO access_roles (guild_id, role_id, added_by, added_at) VALUES ($1, $2, $3, $4)",
}


def other_servers_rules(servers: int) -> dict[str, list[tuple[int, int, int, float]]]:
    """Role rules, member rules and access roles of ``servers`` other servers, two of each (one for USER), so a
    read of one server's rules that worked through everyone's would show."""
    rows: dict[str, list[tuple[int, int, int, float]]] = {table: [] for table in RULE_INSERTS}
    for n in range(servers):
        guild = 500_000 + n
        for subject in (USER, 2_000_000 + n):
            rows["role_limits"].append((guild, subject, n % 50, NOW - DAY))
            rows["member_limits"].append((guild, subject, n % 4 + 1, NOW - DAY))
            rows["access_roles"].append((guild, subject, 1, NOW - DAY))
    return rows


async def server_rules(store: Store) -> None:
    """The server's own rules: two roles with overrides, one for the member, two access roles."""
    await db.set_role_rule(store, GUILD, 81, changed_by=1, user_daily=2_000, max_concurrent=60)
    await db.set_role_rule(store, GUILD, 82, changed_by=1, cooldown_seconds=0.5)
    await db.set_member_rule(store, GUILD, USER, changed_by=1, user_monthly=20_000)
    await db.add_access_role(store, GUILD, 81, changed_by=1)
    await db.add_access_role(store, GUILD, 83, changed_by=1)


def write_history(path: Path, member_jobs: int, others: int) -> None:
    """The :func:`history_rows` in the SQLite file at ``path``, with their usage."""
    rows = history_rows(member_jobs, others)
    with sqlite3.connect(path) as conn:
        conn.executemany(
            f"""
            INSERT INTO jobs (guild_id, channel_id, user_id, kind, prompt, model, size, count, provider, status,
                              error_code, result, posted_at, posted_message_id, reserved_images, charged_images,
                              usage_day, provider_task_id, finished_at, created_at)
            SELECT {GUILD}, {CHANNEL}, ?1, 'generate', ?2, 'flux-dev', '1:1', 1, 'bfl', ?4, ?5, ?6, ?7, ?8, 1, ?9,
                   ?10, ?11, ?12, ?3
            """,
            rows,
        )
        # Settle the reservations the jobs_reserve trigger made, as the ends of those jobs did.
        conn.execute("UPDATE usage SET used = used + reserved, reserved = 0")
        for table, rule_rows in other_servers_rules(others).items():
            conn.executemany(RULE_INSERTS[table].replace("$", "?"), rule_rows)  # ?1, ?2...: SQLite's numbered form
    conn.close()


async def hot_paths(recorder: Recorder, clock: Clock) -> None:
    """Everything the bot does to jobs on its hot paths, each step named."""
    run = recorder.run
    store = recorder.store
    await run("accept: server settings", lambda: db.get_guild_settings(store, GUILD))
    await run("accept: blocklist", lambda: db.blocked_terms(store, GUILD))
    await run("accept: member block", lambda: db.member_block(store, GUILD, USER))
    await run("accept: access roles", lambda: db.access_roles(store, GUILD))
    await run("accept: role rules", lambda: db.role_rules(store, GUILD))
    await run("accept: member rule", lambda: db.member_rule(store, GUILD, USER))
    rules = await run("accept: request rules", lambda: db.request_rules(store, GUILD, USER))
    assert rules == (
        await db.role_rules(store, GUILD),
        await db.member_rule(store, GUILD, USER),
        await db.access_roles(store, GUILD),
    )
    assert len(rules[0]) == 2 and rules[1] is not None and len(rules[2]) == 2  # the server's own, only
    await run("accept: member defaults", lambda: db.get_member_settings(store, USER))
    await run("accept: alert channel", lambda: alert_channel(store, GUILD))
    await run("refuse: count_refusal", lambda: count_refusal(store, GUILD, "user_daily"))
    jobs = []
    for n in range(6):
        clock.now += 1.0
        job = await run(f"accept: db.create_job {n}", lambda: db.create_job(store, request(), LIMITS))
        assert not isinstance(job, QuotaRefusal), job
        jobs.append(job)
    edit = await run(
        "accept: db.create_job of an edit",
        lambda: db.create_job(
            store, request(2, kind=JobKind.EDIT, source_image_url="data:image/png;base64,AAAA"), LIMITS
        ),
    )
    assert not isinstance(edit, QuotaRefusal)
    refusal = await run("accept: db.create_job refused", lambda: db.create_job(store, request(), LIMITS))
    assert isinstance(refusal, QuotaRefusal)  # the cooldown: half a second has not passed
    clock.now += 1.0

    await run("lease: work.renew_worker", lambda: work.renew_worker(store, OWNER, 15.0))
    await run("lease: work.hold_role", lambda: work.hold_role(store, work.POLLER, OWNER, 15.0))
    await run("dispatch: in flight", lambda: db.count_in(store, JobStatus.SUBMITTING, JobStatus.SUBMITTED))
    await run("dispatch: queue order", lambda: work.queue_order(store))
    await run("dispatch: queue position", lambda: db.queue_position(store, jobs[-1].id))
    await run("dispatch: jobs by ids", lambda: db.jobs_by_ids(store, [job.id for job in jobs[3:]]))
    await run("dispatch: work.claim_queued", lambda: work.claim_queued(store, OWNER, concurrency=5))
    await run("sweep: interrupted submits", lambda: work.orphaned_submits(store, OWNER, own=True))
    await run("restart: db.mark_lost", lambda: db.mark_lost(store, jobs[3].id, "lost in a restart"))
    for job in [*jobs[:3], edit]:
        await run("submit: db.mark_submitted", lambda job=job: db.mark_submitted(store, job.id, f"task-{job.id}"))

    await run("poll: polling handles", lambda: db.polling_handles(store))
    await run("callback: submitted job", lambda: db.submitted_job(store, f"task-{jobs[0].id}"))
    inline = ["data:image/png;base64,AAAA", "https://cdn.example/new.png"]
    for job in [*jobs[:2], edit]:
        await run("poll: db.mark_succeeded", lambda job=job: db.mark_succeeded(store, job.id, inline, 5))
    await run("poll: db.get_job", lambda: db.get_job(store, jobs[0].id))
    await run("sweep: work.claim_results", lambda: work.claim_results(store, OWNER))
    await run("deliver: db.mark_posted", lambda: db.mark_posted(store, jobs[0].id, 9_000_001, 1))
    await run("deliver: db.mark_posted of an edit", lambda: db.mark_posted(store, edit.id, 9_000_002, 1))
    await run("deliver: db.mark_failed", lambda: db.mark_failed(store, jobs[1].id, "delivery", "could not post"))
    await run("fail: db.mark_failed while queued", lambda: db.mark_failed(store, jobs[5].id, "cancelled", "gone"))
    await run("cancel: db.cancel_job", lambda: db.cancel_job(store, jobs[4].id, USER))
    await run("sweep: work.claim_final_words", lambda: work.claim_final_words(store, OWNER))
    await run("last word: db.mark_told", lambda: db.mark_told(store, jobs[0].id))

    await run("/usage: db.user_usage", lambda: db.user_usage(store, GUILD, USER))
    await run("/usage: db.guild_usage_today", lambda: db.guild_usage_today(store, GUILD))
    await run("/usage: db.guild_usage_month", lambda: db.guild_usage_month(store, GUILD))
    await run("/usage: active jobs", lambda: db.active_jobs(store, GUILD, USER))
    await run("prune: one batch", lambda: db.prune_finished_jobs(store, before=NOW - 300 * DAY, batch=50))
    await run("prune: work.prune_turns", lambda: work.prune_turns(store, before=NOW - DAY))

    first = await run("/history: the first page", lambda: member_history(store, GUILD, USER, 1))
    assert isinstance(first, HistoryPage) and len(first.entries) == PAGE_SIZE
    later = await run("/history: a later page", lambda: member_history(store, GUILD, USER, 2))
    assert isinstance(later, HistoryPage) and later.entries  # a page there is, also after the short history's prune


async def recorded(path: Path, *, member_jobs: int, others: int) -> Capture:
    clock = Clock()
    async with await SqliteStore.open(path, clock=clock):
        pass
    write_history(path, member_jobs, others)
    async with await SqliteStore.open(path, clock=clock) as store:
        await server_rules(store)
        recorder = Recorder(store)
        async with recorder.recording():
            await hot_paths(recorder, clock)
    return recorder.capture


def plan(conn: sqlite3.Connection, sql: str) -> list[str]:
    return [str(row[3]) for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}")]


def is_query(sql: str) -> bool:
    """Statements that read rows (SELECT, UPDATE, DELETE, INSERT ... SELECT); not BEGIN, COMMIT, PRAGMA."""
    return sql.split(None, 1)[0].upper() in {"SELECT", "UPDATE", "DELETE", "INSERT", "WITH", "REPLACE"}


def full_scans(steps: list[str]) -> list[str]:
    """The plan steps that read a whole table, or a whole index that is not one of :data:`LIVE_INDEXES`.

    A scan of a subquery the plan itself builds (a co-routine, or a materialized view) reads only the rows that
    subquery's own steps found: those steps are checked instead.
    """
    built = {step.split(None, 1)[1] for step in steps if step.startswith(("CO-ROUTINE ", "MATERIALIZE "))}
    bad = []
    for step in steps:
        if not step.startswith("SCAN ") or step == "SCAN CONSTANT ROW" or " VIRTUAL TABLE " in step:
            continue
        if step.removeprefix("SCAN ") in built:
            continue
        index = step.rsplit(" INDEX ", 1)[1].split()[0] if " INDEX " in step else None
        if index not in LIVE_INDEXES:
            bad.append(step)
    return bad


@pytest.fixture(scope="module")
def captures(tmp_path_factory: pytest.TempPathFactory) -> tuple[Capture, Capture, Path]:
    """The hot paths run on a file with a long history and on one with a short one; the first is kept for plans."""
    folder = tmp_path_factory.mktemp("plans")
    deep = asyncio.run(recorded(folder / "deep.db", member_jobs=3_000, others=2_000))
    # A short history still gives the prune its one batch of 50 to delete.
    shallow = asyncio.run(recorded(folder / "shallow.db", member_jobs=60, others=0))
    return deep, shallow, folder / "deep.db"


def test_every_hot_path_statement_is_a_search_or_reads_a_live_partial_index(
    captures: tuple[Capture, Capture, Path],
) -> None:
    deep, _, path = captures
    checked = 0
    failures = []
    with sqlite3.connect(path) as conn:
        for name, statements in deep.operations.items():
            for statement in statements:
                if not is_query(statement.sql):
                    continue
                checked += 1
                bad = full_scans(plan(conn, statement.sql))
                if bad:
                    failures.append(f"{name}: {' '.join(statement.sql.split())[:160]} -> {bad}")
    conn.close()
    assert checked >= 30, f"only {checked} statements were captured: is tracing working?"
    assert not failures, "\n".join(failures)


def test_deleting_a_job_finds_the_jobs_made_from_it_through_an_index(captures: tuple[Capture, Capture, Path]) -> None:
    # The ON DELETE SET NULL of parent_job_id runs inside SQLite, untraced: check the statement it amounts to.
    _, _, path = captures
    with sqlite3.connect(path) as conn:
        steps = plan(conn, "UPDATE jobs SET parent_job_id = NULL WHERE parent_job_id = 1")
    conn.close()
    assert steps == ["SEARCH jobs USING INDEX jobs_parent (parent_job_id=?)"]


def test_no_hot_path_statement_works_through_the_history(captures: tuple[Capture, Capture, Path]) -> None:
    deep, shallow, _ = captures
    assert deep.operations.keys() == shallow.operations.keys()
    factor, extra = SLACK
    failures = []
    for name, statements in deep.operations.items():
        without = shallow.operations[name]
        assert len(statements) == len(without), name
        for with_history, alone in zip(statements, without, strict=True):
            if counts_history(with_history.sql):
                continue  # checked by test_the_history_count_reads_the_index_alone_and_only_as_far_as_the_pages
            if with_history.steps > alone.steps * factor + extra:
                failures.append(
                    f"{name}: {with_history.steps} steps with 5,000 finished jobs, {alone.steps} with 60: "
                    f"{' '.join(with_history.sql.split())[:160]}"
                )
    assert not failures, "\n".join(failures)


def counts_history(sql: str) -> bool:
    return " ".join(sql.split()).startswith(COUNTS_HISTORY)


def test_the_history_count_reads_the_index_alone_and_only_as_far_as_the_pages(
    captures: tuple[Capture, Capture, Path],
) -> None:
    deep, _, path = captures
    counts = [statement.sql for statements in deep.operations.values() for statement in statements]
    counts = [sql for sql in counts if counts_history(sql)]
    assert len(counts) == 2  # one per page read
    with sqlite3.connect(path) as conn:
        for sql in counts:
            assert "SEARCH jobs USING COVERING INDEX jobs_member_created (guild_id=? AND user_id=?)" in plan(conn, sql)
            assert f"LIMIT {MAX_PAGE * PAGE_SIZE + 1}" in sql
            mine = conn.execute("SELECT count(*) FROM jobs WHERE guild_id = ? AND user_id = ?", (GUILD, USER))
            assert conn.execute(sql).fetchone() == mine.fetchone()  # below the bound, every job is counted
    conn.close()


def test_the_capture_sees_every_statement_and_counts_its_work(captures: tuple[Capture, Capture, Path]) -> None:
    deep, _, _ = captures
    accepted = deep.operations["accept: db.create_job 0"]
    refused = deep.operations["accept: db.create_job refused"]
    assert [statement.sql.split(None, 1)[0] for statement in accepted] == ["INSERT"]  # its own transaction
    assert [statement.sql.split(None, 1)[0] for statement in refused] == ["INSERT", "SELECT"]
    assert all(statement.steps > 0 for statement in [*accepted, *refused])


# --- PostgreSQL --------------------------------------------------------------------------------------------

#: Session settings of the PostgreSQL test database: every statement's plan sent to the client (as a NOTICE, which
#: the store logs at DEBUG), nested ones included, and a sequential scan chosen only where no index can serve.
AUTO_EXPLAIN = {
    "session_preload_libraries": "auto_explain",
    "auto_explain.log_min_duration": "0",
    "auto_explain.log_nested_statements": "on",
    "auto_explain.log_format": "json",
    "auto_explain.log_level": "notice",
    "enable_seqscan": "off",
}
#: The tables a hot path must never read whole: each grows with the history, or with every server's rules.
HOT_TABLES = frozenset({"jobs", "usage", "role_limits", "member_limits", "access_roles"})


class ServerPlans(logging.Handler):
    """Collects the plans ``auto_explain`` sends, through the store's log of what the server says."""

    def __init__(self, capture: Capture) -> None:
        super().__init__(logging.DEBUG)
        self.capture = capture

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "plan:" in text:
            self.capture.trace(text.split("plan:", 1)[1])


class PostgresRecorder(Recorder):
    """Runs operations on a PostgreSQL store and records the plan of every statement the server ran for each."""

    @asynccontextmanager
    async def recording(self) -> AsyncIterator[None]:
        handler = ServerPlans(self.capture)
        level = server_log.level
        server_log.addHandler(handler)
        server_log.setLevel(logging.DEBUG)
        try:
            yield
        finally:
            server_log.removeHandler(handler)
            server_log.setLevel(level)


async def write_history_postgresql(url: str, member_jobs: int, others: int) -> None:
    """The :func:`history_rows` in a PostgreSQL database, and the plan settings of :data:`AUTO_EXPLAIN`."""
    rows = history_rows(member_jobs, others)
    conn = await asyncpg.connect(url)
    try:
        await conn.executemany(
            f"""
            INSERT INTO jobs (guild_id, channel_id, user_id, kind, prompt, model, size, count, provider, status,
                              error_code, result, posted_at, posted_message_id, reserved_images, charged_images,
                              usage_day, provider_task_id, finished_at, created_at)
            VALUES ({GUILD}, {CHANNEL}, $1, 'generate', $2, 'flux-dev', '1:1', 1, 'bfl', $4, $5, $6, $7, $8, 1, $9,
                    $10, $11, $12, $3)
            """,
            rows,
        )
        await conn.execute("UPDATE usage SET used = used + reserved, reserved = 0")
        for table, rule_rows in other_servers_rules(others).items():
            await conn.executemany(RULE_INSERTS[table], rule_rows)
        await conn.execute("ANALYZE")
        database = await conn.fetchval("SELECT quote_ident(current_database())")
        for name, value in AUTO_EXPLAIN.items():
            await conn.execute(f"ALTER DATABASE {database} SET {name} = '{value}'")
    finally:
        await conn.close()


#: Partial indexes of live jobs only, which a hot path may read whole (see :data:`LIVE_INDEXES`): the queue and
#: the results waiting to be posted.
LIVE_INDEXES_POSTGRESQL = LIVE_INDEXES | {"jobs_queue", "jobs_succeeded"}


def whole_reads(plan: dict[str, Any]) -> list[str]:
    """The nodes of a JSON plan, at any depth, that read all of ``jobs`` or ``usage``: a ``Seq Scan``, or an index
    scan with no condition on the index (the whole index, in its order) unless of a live partial index."""
    found = []
    table = plan.get("Relation Name")
    if table in HOT_TABLES:
        if plan.get("Node Type") == "Seq Scan":
            found.append(f"Seq Scan on {table}")
        elif (
            plan.get("Node Type") in {"Index Scan", "Index Only Scan"}
            and "Index Cond" not in plan
            and plan.get("Index Name") not in LIVE_INDEXES_POSTGRESQL
        ):
            found.append(f"{plan['Node Type']} of all of {plan.get('Index Name')} on {table}")
    for child in plan.get("Plans", ()):
        found.extend(whole_reads(child))
    return found


async def test_every_hot_path_statement_on_postgresql_reads_the_hot_tables_through_an_index(
    postgresql_url: str,
) -> None:
    clock = Clock()
    async with await PostgresStore.open(postgresql_url, clock=clock):
        pass
    await write_history_postgresql(postgresql_url, member_jobs=3_000, others=2_000)
    async with await PostgresStore.open(postgresql_url, clock=clock, max_size=2) as store:
        await server_rules(store)
        recorder = PostgresRecorder(store)
        async with recorder.recording():
            await hot_paths(recorder, clock)

    checked, failures, texts = 0, [], []
    for name, statements in recorder.capture.operations.items():
        for statement in statements:
            explained = json.loads(statement.sql)
            text = " ".join(str(explained["Query Text"]).split())
            texts.append(text)
            checked += 1
            bad = whole_reads(explained["Plan"])
            if bad:
                failures.append(f"{name}: {text[:160]} -> {bad}")
    assert checked >= 30, f"only {checked} plans were reported: is auto_explain loaded?"
    # The statements inside reserve_job and the triggers are reported (and checked) too.
    assert any(text.startswith("INSERT INTO jobs") for text in texts)
    assert any(text.startswith("UPDATE usage SET reserved = reserved - OLD.reserved_images") for text in texts)
    assert any("parent_job_id" in text and text.startswith("UPDATE ONLY") for text in texts), "ON DELETE SET NULL"
    assert all(
        any(f"FROM {table} WHERE guild_id" in text for text in texts) for table in HOT_TABLES - {"jobs", "usage"}
    )
    assert not failures, "\n".join(failures)
