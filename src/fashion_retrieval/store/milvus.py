"""Milvus back end: a Milvus Lite file by default, or any Milvus server / cluster by URI (same code).

Collection: ``pk`` VARCHAR primary; ``image_embedding`` and ``text_embedding`` FLOAT_VECTOR(dim), metric IP
on normalised vectors; a VARCHAR field per catalogue attribute (caption, path, gender, ...); the model
identity and attribute list as one JSON record, written both into the schema description and into a
collection property, because engines keep different halves: Milvus Lite 2.5 keeps the description and
drops properties; Milvus Lite 3.x's server drops the description and keeps properties; a Milvus server keeps
both. Reading takes whichever is there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence

import numpy as np

from fashion_retrieval.errors import StoreError
from fashion_retrieval.store.base import (
    FIELD_NAME,
    Filters,
    Hit,
    VectorField,
    milvus_filter,
    milvus_literal,
    query_matrix,
    validate_filters,
)
from fashion_retrieval.store.milvus_connection import (
    DEFAULT_COLLECTION,
    DEFAULT_DB,
    MilvusTarget,
    check_server_version,
    connect,
)

log = logging.getLogger(__name__)

VECTOR_FIELDS = {"image": "image_embedding", "text": "text_embedding"}
RESERVED = {"pk", *VECTOR_FIELDS.values()}
LONG_TEXT = 65_535
ATTRIBUTE_LENGTH = 4_096
RECORD_PROPERTY = "fashion_retrieval"


class MilvusStore:
    def __init__(self, target: MilvusTarget, *, must_exist: bool = True) -> None:
        self.target = target
        self.client = connect(target)
        self.collection = target.collection
        self.description = (
            f"Milvus {'Lite file' if target.is_lite else 'server'} {target.address}, collection {target.collection}"
        )
        self._attributes: list[str] | None = None
        self._facets: dict[str, list[str]] | None = None
        self._fields: dict[str, dict] | None = None
        self._index_types: dict[str, str] = {}
        # How many searches a caller (the serving engine) should run at once. Milvus Lite's embedded engine
        # answers one at a time (8 threads: 7.9 ms per query against 9.1 ms one by one at 50k rows) and shares
        # this machine's cores with the model, so 1; a server spreads queries over its own nodes.
        self.max_concurrency = 1 if target.is_lite else 8
        self.writable = True  # items can be added, replaced, patched and deleted (store/items.py)
        # A write is flushed before it is acknowledged on a Lite file (2-5 ms: it seals the rows for the index; Lite
        # persists each upsert on return anyway). A Milvus server persists a write in its log before it answers,
        # and a flush per write would cut the collection into tiny segments (Milvus rate-limits flushes too).
        self.flush_on_write = target.is_lite
        if must_exist:
            self.require()

    # -- schema ------------------------------------------------------------------------------
    def exists(self) -> bool:
        return bool(self.client.has_collection(self.collection))

    def require(self) -> None:
        if not self.exists():
            raise StoreError(
                f"{self.description} does not exist: create it with `fashion-retrieval index EMBEDDINGS_DIR`"
            )
        state = self.client.get_load_state(self.collection).get("state")
        if "Loaded" not in str(state):
            self.client.load_collection(self.collection)

    def create(
        self,
        dim: int,
        attributes: Sequence[str],
        identity: dict,
        has_text: bool = True,
        precision: dict | None = None,
    ) -> None:
        from pymilvus import DataType, MilvusClient

        bad = [a for a in attributes if not FIELD_NAME.fullmatch(a) or a in RESERVED]
        if bad:
            raise StoreError(
                f"attribute name(s) {', '.join(bad)} cannot be Milvus fields: rename those columns "
                "to letters, digits and underscores (not pk/image_embedding/text_embedding)"
            )
        # The record goes where each engine keeps it: the description (Lite 2.5, servers) and a property
        # (Lite 3.x servers, servers); see the module docstring.
        record = {"fashion_retrieval": 1, "model": identity, "attributes": list(attributes), "precision": precision}
        description = json.dumps(record)
        schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False, description=description)
        schema.add_field("pk", DataType.VARCHAR, is_primary=True, max_length=1024)
        schema.add_field("image_embedding", DataType.FLOAT_VECTOR, dim=dim)
        if has_text:
            schema.add_field("text_embedding", DataType.FLOAT_VECTOR, dim=dim)
        schema.add_field("caption", DataType.VARCHAR, max_length=LONG_TEXT)
        schema.add_field("path", DataType.VARCHAR, max_length=LONG_TEXT)
        for name in attributes:
            schema.add_field(name, DataType.VARCHAR, max_length=ATTRIBUTE_LENGTH)
        index = self.client.prepare_index_params()
        params = {"M": 16, "efConstruction": 200} if self.target.index_type.startswith("HNSW") else {}
        for field in ["image_embedding"] + (["text_embedding"] if has_text else []):
            index.add_index(field, index_type=self.target.index_type, metric_type="IP", params=params)
        self.client.create_collection(self.collection, schema=schema, properties={RECORD_PROPERTY: description})
        # sync=False: pymilvus's wait for an index sleeps 0.5 s before its first look, per vector field; the
        # collection is empty, so there is nothing to build yet (rows inserted later are indexed as they seal)
        self.client.create_index(self.collection, index, sync=False)
        self.client.load_collection(self.collection)
        self._attributes = list(attributes)
        log.info(
            "created %s (%s index, dim %d, %d attributes)",
            self.description,
            self.target.index_type,
            dim,
            len(attributes),
        )

    def drop(self) -> bool:
        if not self.exists():
            return False
        self.client.drop_collection(self.collection)
        return True

    def describe(self) -> dict:
        from pymilvus import DataType

        info = self.client.describe_collection(self.collection)
        fields = [{"name": f["name"], "type": DataType(f["type"]).name, **f.get("params", {})} for f in info["fields"]]
        indexes = {}
        for field in VECTOR_FIELDS.values():
            names = self.client.list_indexes(self.collection, field_name=field)
            if names:
                desc = self.client.describe_index(self.collection, names[0])
                indexes[field] = {k: desc.get(k) for k in ("index_type", "metric_type")}
        return {
            "address": self.target.address,
            "collection": self.collection,
            "count": self.count(),
            "fields": fields,
            "indexes": indexes,
            "model": self.identity(),
            "attributes": self.attributes(),
        }

    def _record(self) -> dict:
        """The collection's identity record, from the description or, where the engine dropped that, the property."""
        info = self.client.describe_collection(self.collection)
        properties = info.get("properties") or {}
        for text in (info.get("description"), properties.get(RECORD_PROPERTY)):
            try:
                record = json.loads(text or "{}")
            except (json.JSONDecodeError, TypeError):
                continue
            if isinstance(record, dict) and record.get("fashion_retrieval"):
                return record
        return {}

    def identity(self) -> dict | None:
        return self._record().get("model")

    def precision(self) -> dict | None:
        """The dtype the stored vectors were computed in, and why (None for collections of older versions)."""
        return self._record().get("precision")

    def attributes(self) -> list[str]:
        if self._attributes is None:
            self._attributes = list(self._record().get("attributes", []))
        return self._attributes

    def _schema_fields(self) -> dict[str, dict]:
        if self._fields is None:  # the schema does not change under us; ask once, not per search
            self._fields = {f["name"]: f for f in self.client.describe_collection(self.collection)["fields"]}
        return self._fields

    def has_field(self, vector_field: VectorField) -> bool:
        return VECTOR_FIELDS[vector_field] in self._schema_fields()

    @property
    def dim(self) -> int:
        return int(self._schema_fields()[VECTOR_FIELDS["image"]].get("params", {}).get("dim", 0))

    # -- data --------------------------------------------------------------------------------
    def count(self) -> int:
        result = self.client.query(self.collection, filter="", output_fields=["count(*)"])
        return int(result[0]["count(*)"])

    def upsert(self, rows: list[dict]) -> int:
        count = int(self.client.upsert(self.collection, rows).get("upsert_count", len(rows)))
        self._merge_facets(rows)
        return count

    def _merge_facets(self, rows: list[dict]) -> None:
        """New values of faceted fields join the cached facets at once (a full scan costs a pass over every row);
        values that the write made unused stay listed until the next ``facets(fresh=True)``."""
        if not self._facets:
            self._facets = None
            return
        for name, values in self._facets.items():
            added = {str(row[name]) for row in rows if name in row} - set(values)
            if added:
                self._facets[name] = sorted({*values, *added})

    def delete(self, ids: Sequence[str]) -> int:
        if not ids:
            return 0
        result = self.client.delete(self.collection, ids=list(ids))
        return len(result) if isinstance(result, list) else int(result.get("delete_count", len(ids)))

    def flush(self) -> None:
        """Seal what was written so Milvus builds the vector index over it; until then searches scan
        unindexed rows (measured with Milvus Lite 3.2.2 at 20k rows: 373 ms per query before, 9-24 ms after)."""
        self.client.flush(self.collection)

    def iter_rows(self, batch_size: int = 2000, *, vectors: bool = True):
        """Every row (pk, vectors unless ``vectors=False``, caption, path, attributes), in batches of lists."""
        fields = ["pk", *self._output_fields()]
        if vectors:
            fields += [VECTOR_FIELDS[f] for f in ("image", "text") if self.has_field(f)]
        iterator = self.client.query_iterator(self.collection, batch_size=batch_size, filter="", output_fields=fields)
        try:
            while batch := iterator.next():
                yield batch
        finally:
            iterator.close()

    def all_ids(self, batch_size: int = 5000) -> list[str]:
        iterator = self.client.query_iterator(self.collection, batch_size=batch_size, filter="", output_fields=["pk"])
        ids: list[str] = []
        try:
            while batch := iterator.next():
                ids.extend(row["pk"] for row in batch)
        finally:
            iterator.close()
        return ids

    # -- search ------------------------------------------------------------------------------
    def _output_fields(self) -> list[str]:
        return ["caption", "path", *self.attributes()]

    def _hit(self, pk: str, score: float, entity: dict) -> Hit:
        attrs = {k: entity.get(k, "") for k in self.attributes()}
        return Hit(str(pk), float(score), entity.get("caption", ""), entity.get("path", ""), attrs)

    def _expression(self, filters: Filters | None) -> str:
        clean = validate_filters(filters, [*self.attributes(), "id"])
        return milvus_filter(clean, {**{a: a for a in self.attributes()}, "id": "pk"})

    def index_type(self, vector_field: VectorField) -> str:
        """The index the collection really has on a vector field (asked once), e.g. HNSW, IVF_FLAT, AUTOINDEX."""
        if vector_field not in self._index_types:
            field = VECTOR_FIELDS[vector_field]
            names = self.client.list_indexes(self.collection, field_name=field)
            described = self.client.describe_index(self.collection, names[0]) if names else {}
            self._index_types[vector_field] = str(described.get("index_type") or "FLAT").upper()
            log.debug("%s: %s index on %s", self.description, self._index_types[vector_field], field)
        return self._index_types[vector_field]

    def search_params(self, vector_field: VectorField, top_k: int) -> dict:
        """Search parameters for the collection's actual index: HNSW gets ef (never below top_k, which Milvus
        requires), IVF gets nprobe; FLAT and AUTOINDEX take none (Lite's AUTOINDEX exposes no knobs)."""
        kind = self.index_type(vector_field)
        if kind.startswith("HNSW"):
            params = {"ef": max(self.target.ef, top_k)}
        elif kind.startswith("IVF"):
            params = {"nprobe": self.target.nprobe}
        else:
            params = {}
        return {"metric_type": "IP", "params": params}

    def search(
        self, queries: np.ndarray, vector_field: VectorField, top_k: int, filters: Filters | None = None
    ) -> list[list[Hit]]:
        queries = query_matrix(self, queries, vector_field)
        params = self.search_params(vector_field, top_k)
        results = self.client.search(
            self.collection,
            data=queries.tolist(),
            anns_field=VECTOR_FIELDS[vector_field],
            limit=top_k,
            filter=self._expression(filters),
            output_fields=self._output_fields(),
            search_params=params,
        )
        return [
            [self._hit(h["pk"] if "pk" in h else h["id"], h["distance"], h["entity"]) for h in hits] for hits in results
        ]

    def _query_ids(self, ids: Sequence[str], fields: list[str], *, strong: bool = False) -> dict[str, dict]:
        found: dict[str, dict] = {}
        # strong: what a write just did is seen (a Milvus server otherwise reads at its bounded staleness)
        options = {"consistency_level": "Strong"} if strong else {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            expr = f"pk in [{', '.join(milvus_literal(i) for i in chunk)}]"
            for row in self.client.query(self.collection, filter=expr, output_fields=fields, **options):
                found[str(row["pk"])] = row
        return found

    def existing_ids(self, ids: Sequence[str]) -> set[str]:
        """Which of ``ids`` the collection holds, read with strong consistency."""
        return set(self._query_ids(list(ids), ["pk"], strong=True)) if ids else set()

    def full_rows(self, ids: Sequence[str], *, vectors: bool = True) -> dict[str, dict]:
        """Whole rows by id (vectors too unless ``vectors=False``), as written: what a patch writes back."""
        fields = self._output_fields()
        if vectors:
            fields = fields + [VECTOR_FIELDS[f] for f in ("image", "text") if self.has_field(f)]
        rows = self._query_ids(list(ids), fields, strong=True)
        for row in rows.values():
            for name in VECTOR_FIELDS.values():
                if name in row:
                    row[name] = [float(x) for x in row[name]]
        return rows

    def present_values(self, name: str, values: Sequence[str]) -> set[str]:
        """Which of ``values`` some item holds in the attribute ``name`` (for a value the cached facets lack)."""
        if name not in self.attributes() or not FIELD_NAME.fullmatch(name) or not values:
            return set()
        expr = f"{name} in [{', '.join(milvus_literal(v) for v in values)}]"
        rows = self.client.query(self.collection, filter=expr, output_fields=[name], limit=len(values) * 16)
        return {str(row[name]) for row in rows} & set(values)

    def vectors(self, ids: Sequence[str], vector_field: VectorField) -> np.ndarray:
        field = VECTOR_FIELDS[vector_field]
        found = self._query_ids(list(ids), [field])
        return np.asarray([found[i][field] for i in ids], dtype=np.float32)

    def captions(self, limit: int) -> list[str]:
        """Up to ``limit`` captions (the first ones the collection returns: a sample of the catalogue)."""
        iterator = self.client.query_iterator(self.collection, batch_size=5000, filter="", output_fields=["caption"])
        captions: list[str] = []
        try:
            while len(captions) < limit and (batch := iterator.next()):
                captions.extend(str(row.get("caption", "")) for row in batch)
        finally:
            iterator.close()
        return captions[:limit]

    def some_ids(self, n: int) -> list[str]:
        return [str(row["pk"]) for row in self.client.query(self.collection, filter="", output_fields=["pk"], limit=n)]

    def get(self, ids: Sequence[str]) -> list[Hit]:
        found = self._query_ids(list(ids), self._output_fields())
        return [self._hit(i, 0.0, found[i]) for i in ids if i in found]

    def facets(self, limit: int = 200, *, fresh: bool = False) -> dict[str, list[str]]:
        """Each attribute with few distinct values -> its values; cached (``fresh``: scan the rows again)."""
        if self._facets is None or fresh:
            values: dict[str, set[str]] = {a: set() for a in self.attributes()}
            rows = 0
            if values:
                iterator = self.client.query_iterator(
                    self.collection, batch_size=5000, filter="", output_fields=list(values)
                )
                try:
                    while batch := iterator.next():
                        rows += len(batch)
                        for row in batch:
                            for name, seen in values.items():
                                if len(seen) <= limit:
                                    seen.add(str(row.get(name, "")))
                finally:
                    iterator.close()
            # a field whose every value is unique (an id) is not a facet
            self._facets = {k: sorted(v) for k, v in values.items() if 1 < len(v) <= limit and len(v) < rows}
        return {name: list(values) for name, values in self._facets.items()}  # a copy: writes merge into ours

    def close(self) -> None:
        self.client.close()


__all__ = [
    "DEFAULT_COLLECTION",
    "DEFAULT_DB",
    "VECTOR_FIELDS",
    "MilvusStore",
    "MilvusTarget",  # where the collection lives (store/milvus_connection.py), re-exported for callers
    "check_server_version",
]
