"""The psycogreen benchmark suite: ``python -m bench --help``."""
