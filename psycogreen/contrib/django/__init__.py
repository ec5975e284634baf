"""A Django database backend on psycopg2 whose connections come from a psycogreen pool.

``ENGINE = "psycogreen.contrib.django"``; see ``base.py`` and docs/pooling.md.
"""
