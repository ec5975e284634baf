"""gevent's patch in a process monkey-patched by eventlet: a clear error, not a hang."""

import kit

import psycogreen
import psycogreen.gevent

psycogreen.unpatch()
try:
    psycogreen.gevent.patch_psycopg()
except RuntimeError as e:
    kit.emit(error=str(e))
else:
    kit.emit(error=None)
