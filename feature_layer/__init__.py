"""feature_layer: a SQL-first feature store that lives inside a dbt project."""

from feature_layer.client import FeatureStore
from feature_layer.errors import (
    ConfigError,
    DeclarationError,
    FeatureLayerError,
    InputError,
    ManifestError,
    OnlineStoreError,
    UnknownFeatureError,
    WarehouseError,
)
from feature_layer.registry.registry import Registry

__all__ = [
    "ConfigError",
    "DeclarationError",
    "FeatureLayerError",
    "FeatureStore",
    "InputError",
    "ManifestError",
    "Registry",
    "OnlineStoreError",
    "UnknownFeatureError",
    "WarehouseError",
]
__version__ = "0.1.0"
