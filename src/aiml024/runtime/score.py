"""Batch scoring: a file of rows in, a Parquet file of predictions out, in bounded memory.

`score_file(bundle_dir, input, output)` reads the input (Parquet, or CSV optionally compressed,
chosen by extension; a local path or any fsspec URI) in chunks of `chunk_rows`, predicts each
chunk with the bundle exactly as `Bundle.predict` does, and appends it to the output Parquet
file as one row group. The output's columns: the bundle's id column when the input has it
(else `row`, the 0-based row number), `label`, `score`, and for classification one
`proba_<class>` per class. The file appears only once complete (written beside it, then
moved), and an existing output is refused unless `overwrite`.

In a cluster (the compiled batch Workflow, aiml024.compiler.batch):
    python -m aiml024.runtime.score --model-uri URI --sha256 HEX --input URI --output URI
downloads the bundle (as the model server does), refuses it unless its digest is HEX, scores,
and prints progress as JSON lines on stdout. Exit 2 with `error: <message>` on bad input
(ScoreError), 1 on any other failure.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fsspec
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from . import emit_event
from .bundle import META_FILE, Bundle, bundle_digest, load_bundle
from .errors import StepError

DEFAULT_CHUNK_ROWS = 200_000
ROW_COLUMN = "row"  # the output's key when the bundle has no id column (or the input lacks it)
PARQUET_SUFFIXES = (".parquet", ".pq")
CSV_SUFFIXES = (".csv",)
COMPRESSION_SUFFIXES = (".gz", ".bz2", ".xz", ".zst")

Progress = Callable[[int, "int | None"], None]  # (rows done, total rows when known)


class ScoreError(StepError):
    """Bad input, output or bundle for batch scoring; the message says which and why."""


@dataclass(frozen=True)
class ScoreSummary:
    rows: int
    seconds: float
    output: str
    columns: list[str]

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else float("inf")


# --- formats ----------------------------------------------------------------------------------


def input_format(uri: str) -> str:
    """`parquet` or `csv`, from the name: .parquet/.pq, .csv (optionally .gz, .bz2, .xz, .zst)."""
    name = uri.lower()
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    bare = next((name[: -len(s)] for s in COMPRESSION_SUFFIXES if name.endswith(s)), name)
    if bare.endswith(CSV_SUFFIXES):
        return "csv"
    raise ScoreError(
        f"cannot tell the format of input {uri}: name it .parquet, .pq, .csv or .csv.gz"
    )


def check_output(uri: str, overwrite: bool = False) -> None:
    """Refuse an output not named .parquet/.pq, or one that exists unless `overwrite`."""
    if not uri.lower().endswith(PARQUET_SUFFIXES):
        raise ScoreError(f"output {uri}: the output is Parquet; name it .parquet or .pq")
    fs, path = _fs(uri, "output")
    if not overwrite and fs.exists(path):
        raise ScoreError(f"output {uri} already exists; remove it or pass --overwrite")


def _fs(uri: str, what: str) -> tuple[fsspec.AbstractFileSystem, str]:
    try:
        fs, path = fsspec.core.url_to_fs(uri)
    except (ImportError, ValueError) as error:
        raise ScoreError(f"cannot open {what} {uri}: {error}") from None
    return fs, str(path)


# --- the bundle -------------------------------------------------------------------------------


def fetch_bundle(uri: str) -> tuple[Path, Path | None]:
    """A local directory holding the bundle at `uri` (a path, file:// or any fsspec URL), and
    the temporary directory to remove afterwards for a remote one (as the model server does)."""
    fs, path = _fs(uri, "bundle")
    if "file" in fs.protocol or "local" in fs.protocol:
        return Path(path), None
    target = Path(tempfile.mkdtemp(prefix="aiml024-bundle-"))
    try:
        fs.get(path.rstrip("/") + "/", str(target), recursive=True)
    except Exception:
        shutil.rmtree(target, ignore_errors=True)
        raise
    return target, target


@contextmanager
def verified_bundle(uri: str, sha256: str) -> Iterator[Path]:
    """The bundle at `uri`, downloaded when remote, refused unless its digest is `sha256`."""
    directory, tmp = fetch_bundle(uri)
    try:
        verify_bundle(directory, sha256, uri)
        yield directory
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def verify_bundle(directory: Path, sha256: str, uri: str | None = None) -> None:
    where = uri or str(directory)
    if not (directory / META_FILE).is_file():
        raise ScoreError(f"no model bundle at {where} (no {META_FILE})")
    found = bundle_digest(directory)
    if found != sha256:
        raise ScoreError(
            f"bundle digest mismatch at {where}: the Model records sha256 {sha256}, the bundle's "
            f"files give {found}; refusing to score"
        )


# --- reading ----------------------------------------------------------------------------------


class _Reader:
    """The input's column names, its row count when known, and its chunks as DataFrames."""

    def __init__(self, uri: str, bundle: Bundle, chunk_rows: int):
        self.uri, self.bundle, self.chunk_rows = uri, bundle, chunk_rows
        self.format = input_format(uri)
        self.fs, self.path = _fs(uri, "input")
        try:
            if not self.fs.isfile(self.path):
                raise ScoreError(f"cannot read input {uri}: no such file")
        except ScoreError:
            raise
        except Exception as error:
            raise ScoreError(f"cannot read input {uri}: {_reason(error)}") from None
        self.total: int | None = None
        self.id_type: pa.DataType = pa.string()
        try:
            self.columns = self._open()
        except ScoreError:
            raise
        except Exception as error:  # parser, decompression, Arrow errors alike
            raise ScoreError(
                f"cannot read input {uri} as {self.format}: {_reason(error)}"
            ) from None
        known = bundle.known_columns()
        unknown = [c for c in self.columns if c not in known]
        if unknown:
            expected = ", ".join(c.name for c in bundle.meta.columns)
            raise ScoreError(
                f"input {uri}: unknown column{'s' if len(unknown) > 1 else ''} "
                f"{', '.join(repr(c) for c in unknown)} (the model expects: {expected})"
            )
        id_column = bundle.meta.id_column
        self.id_column = id_column if id_column and id_column in self.columns else None
        # Read only what the model or the output uses: not the target, not ignored columns.
        wanted = {c.name for c in bundle.meta.columns} | {self.id_column}
        self.read_columns = [c for c in self.columns if c in wanted]

    def _open(self) -> list[str]:
        if self.format == "parquet":
            with self.fs.open(self.path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                schema, self.total = parquet.schema_arrow, parquet.metadata.num_rows
            id_column = self.bundle.meta.id_column
            if id_column and id_column in schema.names:
                self.id_type = schema.field(id_column).type
            return [str(n) for n in schema.names]
        with self.fs.open(self.path, "rb", compression="infer") as handle:
            header = pd.read_csv(handle, nrows=0)
        return [str(c) for c in header.columns]

    def chunks(self) -> Iterator[tuple[pd.DataFrame, pa.Array | None]]:
        """Each chunk as a frame, with its id column as Arrow values (None without one)."""
        try:
            yield from self._chunks()
        except ScoreError:
            raise
        except Exception as error:
            raise ScoreError(
                f"cannot read input {self.uri} as {self.format}: {_reason(error)}"
            ) from None

    def _chunks(self) -> Iterator[tuple[pd.DataFrame, pa.Array | None]]:
        if self.format == "parquet":
            with self.fs.open(self.path, "rb") as handle:
                parquet = pq.ParquetFile(handle)
                for batch in parquet.iter_batches(
                    batch_size=self.chunk_rows, columns=self.read_columns
                ):
                    ids = batch.column(self.id_column) if self.id_column else None
                    yield batch.to_pandas(), ids
            return
        # Ids stay as written (leading zeros, no int/float flip between chunks).
        dtype = {self.id_column: str} if self.id_column else None
        with self.fs.open(self.path, "rb", compression="infer") as handle:
            reader = pd.read_csv(
                handle, chunksize=self.chunk_rows, usecols=self.read_columns, dtype=dtype
            )
            for chunk in reader:
                ids = None
                if self.id_column:
                    ids = pa.array(chunk[self.id_column].to_numpy(dtype=object), pa.string(),
                                   from_pandas=True)  # fmt: skip
                yield chunk, ids


def _reason(error: BaseException) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text or type(error).__name__


# --- predicting -------------------------------------------------------------------------------


def _label_type(bundle: Bundle) -> pa.DataType:
    meta = bundle.meta
    if meta.task == "regression":
        return pa.float64()
    classes = list(meta.classes)
    if classes and all(isinstance(c, bool) for c in classes):
        return pa.bool_()
    if classes and all(isinstance(c, int) and not isinstance(c, bool) for c in classes):
        return pa.int64()
    if classes and all(isinstance(c, (int, float)) and not isinstance(c, bool) for c in classes):
        return pa.float64()
    return pa.string()


def proba_column(cls: Any) -> str:
    return f"proba_{cls}"


def output_schema(bundle: Bundle, key: str, key_type: pa.DataType) -> pa.Schema:
    fields = [pa.field(key, key_type), pa.field("label", _label_type(bundle))]
    fields.append(pa.field("score", pa.float64()))
    if bundle.meta.task == "classification":
        fields += [pa.field(proba_column(c), pa.float64()) for c in bundle.meta.classes]
    return pa.schema(fields)


def predict_chunk(bundle: Bundle, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """label, score (and proba_<class>) for one chunk: the same values as `Bundle.predict`
    and `Bundle.predict_proba`, from one pass of the model."""
    X = bundle.frame(frame)
    meta = bundle.meta
    if meta.task == "regression":
        values = np.asarray(bundle.pipeline.predict(X), dtype=float)
        return {"label": values, "score": values}
    # Bundle.predict's own rule (label and score from the class probabilities), computed once
    # here instead of twice by calling predict and predict_proba.
    proba = bundle._proba(X)
    classes = list(meta.classes)
    if len(classes) == 2:
        score = proba[:, 1]
        labels = np.where(score >= meta.threshold, classes[1], classes[0])
    else:
        score = proba.max(axis=1)
        labels = np.asarray(classes, dtype=object)[proba.argmax(axis=1)]
    out = {"label": labels, "score": score}
    for index, cls in enumerate(classes):
        out[proba_column(cls)] = proba[:, index]
    return out


def _check_numeric_values(bundle: Bundle, frame: pd.DataFrame, first_row: int) -> None:
    """Refuse text in a numeric column, which the model would silently read as missing (only
    columns the reader could not type as numbers are looked at)."""
    for column in bundle.meta.columns:
        if column.dtype != "numeric" or column.name not in frame:
            continue
        values = frame[column.name]
        if pd.api.types.is_numeric_dtype(values.dtype) or pd.api.types.is_bool_dtype(values.dtype):
            continue
        bad = values.notna() & pd.to_numeric(values, errors="coerce").isna()
        if bad.any():
            position = int(np.flatnonzero(bad.to_numpy())[0])
            raise ScoreError(
                f"column '{column.name}' is numeric; row {first_row + position} has "
                f"{values.iloc[position]!r}"
            )


# --- writing ----------------------------------------------------------------------------------


def _partial_path(path: str) -> str:
    head, _, name = path.rpartition("/")
    partial = f".{name}.partial-{os.getpid()}"
    return f"{head}/{partial}" if head else partial


def score_file(
    bundle_dir: Path | str,
    input: str | Path,
    output: str | Path,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    progress: Progress | None = None,
    overwrite: bool = False,
    sha256: str | None = None,
) -> ScoreSummary:
    """Score every row of `input` with the bundle in `bundle_dir` into the Parquet `output`
    (paths or fsspec URIs); with `sha256`, refuse a bundle whose digest differs."""
    started = time.perf_counter()
    if chunk_rows < 1:
        raise ScoreError(f"chunk_rows must be at least 1, not {chunk_rows}")
    bundle_dir, input, output = Path(bundle_dir), str(input), str(output)
    if sha256 is not None:
        verify_bundle(bundle_dir, sha256)
    check_output(output, overwrite)
    bundle = load_bundle(bundle_dir)
    reader = _Reader(input, bundle, chunk_rows)
    out_fs, out_path = _fs(output, "output")
    key = reader.id_column or ROW_COLUMN
    schema = output_schema(bundle, key, reader.id_type if reader.id_column else pa.int64())
    parent = out_path.rpartition("/")[0]
    if parent:
        out_fs.makedirs(parent, exist_ok=True)
    partial = _partial_path(out_path)
    done = 0
    if progress is not None:
        progress(0, reader.total)
    try:
        with out_fs.open(partial, "wb") as handle, pq.ParquetWriter(handle, schema) as writer:
            for chunk, ids in reader.chunks():
                if not len(chunk):
                    continue  # an empty file: the writer still writes the schema
                _check_numeric_values(bundle, chunk, done)
                try:
                    predicted = predict_chunk(bundle, chunk)
                except (ValueError, TypeError) as error:
                    raise ScoreError(
                        f"cannot score rows {done}-{done + len(chunk) - 1} of {input}: {error}"
                    ) from None
                if ids is None:
                    ids = pa.array(np.arange(done, done + len(chunk), dtype=np.int64))
                arrays = [ids, *(_array(predicted[f.name], f.type) for f in list(schema)[1:])]
                writer.write_table(pa.Table.from_arrays(arrays, schema=schema))
                done += len(chunk)
                if progress is not None:
                    progress(done, reader.total)
        if overwrite and out_fs.exists(out_path):
            out_fs.rm(out_path)
        out_fs.mv(partial, out_path)
    except BaseException:
        try:
            if out_fs.exists(partial):
                out_fs.rm(partial)
        except Exception:  # pragma: no cover - cleanup is best effort
            pass
        raise
    return ScoreSummary(done, time.perf_counter() - started, output, schema.names)


def _array(values: np.ndarray, type_: pa.DataType) -> pa.Array:
    if pa.types.is_string(type_) and values.dtype == object:
        values = np.asarray([None if v is None else str(v) for v in values], dtype=object)
    return pa.array(values, type=type_, from_pandas=True)


# --- python -m aiml024.runtime.score --------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m aiml024.runtime.score")
    parser.add_argument("--model-uri", required=True, help="the bundle: a path or fsspec URI")
    parser.add_argument("--sha256", required=True, help="the digest the Model records")
    parser.add_argument("--input", required=True, help="Parquet or CSV (.csv.gz ok), path or URI")
    parser.add_argument("--output", required=True, help="the Parquet file to write")
    parser.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS)
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)

    def report(done: int, total: int | None) -> None:
        emit_event({"event": "score", "rows": done, "total": total})

    try:
        with verified_bundle(args.model_uri, args.sha256) as directory:
            summary = score_file(
                directory, args.input, args.output, args.chunk_rows, report, args.overwrite
            )
    except StepError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    emit_event({
        "event": "done", "rows": summary.rows, "seconds": round(summary.seconds, 3),
        "rowsPerSecond": round(summary.rows_per_second, 1), "output": summary.output,
    })  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
