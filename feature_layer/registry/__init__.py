"""Registry objects and the manifest-backed Registry."""

from feature_layer.registry.model import Entity, Feature, FeatureService, FeatureView, Relation
from feature_layer.registry.registry import Lineage, LineageNode, Registry

__all__ = ["Entity", "Feature", "FeatureService", "FeatureView", "Lineage", "LineageNode", "Registry", "Relation"]
