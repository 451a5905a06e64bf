"""Search over every object of a project: features, feature views, entities, ML models
(dbt exposures with a ``feature_layer`` block: feature services), sources and models.

One index per registry object (built on first use, cached by identity); a query is a few
dictionary and bisect look-ups per word, then Python work proportional to the matches.

How a document scores
=====================
Each object is a document with *fields*, each with a weight (``FIELD_WEIGHTS``)::

    name 10 > tag 6 = owner 6 > entity 5 = view 5 > description 4 > columns 2
      > column descriptions 1.5 > lineage 1 = sql 1

A feature inherits its view's tags, owner and entities at 0.8 of the weight and the view's
description at 0.5: the view itself outranks its features on what the view declares.

Every query word is matched against the field's *tokens* (lower-cased runs of letters and
digits: ``amount_sum_24h`` → ``amount``, ``sum``, ``24h``) with a quality:

=================================  =======
the same token                     1.0
the same stem (Snowball English)   0.9     ``dispute`` finds "Disputed"
the start of a token (≥ 2 chars)   0.7     ``charge`` finds ``chargeback``
one typo (words of 4+ chars)       0.6     optimal string alignment distance (rapidfuzz):
two typos (words of 8+ chars)      0.45    ``chargebak``, ``birth yaer``
inside a token (≥ 3 chars)         0.3     ``age`` in "Average": after every whole-token hit
via a glossary (see below)         0.25
=================================  =======

A word scores its best ``weight × quality`` in a document; a document's score is the sum over
the words, plus 30 when the whole query is the object's name (``amount_sum_24h``) or 20 when
it is one of its column names (``signup_at``), plus up to 3 for how much of the name the
query covers. Every word must match (small words such as "the", "of", "at" are optional: they
add half their score when they match). Ties go to the kind (feature, feature view, ML model,
entity, source, model), then the shorter name.

The glossary: a word found in the description of a source, model or entity that is named by
other words (the source ``chargebacks`` is "Disputed payments") also finds what is named like
that object, at 0.25: ``dispute`` finds the source first, then the chargeback features.

When nothing matches, ``did_you_mean`` offers the query with each unmatched word replaced by
the closest words of the project (rapidfuzz ratio ≥ 60), most frequent first.

Pure: no IO. Stems come from ``snowballstemmer`` (the Snowball project's English stemmer).
"""

from __future__ import annotations

import re
import threading
import weakref
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import snowballstemmer
from rapidfuzz import fuzz, process
from rapidfuzz.distance import OSA

from feature_layer.registry.model import Feature

KINDS = ("feature", "feature_view", "ml_model", "entity", "source", "model")
"""Object kinds, in tie-break order."""

FIELD_WEIGHTS: dict[str, float] = {
    "name": 10.0, "tag": 6.0, "owner": 6.0, "entity": 5.0, "view": 5.0, "description": 4.0,
    "columns": 2.0, "column_descriptions": 1.5, "lineage": 1.0, "sql": 1.0,
}
INHERITED = 0.8
"""A feature's share of its view's tags, owner and entities."""
INHERITED_DESCRIPTION = 0.5

EXACT, STEM, PREFIX, TYPO1, TYPO2, INSIDE, GLOSSARY = 1.0, 0.9, 0.7, 0.6, 0.45, 0.3, 0.25
NAME_BONUS, COLUMN_BONUS, COVERAGE_BONUS = 30.0, 20.0, 3.0
STOPWORDS = frozenset(
    "a an and are as at be by each for from how in is it its of on or per that the this to was what which with".split()
)
URL_PREFIX = "/#/"
"""Where the web UI's pages are (hash routes of the page served at ``/``)."""
_ROUTES = {"feature": "feature", "feature_view": "view", "entity": "entity", "ml_model": "service",
           "source": "source", "model": "model"}
_FIELDS = ("name", "tag", "owner", "entity", "view", "description", "columns", "column_descriptions", "lineage",
           "sql")
"""Field names as results report them (``matched``), by code."""
_FIELD_CODES = {name: code for code, name in enumerate(_FIELDS)}
_REPORTED = {"view_tag": "tag", "view_description": "description"}
"""Fields a feature inherits from its view, reported under the view's field name."""
_TOKEN = re.compile(r"[a-z0-9]+")
_CACHE_SIZE = 4
_MAX_GLOSSARY_DOCS = 3


def tokens(text: str) -> list[str]:
    """Lower-cased runs of letters and digits (``"Card-not-present"`` → card, not, present)."""
    return _TOKEN.findall((text or "").lower())


_stemmer_lock = threading.Lock()
_stemmer = snowballstemmer.stemmer("english")
_stems: dict[str, str] = {}


def stem(word: str) -> str:
    """The Snowball English stem of a lower-case token (numbers and short words unchanged)."""
    cached = _stems.get(word)
    if cached is not None:
        return cached
    if len(word) <= 3 or not word.isalpha():
        out = word
    else:
        with _stemmer_lock:  # the generated stemmer keeps state on the instance
            out = _stemmer.stemWord(word)
    if len(_stems) < 200_000:
        _stems[word] = out
    return out


@dataclass(frozen=True)
class SearchMatch:
    """One object found: its kind and name, why it matched, and where its page is."""

    kind: str
    name: str
    title: str
    description: str
    score: float
    matched: tuple[str, ...]
    url: str
    obj: Any = field(default=None, compare=False, repr=False)
    """The registry object (Feature, FeatureView, Entity, FeatureService or DbtNode)."""

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "title": self.title, "description": self.description,
                "score": round(self.score, 4), "matched": list(self.matched), "url": self.url}


@dataclass(frozen=True)
class SearchResult:
    """The answer to one query: the best matches, how many matched in all, and suggestions."""

    query: str
    results: tuple[SearchMatch, ...]
    total: int
    did_you_mean: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"query": self.query, "total": self.total, "results": [m.to_dict() for m in self.results],
                "did_you_mean": list(self.did_you_mean)}


@dataclass(frozen=True)
class SearchHit:
    """One feature found by :func:`search` (the features-only API), with score and fields."""

    feature: Feature
    score: float
    matched: tuple[str, ...]


@dataclass
class _Doc:
    kind: str
    name: str
    title: str
    description: str
    obj: Any
    fields: dict[str, tuple[float, list[str]]]
    """field → (weight, tokens)"""
    identifiers: dict[str, float]
    """whole names (lower-cased) → bonus when the query is exactly one of them"""
    name_tokens: frozenset[str]
    tags: frozenset[str]
    owner: str
    entities: frozenset[str]
    view: str = ""
    glossary_names: tuple[str, ...] = ()


class SearchIndex:
    """Inverted index over every object of one registry (see the module docstring).

    Postings are numpy arrays (document ids, weights, field codes) per token, so scoring a
    word is a few vectorised maxima over the documents, whatever their number.
    """

    def __init__(self, registry: Any) -> None:
        docs = list(_documents(registry))
        self.docs: list[_Doc] = docs
        n = len(docs)
        slots: dict[str, dict[int, tuple[float, int]]] = {}
        for i, doc in enumerate(docs):
            for field_name, (weight, words) in doc.fields.items():
                code = _FIELD_CODES[_REPORTED.get(field_name, field_name)]
                for word in words:
                    slot = slots.setdefault(word, {})
                    if weight > slot.get(i, (0.0, 0))[0]:
                        slot[i] = (weight, code)
        self.postings: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for word, slot in slots.items():
            ids = np.fromiter(slot.keys(), dtype=np.int64, count=len(slot))
            values = list(slot.values())
            self.postings[word] = (ids, np.array([v[0] for v in values], dtype=np.float64),
                                   np.array([v[1] for v in values], dtype=np.int8))
        self.vocabulary: list[str] = sorted(self.postings)
        self.frequency = {w: len(p[0]) for w, p in self.postings.items()}
        self.by_stem: dict[str, list[str]] = {}
        for word in self.vocabulary:
            self.by_stem.setdefault(stem(word), []).append(word)
        self.by_length: dict[int, list[str]] = {}
        for word in self.vocabulary:
            if word.isalpha():
                self.by_length.setdefault(len(word), []).append(word)
        self._blob = "\n" + "\n".join(self.vocabulary) + "\n"
        self._starts = []
        offset = 1
        for word in self.vocabulary:
            self._starts.append(offset)
            offset += len(word) + 1
        self.identifiers: dict[str, list[tuple[int, float]]] = {}
        for i, doc in enumerate(docs):
            for ident, bonus in doc.identifiers.items():
                self.identifiers.setdefault(ident, []).append((i, bonus))
        self.glossary = {i: d.glossary_names for i, d in enumerate(docs) if d.glossary_names}
        self._glossary_ids = np.fromiter(self.glossary, dtype=np.int64, count=len(self.glossary))
        self._listing = sorted(range(n), key=lambda i: (KINDS.index(docs[i].kind), docs[i].title))
        """Every document by kind then title: the answer to an empty query."""
        name_stems: dict[str, list[int]] = {}
        self._name_size = np.zeros(n, dtype=np.float64)
        for i, d in enumerate(docs):
            own = {stem(t) for t in d.name_tokens}
            self._name_size[i] = len(own)
            for s in own:
                name_stems.setdefault(s, []).append(i)
        self._name_stems = {s: np.array(ids, dtype=np.int64) for s, ids in name_stems.items()}
        order = sorted(range(n), key=lambda i: (KINDS.index(docs[i].kind), len(docs[i].name), docs[i].title))
        self._rank = np.empty(n, dtype=np.int64)
        self._rank[np.array(order, dtype=np.int64)] = np.arange(n)
        """Tie-break position of each document: kind, then shorter name, then title."""
        self._filter_cache: dict[tuple[Any, ...], np.ndarray | None] = {}
        self._lock = threading.Lock()
        self._candidates: dict[str, dict[str, float]] = {}
        self._words: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return len(self.docs)

    def clear_caches(self) -> None:
        """Forget the per-word results (benchmarks time cold queries with it)."""
        self._candidates.clear()
        self._words.clear()

    # -- matching one word ---------------------------------------------------------------
    def candidates(self, word: str) -> dict[str, float]:
        """Vocabulary tokens a query word matches, with the match quality (best per token)."""
        cached = self._candidates.get(word)
        if cached is None:
            cached = self._candidates_of(word)
            if len(self._candidates) > 4096:
                self._candidates.clear()
            self._candidates[word] = cached
        return cached

    def _candidates_of(self, word: str) -> dict[str, float]:
        out: dict[str, float] = {}

        def put(token: str, quality: float) -> None:
            if quality > out.get(token, 0.0):
                out[token] = quality

        if word in self.postings:
            put(word, EXACT)
        for token in self.by_stem.get(stem(word), ()):
            put(token, STEM)
        if len(word) >= 2:
            vocab = self.vocabulary
            i = bisect_left(vocab, word)
            while i < len(vocab) and vocab[i].startswith(word):
                put(vocab[i], PREFIX)
                i += 1
        if len(word) >= 4 and word.isalpha():
            most = 2 if len(word) >= 8 else 1
            for length in range(len(word) - most, len(word) + most + 1):
                pool = self.by_length.get(length)
                if not pool:
                    continue
                for token, distance, _ in process.extract(word, pool, scorer=OSA.distance, score_cutoff=most,
                                                          limit=None):
                    if distance:
                        put(token, TYPO1 if distance == 1 else TYPO2)
        if len(word) >= 3:
            blob, starts = self._blob, self._starts
            pos = blob.find(word)
            while pos != -1:
                k = bisect_left(starts, pos + 1) - 1
                if starts[k] != pos:  # inside the token, not at its start
                    put(self.vocabulary[k], INSIDE)
                nxt = starts[k + 1] if k + 1 < len(starts) else len(blob)
                pos = blob.find(word, nxt)
        return out

    def word_scores(self, word: str) -> tuple[np.ndarray, np.ndarray]:
        """Per document: the best score of one query word (0: no match) and the field code."""
        cached = self._words.get(word)
        if cached is not None:
            return cached
        n = len(self.docs)
        scores = np.zeros(n, dtype=np.float64)
        fields = np.full(n, -1, dtype=np.int8)

        def apply(token: str, quality: float, field_code: int | None = None) -> None:
            ids, weights, codes = self.postings[token]
            value = weights * quality
            better = value > scores[ids]
            if better.any():
                chosen = ids[better]
                scores[chosen] = value[better]
                fields[chosen] = codes[better] if field_code is None else field_code

        for token, quality in self.candidates(word).items():
            apply(token, quality)
        for expanded in self._expansions(scores, fields):
            if expanded in self.postings:
                apply(expanded, GLOSSARY, _FIELD_CODES["lineage"])
        scores.setflags(write=False)
        fields.setflags(write=False)
        if len(self._words) > 256:
            self._words.clear()
        self._words[word] = (scores, fields)
        return scores, fields

    def _expansions(self, scores: np.ndarray, fields: np.ndarray) -> list[str]:
        """Name tokens of the few described objects this word found only in their description."""
        if not len(self._glossary_ids):
            return []
        codes = fields[self._glossary_ids]
        described = self._glossary_ids[codes == _FIELD_CODES["description"]]
        if not len(described) or len(described) > _MAX_GLOSSARY_DOCS:
            return []
        if (fields == _FIELD_CODES["name"]).any():
            return []  # the word names something itself: no need to look further
        named = dict.fromkeys(t for i in described.tolist() for t in self.glossary[i])
        return list(dict.fromkeys(v for t in named for v in (t, *self.by_stem.get(stem(t), ()))))

    # -- queries -------------------------------------------------------------------------
    def query(
        self,
        text: str,
        *,
        kinds: Iterable[str] | None = None,
        filters: Mapping[str, str | None] | None = None,
        limit: int | None = 50,
    ) -> SearchResult:
        """Objects matching ``text`` (every word; see module docstring) and the filters, best first.

        ``filters``: ``tag``, ``owner``, ``entity`` (exact, case-insensitive) and ``view``
        (features of that view). An empty ``text`` lists every object passing the filters, by
        kind then title.
        """
        allowed = self._allowed(tuple(sorted(set(kinds))) if kinds else None, filters or {})
        words = list(dict.fromkeys(tokens(text)))
        if not words:
            chosen = [i for i in self._listing if allowed is None or allowed[i]]
            picked = chosen if limit is None else chosen[:limit]
            return SearchResult(text, tuple(self._match(i, 0.0, ()) for i in picked), len(chosen))
        required = [w for w in words if w not in STOPWORDS] or words
        optional = [w for w in words if w not in required]
        per_word = {w: self.word_scores(w) for w in words}
        score = np.zeros(len(self.docs), dtype=np.float64)
        mask = np.ones(len(self.docs), dtype=bool) if allowed is None else allowed.copy()
        for w in required:
            word_score = per_word[w][0]
            mask &= word_score > 0
            score += word_score
        for w in optional:
            score += per_word[w][0] / 2
        for i, bonus in self._identifier_bonus(text):
            score[i] += bonus
        covered = np.zeros(len(self.docs), dtype=np.float64)
        for s in {stem(w) for w in words} | set(words):
            ids = self._name_stems.get(s)
            if ids is not None:
                covered[ids] += 1
        with np.errstate(divide="ignore", invalid="ignore"):
            score += np.where(self._name_size > 0, COVERAGE_BONUS * covered / self._name_size, 0.0)
        ids = np.flatnonzero(mask)
        total = int(len(ids))
        if limit is not None and total > limit:
            values = score[ids]
            kth = np.partition(values, total - limit)[total - limit]
            ids = ids[values >= kth]
        ids = ids[np.lexsort((self._rank[ids], -score[ids]))]
        if limit is not None:
            ids = ids[:limit]
        results = tuple(self._match(int(i), float(score[i]), self._fields_of(int(i), required, per_word))
                        for i in ids)
        suggestions = self.did_you_mean(required) if not total or self._typo_only(required) else ()
        return SearchResult(text, results, total, suggestions)

    @staticmethod
    def _fields_of(i: int, words: Sequence[str], per_word: Mapping[str, tuple[np.ndarray, np.ndarray]]
                   ) -> tuple[str, ...]:
        """The fields the required words matched in document ``i``, in the order typed, each once."""
        return tuple(dict.fromkeys(_FIELDS[int(per_word[w][1][i])] for w in words))

    def _typo_only(self, words: Sequence[str]) -> bool:
        """Some word matched nothing but typos: worth offering the corrected query."""
        return any(not any(q >= PREFIX for q in self.candidates(w).values()) for w in words)

    def _identifier_bonus(self, text: str) -> Iterable[tuple[int, float]]:
        """The whole query as a name (always) or as a column name (only when typed as an
        identifier, ``signup_at``: a plain word such as ``amount`` is a word, not a column)."""
        raw = (text or "").strip().lower()
        whole = re.sub(r"[\s\-]+", "_", raw)
        identifier_shaped = "_" in raw and " " not in raw
        seen: dict[int, float] = {}
        for i, bonus in self.identifiers.get(whole, ()):
            if bonus == COLUMN_BONUS and not identifier_shaped:
                continue
            seen[i] = max(seen.get(i, 0.0), bonus)
        return seen.items()

    def did_you_mean(self, words: Sequence[str], limit: int = 3) -> tuple[str, ...]:
        """The query with each word that matched nothing (or only as a typo) replaced by the
        project's closest words, most similar then most frequent first."""
        options: list[list[str]] = []
        for w in words:
            found = self.candidates(w)
            if any(q >= PREFIX for q in found.values()):
                options.append([w])
                continue
            typos = sorted((t for t, q in found.items() if q in (TYPO1, TYPO2)),
                           key=lambda t: (-found[t], -self.frequency[t], t))
            if typos:
                options.append(typos[:limit])
                continue
            near = process.extract(w, self.vocabulary, scorer=fuzz.ratio, score_cutoff=60, limit=12)
            ranked = sorted(near, key=lambda m: (-m[1], -self.frequency[m[0]], m[0]))
            options.append([m[0] for m in ranked if not m[0].isdigit()][:limit])
        kept = [o for o in options if o]
        if not kept or all(o == [w] for o, w in zip(options, words, strict=True)):
            return ()
        out: list[str] = []
        for k in range(limit):
            phrase = " ".join(o[min(k, len(o) - 1)] for o in kept)
            if phrase not in out:
                out.append(phrase)
        return tuple(out)

    def _allowed(self, kinds: tuple[str, ...] | None, filters: Mapping[str, str | None]) -> np.ndarray | None:
        tag, owner, entity, view = (str(filters[k]).lower() if filters.get(k) else None
                                    for k in ("tag", "owner", "entity", "view"))
        key = (kinds, tag, owner, entity, view)
        with self._lock:
            if key in self._filter_cache:
                return self._filter_cache[key]
        if kinds is None and tag is None and owner is None and entity is None and view is None:
            out = None
        else:
            out = np.fromiter(
                ((kinds is None or d.kind in kinds) and (tag is None or tag in d.tags)
                 and (owner is None or owner == d.owner) and (entity is None or entity in d.entities)
                 and (view is None or (d.kind == "feature" and d.view == view)) for d in self.docs),
                dtype=bool, count=len(self.docs))
            out.setflags(write=False)
        with self._lock:
            if len(self._filter_cache) > 256:
                self._filter_cache.clear()
            self._filter_cache[key] = out
        return out

    def _match(self, i: int, score: float, matched: tuple[str, ...]) -> SearchMatch:
        d = self.docs[i]
        return SearchMatch(d.kind, d.name, d.title, d.description, round(score, 4), matched,
                           f"{URL_PREFIX}{_ROUTES[d.kind]}/{d.title}", d.obj)

    # -- the features-only API (GET /v1/features, Registry.search) -------------------------
    def search_with_total(self, text: str = "", *, entity: str | None = None, tag: str | None = None,
                          owner: str | None = None, view: str | None = None,
                          limit: int | None = 50) -> tuple[list[SearchHit], int]:
        """Features only, by the same ranking: the best ``limit`` hits and how many matched."""
        result = self.query(text, kinds=("feature",),
                            filters={"entity": entity, "tag": tag, "owner": owner, "view": view}, limit=limit)
        return [SearchHit(m.obj, m.score, m.matched) for m in result.results], result.total

    def search(self, text: str = "", **kwargs: Any) -> list[SearchHit]:
        return self.search_with_total(text, **kwargs)[0]


# -- documents ---------------------------------------------------------------------------

def _fields(**named: tuple[float, Iterable[str]]) -> dict[str, tuple[float, list[str]]]:
    out: dict[str, tuple[float, list[str]]] = {}
    for name, (weight, texts) in named.items():
        words = [w for text in texts for w in tokens(text)]
        if words:
            out[name] = (weight, words)
    return out


def _views(registry: Any) -> list[Any]:
    views = getattr(registry, "views", {})
    return list(views.values()) if isinstance(views, dict) else list(views)


def _lower_set(values: Iterable[str]) -> frozenset[str]:
    return frozenset(v.lower() for v in values if v)


def _documents(registry: Any) -> Iterable[_Doc]:
    w = FIELD_WEIGHTS
    views = _views(registry)
    nodes: Mapping[str, Any] = getattr(registry, "nodes", None) or {}
    lineage = _feature_lineage(registry, views) if nodes else {}
    for view in views:
        owner = (view.owner or "").lower()
        view_tags = tuple(view.tags)
        entities = _lower_set(view.entities)
        columns = [c for c, _ in view.column_types] or [f.name for f in view.features]
        yield _Doc(
            kind="feature_view", name=view.name, title=view.name, description=view.description, obj=view,
            fields=_fields(name=(w["name"], [view.name]), tag=(w["tag"], view_tags), owner=(w["owner"], [owner]),
                           entity=(w["entity"], view.entities), description=(w["description"], [view.description]),
                           columns=(w["columns"], columns),
                           column_descriptions=(w["column_descriptions"], [f.description for f in view.features]),
                           sql=(w["sql"], _sql_columns(view.compiled_sql, registry))),
            identifiers={view.name.lower(): NAME_BONUS, **{c.lower(): COLUMN_BONUS for c in columns}},
            name_tokens=frozenset(tokens(view.name)), tags=_lower_set(view_tags), owner=owner, entities=entities,
            glossary_names=(),
        )
        for feature in view.features:
            upstream, sql = lineage.get(feature.ref, ((), ()))
            yield _Doc(
                kind="feature", name=feature.name, title=feature.ref, description=feature.description, obj=feature,
                fields=_fields(
                    name=(w["name"], [feature.name]), view=(w["view"], [view.name]),
                    tag=(w["tag"], feature.tags), view_tag=(w["tag"] * INHERITED, view_tags),
                    owner=(w["owner"] * INHERITED, [owner]),
                    entity=(w["entity"] * INHERITED, view.entities),
                    description=(w["description"], [feature.description]),
                    view_description=(w["description"] * INHERITED_DESCRIPTION, [view.description]),
                    lineage=(w["lineage"], upstream), sql=(w["sql"], sql),
                ),
                identifiers={feature.name.lower(): NAME_BONUS, feature.ref.lower(): NAME_BONUS},
                name_tokens=frozenset(tokens(feature.name)),
                tags=_lower_set((*feature.tags, *view_tags)), owner=owner, entities=entities, view=view.name.lower(),
            )
    for entity in (getattr(registry, "entities", None) or {}).values():
        yield _Doc(
            kind="entity", name=entity.name, title=entity.name, description=entity.description, obj=entity,
            fields=_fields(name=(w["name"], [entity.name]), description=(w["description"], [entity.description]),
                           columns=(w["columns"], entity.join_keys)),
            identifiers={entity.name.lower(): NAME_BONUS, **{k.lower(): COLUMN_BONUS for k in entity.join_keys}},
            name_tokens=frozenset(tokens(entity.name)), tags=frozenset(), owner="",
            entities=frozenset({entity.name.lower()}), glossary_names=tuple(tokens(entity.name)),
        )
    view_of = {v.name: v for v in views}
    for service in (getattr(registry, "services", None) or {}).values():
        used = [view_of[r.split(".", 1)[0]] for r in service.features if r.split(".", 1)[0] in view_of]
        node = nodes.get(service.unique_id)
        label = str(getattr(node, "meta", {}).get("label", "") or "") if node is not None else ""
        yield _Doc(
            kind="ml_model", name=service.name, title=service.name, description=service.description, obj=service,
            fields=_fields(name=(w["name"], [service.name, label]), tag=(w["tag"], service.tags),
                           owner=(w["owner"], [service.owner or ""]),
                           description=(w["description"], [service.description]),
                           columns=(w["columns"], [r.split(".", 1)[-1] for r in service.features]),
                           lineage=(w["lineage"], [v.name for v in used])),
            identifiers={service.name.lower(): NAME_BONUS},
            name_tokens=frozenset(tokens(service.name)), tags=_lower_set(service.tags),
            owner=(service.owner or "").lower(), entities=_lower_set(e for v in used for e in v.entities),
        )
    view_ids = {v.unique_id for v in views}
    for uid, node in nodes.items():
        resource = getattr(node, "resource_type", "")
        if uid in view_ids or resource not in ("source", "model", "seed", "snapshot"):
            continue
        kind = "source" if resource == "source" else "model"
        name = _source_name(uid, node) if kind == "source" else node.name
        columns = list(getattr(node, "column_types", {}) or {})
        column_docs = [c.description for c in (getattr(node, "columns", None) or {}).values()]
        yield _Doc(
            kind=kind, name=name, title=name, description=node.description or "", obj=node,
            fields=_fields(name=(w["name"], [name]), tag=(w["tag"], node.tags),
                           description=(w["description"], [node.description or ""]),
                           columns=(w["columns"], columns), column_descriptions=(w["column_descriptions"], column_docs),
                           sql=(w["sql"], _sql_columns(getattr(node, "compiled_sql", None), registry))),
            identifiers={name.lower(): NAME_BONUS, node.name.lower(): NAME_BONUS,
                         **{c.lower(): COLUMN_BONUS for c in columns}},
            name_tokens=frozenset(tokens(node.name)), tags=_lower_set(node.tags), owner="", entities=frozenset(),
            glossary_names=tuple(t for t in tokens(node.name) if t not in {"stg", "raw", "int", "dim", "fct"}),
        )


def _source_name(unique_id: str, node: Any) -> str:
    parts = unique_id.split(".")
    return f"{parts[-2]}.{node.name}" if len(parts) >= 4 else node.name


def _sql_columns(sql: str | None, registry: Any) -> list[str]:
    """Column names a model's compiled SQL refers to (sqlglot), or none when it cannot be read."""
    if not sql:
        return []
    from sqlglot import exp, parse_one
    from sqlglot.errors import SqlglotError

    try:
        tree = parse_one(sql, dialect=str(getattr(registry, "dialect", None) or "duckdb"))
    except (SqlglotError, ValueError, RecursionError):
        return []
    return list(dict.fromkeys(c.name for c in tree.find_all(exp.Column) if c.name))


def _feature_lineage(registry: Any, views: Sequence[Any]) -> dict[str, tuple[list[str], list[str]]]:
    """Feature → (upstream object names, columns and descriptions; the SQL of its expression).

    From column-level lineage: the raw columns a feature reads and the sources and models they
    sit in, so ``amount`` finds ``amount_sum_24h`` through the SQL that sums it.
    """
    from feature_layer.errors import FeatureLayerError
    from feature_layer.registry.column_lineage import column_lineage

    nodes = registry.nodes
    out: dict[str, tuple[list[str], list[str]]] = {}
    for view in views:
        if view.unique_id not in nodes:
            continue
        for feature in view.features:
            try:
                graph = column_lineage(registry, feature.ref)
            except (FeatureLayerError, KeyError, ValueError, RecursionError):
                continue
            upstream: list[str] = []
            sql: list[str] = []
            for node in graph.nodes:
                if node.kind == "feature":
                    sql.extend(tokens(node.expression or ""))
                    continue
                if node.kind in ("source", "model", "external"):
                    upstream.append(node.column or "")
                    upstream.append(node.name)
            out[feature.ref] = (list(dict.fromkeys(upstream)), sql)
    return out


# -- cache and entry points --------------------------------------------------------------

_lock = threading.Lock()
_indexes: list[tuple[weakref.ReferenceType[Any], SearchIndex]] = []


def index_for(registry: Any) -> SearchIndex:
    """The index of ``registry``, built on first use and reused while the object lives.

    Keyed by object identity through a weak reference, so a reloaded registry gets a fresh
    index and a dropped one frees its index; nothing for tests to reset.
    """
    with _lock:
        for ref, index in _indexes:
            if ref() is registry:
                return index
    index = SearchIndex(registry)
    with _lock:
        _indexes[:] = [(r, i) for r, i in _indexes if r() is not None][-(_CACHE_SIZE - 1):]
        _indexes.append((weakref.ref(registry), index))
    return index


def search_objects(
    registry: Any,
    query: str,
    *,
    kinds: Iterable[str] | None = None,
    filters: Mapping[str, str | None] | None = None,
    limit: int | None = 50,
) -> SearchResult:
    """Every kind of object of ``registry`` matching ``query``, ranked together.

    ``kinds``: a subset of :data:`KINDS`; ``filters``: ``tag``, ``owner``, ``entity``, ``view``.

    >>> from feature_layer.registry.model import Feature, FeatureView, Relation
    >>> f = Feature("amount_sum_7d", "txn", "float64", "Money spent in 7 days", tags=("velocity",))
    >>> v = FeatureView("txn", "model.p.txn", ("user",), ("user_id",), "ts", (f,), Relation(None, "main", "txn"))
    >>> class R: views = {"txn": v}
    >>> [(m.kind, m.title) for m in search_objects(R(), "amont spend").results]
    [('feature', 'txn.amount_sum_7d'), ('feature_view', 'txn')]
    >>> search_objects(R(), "velocityy").results[0].matched
    ('tag',)
    """
    unknown = set(kinds or ()) - set(KINDS)
    if unknown:
        from feature_layer.errors import UnknownFeatureError

        raise UnknownFeatureError(f"Unknown object kind(s): {', '.join(sorted(unknown))}.",
                                  fix=f"use one of: {', '.join(KINDS)}.")
    return index_for(registry).query(query, kinds=kinds, filters=filters, limit=limit)


def search(
    registry: Any,
    text: str = "",
    *,
    entity: str | None = None,
    tag: str | None = None,
    owner: str | None = None,
    view: str | None = None,
    limit: int | None = 50,
) -> list[SearchHit]:
    """Features of ``registry`` matching ``text`` and the filters, best first (same ranking as
    :func:`search_objects`, features only)."""
    return index_for(registry).search(text, entity=entity, tag=tag, owner=owner, view=view, limit=limit)
