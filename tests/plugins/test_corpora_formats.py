"""The data-set corpora (jsonl, parquet, hf) and python-stdlib: each loads through the registry
and yields its documents in order, its tokens (bytes tokenizer) spell its texts, it reads a line
or a batch at a time, and every malformed input is a one-line DataError naming the file and the
line, row or column. The parquet and hf cases skip without pyarrow or datasets."""

from __future__ import annotations

import gzip
import itertools
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from plugins import corpora
from plugins import datasets as dataset_corpora
from toolkit.api.manager import Plugins
from toolkit.data.tokens import clear_memo, load_tokens
from toolkit.errors import DataError

REGISTRY = Plugins(autoload=False).registry
TEXTS = ["first document\n", "ünïcödé ✓ 日本", "", "third\twith tabs"]


def build(name: str, **options: Any) -> Any:
    return REGISTRY.build("corpus", {"name": name, **options})


def error(name: str, **options: Any) -> str:
    """The one-line message of the DataError that building and reading the corpus raises."""
    with pytest.raises(DataError) as info:
        list(build(name, **options).documents())
    message = str(info.value)
    assert "\n" not in message
    return message


def assert_tokens_spell(corpus: Any, tmp_path: Path) -> None:
    """The bytes tokenizer's train + validation ids, end-of-text ids removed, are the UTF-8 bytes
    of the documents in order."""
    clear_memo()
    tokenizer = REGISTRY.build("tokenizer", "bytes")
    data = load_tokens(corpus, tokenizer, 0.25, cache_dir=tmp_path / "cache")
    ids = np.concatenate([data.train, data.val])
    text = "".join(t for _, t in corpus.documents())
    assert bytes(ids[ids != tokenizer.eot_id].astype(np.uint8)) == text.encode("utf-8")
    assert data.train_bytes + data.val_bytes == len(text.encode("utf-8"))


def write_jsonl(path: Path, records: list[Any]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


# jsonl


def test_jsonl_file_in_order_with_default_names(tmp_path: Path) -> None:
    # Blank lines (here line 2 and the trailing ones) are skipped but still counted.
    lines = [json.dumps({"text": TEXTS[0]}), "", *(json.dumps({"text": t}) for t in TEXTS[1:])]
    file = tmp_path / "a.jsonl"
    file.write_text("\n".join(lines) + "\n\n  \n", encoding="utf-8")
    docs = list(build("jsonl", path=str(file)).documents())
    assert docs == [(f"{file}:{n}", t) for n, t in zip([1, 3, 4, 5], TEXTS, strict=True)]


def test_jsonl_field_and_name_field(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "a.jsonl", [{"body": "x", "id": 7}, {"body": "y", "id": "b"}])
    corpus = build("jsonl", path=str(file), field="body", name_field="id")
    assert list(corpus.documents()) == [("7", "x"), ("b", "y")]
    assert "'body'" in corpus.description and "1 file" in corpus.description


def test_jsonl_folder_and_glob(tmp_path: Path) -> None:
    write_jsonl(tmp_path / "b.jsonl", [{"text": "b"}])
    (tmp_path / "sub").mkdir()
    write_jsonl(tmp_path / "sub" / "c.ndjson", [{"text": "c"}])
    write_jsonl(tmp_path / "a.jsonlines", [{"text": "a"}])
    write_jsonl(tmp_path / "skipped.json", [{"text": "not picked from a folder"}])
    assert [t for _, t in build("jsonl", path=str(tmp_path)).documents()] == ["a", "b", "c"]
    # A glob takes what it matches, whatever the suffix.
    texts = [t for _, t in build("jsonl", path=str(tmp_path / "*.json*")).documents()]
    assert texts == ["a", "b", "not picked from a folder"]


def test_jsonl_byte_order_mark_and_crlf(tmp_path: Path) -> None:
    file = tmp_path / "bom.jsonl"
    file.write_bytes(b'\xef\xbb\xbf{"text": "a"}\r\n{"text": "b"}\r\n')
    assert [t for _, t in build("jsonl", path=str(file)).documents()] == ["a", "b"]


def test_jsonl_streams_line_by_line(tmp_path: Path) -> None:
    # The broken last line is only met when reading gets there: nothing reads the whole file.
    file = tmp_path / "a.jsonl"
    file.write_text('{"text": "a"}\n{"text": "b"}\n{oops\n', encoding="utf-8")
    documents = build("jsonl", path=str(file)).documents()
    assert [t for _, t in itertools.islice(documents, 2)] == ["a", "b"]
    with pytest.raises(DataError, match="line 3"):
        next(documents)


def test_jsonl_tokens_spell_the_texts(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "a.jsonl", [{"text": t} for t in TEXTS])
    assert_tokens_spell(build("jsonl", path=str(file)), tmp_path)


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("{oops", ["line 2", "is not JSON", "column 2"]),
        ('["a list"]', ["line 2", "an array", "not a JSON object"]),
        ('"just a string"', ["line 2", "a string", "not a JSON object"]),
        ('{"body": "x", "id": 1}', ["line 2", "no field 'text'", "body, id"]),
        ('{"text": 3}', ["line 2", "field 'text'", "a number", "not a string"]),
        ('{"text": null}', ["line 2", "field 'text'", "null", "not a string"]),
        ('{"text": ["a"]}', ["line 2", "an array", "not a string"]),
    ],
)
def test_jsonl_malformed_line(tmp_path: Path, line: str, expected: list[str]) -> None:
    file = tmp_path / "bad.jsonl"
    file.write_text('{"text": "fine"}\n' + line + "\n", encoding="utf-8")
    message = error("jsonl", path=str(file))
    assert str(file) in message
    for part in expected:
        assert part in message, (part, message)


def test_jsonl_bad_name_field(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "a.jsonl", [{"text": "a", "id": 1}, {"text": "b"}])
    message = error("jsonl", path=str(file), name_field="id")
    assert str(file) in message and "line 2" in message and "no field 'id'" in message
    file = write_jsonl(tmp_path / "b.jsonl", [{"text": "a", "id": 1.5}])
    message = error("jsonl", path=str(file), name_field="id")
    assert "line 1" in message and "name field 'id'" in message and "a number" in message


def test_jsonl_not_utf8_and_gzip(tmp_path: Path) -> None:
    latin = tmp_path / "latin.jsonl"
    latin.write_bytes(b'{"text": "ok"}\n{"text": "caf\xe9"}\n')
    message = error("jsonl", path=str(latin))
    assert str(latin) in message and "line 2" in message and "not valid UTF-8" in message
    packed = tmp_path / "packed.jsonl"
    packed.write_bytes(gzip.compress(b'{"text": "a"}\n'))
    message = error("jsonl", path=str(packed))
    assert str(packed) in message and "line 1" in message and "gunzip" in message


def test_jsonl_paths_that_name_nothing(tmp_path: Path) -> None:
    assert "does not exist" in error("jsonl", path=str(tmp_path / "nope.jsonl"))
    (tmp_path / "notes.txt").write_text("x", encoding="utf-8")
    message = error("jsonl", path=str(tmp_path))
    assert "corpus 'jsonl'" in message and ".jsonl" in message and str(tmp_path) in message
    assert "matches no files" in error("jsonl", path=str(tmp_path / "*.jsonl"))


# parquet


def write_parquet(path: Path, columns: dict[str, list[Any]], row_group_size: int = 2) -> Path:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    pq.write_table(pa.table(columns), path, row_group_size=row_group_size)
    return path


def test_parquet_file_in_order_with_default_names(tmp_path: Path) -> None:
    file = write_parquet(tmp_path / "a.parquet", {"text": TEXTS, "n": [1, 2, 3, 4]})
    corpus = build("parquet", path=str(file))
    assert list(corpus.documents()) == [(f"{file}:{i}", t) for i, t in enumerate(TEXTS)]
    assert "4 rows" in corpus.description
    named = build("parquet", path=str(file), name_field="n")
    assert [n for n, _ in named.documents()] == ["1", "2", "3", "4"]


def test_parquet_field_folder_and_glob(tmp_path: Path) -> None:
    write_parquet(tmp_path / "b.parquet", {"body": ["b"], "id": ["x"]})
    (tmp_path / "sub").mkdir()
    write_parquet(tmp_path / "sub" / "c.parquet", {"body": ["c"], "id": ["y"]})
    write_parquet(tmp_path / "a.parquet", {"body": ["a"], "id": ["z"]})
    docs = list(build("parquet", path=str(tmp_path), field="body", name_field="id").documents())
    assert docs == [("z", "a"), ("x", "b"), ("y", "c")]
    glob = str(tmp_path / "*.parquet")
    assert [t for _, t in build("parquet", path=glob, field="body").documents()] == ["a", "b"]


def test_parquet_large_string_column(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    table = {"text": pa.array(["a", "b"], type=pa.large_string())}
    file = write_parquet(tmp_path / "a.parquet", table)
    assert [t for _, t in build("parquet", path=str(file)).documents()] == ["a", "b"]


def test_parquet_reads_one_record_batch_at_a_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pq = pytest.importorskip("pyarrow.parquet")
    texts = [f"doc {i}" for i in range(7)]
    file = write_parquet(tmp_path / "a.parquet", {"text": texts}, row_group_size=3)
    assert pq.ParquetFile(file).num_row_groups == 3
    monkeypatch.setattr(dataset_corpora, "BATCH_ROWS", 2)
    read: list[int] = []  # the rows of each batch read so far
    original = pq.ParquetFile.iter_batches

    def counting(self: Any, *args: Any, **kwargs: Any) -> Iterator[Any]:
        for batch in original(self, *args, **kwargs):
            read.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", counting)
    documents = build("parquet", path=str(file)).documents()
    for n, (_, text) in enumerate(documents, 1):
        assert text == texts[n - 1]
        assert max(read) <= 2 and sum(read) < n + 2  # this row's batch, and no other ahead
    assert sum(read) == 7


def test_parquet_tokens_spell_the_texts(tmp_path: Path) -> None:
    file = write_parquet(tmp_path / "a.parquet", {"text": TEXTS})
    assert_tokens_spell(build("parquet", path=str(file)), tmp_path)


def test_parquet_missing_column_names_the_columns(tmp_path: Path) -> None:
    file = write_parquet(tmp_path / "a.parquet", {"body": ["x"], "id": [1]})
    message = error("parquet", path=str(file))
    assert str(file) in message and "no column 'text'" in message and "body, id" in message
    message = error("parquet", path=str(file), field="body", name_field="nope")
    assert "no column 'nope'" in message and "`name_field`" in message


def test_parquet_wrong_column_types(tmp_path: Path) -> None:
    file = write_parquet(tmp_path / "a.parquet", {"text": [1, 2], "f": [0.5, 1.5]})
    message = error("parquet", path=str(file))
    assert str(file) in message and "column 'text'" in message and "int64" in message
    file = write_parquet(tmp_path / "b.parquet", {"text": ["a", "b"], "f": [0.5, 1.5]})
    message = error("parquet", path=str(file), name_field="f")
    assert "column 'f'" in message and "double" in message and "integer" in message


def test_parquet_null_names_the_row(tmp_path: Path) -> None:
    file = write_parquet(tmp_path / "a.parquet", {"text": ["a", "b", "c", None, "e"]})
    message = error("parquet", path=str(file))
    assert str(file) in message and "row 3" in message and "null" in message
    file = write_parquet(tmp_path / "b.parquet", {"text": ["a", "b"], "id": ["x", None]})
    message = error("parquet", path=str(file), name_field="id")
    assert "row 1" in message and "name field 'id'" in message and "null" in message


def test_parquet_not_a_parquet_file(tmp_path: Path) -> None:
    pytest.importorskip("pyarrow")
    file = tmp_path / "fake.parquet"
    file.write_text("not parquet at all", encoding="utf-8")
    message = error("parquet", path=str(file))
    assert str(file) in message and "cannot read" in message


def test_parquet_without_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)  # import raises ImportError
    message = error("parquet", path=str(tmp_path))
    assert message == """corpus 'parquet' needs pyarrow: pip install -e ".[data]\""""


# hf


@pytest.fixture
def datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """The datasets library, its cache (streaming leaves lock files there) under tmp_path and
    its settings restored afterwards (the hf corpus turns offline mode on)."""
    module = pytest.importorskip("datasets")
    monkeypatch.setattr(module.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.setattr(module.config, name, getattr(module.config, name))
    return module


def test_hf_saved_dataset(tmp_path: Path, datasets: Any) -> None:
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"text": TEXTS, "id": [5, 6, 7, 8]}).save_to_disk(str(folder))
    corpus = build("hf", path=str(folder))
    assert list(corpus.documents()) == [(f"{folder}:{i}", t) for i, t in enumerate(TEXTS)]
    assert "4 row(s)" in corpus.description
    named = build("hf", path=str(folder), name_field="id")
    assert [n for n, _ in named.documents()] == ["5", "6", "7", "8"]
    assert datasets.config.HF_HUB_OFFLINE is True
    assert_tokens_spell(corpus, tmp_path)


def test_hf_saved_dataset_dict_split(tmp_path: Path, datasets: Any) -> None:
    folder = tmp_path / "dict"
    splits = {"train": ["a", "b"], "validation": ["c"]}
    dd = datasets.DatasetDict(
        {k: datasets.Dataset.from_dict({"body": v}) for k, v in splits.items()}
    )
    dd.save_to_disk(str(folder))
    assert [t for _, t in build("hf", path=str(folder), field="body").documents()] == ["a", "b"]
    val = build("hf", path=str(folder), field="body", split="validation")
    assert [t for _, t in val.documents()] == ["c"]
    message = error("hf", path=str(folder), field="body", split="test")
    assert str(folder) in message and "no split 'test'" in message
    assert "train, validation" in message


@pytest.mark.parametrize("kind", ["jsonl", "json", "parquet", "csv", "txt"])
def test_hf_data_files(tmp_path: Path, datasets: Any, kind: str) -> None:
    texts = ["alpha beta", "ünï, cödé", "gamma"]  # no newlines: .txt rows are lines
    file = tmp_path / f"data.{kind}"
    if kind in ("jsonl", "json"):
        write_jsonl(file, [{"text": t} for t in texts])
    elif kind == "parquet":
        write_parquet(file, {"text": texts})
    elif kind == "csv":
        datasets.Dataset.from_dict({"text": texts}).to_csv(str(file), index=False)
    else:
        file.write_text("".join(t + "\n" for t in texts), encoding="utf-8")
    corpus = build("hf", path=str(file))
    assert list(corpus.documents()) == [(f"{file}:{i}", t) for i, t in enumerate(texts)]
    assert_tokens_spell(corpus, tmp_path)


def test_hf_glob_of_data_files(tmp_path: Path, datasets: Any) -> None:
    write_jsonl(tmp_path / "b.jsonl", [{"text": "b"}])
    write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    glob = str(tmp_path / "*.jsonl")
    assert [t for _, t in build("hf", path=glob).documents()] == ["a", "b"]


def test_hf_hub_name_says_the_data_must_be_local(datasets: Any) -> None:
    message = error("hf", path="roneneldan/TinyStories")
    assert "'roneneldan/TinyStories'" in message and "must be local" in message
    assert "save_to_disk" in message


def test_hf_missing_and_wrong_columns(tmp_path: Path, datasets: Any) -> None:
    folder = tmp_path / "saved"
    datasets.Dataset.from_dict({"body": ["x", "y"], "n": [1, 2]}).save_to_disk(str(folder))
    message = error("hf", path=str(folder))
    assert str(folder) in message and "no column 'text'" in message and "body, n" in message
    message = error("hf", path=str(folder), field="n")
    assert "row 0" in message and "field 'n'" in message and "a number" in message


def test_hf_null_names_the_row(tmp_path: Path, datasets: Any) -> None:
    file = write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}, {"text": "b"}, {"text": None}])
    message = error("hf", path=str(file))
    assert str(file) in message and "row 2" in message and "null" in message


def test_hf_mixed_or_unknown_files(tmp_path: Path, datasets: Any) -> None:
    write_jsonl(tmp_path / "a.jsonl", [{"text": "a"}])
    (tmp_path / "b.csv").write_text("text\nb\n", encoding="utf-8")
    message = error("hf", path=str(tmp_path))
    assert str(tmp_path) in message and ".csv, .jsonl" in message
    (tmp_path / "c.tsv").write_text("text\nc\n", encoding="utf-8")
    assert ".tsv" in error("hf", path=str(tmp_path / "c.tsv"))


@pytest.mark.slow
def test_hf_imports_datasets_in_offline_mode() -> None:
    pytest.importorskip("datasets")
    code = (
        "import os; from plugins.datasets import _offline_datasets; d = _offline_datasets(); "
        "import huggingface_hub.constants as c; "
        "print(os.environ['HF_DATASETS_OFFLINE'], c.HF_HUB_OFFLINE, d.config.HF_HUB_OFFLINE)"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "True", "True"], out.stderr


def test_hf_without_datasets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # import raises ImportError
    message = error("hf", path=str(tmp_path))
    assert message == """corpus 'hf' needs datasets: pip install -e ".[data]\""""


# python-stdlib


def test_python_stdlib_is_large_sorted_and_leaves_installed_packages_out() -> None:
    corpus = build("python-stdlib")
    names = [f.relative_to(corpus.root).as_posix() for f in corpus.files]
    assert len(names) > 1000  # 1,790 on CPython 3.11.7
    assert sum(f.stat().st_size for f in corpus.files) > 20_000_000  # 31.5 MB on 3.11.7
    assert names == sorted(names) and "os.py" in names and "json/decoder.py" in names
    assert any(n.startswith("test/") for n in names)  # the test suites are code too
    skipped = {"site-packages", "dist-packages", "__pycache__"}
    assert not any(skipped & set(n.split("/")[:-1]) for n in names)
    assert f"{len(names)} files" in corpus.description
    first = list(itertools.islice(corpus.documents(), 3))
    assert [n for n, _ in first] == names[:3] and all(isinstance(t, str) for _, t in first)
    assert corpus.files == build("python-stdlib").files  # stable: the cache key depends on it


def test_python_source_decoding_follows_the_coding_line(tmp_path: Path) -> None:
    latin = tmp_path / "latin.py"
    latin.write_bytes(b"# -*- coding: latin-1 -*-\nname = 'caf\xe9'\n")
    assert "café" in corpora._read_source(latin)
    broken = tmp_path / "broken.py"
    broken.write_bytes(b"name = 'caf\xe9'\n")  # no coding line: UTF-8, the bad byte replaced
    assert corpora._read_source(broken) == "name = 'caf\ufffd'\n"


# all of them


def test_registered_with_their_options() -> None:
    for name in ("jsonl", "parquet", "hf"):
        options = REGISTRY.get("corpus", name).options
        assert options["path"].required and options["field"].default == "text"
        assert options["name_field"].default is None
    assert REGISTRY.get("corpus", "hf").options["split"].default == "train"
    assert not REGISTRY.get("corpus", "python-stdlib").options
