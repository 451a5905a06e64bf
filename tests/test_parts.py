"""Parts: the collaborators FeatureStore builds once and the server rebuilds with its reloaded registry."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from feature_layer.client import FeatureStore
from feature_layer.clock import FixedClock
from feature_layer.errors import ConfigError
from feature_layer.parts import Parts
from feature_layer.registry.registry import Registry
from feature_layer.server.reload import RegistryHolder, serving_parts

NOW = datetime(2030, 1, 2, tzinfo=UTC)


def test_feature_store_builds_its_parts_once_and_they_open_each_part_once(parsed_example_project: Path) -> None:
    with FeatureStore(parsed_example_project, clock=FixedClock(NOW)) as store:
        parts = store.parts
        assert store.parts is parts and parts.clock.now() == NOW
        assert parts.registry() is store.registry
        assert parts.online() is parts.online() is store.online_store()
        assert parts.state() is store.state
        assert parts.new_engine is not None


def test_the_servers_parts_read_the_registry_its_holder_swapped_in(parsed_example_project: Path, tmp_path: Path) -> None:
    with FeatureStore(parsed_example_project, clock=FixedClock(NOW)) as store:
        first = store.registry
        second = Registry.load(store.settings)  # a new registry object, as a reload makes
        assert second is not first
        stamp_file = tmp_path / "manifest.json"
        stamp_file.write_text("1")
        holder = RegistryHolder(lambda: second, [stamp_file], initial=first)
        parts = serving_parts(store.parts, holder)
        assert parts.registry() is first
        stamp_file.write_text("22")  # "dbt rewrote the manifest"
        assert holder.check()
        assert parts.registry() is second  # lookups follow the swap...
        assert store.parts.registry() is first  # ...the store's own parts do not change
        assert parts.online() is store.online_store() and parts.clock is store.clock


def test_a_part_not_given_fails_clearly_when_asked_for(parsed_example_project: Path) -> None:
    with FeatureStore(parsed_example_project) as store:
        parts = Parts.of(registry=store.registry, clock=FixedClock(NOW))
    with pytest.raises(ConfigError, match="without an online store") as caught:
        parts.online()
    assert "To fix this, pass online=… to Parts.of." in str(caught.value)
    assert parts.new_engine is None and parts.clock.now() == NOW
