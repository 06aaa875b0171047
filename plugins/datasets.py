"""Built-in corpora of data-set files, one document per record: JSON Lines (`jsonl`), Parquet
(`parquet`) and Hugging Face data sets on this machine (`hf`).

`toolkit.data.tokens` reads a corpus several times per run, so these stream: a line, a record
batch or a batch of rows at a time, never a whole file. `hf` refuses hub names: nothing
downloads. pyarrow and datasets are optional (`pip install -e ".[data]"`), imported only when
their corpus is built. Finding files (a file, a folder or a glob) is shared with
plugins/corpora.py. Deliberately not here: compressed files, cleaning or deduplicating text.
"""

from __future__ import annotations

import importlib
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

from plugins.corpora import _resolve, _unreadable
from toolkit.api.hookspecs import hookimpl
from toolkit.data.offline import offline_datasets
from toolkit.errors import DataError, one_line

JSONL_SUFFIXES = (".jsonl", ".jsonlines", ".ndjson")
# The `datasets` loader for each kind of data file the `hf` corpus takes.
HF_BUILDERS = {
    ".json": "json",
    ".jsonl": "json",
    ".parquet": "parquet",
    ".csv": "csv",
    ".txt": "text",  # one row per line
}
# Rows of a Parquet or Arrow batch turned into Python strings at once: a batch, not the file, is
# ever in memory as str (pyarrow itself holds at most a row group's column: the writer's choice).
BATCH_ROWS = 1024
_T = TypeVar("_T")


class JsonlCorpus:
    """JSON Lines, one document per record: the string `field` of the object on each line of a
    file, of every .jsonl/.jsonlines/.ndjson file under a folder, or of a glob's files.

    Blank lines are skipped. A document's name is its record's `name_field` (a string or an
    integer), else `<file>:<line>`.
    """

    def __init__(self, *, path: str, field: str = "text", name_field: str | None = None) -> None:
        self.path, self.field, self.name_field = path, field, name_field
        self.files = _resolve(path, "jsonl", JSONL_SUFFIXES)
        self.description = f"jsonl: field {field!r} of {len(self.files)} file(s) from {path}"

    def documents(self) -> Iterator[tuple[str, str]]:
        for file in self.files:
            for n, line in _lines(file):
                where = f"{str(file)!r} line {n}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as exc:
                    raise DataError(
                        f"corpus 'jsonl': {where} is not JSON ({exc.msg.removesuffix(' at')} at column {exc.colno}); "
                        f"fix or delete the line"
                    ) from None
                if not isinstance(record, dict):
                    raise DataError(
                        f"corpus 'jsonl': {where} holds {_kind(record)}, not a JSON object; "
                        f'each line must hold one object, such as {{"{self.field}": "..."}}'
                    )
                text = _text(_field(record, self.field, "field", where), self.field, "jsonl", where)
                name = f"{file}:{n}"
                if self.name_field is not None:
                    value = _field(record, self.name_field, "name_field", where)
                    name = _name(value, self.name_field, "jsonl", where)
                yield name, text


class ParquetCorpus:
    """Parquet: the string column `field` of a file, of every .parquet file under a folder, or of
    a glob's files, one document per row, read a record batch (BATCH_ROWS rows) at a time.

    A document's name is the row's `name_field` (a string or integer column), else
    `<file>:<row>`, rows counted from 0.
    """

    def __init__(self, *, path: str, field: str = "text", name_field: str | None = None) -> None:
        self._pq = _require("pyarrow.parquet", "parquet")
        self.path, self.field, self.name_field = path, field, name_field
        self.files = _resolve(path, "parquet", (".parquet",))
        rows = 0
        for file in self.files:  # the footers only: a wrong column fails here, before any text
            with self._open(file) as reader:
                rows += reader.metadata.num_rows
        self.description = (
            f"parquet: {rows:,} rows of column {field!r} in {len(self.files)} file(s) from {path}"
        )

    def _open(self, file: Path) -> Any:
        """The file's ParquetFile, its columns checked."""
        pa = _require("pyarrow", "parquet")
        try:
            reader = self._pq.ParquetFile(file)
        except (OSError, pa.ArrowException) as exc:
            raise DataError(
                f"corpus 'parquet': cannot read {str(file)!r} as Parquet: {one_line(exc, 200)}"
            ) from None
        schema = reader.schema_arrow
        for option, column, kinds in (
            ("field", self.field, "a string"),
            ("name_field", self.name_field, "a string or integer"),
        ):
            if column is None:
                continue
            if column not in schema.names:
                raise DataError(
                    f"corpus 'parquet': {str(file)!r} has no column {column!r} (it has: "
                    f"{', '.join(schema.names)}); set the corpus's `{option}` option to one of them"
                )
            kind = schema.field(column).type
            if not (_is_string(pa, kind) or (option == "name_field" and pa.types.is_integer(kind))):
                raise DataError(
                    f"corpus 'parquet': column {column!r} of {str(file)!r} holds {kind}, not "
                    f"{kinds}; set `{option}` to {kinds} column"
                )
        return reader

    def documents(self) -> Iterator[tuple[str, str]]:
        pa = _require("pyarrow", "parquet")
        columns = list(dict.fromkeys(c for c in (self.field, self.name_field) if c is not None))
        errors = (OSError, pa.ArrowException)
        for file in self.files:
            with self._open(file) as reader:
                batches = reader.iter_batches(batch_size=BATCH_ROWS, columns=columns)
                row = 0
                what = f"corpus 'parquet': cannot read {str(file)!r}"
                for batch in _guarded(batches, what, errors):
                    texts = batch.column(columns.index(self.field)).to_pylist()
                    names = None
                    if self.name_field is not None:
                        names = batch.column(columns.index(self.name_field)).to_pylist()
                    for i, text in enumerate(texts):
                        where = f"row {row + i} of {str(file)!r}"
                        name = f"{file}:{row + i}"
                        if names is not None:
                            name = _name(names[i], self.name_field, "parquet", where)
                        yield name, _text(text, self.field, "parquet", where)
                    row += len(texts)


class HFCorpus:
    """A Hugging Face data set on this machine: a folder written by `save_to_disk` (its `split`
    when it holds several), or data files `datasets` reads (.json/.jsonl, .parquet, .csv, .txt
    with one row per line) as a file, a folder or a glob. One document per row: its string
    `field`, named by `name_field` or `<path>:<row>`, rows counted from 0.

    Never downloads (offline mode): a hub name is an error saying how to make the data local.
    Rows are read BATCH_ROWS at a time from the memory-mapped Arrow files, or streamed from the
    data files (not converted to a cached copy first).
    """

    def __init__(
        self,
        *,
        path: str,
        field: str = "text",
        name_field: str | None = None,
        split: str = "train",
    ) -> None:
        self.path, self.field, self.name_field, self.split = path, field, name_field, split
        datasets = _offline_datasets()
        expanded = Path(os.path.expanduser(path))
        if not expanded.exists() and not any(c in path for c in "*?["):
            raise DataError(
                f"corpus 'hf': {path!r} is not a file or folder on this machine, and hf never "
                f"downloads: the data must be local. On a machine with network, run "
                f"datasets.load_dataset({path!r}).save_to_disk('DIR'), copy DIR here and "
                f"give path = 'DIR'"
            )
        if (expanded / "dataset_dict.json").is_file() or (expanded / "state.json").is_file():
            data = self._call(datasets.load_from_disk, str(expanded))
            if isinstance(data, datasets.DatasetDict):
                if split not in data:
                    raise DataError(
                        f"corpus 'hf': {path!r} has no split {split!r} (it has: "
                        f"{', '.join(data)}); set the corpus's `split` option to one of them"
                    )
                data = data[split]
                size = f"{data.num_rows:,} row(s) of split {split!r}"
            else:
                size = f"{data.num_rows:,} row(s)"
        else:
            files = _resolve(path, "hf", tuple(HF_BUILDERS))
            builders = sorted({HF_BUILDERS.get(f.suffix.lower()) or "?" for f in files})
            if len(builders) > 1 or "?" in builders:
                kinds = ", ".join(sorted({f.suffix or f.name for f in files}))
                raise DataError(
                    f"corpus 'hf': {path!r} names {kinds} file(s); give files of one kind "
                    f"({', '.join(HF_BUILDERS)}) or a folder written by save_to_disk"
                )
            data = self._call(
                datasets.load_dataset,
                builders[0],
                data_files=[str(f) for f in files],
                split="train",
                streaming=True,
            )
            size = f"{len(files)} {builders[0]} file(s)"
        self._data = data
        self._columns = [c for c in (field, name_field) if c is not None]
        columns = data.column_names  # None for some streamed files until they are read
        if columns is not None:
            self._check_columns(columns)
            self._data = data.select_columns(list(dict.fromkeys(self._columns)))
        self.description = f"hf: field {field!r} of {size} from {path}"

    def _call(self, load: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return load(*args, **kwargs)
        except Exception as exc:  # datasets' and pyarrow's many error types: all unreadable data
            raise DataError(
                f"corpus 'hf': cannot load {self.path!r}: {one_line(exc, 300)}"
            ) from None

    def _check_columns(self, columns: list[str]) -> None:
        for option, column in zip(("field", "name_field"), self._columns, strict=False):
            if column not in columns:
                raise DataError(
                    f"corpus 'hf': {self.path!r} has no column {column!r} (it has: "
                    f"{', '.join(columns)}); set the corpus's `{option}` option to one of them"
                )

    def documents(self) -> Iterator[tuple[str, str]]:
        row = 0
        batches = self._data.iter(batch_size=BATCH_ROWS)
        for batch in _guarded(batches, f"corpus 'hf': cannot read {self.path!r}", (Exception,)):
            self._check_columns(list(batch))
            texts = batch[self.field]
            names = batch[self.name_field] if self.name_field is not None else None
            for i, text in enumerate(texts):
                where = f"row {row + i} of {self.path!r}"
                name = f"{self.path}:{row + i}"
                if names is not None:
                    name = _name(names[i], self.name_field, "hf", where)
                yield name, _text(text, self.field, "hf", where)
            row += len(texts)


def _lines(file: Path) -> Iterator[tuple[int, str]]:
    """(line number from 1, text) of each non-blank line of a UTF-8 file, one line at a time."""
    try:
        handle = file.open("rb")
    except OSError as exc:
        raise _unreadable(file, "jsonl", exc) from None
    with handle:
        for n, raw in enumerate(handle, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                fix = "re-encode it as UTF-8"
                if n == 1 and raw.startswith(b"\x1f\x8b"):
                    fix = "it is gzip-compressed: gunzip it first"
                raise DataError(
                    f"corpus 'jsonl': {str(file)!r} line {n} is not valid UTF-8 (bad byte at "
                    f"offset {exc.start} of the line); {fix}"
                ) from None
            if n == 1:
                line = line.removeprefix("\ufeff")
            if line.strip():
                yield n, line


def _field(record: dict[str, Any], field: str, option: str, where: str) -> Any:
    """record[field] of a JSON Lines record; a missing field names the fields there are."""
    if field not in record:
        raise DataError(
            f"corpus 'jsonl': {where} has no field {field!r} (it has: "
            f"{', '.join(record) or 'none'}); set the corpus's `{option}` option to one of them"
        )
    return record[field]


def _text(value: Any, field: str, corpus: str, where: str) -> str:
    """A record's text, which must be a string."""
    if not isinstance(value, str):
        raise DataError(
            f"corpus {corpus!r}: field {field!r} of {where} is {_kind(value)}, not a string; "
            f"fix the record, or set `field` to the one holding the text"
        )
    return value


def _name(value: Any, field: str, corpus: str, where: str) -> str:
    """A record's name: a string, or an integer such as a row id."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise DataError(
        f"corpus {corpus!r}: name field {field!r} of {where} is {_kind(value)}, not a string or "
        f"an integer; fix the record, or leave `name_field` unset"
    )


def _kind(value: Any) -> str:
    """A value's JSON type, for messages: 3 -> 'a number', None -> 'null'."""
    kinds = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    kinds |= {int: "a number", float: "a number", type(None): "null"}
    return kinds.get(type(value), f"a {type(value).__name__}")


def _is_string(pa: Any, kind: Any) -> bool:
    checks = ("is_string", "is_large_string", "is_string_view")  # string_view: pyarrow >= 16
    return any(getattr(pa.types, check, lambda _: False)(kind) for check in checks)


def _guarded(items: Iterator[_T], what: str, errors: tuple[type[Exception], ...]) -> Iterator[_T]:
    """A reader's items, any of `errors` it raises making one turned into a one-line DataError
    that starts with `what`."""
    while True:
        try:
            item = next(items)
        except StopIteration:
            return
        except errors as exc:
            raise DataError(f"{what}: {one_line(exc, 300)}") from None
        yield item


def _require(module: str, corpus: str) -> Any:
    """An optional dependency, imported on first use (pyarrow and datasets take a second)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        package = module.split(".")[0]
        raise DataError(f'corpus {corpus!r} needs {package}: pip install -e ".[data]"') from None


def _offline_datasets() -> Any:
    """The datasets library in offline mode: it must never reach the hub (or wait for it)."""
    try:
        return offline_datasets()
    except ImportError:
        raise DataError("corpus 'hf' needs datasets: pip install -e \".[data]\"") from None


@hookimpl
def register_components(register) -> None:
    register(
        "corpus",
        "jsonl",
        JsonlCorpus,
        description="JSON Lines: one record's `field` per document (file, folder or glob)",
    )
    register(
        "corpus",
        "parquet",
        ParquetCorpus,
        description="Parquet: a string column, one row per document (needs pyarrow)",
    )
    register(
        "corpus",
        "hf",
        HFCorpus,
        description="a local Hugging Face data set or data files, never downloaded (needs datasets)",
    )
