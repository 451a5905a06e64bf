"""How ``offline.memory_limit`` is split on each engine that runs inside a budget.

Pure arithmetic, imported by the engine table (``offline.kinds``) and the generic engine
(``offline.generic``), which applies the same splits through the dbt adapter's session.
"""

from __future__ import annotations

EMBEDDED_SHARE = 0.6
"""The share of ``offline.memory_limit`` the embedded DuckDB gets as its own ``memory_limit``:
DuckDB runs inside this process, so the budget also has to hold the Python side (the batch in
flight, its encoded keys and values, the key hashes a run keeps, the Redis client's buffers)."""


def embedded_duckdb_limit(budget: int) -> int:
    """DuckDB's ``memory_limit`` for a process budget of ``budget`` bytes (:data:`EMBEDDED_SHARE`)."""
    return int(budget * EMBEDDED_SHARE)


PG_WORK_MEM_PARTS = 16
"""``work_mem`` is the budget over this many parts: PostgreSQL gives ``work_mem`` to *each* sort
or hash node of a query (a hash node ``hash_mem_multiplier`` = 2 times it), and a training-set
query runs about four such nodes at once in the leader and in a parallel worker: 4 × 2 × 2."""


def postgres_session_settings(budget: int) -> dict[str, str]:
    """The PostgreSQL session settings of ``offline.memory_limit`` = ``budget`` bytes.

    PostgreSQL has no per-session cap, only per-operation sizes, so the budget is split:
    ``work_mem`` = budget / :data:`PG_WORK_MEM_PARTS` (sorts and hashes beyond it spill to temp
    files instead of growing), ``maintenance_work_mem`` = budget / 4 (ANALYZE of the uploaded
    entity rows, index builds: one at a time), ``temp_buffers`` = budget / 8 (the session's cache
    of its temporary tables: the uploaded entity rows).

    >>> postgres_session_settings(2**30)
    {'work_mem': '65536kB', 'maintenance_work_mem': '262144kB', 'temp_buffers': '131072kB'}
    """
    kib = budget // 1024
    return {"work_mem": f"{max(64, kib // PG_WORK_MEM_PARTS)}kB",
            "maintenance_work_mem": f"{max(1024, kib // 4)}kB",
            "temp_buffers": f"{max(800, kib // 8 // 8 * 8)}kB"}  # in whole 8 kB blocks, as PostgreSQL keeps it
