"""The example card-payment fraud project: deterministic raw data for its dbt sources.

Imports are lazy so ``import feature_layer.demo`` stays cheap (numpy and pyarrow load on
first use).
"""

from __future__ import annotations

from typing import Any

__all__ = ["generate_demo_data", "load_demo_data_into_postgres"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from feature_layer.demo import data

        return getattr(data, name)
    raise AttributeError(f"module 'feature_layer.demo' has no attribute {name!r}")
