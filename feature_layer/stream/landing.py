"""The event log: every event the stream consumed, landed where the dbt source reads it.

For a file source (dbt-duckdb ``external_location`` with a glob, ``data/raw/transactions*.parquet``)
each micro-batch's new events become one Parquet file in the glob's folder, named to match it
(``transactions.stream-<first id>-<last id>.parquet``), with the source files' own schema. The
file is written under a temporary name the glob does not match, fsynced, then renamed: a crash
leaves either the whole file or none, so the next ``dbt build`` reads exactly the events the
stream saw. De-duplication by event id happens before (the consumer lands only events its
history does not hold yet).
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from feature_layer.errors import StreamError


class FileEventLog:
    """Parquet files matching the source's glob (see the module docstring)."""

    def __init__(self, pattern: str | Path, project_dir: Path | None = None) -> None:
        path = Path(pattern)
        if not path.is_absolute() and project_dir is not None:
            path = project_dir / path
        self.pattern = str(path)
        self.folder = path.parent
        name = path.name
        if "*" not in name or any(ch in str(path.parent) for ch in "*?["):
            raise StreamError(
                f"The stream's source reads {self.pattern}, one file, so events landed beside it would never be "
                "read by `dbt build`.",
                fix="make the source's external_location a glob in its file name, e.g. "
                "`data/raw/transactions*.parquet` (meta.external_location in sources.yml).",
            )
        self._head, _, self._tail = name.partition("*")
        for stale in self.folder.glob(f".{self._head}.stream-*.tmp"):  # a crash mid-write: never renamed
            stale.unlink(missing_ok=True)

    def files(self) -> list[str]:
        return sorted(glob.glob(self.pattern))

    def schema(self) -> pa.Schema:
        """The source files' schema (the first file's): what events are typed as."""
        files = self.files()
        if not files:
            raise StreamError(f"No file matches the stream's source {self.pattern}.",
                              fix="generate or load the source data first (`feature-layer demo-data`).")
        schema = pq.read_schema(files[0])
        return pa.schema([pa.field(f.name, f.type) for f in schema])

    def row_count(self) -> int:
        """Rows in the event log (from the Parquet footers): does it fit in the stream's history buffer?"""
        return sum(pq.read_metadata(f).num_rows for f in self.files())

    def history(self, keys: pa.Table | None) -> pa.Table:
        """Every landed source row whose join keys are in ``keys`` (columns named like the source's),
        typed like :meth:`schema`; ``keys=None``: every row (the stream's start-up load)."""
        import duckdb

        schema = self.schema()
        if keys is not None and keys.num_rows == 0:
            return schema.empty_table()
        con = duckdb.connect(":memory:")
        try:
            con.execute("SET threads = 1")
            pattern = self.pattern.replace("'", "''")
            sql = f"SELECT s.* FROM read_parquet('{pattern}') AS s"
            if keys is not None:
                con.register("__fl_keys", keys)
                on = " AND ".join(f's."{k}" = k."{k}"' for k in keys.column_names)
                sql += f" SEMI JOIN __fl_keys AS k ON {on}"
            table = con.sql(sql).to_arrow_table()
        finally:
            con.close()
        return table.select(schema.names).cast(schema)

    def file_for(self, first_id: str, last_id: str) -> Path:
        safe = re.sub(r"[^0-9A-Za-z_-]", "_", f"{first_id}-{last_id}")
        path = self.folder / f"{self._head}.stream-{safe}{self._tail}"
        if not fnmatch.fnmatch(path.name, Path(self.pattern).name):
            raise StreamError(f"Landed file {path.name} would not match {self.pattern}.",
                              fix="use a glob of the form <name>*<suffix> in external_location.")
        return path

    def append(self, table: pa.Table, first_id: str, last_id: str) -> Path | None:
        """Land ``table`` (already de-duplicated) atomically; None when it is empty."""
        if table.num_rows == 0:
            return None
        target = self.file_for(first_id, last_id)
        if target.exists():  # the same read landed before a crash: never twice
            target = target.with_name(target.name.replace(".stream-", f".stream-{uuid.uuid4().hex[:8]}-", 1))
        temporary = self.folder / f".{target.name}.{uuid.uuid4().hex[:8]}.tmp"
        try:
            with open(temporary, "wb") as handle:
                pq.write_table(table, handle, compression="zstd")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temporary, target)
            _fsync_dir(self.folder)
        except OSError as exc:
            temporary.unlink(missing_ok=True)
            raise StreamError(f"Could not land {table.num_rows} events in {target}: {exc}.",
                              fix=f"free space or fix permissions in {self.folder}; the events stay unacknowledged "
                              "in the stream and are landed on the next try.") from exc
        return target


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


__all__ = ["FileEventLog"]
