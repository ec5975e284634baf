/*
 * psycogreen._speedups: the optional C accelerator of psycogreen's per-query hot paths.
 *
 * Why it exists: docs/benchmarks.md showed that what psycogreen adds per query over blocking psycopg2
 * is the cost of running a few dozen lines of *Python* (the wait callback's poll loop, the gevent
 * waiter, the execute guard), not the cost of waiting through the hub. The same steps written in C
 * cost a fraction of the instructions.
 *
 * Rules this file keeps:
 * - The pure-Python code is the reference. Each function here does exactly what its Python twin
 *   does on the common path, and hands anything unusual back to Python *in the state reached*
 *   (see psycogreen/_wait.py: wait_callback, psycogreen/_connection.py: GreenCursorMixin.execute).
 * - Only the public, stable C API of CPython 3.9-3.13; the GIL is held throughout.
 * - The frameworks are reached through their Python-level API (gevent's hub, watchers and greenlets;
 *   eventlet's hub), so every gevent loop backend works, and nothing is linked but Python.
 * - libpq is reached through function addresses handed in once by psycogreen._accel (taken with
 *   ctypes from the very library psycopg2 uses).
 * - No mutable C globals: the objects handed in at set-up live in the module state; they are
 *   process-wide functions (get_hub, getcurrent...), safe to share between OS threads, each of which
 *   has its own hub.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

/* psycopg2's poll results and the readiness flags of psycogreen._core (libev's values). */
#define POLL_OK 0
#define POLL_READ 1
#define POLL_WRITE 2
#define EV_READ 1
#define EV_WRITE 2

#if PY_VERSION_HEX < 0x030A0000
static PyObject *
Py_NewRef(PyObject *o)
{
    Py_INCREF(o);
    return o;
}
#endif

typedef int (*getline_fn)(void *conn, char *buffer, int room);

typedef struct {
    /* libpq */
    getline_fn getline; /* PQgetlineAsync */
    /* shared */
    PyObject *pg_error; /* psycopg2.Error: the conversation failed, nothing to hand over */
    PyObject *getcurrent; /* greenlet.getcurrent */
    /* gevent */
    PyObject *gevent_get_hub;
    PyObject *gevent_new_watcher; /* psycogreen._waiters.gevent._new_watcher(hub, fd, events) */
    PyObject *greenlet_switch;    /* greenlet.greenlet.switch, unbound */
    PyObject *switch_out_types;   /* {greenlet type: whether it defines switch_out} */
    /* eventlet */
    PyObject *eventlet_get_hub;
    PyObject *eventlet_read;  /* eventlet.hubs.hub.READ */
    PyObject *eventlet_write; /* eventlet.hubs.hub.WRITE */
    /* the wait callback's entry */
    PyObject *connecting_var; /* _deadline's ContextVar of the connect deadline */
    PyObject *deadline_var;   /* _deadline's ContextVar of the timeout() deadline */
    PyObject *status_setup;   /* psycopg2.extensions.STATUS_SETUP */
    PyObject *wait_state;     /* psycogreen._patch: its ._chosen is the patched waiter */
    PyObject *slow_callback;  /* psycogreen._wait.wait_callback: every other case */
    PyObject *handover;       /* psycogreen._wait._accel_handover(conn, waiter, state) */
    PyObject *own_waiter_types; /* {greenlet type: whether it carries psycogreen_waiter} */
    PyObject *poll_of_types;    /* {waiter type: its accel_poll, or None} */
    /* the execute guard */
    PyObject *c_execute; /* psycopg2's ext.cursor.execute */
    PyObject *slow_execute; /* the pure-Python GreenCursorMixin.execute: every other case */
    PyObject *leave;        /* psycogreen._guard.leave */
} State;

/* Interned attribute names, created once at import (immutable, so shared safely). */
static PyObject *s_own_waiter, *s_waiter, *s_accel_poll, *s_status, *s_switch_out, *s_poll, *s_fileno, *s_watchers, *s_start, *s_stop, *s_switch, *s_throw, *s_add,
    *s_remove, *s_connection, *s_owner, *s_depth, *s_pending;

static State *
get_state(PyObject *module)
{
    return (State *)PyModule_GetState(module);
}

/* Hold a new reference to ``value`` in ``slot`` (set-up functions may be called again). */
static void
replace(PyObject **slot, PyObject *value)
{
    PyObject *old = *slot;
    *slot = Py_NewRef(value);
    Py_XDECREF(old);
}

/* The exception being raised, as one object with its traceback (3.12 changed the API). */
static PyObject *
take_exception(void)
{
#if PY_VERSION_HEX >= 0x030C0000
    return PyErr_GetRaisedException();
#else
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL && value != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
#endif
}

static void
give_exception(PyObject *exc)
{
#if PY_VERSION_HEX >= 0x030C0000
    PyErr_SetRaisedException(exc);
#else
    PyObject *tb = PyException_GetTraceback(exc);
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc, tb);
#endif
}

/* ---------------------------------------------------------------------------------------------
 * Waiting on a socket: the hot wait_fd of each green waiter (no timeout, READ or WRITE only).
 * Returns 0, or -1 with an exception set (an interrupt thrown into the greenlet, a hub failure).
 */

typedef int (*wait_step)(State *st, long fd, int events);

/* Whether greenlet ``current`` has attribute ``name`` (on its class, cached per class in ``cache``,
 * or in its instance dict), without building the AttributeError a failed lookup costs (~2k
 * instructions). Returns 1, 0, or -1 with an exception set. */
static int
has_attribute(PyObject *cache, PyObject *current, PyObject *name)
{
    PyObject *type = (PyObject *)Py_TYPE(current);
    PyObject *known, *dict;
    int found;

    known = PyDict_GetItemWithError(cache, type); /* borrowed */
    if (known == NULL) {
        if (PyErr_Occurred()) {
            return -1;
        }
        found = PyObject_HasAttr(type, name);
        if (PyDict_SetItem(cache, type, found ? Py_True : Py_False) < 0) {
            return -1;
        }
        known = found ? Py_True : Py_False;
    }
    if (known == Py_True) {
        return 1;
    }
    if (Py_TYPE(current)->tp_dictoffset == 0) {
        return 0; /* no instance attributes at all */
    }
    dict = PyObject_GenericGetDict(current, NULL);
    if (dict == NULL) {
        PyErr_Clear();
        return 1; /* cannot tell: take the general path, which looks */
    }
    found = PyDict_Contains(dict, name);
    Py_DECREF(dict);
    return found;
}

/* Whether ``hub.switch()`` must be called rather than switching to the hub greenlet directly:
 * gevent's ``hub.switch()`` first calls the current greenlet's ``switch_out`` if it has one (the
 * hub's own raises BlockingSwitchOutError: a wait from inside the hub); without one,
 * ``greenlet.switch(hub)`` does exactly what ``hub.switch()`` would. */
static int
needs_hub_switch(State *st, PyObject *current)
{
    if (st->greenlet_switch == NULL || st->switch_out_types == NULL) {
        return 1;
    }
    return has_attribute(st->switch_out_types, current, s_switch_out);
}

/* gevent: GeventWaiter.wait_fd's hot path. One io watcher per (fd, events) cached on the hub, so
 * waiting is start, switch to the hub, stop: no watcher created per wait. */
static int
gevent_wait(State *st, long fd, int events)
{
    PyObject *hub, *cache, *key, *watcher = NULL, *current, *switch_, *rv;
    int failed, direct;

    hub = PyObject_CallNoArgs(st->gevent_get_hub);
    if (hub == NULL) {
        return -1;
    }
    key = PyLong_FromLong((fd << 2) | events);
    if (key == NULL) {
        Py_DECREF(hub);
        return -1;
    }
    cache = PyObject_GetAttr(hub, s_watchers);
    if (cache != NULL && PyDict_CheckExact(cache)) {
        watcher = PyDict_GetItemWithError(cache, key); /* borrowed */
        Py_XINCREF(watcher);
    }
    else if (cache == NULL && PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear(); /* no cache yet on this hub: _new_watcher makes it */
    }
    Py_XDECREF(cache);
    Py_DECREF(key);
    if (watcher == NULL) {
        if (PyErr_Occurred()) {
            Py_DECREF(hub);
            return -1;
        }
        watcher = PyObject_CallFunction(st->gevent_new_watcher, "Oli", hub, fd, events);
        if (watcher == NULL) {
            Py_DECREF(hub);
            return -1;
        }
    }
    /* watcher.start(getcurrent().switch, events) */
    current = PyObject_CallNoArgs(st->getcurrent);
    switch_ = current == NULL ? NULL : PyObject_GetAttr(current, s_switch);
    direct = current == NULL ? -1 : needs_hub_switch(st, current);
    Py_XDECREF(current);
    if (direct < 0) {
        Py_CLEAR(switch_);
    }
    rv = NULL;
    if (switch_ != NULL) {
        PyObject *ev = PyLong_FromLong(events);
        if (ev != NULL) {
            PyObject *call[3] = {watcher, switch_, ev};
            rv = PyObject_VectorcallMethod(s_start, call, 3 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
            Py_DECREF(ev);
        }
        Py_DECREF(switch_);
    }
    if (rv == NULL) {
        Py_DECREF(watcher);
        Py_DECREF(hub);
        return -1;
    }
    Py_DECREF(rv);
    /* try: hub.switch() finally: watcher.stop() */
    if (direct) {
        rv = PyObject_CallMethodNoArgs(hub, s_switch);
    }
    else {
        rv = PyObject_CallOneArg(st->greenlet_switch, hub); /* greenlet.switch(hub) */
    }
    failed = rv == NULL;
    Py_XDECREF(rv);
    {
        PyObject *pending = failed ? take_exception() : NULL;
        PyObject *stopped = PyObject_CallMethodNoArgs(watcher, s_stop);
        if (stopped == NULL) {
            Py_XDECREF(pending); /* as in Python, an exception in ``finally`` replaces the first */
            failed = 1;
        }
        else {
            Py_DECREF(stopped);
            if (pending != NULL) {
                give_exception(pending);
            }
        }
    }
    Py_DECREF(watcher);
    Py_DECREF(hub);
    return failed ? -1 : 0;
}

/* eventlet: EventletWaiter.wait_fd without a timeout. eventlet's hub has no reusable watchers: a
 * listener per wait that switches straight back to this greenlet. */
static int
eventlet_wait(State *st, long fd, int events)
{
    PyObject *hub, *current, *switch_ = NULL, *throw_ = NULL, *listener = NULL, *rv, *pending;
    PyObject *fdobj;
    int failed = 1;

    hub = PyObject_CallNoArgs(st->eventlet_get_hub);
    if (hub == NULL) {
        return -1;
    }
    current = PyObject_CallNoArgs(st->getcurrent);
    if (current == NULL) {
        goto done;
    }
    switch_ = PyObject_GetAttr(current, s_switch);
    throw_ = switch_ == NULL ? NULL : PyObject_GetAttr(current, s_throw);
    Py_DECREF(current);
    if (throw_ == NULL) {
        goto done;
    }
    fdobj = PyLong_FromLong(fd);
    if (fdobj == NULL) {
        goto done;
    }
    listener = PyObject_CallMethodObjArgs(hub, s_add, (events & EV_READ) ? st->eventlet_read : st->eventlet_write,
                                          fdobj, switch_, throw_, Py_None, NULL);
    Py_DECREF(fdobj);
    if (listener == NULL) {
        goto done;
    }
    /* try: hub.switch() finally: hub.remove(listener) */
    rv = PyObject_CallMethodNoArgs(hub, s_switch);
    failed = rv == NULL;
    Py_XDECREF(rv);
    pending = failed ? take_exception() : NULL;
    rv = PyObject_CallMethodOneArg(hub, s_remove, listener);
    if (rv == NULL) {
        Py_XDECREF(pending);
        failed = 1;
    }
    else {
        Py_DECREF(rv);
        if (pending != NULL) {
            give_exception(pending);
        }
    }
done:
    Py_XDECREF(listener);
    Py_XDECREF(switch_);
    Py_XDECREF(throw_);
    Py_DECREF(hub);
    return failed ? -1 : 0;
}

/* ---------------------------------------------------------------------------------------------
 * The wait callback's poll loop (psycogreen._wait.wait_callback, after its checks for connecting
 * and deadlines): poll, and on READ/WRITE wait on the socket, until POLL_OK.
 *
 * Returns None when the poll loop finished, or (fd, events, exc) to hand over to Python:
 * - exc None: poll() answered something unexpected; Python drives a poll generator from there;
 * - exc an exception: an interrupt while waiting (or a non-psycopg2 error after the first wait);
 *   Python cancels and drains (_wait._interrupted), exactly as in its own loop.
 * psycopg2 errors, and anything raised before the first wait, propagate unchanged.
 */
static PyObject *
poll_loop(State *st, PyObject *conn, wait_step wait)
{
    PyObject *poll, *fileno = NULL, *r, *exc;
    long fd = 0, polled;
    int events = 0;

    poll = PyObject_GetAttr(conn, s_poll);
    if (poll == NULL) {
        return NULL;
    }
    for (;;) {
        r = PyObject_CallNoArgs(poll);
        if (r == NULL) {
            goto failed;
        }
        polled = PyLong_AsLong(r);
        Py_DECREF(r);
        if (polled == -1 && PyErr_Occurred()) {
            goto failed;
        }
        if (polled == POLL_OK) {
            Py_DECREF(poll);
            Py_XDECREF(fileno);
            Py_RETURN_NONE;
        }
        if (polled == POLL_READ) {
            events = EV_READ;
        }
        else if (polled == POLL_WRITE) {
            events = EV_WRITE;
        }
        else {
            Py_DECREF(poll);
            Py_XDECREF(fileno);
            return Py_BuildValue("liO", fd, events, Py_None);
        }
        if (fileno == NULL && (fileno = PyObject_GetAttr(conn, s_fileno)) == NULL) {
            goto failed;
        }
        r = PyObject_CallNoArgs(fileno);
        if (r == NULL) {
            goto failed;
        }
        fd = PyLong_AsLong(r);
        Py_DECREF(r);
        if (fd == -1 && PyErr_Occurred()) {
            goto failed;
        }
        if (wait(st, fd, events) < 0) {
            goto failed;
        }
    }
failed:
    Py_DECREF(poll);
    Py_XDECREF(fileno);
    if (!events || PyErr_ExceptionMatches(st->pg_error)) {
        return NULL;
    }
    exc = take_exception();
    if (exc == NULL) {
        return NULL;
    }
    r = Py_BuildValue("liO", fd, events, exc);
    Py_DECREF(exc);
    return r;
}

static PyObject *
gevent_poll(PyObject *module, PyObject *conn)
{
    State *st = get_state(module);
    if (st->gevent_get_hub == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "psycogreen._speedups: setup_gevent() was not called");
        return NULL;
    }
    return poll_loop(st, conn, gevent_wait);
}

static PyObject *
eventlet_poll(PyObject *module, PyObject *conn)
{
    State *st = get_state(module);
    if (st->eventlet_get_hub == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "psycogreen._speedups: setup_eventlet() was not called");
        return NULL;
    }
    return poll_loop(st, conn, eventlet_wait);
}

/* ---------------------------------------------------------------------------------------------
 * The wait callback psycopg2 calls (psycogreen._wait.wait_callback's checks, then the poll loop):
 * not connecting, no timeout() deadline, the current greenlet carries no waiter of its own, and
 * the patched waiter has a C poll loop. Any other case calls the Python wait_callback; a hand-over
 * from the poll loop goes to psycogreen._wait._accel_handover.
 */
static int
context_var_is_set(PyObject *var)
{
    PyObject *value = NULL;
    int set;
    if (PyContextVar_Get(var, Py_None, &value) < 0) {
        return -1;
    }
    set = value != Py_None;
    Py_DECREF(value);
    return set;
}

/* The C poll loop of ``waiter`` (its class's ``accel_poll``, looked up once per class: a waiter
 * without one would cost an AttributeError per call), as a new reference; NULL without an
 * exception when it has none. */
static PyObject *
waiter_poll(State *st, PyObject *waiter)
{
    PyObject *type = (PyObject *)Py_TYPE(waiter);
    PyObject *poll;

    if (waiter == Py_None) {
        return NULL;
    }
    poll = PyDict_GetItemWithError(st->poll_of_types, type); /* borrowed */
    if (poll == NULL) {
        if (PyErr_Occurred()) {
            return NULL;
        }
        poll = PyObject_GetAttr(type, s_accel_poll);
        if (poll == NULL) {
            if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
                return NULL;
            }
            PyErr_Clear();
            poll = Py_NewRef(Py_None);
        }
        if (PyDict_SetItem(st->poll_of_types, type, poll) < 0) {
            Py_DECREF(poll);
            return NULL;
        }
        Py_DECREF(poll); /* the dict holds it */
    }
    return poll == Py_None ? NULL : Py_NewRef(poll);
}

static PyObject *
wait_callback(PyObject *module, PyObject *conn)
{
    State *st = get_state(module);
    PyObject *status, *current, *waiter = NULL, *poll = NULL, *rv;
    int slow;

    if (st->slow_callback == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "psycogreen._speedups: setup_callback() was not called");
        return NULL;
    }
    /* connecting (a connect deadline, or a connection made outside psycopg2.connect()) */
    slow = context_var_is_set(st->connecting_var);
    if (slow == 0) {
        status = PyObject_GetAttr(conn, s_status);
        if (status == NULL) {
            return NULL;
        }
        slow = PyObject_RichCompareBool(status, st->status_setup, Py_EQ);
        Py_DECREF(status);
    }
    /* a greenlet with a waiter of its own (the asyncio/trio bridge) */
    if (slow == 0) {
        current = PyObject_CallNoArgs(st->getcurrent);
        if (current == NULL) {
            return NULL;
        }
        slow = has_attribute(st->own_waiter_types, current, s_own_waiter);
        Py_DECREF(current);
    }
    if (slow == 0) {
        slow = context_var_is_set(st->deadline_var);
    }
    if (slow == 0) {
        waiter = PyObject_GetAttr(st->wait_state, s_waiter);
        if (waiter == NULL) {
            return NULL;
        }
        poll = waiter_poll(st, waiter);
        if (poll == NULL) {
            slow = PyErr_Occurred() ? -1 : 1; /* not patched yet, or a waiter without a C loop */
        }
    }
    if (slow < 0) {
        Py_XDECREF(waiter);
        Py_XDECREF(poll);
        return NULL;
    }
    if (slow) {
        Py_XDECREF(waiter);
        Py_XDECREF(poll);
        return PyObject_CallOneArg(st->slow_callback, conn);
    }
    rv = PyObject_CallOneArg(poll, conn);
    Py_DECREF(poll);
    if (rv != NULL && rv != Py_None) {
        PyObject *state = rv;
        rv = PyObject_CallFunctionObjArgs(st->handover, conn, waiter, state, NULL);
        Py_DECREF(state);
    }
    Py_DECREF(waiter);
    return rv;
}

static PyObject *
setup_callback(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    State *st = get_state(module);
    PyObject *types;
    if (nargs != 6) {
        PyErr_SetString(PyExc_TypeError,
                        "setup_callback(connecting_var, deadline_var, STATUS_SETUP, state, wait_callback, handover)");
        return NULL;
    }
    if (!PyContextVar_CheckExact(args[0]) || !PyContextVar_CheckExact(args[1])) {
        PyErr_SetString(PyExc_TypeError, "setup_callback: the deadlines must be ContextVars");
        return NULL;
    }
    types = PyDict_New();
    if (types == NULL) {
        return NULL;
    }
    replace(&st->connecting_var, args[0]);
    replace(&st->deadline_var, args[1]);
    replace(&st->status_setup, args[2]);
    replace(&st->wait_state, args[3]);
    replace(&st->slow_callback, args[4]);
    replace(&st->handover, args[5]);
    replace(&st->own_waiter_types, types);
    Py_DECREF(types);
    types = PyDict_New();
    if (types == NULL) {
        return NULL;
    }
    replace(&st->poll_of_types, types);
    Py_DECREF(types);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------------
 * The execute guard: GreenCursorMixin.execute's fast path (connection free, nothing parked):
 * take the guard, run psycopg2's own C execute, leave. Every other case, and keyword arguments, go
 * to the pure-Python method, which is the reference.
 */
static PyObject *
set_guard(PyObject *conn, PyObject *owner, long depth)
{
    PyObject *d = PyLong_FromLong(depth);
    if (d == NULL || PyObject_SetAttr(conn, s_owner, owner) < 0 || PyObject_SetAttr(conn, s_depth, d) < 0) {
        Py_XDECREF(d);
        return NULL;
    }
    Py_DECREF(d);
    return Py_None; /* borrowed: only tested against NULL */
}

static PyObject *
guard_leave(State *st, PyObject *conn, PyObject *error)
{
    if (error == NULL) {
        return PyObject_CallFunctionObjArgs(st->leave, conn, Py_True, NULL);
    }
    return PyObject_CallFunctionObjArgs(st->leave, conn, Py_True, error, NULL);
}

static PyObject *
execute(PyObject *module, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    State *st = get_state(module);
    PyObject *conn, *attr, *me, *rv, *exc;
    int busy;

    if (st->c_execute == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "psycogreen._speedups: setup_guard() was not called");
        return NULL;
    }
    if (kwnames != NULL || nargs < 2 || nargs > 3) {
        return PyObject_Vectorcall(st->slow_execute, args, nargs, kwnames);
    }
    conn = PyObject_GetAttr(args[0], s_connection);
    if (conn == NULL) {
        return NULL;
    }
    /* if conn._pg_owner is not None or conn._pg_pending is not None: the general path */
    attr = PyObject_GetAttr(conn, s_owner);
    busy = attr != Py_None;
    Py_XDECREF(attr);
    if (attr != NULL && !busy) {
        attr = PyObject_GetAttr(conn, s_pending);
        busy = attr != Py_None;
        Py_XDECREF(attr);
    }
    if (attr == NULL) {
        Py_DECREF(conn);
        return NULL;
    }
    if (busy) {
        Py_DECREF(conn);
        return PyObject_Vectorcall(st->slow_execute, args, nargs, NULL);
    }
    me = PyObject_CallNoArgs(st->getcurrent);
    if (me == NULL || set_guard(conn, me, 1) == NULL) {
        Py_XDECREF(me);
        Py_DECREF(conn);
        return NULL;
    }
    Py_DECREF(me);
    {
        PyObject *call_args[3] = {args[0], args[1], nargs > 2 ? args[2] : Py_None};
        rv = PyObject_Vectorcall(st->c_execute, call_args, 3, NULL);
    }
    if (rv == NULL) {
        /* except BaseException as e: _guard.leave(conn, True, e); raise */
        exc = take_exception();
        rv = guard_leave(st, conn, exc);
        if (rv == NULL) {
            /* leave raised (a parked interrupt): in Python it would carry ``e`` as its context */
            PyObject *raised = take_exception();
            if (raised != NULL && raised != exc) {
                PyException_SetContext(raised, Py_NewRef(exc)); /* steals the new reference */
            }
            Py_DECREF(exc);
            Py_DECREF(conn);
            give_exception(raised);
            return NULL;
        }
        Py_DECREF(rv);
        Py_DECREF(conn);
        give_exception(exc);
        return NULL;
    }
    Py_DECREF(rv);
    /* conn._pg_depth = 0; conn._pg_owner = None; then raise what the wait callback parked */
    if (set_guard(conn, Py_None, 0) == NULL) {
        Py_DECREF(conn);
        return NULL;
    }
    attr = PyObject_GetAttr(conn, s_pending);
    if (attr == NULL) {
        Py_DECREF(conn);
        return NULL;
    }
    busy = attr != Py_None;
    Py_DECREF(attr);
    if (busy) {
        PyObject *one = PyLong_FromLong(1);
        if (one == NULL || PyObject_SetAttr(conn, s_depth, one) < 0) {
            Py_XDECREF(one);
            Py_DECREF(conn);
            return NULL;
        }
        Py_DECREF(one);
        rv = guard_leave(st, conn, NULL);
        Py_DECREF(conn);
        return rv;
    }
    Py_DECREF(conn);
    Py_RETURN_NONE;
}

/* ---------------------------------------------------------------------------------------------
 * COPY OUT: the per-row loop of psycogreen._core.copy._copy_out. Takes every complete row libpq
 * has buffered, with PQgetlineAsync, into the caller's buffer, in one call instead of one ctypes
 * call per row.
 *
 * getlines(pgconn, buffer_address, pos, room, batch) -> (pos, n): rows are appended at ``pos``
 * while each fits in ``room`` and the batch is not full (pos < batch); ``n`` is the last
 * PQgetlineAsync result, which the Python loop then acts on exactly as after its own call:
 * 0 < n < room: the batch is full; n >= room: a long row (its first n bytes are at ``pos``,
 * not counted); 0: nothing complete buffered; -1: the end of the copy.
 */
static PyObject *
getlines(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    State *st = get_state(module);
    void *pgconn;
    char *buf;
    Py_ssize_t pos, room, batch;
    int n;

    if (nargs != 5) {
        PyErr_SetString(PyExc_TypeError, "getlines(pgconn, buffer, pos, room, batch) takes 5 arguments");
        return NULL;
    }
    if (st->getline == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "psycogreen._speedups: init() was not called");
        return NULL;
    }
    pgconn = PyLong_AsVoidPtr(args[0]);
    buf = (char *)PyLong_AsVoidPtr(args[1]);
    pos = PyLong_AsSsize_t(args[2]);
    room = PyLong_AsSsize_t(args[3]);
    batch = PyLong_AsSsize_t(args[4]);
    if (PyErr_Occurred()) {
        return NULL;
    }
    if (pgconn == NULL || buf == NULL || pos < 0 || room <= 0 || room > INT_MAX || batch <= 0) {
        PyErr_SetString(PyExc_ValueError, "getlines: invalid connection, buffer or sizes");
        return NULL;
    }
    for (;;) {
        n = st->getline(pgconn, buf + pos, (int)room);
        if (n > 0 && n < room) {
            pos += n;
            if (pos < batch) {
                continue;
            }
        }
        break;
    }
    return Py_BuildValue("ni", pos, n);
}

/* ---------------------------------------------------------------------------------------------
 * Set-up, called once by psycogreen (psycogreen._accel and the waiters).
 */

static PyObject *
init(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    State *st = get_state(module);
    void *address;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "init(PQgetlineAsync address, psycopg2.Error, getcurrent)");
        return NULL;
    }
    address = PyLong_AsVoidPtr(args[0]);
    if (address == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_ValueError, "init: PQgetlineAsync address is NULL");
        }
        return NULL;
    }
    st->getline = (getline_fn)address;
    replace(&st->pg_error, args[1]);
    replace(&st->getcurrent, args[2]);
    Py_RETURN_NONE;
}

static PyObject *
setup_gevent(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    State *st = get_state(module);
    PyObject *types;
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "setup_gevent(get_hub, new_watcher, greenlet_switch)");
        return NULL;
    }
    types = PyDict_New();
    if (types == NULL) {
        return NULL;
    }
    replace(&st->gevent_get_hub, args[0]);
    replace(&st->gevent_new_watcher, args[1]);
    replace(&st->greenlet_switch, args[2]);
    replace(&st->switch_out_types, types);
    Py_DECREF(types);
    Py_RETURN_NONE;
}

static PyObject *
setup_eventlet(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    State *st = get_state(module);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "setup_eventlet(get_hub, READ, WRITE)");
        return NULL;
    }
    replace(&st->eventlet_get_hub, args[0]);
    replace(&st->eventlet_read, args[1]);
    replace(&st->eventlet_write, args[2]);
    Py_RETURN_NONE;
}

static PyObject *
setup_guard(PyObject *module, PyObject *const *args, Py_ssize_t nargs)
{
    State *st = get_state(module);
    if (nargs != 3) {
        PyErr_SetString(PyExc_TypeError, "setup_guard(c_execute, slow_execute, leave)");
        return NULL;
    }
    replace(&st->c_execute, args[0]);
    replace(&st->slow_execute, args[1]);
    replace(&st->leave, args[2]);
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"init", (PyCFunction)(void (*)(void))init, METH_FASTCALL,
     "init(getline_address, pg_error, getcurrent): libpq's PQgetlineAsync and the shared objects."},
    {"setup_gevent", (PyCFunction)(void (*)(void))setup_gevent, METH_FASTCALL,
     "setup_gevent(get_hub, new_watcher, greenlet_switch): what gevent_poll() waits with."},
    {"setup_eventlet", (PyCFunction)(void (*)(void))setup_eventlet, METH_FASTCALL,
     "setup_eventlet(get_hub, READ, WRITE): what eventlet_poll() waits with."},
    {"setup_guard", (PyCFunction)(void (*)(void))setup_guard, METH_FASTCALL,
     "setup_guard(c_execute, slow_execute, leave): what execute() runs."},
    {"setup_callback", (PyCFunction)(void (*)(void))setup_callback, METH_FASTCALL,
     "setup_callback(connecting_var, deadline_var, STATUS_SETUP, state, wait_callback, handover)."},
    {"wait_callback", wait_callback, METH_O,
     "The wait callback registered with psycopg2 when the accelerator is active."},
    {"gevent_poll", gevent_poll, METH_O,
     "The wait callback's poll loop under gevent: None when done, else (fd, events, exc) to hand over."},
    {"eventlet_poll", eventlet_poll, METH_O,
     "The wait callback's poll loop under eventlet: None when done, else (fd, events, exc) to hand over."},
    {"execute", (PyCFunction)(void (*)(void))execute, METH_FASTCALL | METH_KEYWORDS,
     "execute(cursor, query, vars=None): the guarded cursor.execute fast path."},
    {"getlines", (PyCFunction)(void (*)(void))getlines, METH_FASTCALL,
     "getlines(pgconn, buffer, pos, room, batch) -> (pos, n): every buffered COPY OUT row at once."},
    {NULL, NULL, 0, NULL},
};

static int
traverse(PyObject *module, visitproc visit, void *arg)
{
    State *st = get_state(module);
    if (st == NULL) {
        return 0;
    }
    Py_VISIT(st->pg_error);
    Py_VISIT(st->getcurrent);
    Py_VISIT(st->gevent_get_hub);
    Py_VISIT(st->gevent_new_watcher);
    Py_VISIT(st->greenlet_switch);
    Py_VISIT(st->switch_out_types);
    Py_VISIT(st->eventlet_get_hub);
    Py_VISIT(st->eventlet_read);
    Py_VISIT(st->eventlet_write);
    Py_VISIT(st->connecting_var);
    Py_VISIT(st->deadline_var);
    Py_VISIT(st->status_setup);
    Py_VISIT(st->wait_state);
    Py_VISIT(st->slow_callback);
    Py_VISIT(st->handover);
    Py_VISIT(st->own_waiter_types);
    Py_VISIT(st->poll_of_types);
    Py_VISIT(st->c_execute);
    Py_VISIT(st->slow_execute);
    Py_VISIT(st->leave);
    return 0;
}

static int
clear(PyObject *module)
{
    State *st = get_state(module);
    if (st == NULL) {
        return 0;
    }
    Py_CLEAR(st->pg_error);
    Py_CLEAR(st->getcurrent);
    Py_CLEAR(st->gevent_get_hub);
    Py_CLEAR(st->gevent_new_watcher);
    Py_CLEAR(st->greenlet_switch);
    Py_CLEAR(st->switch_out_types);
    Py_CLEAR(st->eventlet_get_hub);
    Py_CLEAR(st->eventlet_read);
    Py_CLEAR(st->eventlet_write);
    Py_CLEAR(st->connecting_var);
    Py_CLEAR(st->deadline_var);
    Py_CLEAR(st->status_setup);
    Py_CLEAR(st->wait_state);
    Py_CLEAR(st->slow_callback);
    Py_CLEAR(st->handover);
    Py_CLEAR(st->own_waiter_types);
    Py_CLEAR(st->poll_of_types);
    Py_CLEAR(st->c_execute);
    Py_CLEAR(st->slow_execute);
    Py_CLEAR(st->leave);
    return 0;
}

static void
free_module(void *module)
{
    clear((PyObject *)module);
}

static struct PyModuleDef speedups_module = {
    PyModuleDef_HEAD_INIT,
    "psycogreen._speedups",
    "psycogreen's optional C accelerator (see psycogreen._accel; PSYCOGREEN_NO_EXTENSIONS=1 disables it).",
    sizeof(State),
    methods,
    NULL,
    traverse,
    clear,
    free_module,
};

static int
intern_names(void)
{
#define INTERN(var, text)                                \
    if ((var = PyUnicode_InternFromString(text)) == NULL) \
        return -1;
    INTERN(s_switch_out, "switch_out");
    INTERN(s_own_waiter, "psycogreen_waiter");
    INTERN(s_waiter, "_chosen");
    INTERN(s_accel_poll, "accel_poll");
    INTERN(s_status, "status");
    INTERN(s_poll, "poll");
    INTERN(s_fileno, "fileno");
    INTERN(s_watchers, "psycogreen_watchers");
    INTERN(s_start, "start");
    INTERN(s_stop, "stop");
    INTERN(s_switch, "switch");
    INTERN(s_throw, "throw");
    INTERN(s_add, "add");
    INTERN(s_remove, "remove");
    INTERN(s_connection, "connection");
    INTERN(s_owner, "_pg_owner");
    INTERN(s_depth, "_pg_depth");
    INTERN(s_pending, "_pg_pending");
#undef INTERN
    return 0;
}

PyMODINIT_FUNC
PyInit__speedups(void)
{
    PyObject *module, *method;
    if (s_poll == NULL && intern_names() < 0) {
        return NULL;
    }
    module = PyModule_Create(&speedups_module);
    if (module == NULL) {
        return NULL;
    }
    memset(get_state(module), 0, sizeof(State));
    /* ``execute`` as a method: an instancemethod binds the cursor like a Python function does. */
    method = PyObject_GetAttrString(module, "execute");
    if (method != NULL) {
        PyObject *bound = PyInstanceMethod_New(method);
        Py_DECREF(method);
        if (bound != NULL && PyModule_AddObject(module, "execute_method", bound) == 0) {
            return module;
        }
        Py_XDECREF(bound);
    }
    Py_DECREF(module);
    return NULL;
}
