"""``make compat``: psycopg2's own test suite, blocking vs green with psycogreen 2 vs psycogreen 1.0.2.

Steps, all under the ignored folder ``compat/.work``:

1. download the sdist of ``psycopg2`` for the *installed* psycopg2 version (``pip download
   --no-binary :all: --no-deps``) and extract its ``tests/``; neutralise its "skip if green"
   decorators (appended to ``testutils.py``, so every test runs in every mode);
2. install ``psycogreen==1.0.2`` into ``compat/.work/psycogreen1`` (``pip install --target``; it has
   the same import name as psycogreen 2, so it is put first on ``PYTHONPATH`` for its mode only);
3. start a throwaway server (:class:`psycogreen.testing.PostgresServer`, replication enabled) with
   a ``psycopg2_test`` database, and point psycopg2's ``testconfig.py`` at it through its
   ``PSYCOPG2_TESTDB*`` / ``PSYCOPG2_TEST_REPL_DSN`` variables, so the replication tests run;
4. run every test module in a fresh interpreter per mode (:mod:`compat._suite`): ``blocking``,
   ``psycogreen2`` (gevent ``monkey.patch_all()`` + ``psycogreen.patch()``), ``psycogreen1``
   (gevent + ``psycogreen.gevent.patch_psycopg()``). A test silent for ``--hang`` seconds is
   recorded as ``hung``, its process killed and the module resumed after it;
5. print passed/failed/errors/skipped per mode and write every per-test difference (with the
   failure's last lines) to ``compat/.work/differences.txt``; raw results go to
   ``compat/.work/results/<mode>.json``.

Usage: ``python -m compat.run [--modes blocking,psycogreen2] [--modules test_copy,test_lobject]``.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import signal
import subprocess
import sys
import tarfile
import time
from collections import Counter
from typing import Any, Iterable, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
WORK = os.path.join(HERE, ".work")
PG1_TARGET = os.path.join(WORK, "psycogreen1")
PG1_REQUIREMENT = "psycogreen==1.0.2"
TEST_DB = "psycopg2_test"

MODES = ("blocking", "psycogreen2", "psycogreen1")
LABELS = {
    "blocking": "blocking psycopg2",
    "psycogreen2": "psycogreen 2 (gevent)",
    "psycogreen1": "psycogreen 1.0.2 (gevent)",
}
#: outcomes as the table counts them
COLUMNS = ("passed", "failed", "errors", "skipped")
_COLUMN_OF = {
    "passed": "passed",
    "xfail": "passed",
    "failed": "failed",
    "xpass": "failed",
    "error": "errors",
    "hung": "errors",
    "skipped": "skipped",
}

#: appended to psycopg2's testutils.py: every test runs in green mode too (its decorators skip
#: COPY, large objects and replication when ``PSYCOPG2_TEST_GREEN`` is set).
NEUTRALISE = """

# --- added by psycogreen's compat/run.py: the green skips are neutralised -------------------------
def skip_if_green(reason):
    def skip_if_green_(cls):
        return cls
    return skip_if_green_


skip_copy_if_green = skip_if_green("copy in async mode currently not supported")
"""


def log(msg: str) -> None:
    print(f"[compat] {msg}", flush=True)


# -- fetching ---------------------------------------------------------------------------------------


def psycopg2_version() -> str:
    """The installed psycopg2's version, without the build flags psycopg2 appends."""
    import psycopg2

    return str(psycopg2.__version__).split()[0]


def fetch_tests(version: str) -> str:
    """Directory holding psycopg2's ``tests/`` package for ``version``, downloaded once."""
    root = os.path.join(WORK, f"psycopg2-{version}")
    if os.path.exists(os.path.join(root, "tests", "testutils.py")):
        return root
    sdist_dir = os.path.join(WORK, "sdist")
    os.makedirs(sdist_dir, exist_ok=True)
    archive = os.path.join(sdist_dir, f"psycopg2-{version}.tar.gz")
    if not os.path.exists(archive):
        log(f"downloading the psycopg2 {version} sdist")
        cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-binary", ":all:", "--no-deps"]
        r = subprocess.run([*cmd, "-d", sdist_dir, f"psycopg2=={version}"])
        if r.returncode != 0 or not os.path.exists(archive):
            raise SystemExit(
                f"could not download the psycopg2 {version} sdist (exit status {r.returncode}): pip needs "
                "the package index and, to read the sdist's metadata, pg_config (apt-get install "
                f"libpq-dev); or put psycopg2-{version}.tar.gz into {sdist_dir} yourself"
            )
    with tarfile.open(archive) as tar:
        prefix = f"psycopg2-{version}/tests/"
        members = [m for m in tar.getmembers() if m.name.startswith(prefix) and m.isfile()]
        tar.extractall(WORK, members=members)  # noqa: S202 - names checked to be under tests/
    with open(os.path.join(root, "tests", "testutils.py"), "a") as f:
        f.write(NEUTRALISE)
    return root


def install_psycogreen1() -> Optional[str]:
    """``pip install --target`` psycogreen 1.0.2 once; None (and the mode is skipped) on failure."""
    if os.path.exists(os.path.join(PG1_TARGET, "psycogreen", "gevent.py")):
        return PG1_TARGET
    log(f"installing {PG1_REQUIREMENT} into {PG1_TARGET}")
    r = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", PG1_TARGET, PG1_REQUIREMENT]
    )
    if r.returncode != 0:
        log(f"cannot install {PG1_REQUIREMENT}: its mode is skipped")
        return None
    return PG1_TARGET


def test_modules(root: str) -> list[str]:
    return sorted(os.path.basename(p)[:-3] for p in glob.glob(os.path.join(root, "tests", "test_*.py")))


# -- running ----------------------------------------------------------------------------------------


def mode_env(mode: str, base: dict[str, str], ours: str = ROOT) -> dict[str, str]:
    env = dict(base)
    env.pop("PSYCOPG2_TEST_GREEN", None)  # we make it green ourselves, the skips stay off
    if mode == "psycogreen1":
        env["PYTHONPATH"] = PG1_TARGET  # before site-packages, so psycogreen 2 is not imported
    elif mode == "psycogreen2":
        env["PYTHONPATH"] = ours  # this checkout's psycogreen (or --ours)
    else:
        env.pop("PYTHONPATH", None)
    return env


def run_module(mode: str, root: str, module: str, env: dict[str, str], hang: float) -> list[dict[str, Any]]:
    """Every outcome of one module in one mode, resuming after a hung test until it is done."""
    out_dir = os.path.join(WORK, "results", mode)
    os.makedirs(out_dir, exist_ok=True)
    out = os.path.join(out_dir, f"{module}.jsonl")
    exclude = out + ".exclude"
    for path in (out, exclude):
        if os.path.exists(path):
            os.unlink(path)
    for _attempt in range(50):
        cmd = [sys.executable, os.path.join(HERE, "_suite.py"), "--mode", mode, "--root", root,
               "--module", module, "--out", out, "--exclude", exclude]  # fmt: skip
        with open(os.path.join(out_dir, f"{module}.log"), "a") as logf:
            proc = subprocess.Popen(cmd, env=env, stdout=logf, stderr=subprocess.STDOUT, cwd=root)
            try:
                hung = _watch(proc, out, hang)
            finally:
                if proc.poll() is None:  # interrupted ourselves: leave no orphan behind
                    proc.kill()
                    proc.wait()
        records = read_records(out)
        if not hung:
            if proc.returncode != 0 and not any(r["outcome"] != "started" for r in records):
                records.append({"id": f"{module} (import)", "outcome": "error",
                                "detail": f"exit status {proc.returncode}, see {logf.name}"})  # fmt: skip
            return finish(records)
        started = [r["id"] for r in records if r["outcome"] == "started"]
        ended = {r["id"] for r in records if r["outcome"] != "started"}
        culprit = next((t for t in reversed(started) if t not in ended), None)
        if culprit is None:
            return finish(records)
        with open(out, "a") as f:
            f.write(
                json.dumps({"id": culprit, "outcome": "hung", "detail": f"silent for {hang:.0f}s"}) + "\n"
            )
        with open(exclude, "w") as f:
            f.write("\n".join(ended | {culprit}) + "\n")
        log(f"{mode}: {culprit} hung, resuming {module} after it")
    return finish(read_records(out))


def _watch(proc: subprocess.Popen[bytes], out: str, hang: float) -> bool:
    """Wait for ``proc``; kill it and return True if ``out`` did not grow for ``hang`` seconds."""
    last_size, last_change = -1, time.monotonic()
    while proc.poll() is None:
        size = os.path.getsize(out) if os.path.exists(out) else 0
        if size != last_size:
            last_size, last_change = size, time.monotonic()
        elif time.monotonic() - last_change > hang:
            proc.kill()
            proc.wait()
            return True
        time.sleep(0.2)
    return False


def read_records(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    records = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line:
                try:
                    records.append(json.loads(line))
                except ValueError:
                    pass  # the last line of a killed run may be cut
    return records


def finish(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """The final outcome of each test: its last non-``started`` record (a started test that never
    ended and was not recorded as hung is an error: its process died)."""
    final: dict[str, dict[str, Any]] = {}
    for r in records:
        if r["outcome"] == "started":
            final.setdefault(r["id"], {"id": r["id"], "outcome": "error", "detail": "process died"})
        else:
            final[r["id"]] = r
    return list(final.values())


# -- reporting --------------------------------------------------------------------------------------


def summarise(results: dict[str, list[dict[str, Any]]]) -> dict[str, Counter[str]]:
    """Per mode, how many tests land in each table column."""
    table: dict[str, Counter[str]] = {}
    for mode, records in results.items():
        c: Counter[str] = Counter({k: 0 for k in COLUMNS})
        for r in records:
            c[_COLUMN_OF.get(r["outcome"], "errors")] += 1
        table[mode] = c
    return table


def format_table(table: dict[str, Counter[str]]) -> str:
    """A Markdown table: one row per mode, columns passed/failed/errors/skipped/total."""
    lines = ["| mode | passed | failed | errors | skipped | total |", "|---|---:|---:|---:|---:|---:|"]
    for mode, c in table.items():
        cells = [str(c[k]) for k in COLUMNS]
        lines.append(f"| {LABELS.get(mode, mode)} | {' | '.join(cells)} | {sum(c.values())} |")
    return "\n".join(lines)


def differences(results: dict[str, list[dict[str, Any]]], baseline: str = "blocking") -> list[str]:
    """One block per test whose outcome is not the same in every mode, sorted by test id."""
    by_mode = {m: {r["id"]: r for r in recs} for m, recs in results.items()}
    ids = sorted(set().union(*[set(d) for d in by_mode.values()])) if by_mode else []
    blocks = []
    for tid in ids:
        outcomes = {m: by_mode[m].get(tid, {"outcome": "absent"}) for m in by_mode}
        cols = {m: _COLUMN_OF.get(r["outcome"], r["outcome"]) for m, r in outcomes.items()}
        if len(set(cols.values())) <= 1:
            continue
        head = tid + ": " + ", ".join(f"{m}={outcomes[m]['outcome']}" for m in by_mode)
        detail = ""
        for m, r in outcomes.items():
            if m != baseline and r.get("detail") and cols[m] in ("failed", "errors"):
                tail = [ln for ln in r["detail"].strip().splitlines() if ln.strip()][-3:]
                detail += "".join(f"\n    {m}: {ln.strip()}" for ln in tail)
        blocks.append(head + detail)
    return blocks


def start_server() -> Any:
    """A throwaway server configured so that as few tests as possible skip: replication (the
    server's default), two-phase commit (``max_prepared_transactions``) and ``hstore``."""
    import psycopg2

    from psycogreen.testing import PostgresServer

    server = PostgresServer().start()
    server.wait_ready()
    conn = psycopg2.connect(server.dsn)
    conn.autocommit = True
    conn.cursor().execute("ALTER SYSTEM SET max_prepared_transactions = 20")
    conn.cursor().execute(f"CREATE DATABASE {TEST_DB}")
    conn.close()
    server.restart()
    server.wait_ready()
    conn = psycopg2.connect(server.dsn.replace("dbname=postgres", f"dbname={TEST_DB}"))
    conn.autocommit = True
    try:
        conn.cursor().execute("CREATE EXTENSION IF NOT EXISTS hstore")
    except psycopg2.Error as e:
        log(f"no hstore ({e.pgerror or e}): its tests are skipped in every mode")
    conn.close()
    return server


def main(argv: Optional[list[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--modes", default=",".join(MODES))
    p.add_argument("--modules", default="", help="comma-separated test modules (default: all)")
    p.add_argument("--hang", type=float, default=60.0, help="seconds without progress = hung test")
    p.add_argument("--ours", default=ROOT, help="directory holding the psycogreen 2 package to test")
    args = p.parse_args(argv)
    # SIGTERM (a CI timeout) must still stop the server: run the finally blocks.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    modes = [m for m in args.modes.split(",") if m]
    for m in modes:
        if m not in MODES:
            p.error(f"unknown mode {m!r}: one of {', '.join(MODES)}")

    version = psycopg2_version()
    root = fetch_tests(version)
    if "psycogreen1" in modes and install_psycogreen1() is None:
        modes.remove("psycogreen1")
    modules = [m for m in args.modules.split(",") if m] or test_modules(root)

    server = start_server()
    try:
        base = dict(os.environ)
        base.update(
            PSYCOPG2_TESTDB=TEST_DB,
            PSYCOPG2_TESTDB_HOST="127.0.0.1",
            PSYCOPG2_TESTDB_PORT=str(server.port),
            PSYCOPG2_TESTDB_USER="postgres",
            PSYCOPG2_TEST_REPL_DSN="",  # empty: the test DSN (psycopg2 adds replication=...)
        )
        base.pop("PSYCOPG2_TESTDB_PASSWORD", None)
        results: dict[str, list[dict[str, Any]]] = {}
        for mode in modes:
            started = time.monotonic()
            env = mode_env(mode, base, os.path.abspath(args.ours))
            results[mode] = []
            for module in modules:
                results[mode].extend(run_module(mode, root, module, env, args.hang))
            log(f"{LABELS[mode]}: {len(results[mode])} tests in {time.monotonic() - started:.0f}s")
            with open(os.path.join(WORK, "results", f"{mode}.json"), "w") as f:
                json.dump(results[mode], f, indent=1)
    finally:
        server.destroy()

    print()
    print(f"psycopg2 {version} test suite ({len(modules)} modules)")
    print(format_table(summarise(results)))
    diff_path = os.path.join(WORK, "differences.txt")
    blocks = differences(results)
    with open(diff_path, "w") as f:
        f.write(f"# tests whose outcome differs between modes ({len(blocks)})\n\n")
        f.write("\n".join(blocks) + "\n")
    print(f"\n{len(blocks)} tests differ between modes: {os.path.relpath(diff_path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
