"""Integrations with other libraries (``psycogreen.contrib.django``)."""
