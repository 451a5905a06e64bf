"""The ``feature-layer`` command line: a thin click shell over ``FeatureStore``.

Exit codes: 0 success, 1 a user error (bad declaration, unknown feature, failed store),
2 a usage error (bad flags; click's own code). Domain errors print as one message; pass
``--debug`` for the traceback.
"""

from __future__ import annotations

from feature_layer.cli.base import main

# Each module registers its commands on ``main`` when imported.
from feature_layer.cli import demo_cmds, registry_cmds  # noqa: E402,F401
from feature_layer.cli import serve_cmds  # noqa: E402,F401
from feature_layer.cli import online_cmds  # noqa: E402,F401
from feature_layer.cli import sql_cmds  # noqa: E402,F401
from feature_layer.cli import init_cmds  # noqa: E402,F401
from feature_layer.cli import ops_cmds  # noqa: E402,F401
from feature_layer.cli import search_cmds  # noqa: E402,F401

__all__ = ["main"]
