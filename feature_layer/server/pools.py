"""Thread pools the server owns, reopened on demand: an app whose lifespan ended (and shut its
pools down) and then serves again — a second TestClient, an ASGI host restarting the app —
gets fresh threads instead of "cannot schedule new futures after shutdown"."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor


class Pool:
    def __init__(self, workers: int, prefix: str) -> None:
        self.workers = max(1, workers)
        self.prefix = prefix
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()

    def get(self) -> ThreadPoolExecutor:
        pool = self._pool
        if pool is None:
            with self._lock:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=self.prefix)
                pool = self._pool
        return pool

    def shutdown(self) -> None:
        """Stop the threads without waiting (a call stuck in IO must not hold up shutdown)."""
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
