"""hypothesis strategies shared by the fuzz surfaces: hostile scalars, names, JSON, YAML values."""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

# Text that breaks naive code: quotes, SQL and YAML/Jinja syntax, control and wide characters.
NASTY_TEXT = st.sampled_from([
    "", " ", "'", '"', "`", "\\", "\x00", "\n", "\r\n", "\t", "%", "%s", "{{", "}}", "{{ 1/0 }}", "{% if %}",
    "{{ env_var('FL_FUZZ_UNSET') }}", "{{ env_var('FL_FUZZ_SET', 'x') }}", "{#", "*", "?", "[", "]", "..", "/",
    "../../etc/passwd", "a.b.c.d", "__fl_row", "__fl_x", "select", "SELECT 1", "; DROP TABLE x", "--", "/*",
    "Robert'); DROP TABLE students;--", "null", "None", "true", "NaN", "-1", "0", "1e309", "9" * 40, "é", "日本",
    "🙂", "\u202e", "\ud7ff", "x" * 300, "user_id", "merchant_id", "event_timestamp", "view.feature", "a.*", ".*",
])
TEXT = st.one_of(NASTY_TEXT, st.text(max_size=20), st.text(alphabet="abc_.*'\"0 ", max_size=12))
NUMBERS = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.sampled_from([0, 1, -1, 2**31, 2**63 - 1, 2**63, -(2**63), 2**64]),
    st.floats(allow_nan=True, allow_infinity=True),
)
SCALARS = st.one_of(st.none(), st.booleans(), NUMBERS, TEXT)


def json_values(max_leaves: int = 8) -> st.SearchStrategy[Any]:
    """Any JSON value (scalars nested in lists and objects), hostile text included."""
    return st.recursive(
        SCALARS,
        lambda children: st.one_of(st.lists(children, max_size=4), st.dictionaries(TEXT, children, max_size=4)),
        max_leaves=max_leaves,
    )


def maybe(strategy: st.SearchStrategy[Any], other: st.SearchStrategy[Any] | None = None) -> st.SearchStrategy[Any]:
    """Mostly ``strategy`` (plausible values: 7 in 8), sometimes any JSON value instead."""
    return mostly(strategy, other if other is not None else json_values(4), 7)


def mostly(plausible: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any], weight: int = 3) -> st.SearchStrategy[Any]:
    """``plausible`` ``weight`` times in ``weight + 1``, else ``hostile`` (shrinks towards plausible)."""
    return st.integers(0, weight).flatmap(lambda i: hostile if i == weight else plausible)


def mapping(fields: dict[str, st.SearchStrategy[Any]], *, unknown: bool = True) -> st.SearchStrategy[dict[str, Any]]:
    """A dict holding a random subset of ``fields`` (plausible values), sometimes an unknown key."""
    keys = sorted(fields)

    @st.composite
    def build(draw: Any) -> dict[str, Any]:
        chosen = draw(st.lists(st.sampled_from(keys), unique=True, max_size=len(keys))) if keys else []
        out = {k: draw(fields[k]) for k in chosen}
        if unknown and draw(st.integers(0, 19)) == 0:
            out[draw(TEXT)] = draw(json_values(3))
        return out

    return build()
