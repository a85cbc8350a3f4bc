"""Notifications: route each incident to the right on-call, once, with timers, silences and inhibition.

``config`` (the YAML routing tree), ``view`` (an incident's properties), ``decide`` (timers,
change, flapping), ``message`` (templates), ``receivers`` (one module per way of sending),
``silences``, ``notifier`` (the stages and the notification log), ``runner`` (embedded mode's
thread) and ``tasks`` (distributed mode's Celery task). See docs/notify.md.

Nothing is imported here, so the command line starts fast: import the modules themselves.
"""
