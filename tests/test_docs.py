"""Every ```python block in README.md and docs/*.md runs as written.

Each block is one test (id ``file:line`` of its opening fence): it is written to a file and run as a
script in a subprocess, with ``PGHOST``/``PGPORT``/``PGUSER`` (and ``PGPASSWORD``) pointing at the
session's test server, where a database ``app`` exists, so ``psycopg2.connect("dbname=app")`` works
as the docs write it. A block that cannot run (it needs a standby, a second host, ...) says so on the
line right before its fence::

    <!-- docs-test: skip: needs a standby server -->

and is reported as skipped with that reason. Nothing else can opt a block out.

Blocks are expected to clean up after themselves. What one leaves behind (tables, functions,
schemas, large objects, replication slots in ``app``) is dropped after it, so the next block starts
from the same database, and reported as a warning naming the block.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, NamedTuple, Optional

import psycopg2
import psycopg2.extensions
import pytest
from psycopg2 import sql
from until import wait_until

ROOT = Path(__file__).resolve().parent.parent
DOCS_DB = "app"
BLOCK_TIMEOUT = 60.0

_FENCE_OPEN = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,})[ \t]*(?P<info>[^`\n]*)$")
_SKIP = re.compile(r"^\s*<!--\s*docs-test:\s*skip\s*(?::\s*(?P<reason>.*?))?\s*-->\s*$")
_MARKER_LINE = re.compile(r"^\s*<!--\s*docs-test\b")
_PYTHON_INFO = {"python", "py", "python3"}


@dataclass(frozen=True)
class Block:
    """One fenced Python block: where it is, its code, and the skip reason if it opted out."""

    path: Path
    line: int  # 1-based line of the opening fence
    code: str
    skip: Optional[str]  # None: run it; "": marker without a reason (an error)

    @property
    def id(self) -> str:
        return f"{self.path.relative_to(ROOT).as_posix()}:{self.line}"


def extract_blocks(path: Path, text: Optional[str] = None) -> list[Block]:
    """The ```python blocks of a Markdown file, in order; other fences are stepped over whole so a
    Python fence quoted inside a ```markdown block is not mistaken for one."""
    lines = (path.read_text(encoding="utf-8") if text is None else text).splitlines()
    blocks: list[Block] = []
    i = 0
    while i < len(lines):
        m = _FENCE_OPEN.match(lines[i])
        if not m:
            i += 1
            continue
        indent, fence = m["indent"], m["fence"]
        info = m["info"].strip().split()
        start = i
        body: list[str] = []
        i += 1
        while i < len(lines) and not re.match(rf"^[ \t]*`{{{len(fence)},}}[ \t]*$", lines[i]):
            body.append(lines[i][len(indent) :] if lines[i].startswith(indent) else lines[i].lstrip())
            i += 1
        i += 1  # the closing fence
        if info and info[0].lower() in _PYTHON_INFO:
            skip = None
            if start > 0:
                sm = _SKIP.match(lines[start - 1])
                if sm:
                    skip = (sm["reason"] or "").strip()
            blocks.append(Block(path, start + 1, "\n".join(body) + "\n", skip))
    return blocks


def doc_files() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def all_blocks() -> list[Block]:
    return [b for p in doc_files() if p.exists() for b in extract_blocks(p)]


# -- the database the blocks use --------------------------------------------------------------


class DocsServer(NamedTuple):
    env: dict[str, str]  # the environment a block runs with
    admin_dsn: str  # connects to `app` as the test role, for cleanup


def _libpq_env(dsn: str) -> dict[str, str]:
    """PG* variables equivalent to the test server's DSN (the database is the block's choice)."""
    params = psycopg2.extensions.parse_dsn(dsn)
    names = {"host": "PGHOST", "port": "PGPORT", "user": "PGUSER", "password": "PGPASSWORD"}
    if "hostaddr" in params and "host" not in params:
        params["host"] = params["hostaddr"]
    return {var: str(params[key]) for key, var in names.items() if params.get(key)}


@pytest.fixture(scope="session")
def docs_server(dsn: str) -> Iterator[DocsServer]:
    """The test server with a database ``app`` (created once; dropped at the end if we made it)."""
    conn = psycopg2.connect(dsn)
    conn.autocommit = True
    created = False
    try:
        with conn.cursor() as cur:
            cur.execute("select 1 from pg_database where datname = %s", (DOCS_DB,))
            if cur.fetchone() is None:
                cur.execute(sql.SQL("create database {}").format(sql.Identifier(DOCS_DB)))
                created = True
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        # PSYCOGREEN_TEST_DSN, when this session has it, passes on: a block that runs pytest
        # (docs/testing.md) then uses the same existing server instead of needing binaries.
        env.update(_libpq_env(dsn))
        # The checkout's psycogreen first; keep an outer PYTHONPATH.
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env["PYTHONUNBUFFERED"] = "1"
        admin = psycopg2.extensions.make_dsn(dsn, dbname=DOCS_DB)
        yield DocsServer(env, admin)
    finally:
        if created:
            with conn.cursor() as cur:
                cur.execute(
                    sql.SQL("drop database if exists {} with (force)").format(sql.Identifier(DOCS_DB))
                )
        conn.close()


# -- what a block leaves behind ----------------------------------------------------------------

_SYSTEM_SCHEMAS = (
    "nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
    " and nspname not like 'pg_temp%' and nspname not like 'pg_toast_temp%'"
)

_INVENTORY = {
    "schema": f"select nspname, format('schema %I', nspname) from pg_namespace where {_SYSTEM_SCHEMAS}",
    "relation": f"""
        select c.oid::text, format('%s %I.%I',
               case c.relkind when 'v' then 'view' when 'm' then 'materialized view'
                    when 'S' then 'sequence' when 'f' then 'foreign table' else 'table' end,
               n.nspname, c.relname)
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f') and {_SYSTEM_SCHEMAS}
          and not exists (select 1 from pg_depend d where d.classid = 'pg_class'::regclass
                          and d.objid = c.oid and d.deptype in ('a', 'i'))""",
    "function": f"""
        select p.oid::text, format('%s %s', case p.prokind when 'p' then 'procedure' else 'function' end,
               p.oid::regprocedure)
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace
        where {_SYSTEM_SCHEMAS}
          and not exists (select 1 from pg_depend d where d.classid = 'pg_proc'::regclass
                          and d.objid = p.oid and d.deptype = 'e')""",
    "type": f"""
        select t.oid::text, format('type %s', t.oid::regtype)
        from pg_type t join pg_namespace n on n.oid = t.typnamespace
        where (t.typtype in ('e', 'd')
               or (t.typtype = 'c' and (select relkind from pg_class where oid = t.typrelid) = 'c'))
          and {_SYSTEM_SCHEMAS}""",
    "large object": "select oid::text, format('large object %s', oid) from pg_largeobject_metadata",
    "replication slot": """
        select slot_name::text, format('replication slot %s', slot_name) from pg_replication_slots
        where database = current_database() and not temporary""",
}


def inventory(conn: Any) -> dict[str, dict[str, str]]:
    out: dict[str, dict[str, str]] = {}
    with conn.cursor() as cur:
        for kind, query in _INVENTORY.items():
            cur.execute(query)
            out[kind] = dict(cur.fetchall())
    return out


def _drop(conn: Any, kind: str, key: str, label: str) -> None:
    with conn.cursor() as cur:
        if kind == "schema":
            cur.execute(sql.SQL("drop schema if exists {} cascade").format(sql.Identifier(key)))
        elif kind == "relation":
            what = label.split(" ")[:-1]
            cur.execute(f"drop {' '.join(what)} if exists {label.split(' ')[-1]} cascade")
        elif kind == "function":
            word, _, sig = label.partition(" ")
            cur.execute(f"drop {word} if exists {sig} cascade")
        elif kind == "type":
            cur.execute(f"drop type if exists {label.partition(' ')[2]} cascade")
        elif kind == "large object":
            cur.execute(
                "select lo_unlink(%s) where exists (select 1 from pg_largeobject_metadata where oid = %s)",
                (int(key), int(key)),
            )
        elif kind == "replication slot":
            # A slot stays active until its walsender notices the client went away.
            def released() -> bool:
                cur.execute("select active from pg_replication_slots where slot_name = %s", (key,))
                row = cur.fetchone()
                return row is None or not row[0]

            try:
                wait_until(released, interval=0.05, what=f"slot {key} to be released")
            except AssertionError:
                pass  # still active: the drop fails, and the report names the slot
            cur.execute(
                "select pg_drop_replication_slot(slot_name) from pg_replication_slots where slot_name = %s",
                (key,),
            )


def clean_up_after(conn: Any, before: dict[str, dict[str, str]]) -> list[str]:
    """Drop what appeared since ``before``; return the labels of what was dropped."""
    left: list[str] = []
    for kind in ("replication slot", "large object", "schema", "relation", "function", "type"):
        now = inventory(conn)[kind]
        for key, label in now.items():
            if key not in before[kind]:
                left.append(label)
                try:
                    _drop(conn, kind, key, label)
                except psycopg2.Error:
                    pass  # dropped by a cascade meanwhile, or not ours to drop: the report says it
    return left


def _wait_backends_gone(conn: Any, timeout: float = 10.0) -> None:
    """The block's process is gone; wait until the server has noticed, so drops do not block."""

    def gone() -> bool:
        with conn.cursor() as cur:
            cur.execute(
                "select count(*) from pg_stat_activity where datname = current_database()"
                " and pid <> pg_backend_pid() and backend_type in ('client backend', 'walsender')"
            )
            return bool(cur.fetchone()[0] == 0)

    try:
        wait_until(gone, timeout, "the block's backends to end", interval=0.05)
    except AssertionError:
        pass  # the drops below report what is left; a backend that lingers must not fail the block


# -- the tests ---------------------------------------------------------------------------------


class Outcome(NamedTuple):
    returncode: Optional[int]  # None: killed at the time limit
    stdout: str
    stderr: str
    seconds: float


def _run(code_file: Path, cwd: Path, env: dict[str, str]) -> Outcome:
    """Run one block in its own process group, so the end (or the time limit) also ends whatever
    it started."""
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(code_file)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    returncode: Optional[int]
    try:
        out, err = proc.communicate(timeout=BLOCK_TIMEOUT)
        returncode = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        returncode = None
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    return Outcome(returncode, out, err, time.monotonic() - started)


BLOCKS = all_blocks()


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_doc_block_runs(block: Block, docs_server: DocsServer, tmp_path: Path) -> None:
    if block.skip is not None:
        if not block.skip:
            pytest.fail(f"{block.id}: a docs-test skip marker needs a reason: <!-- docs-test: skip: why -->")
        pytest.skip(f"{block.id}: {block.skip}")
    script = tmp_path / "block.py"
    script.write_text(block.code, encoding="utf-8")
    admin = psycopg2.connect(docs_server.admin_dsn)
    admin.autocommit = True
    try:
        before = inventory(admin)
        run = _run(script, tmp_path, docs_server.env)
        _wait_backends_gone(admin)
        left = clean_up_after(admin, before)
    finally:
        admin.close()
    if run.returncode != 0:
        what = (
            f"did not finish within {BLOCK_TIMEOUT:.0f} s"
            if run.returncode is None
            else f"exited {run.returncode}"
        )
        pytest.fail(
            f"{block.id} {what} after {run.seconds:.1f} s\n--- block\n{block.code}"
            f"--- stdout\n{run.stdout[-3000:]}\n--- stderr\n{run.stderr[-6000:]}",
            pytrace=False,
        )
    print(f"--- {block.id} ({run.seconds:.1f} s)\n{run.stdout}")  # shown with -rP
    if left:
        warnings.warn(f"{block.id} left behind (now dropped): {', '.join(left)}", stacklevel=1)


def test_skip_markers_sit_right_before_a_python_fence() -> None:
    """A marker anywhere else would silently skip nothing: say where it is."""
    stray = []
    for path in doc_files():
        if not path.exists():
            continue
        marked = {b.line - 1 for b in extract_blocks(path) if b.skip is not None}
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if _MARKER_LINE.match(line) and n not in marked:
                stray.append(f"{path.relative_to(ROOT)}:{n}: {line.strip()}")
    assert not stray, "docs-test markers not on the line right before a ```python fence:\n" + "\n".join(stray)


def test_extractor() -> None:
    text = "\n".join(
        [
            "# t",
            "```python",
            "print(1)",
            "```",
            "<!-- docs-test: skip: needs a standby -->",
            "```python",
            "standby()",
            "```",
            "````markdown",
            "```python",
            "not a block",
            "```",
            "````",
            "- item:",
            "  ```py",
            "  if True:",
            "      print(2)",
            "  ```",
            "<!-- docs-test: skip -->",
            "```python",
            "x",
            "```",
            "```sh",
            "make test",
            "```",
        ]
    )
    blocks = extract_blocks(ROOT / "README.md", text)
    assert [(b.line, b.code, b.skip) for b in blocks] == [
        (2, "print(1)\n", None),
        (6, "standby()\n", "needs a standby"),
        (15, "if True:\n    print(2)\n", None),
        (20, "x\n", ""),
    ]
