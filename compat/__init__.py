"""``make compat``: psycopg2's own test suite run blocking and green (see :mod:`compat.run`)."""
