"""The pool's hand-off under one framework: ``pool_handoff.py <framework> <scenario>``.

A returned connection goes straight to the first parked client (the waiter's ``park``/``unpark``);
these scenarios pin that down: the waiter contract itself, FIFO with the very connection returned,
a client interrupted after being chosen passing the connection on, deadlines kept by the pool's one
scheduler, and a storm of kills and timeouts leaving no connection lost. Each prints one JSON object
(``kit.emit``) that tests/test_pool_handoff.py asserts on.
"""

from __future__ import annotations

import random
import sys
import time
from typing import Any

import kit
import psycopg2

import psycogreen
from psycogreen._wait import current_waiter
from psycogreen.errors import PoolTimeout
from psycogreen.pool import ConnectionPool

SCENARIO = sys.argv[2]
THREADS = kit.FRAMEWORK == "threads"


def make_pool(**kw: Any) -> ConnectionPool:
    return ConnectionPool(kit.DSN, kwargs={"application_name": "handoff"}, **kw)


def queued(pool: ConnectionPool, n: int) -> None:
    kit.wait_until(lambda: len(pool._clients) == n, what=f"{n} clients to queue")


def park_contract() -> None:
    """The waiter alone: unpark before park, park then unpark, and an interrupted park."""
    w = current_waiter()
    early = w.park_token()
    w.unpark(early, "early")
    got_early = w.park(early)
    w.unpark(early, "again")  # a second unpark of a woken token changes nothing
    token_box: list[Any] = []
    woke: list[Any] = []

    def parker() -> None:
        token_box.append(w.park_token())
        woke.append(w.park(token_box[0]))

    g = kit.spawn(parker)
    kit.wait_until(lambda: token_box and getattr(token_box[0], "parked", True), what="the parker to park")
    if THREADS:
        kit.sleep(0.05)  # a thread blocked on its lock is not observable; either order gives "late"
    w.unpark(token_box[0], "late")
    kit.joinall([g], timeout=10)
    interrupted = None
    if not THREADS:
        box: list[Any] = []

        def victim() -> None:
            box.append(w.park_token())
            w.park(box[0])
            box.append("resumed")  # must never run: the kill ended the park

        v = kit.spawn(victim)
        kit.wait_until(lambda: box and box[0].parked, what="the victim to park")
        kit.kill(v)
        w.unpark(box[0], "too late")  # after the kill: a no-op, never a switch into a dead park
        kit.sleep(0.05)  # a negative check: time for a wrong resume to show, if there were one
        interrupted = {"resumed": "resumed" in box, "gone": bool(box[0].gone)}
    kit.emit(early=got_early, late=woke, interrupted=interrupted, waiter=w.name)


def fifo_direct() -> None:
    """Clients parked in order get the returned connection in order, each the very one returned."""
    pool = make_pool(min_size=1, max_size=1, timeout=10)
    pool.wait(10)
    held = pool.getconn()
    got: list[tuple[int, bool]] = []
    returned: list[Any] = [held]

    def client(i: int) -> None:
        c = pool.getconn()
        got.append((i, c is returned[-1]))
        returned.append(c)
        pool.putconn(c)

    gs = []
    for i in range(8):
        gs.append(kit.spawn(client, i))
        queued(pool, i + 1)
    pool.putconn(held)
    kit.joinall(gs, timeout=30)
    stats = pool.get_stats()
    pool.close()
    kit.emit(order=[i for i, _ in got], same=[s for _, s in got], stats=stats)


def chosen_then_interrupted() -> None:
    """B is chosen for the returned connection but interrupted before it runs: C gets it."""
    pool = make_pool(min_size=1, max_size=1, timeout=10)
    pool.wait(10)
    held = pool.getconn()
    out: dict[str, Any] = {}

    def client(name: str) -> None:
        try:
            with pool.connection() as c:
                out[name] = c is held
                c.cursor().execute("select 1")
        except BaseException as e:  # noqa: BLE001 - the kill, or the simulated interrupt
            out[name] = type(e).__name__
            if not isinstance(e, KeyboardInterrupt):
                raise

    if THREADS:
        victim = _interrupt_after_wake(pool)
    b = kit.spawn(client, "b")
    queued(pool, 1)
    c = kit.spawn(client, "c")
    queued(pool, 2)
    if THREADS:
        victim.append(pool._clients[0].token)
        pool.putconn(held)
    else:
        _kill_without_waiting(b)  # the kill is delivered first...
        pool.putconn(held)  # ...after b was chosen here, before it could run
    kit.joinall([b, c], timeout=30)
    kit.wait_until(lambda: len(pool._idle) == 1, what="the connection back")
    out.update(stats=pool.get_stats(), idle=len(pool._idle), owned=len(pool._owned))
    pool.close()
    kit.emit(**out)


def _kill_without_waiting(g: Any) -> None:
    """Queue the kill and return at once (it is delivered when this green thread next yields)."""
    if kit.FRAMEWORK == "gevent":
        g.kill(block=False)
    else:
        from eventlet.hubs import get_hub

        get_hub().schedule_call_global(0, g.kill)  # eventlet's kill() would switch right away


def _interrupt_after_wake(pool: ConnectionPool) -> list[Any]:
    """Threads cannot be killed: make the parked thread whose token is listed raise as it wakes
    (what a KeyboardInterrupt arriving right after the hand-off does)."""
    w = current_waiter()
    park = type(w).park
    victims: list[Any] = []

    def interrupted_park(self: Any, token: Any) -> Any:
        value = park(self, token)
        if token in victims:
            token.gone = True
            raise KeyboardInterrupt
        return value

    type(w).park = interrupted_park  # type: ignore[method-assign]
    return victims


def scheduler_timeouts() -> None:
    """Deadlines come from the one scheduler: a later client with a shorter timeout times out
    first (the scheduler is woken early), and the timed-out clients leave the queue."""
    pool = make_pool(min_size=1, max_size=1, timeout=10)
    pool.wait(10)
    held = pool.getconn()
    ended: dict[str, float] = {}
    t0 = time.monotonic()

    def client(name: str, timeout: float) -> None:
        try:
            pool.getconn(timeout=timeout)
        except PoolTimeout:
            ended[name] = time.monotonic() - t0

    long = kit.spawn(client, "long", 2.0)
    queued(pool, 1)
    short = kit.spawn(client, "short", 0.3)
    kit.joinall([long, short], timeout=30)
    left = len(pool._clients)
    pool.putconn(held)
    stats = pool.get_stats()
    pool.close()
    kit.emit(ended=ended, left=left, stats=stats)


def storm() -> None:
    """Many clients over a small pool; kills (of parked and of just-chosen clients) and short
    timeouts: afterwards every connection is back, idle, and serves."""
    n = 40 if THREADS else 200
    pool = make_pool(min_size=3, max_size=3, timeout=5)
    pool.wait(10)
    outcomes: dict[str, int] = {}

    def note(k: str) -> None:
        outcomes[k] = outcomes.get(k, 0) + 1

    def work(i: int) -> None:
        r = random.Random(i)
        for _ in range(8):
            try:
                with pool.connection(timeout=r.choice([0.001, 0.02, 2.0])) as c:
                    c.cursor().execute("select 1")
                note("ok")
            except PoolTimeout:
                note("timeout")

    gs = [kit.spawn(work, i) for i in range(n)]
    rng = random.Random(7)
    killed = 0
    if not THREADS:
        for _ in range(60):
            kit.sleep(0.002)  # behaviour: kills spread over the run, hitting clients at any step
            alive = [g for g in gs if not g.dead]
            if alive:
                _kill_without_waiting(rng.choice(alive))
                killed += 1
    kit.joinall(gs, timeout=60)
    kit.wait_until(lambda: len(pool._idle) == 3, what="every connection back")
    served = []
    for _ in range(3):  # each of them is healthy
        with pool.connection(timeout=5) as c:
            cur = c.cursor()
            cur.execute("select 1")
            served.append(cur.fetchone()[0])
    out = dict(outcomes=outcomes, killed=killed, idle=len(pool._idle), owned=len(pool._owned))
    out.update(queued=len(pool._clients), served=served, stats=pool.get_stats())
    pool.close()
    kit.emit(**out)


def close_joins() -> None:
    """close() waits for the background tasks (a join on one event, no polling)."""
    pool = make_pool(min_size=4, max_size=4)
    pool.wait(10)
    bg = pool._bg
    t0 = time.monotonic()
    pool.close(timeout=10)
    kit.emit(running=bg.running if bg is not None else -1, elapsed=time.monotonic() - t0)


{
    "park": park_contract,
    "fifo": fifo_direct,
    "chosen": chosen_then_interrupted,
    "timeouts": scheduler_timeouts,
    "storm": storm,
    "close": close_joins,
}[SCENARIO]()
_ = (psycopg2, psycogreen)
