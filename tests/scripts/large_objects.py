"""Large objects in green mode under one framework (argv[1]); prints one JSON line. See
tests/test_large_objects.py."""

from __future__ import annotations

import kit
import psycopg2

conn = psycopg2.connect(kit.DSN)
lo = conn.lobject()
lo.write(b"hello")
lo.seek(3 * 1024**3)  # a sparse offset past 2 GB: the 64-bit calls
lo.write(b"!")
tell = lo.tell()
lo.seek(0)
head = lo.read(5)
oid = lo.oid
conn.commit()
lo2 = conn.lobject(oid, "rb")
again = lo2.read(5)
lo2.unlink()
conn.commit()
conn.close()
kit.emit(patched=kit.PATCHED, tell=tell, head=str(head), bytes=again.decode())
