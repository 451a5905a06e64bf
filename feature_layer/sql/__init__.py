"""Pure SQL generation: functions from registry objects to sqlglot expressions, no IO.

``point_in_time``  training-set queries (resolve → spine → per-view join → dedupe → project)
``dialects``       what each dialect can do, and which point-in-time formulation it gets
``latest``         latest-value-per-entity queries for online materialization
"""
