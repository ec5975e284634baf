"""Celery settings for docs/examples/celery/tasks.py (``CELERY_CONFIG_MODULE`` names another)."""

broker_url = "redis://127.0.0.1:6379/0"
# With -P gevent one process runs -c tasks at once; let it fetch enough of them.
worker_prefetch_multiplier = 4
task_acks_late = True
