"""Manifests: the schema, reading and writing Parquet manifests, path resolution and rebasing,
and class-name files."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

# isort: split
from vidablate.config import ConfigError
from vidablate.data.manifest import (
    MANIFEST_SCHEMA,
    REQUIRED_COLUMNS,
    ManifestError,
    manifest_records,
    read_class_names,
    read_manifest,
    rebase_paths,
    resolve_video,
    write_class_names,
    write_manifest,
)

NAMES = ["abseiling", "brush hair", "cartwheel"]


# ------------------------------------------------------------------- manifest files


def test_schema_and_round_trip(tmp_path):
    assert REQUIRED_COLUMNS == ("video", "label", "label_name")
    assert MANIFEST_SCHEMA.names == ["video", "label", "label_name", "imu", "start", "end", "split"]
    rows = [
        {"video": "a.mp4", "label": 0, "label_name": "x", "start": 1.0, "end": 2.5},
        {"video": "/abs/b.mp4", "label": 1, "label_name": "y", "imu": "b.csv"},
    ]
    table = read_manifest(write_manifest(rows, tmp_path / "m.parquet"))
    assert table.schema.field("label").type == pa.int64()
    assert table.schema.field("start").type == pa.float64()
    got = manifest_records(table)
    assert got[0]["start"] == 1.0 and got[1]["start"] is None and got[1]["imu"] == "b.csv"
    assert [r["video"] for r in got] == ["a.mp4", "/abs/b.mp4"]


@pytest.mark.parametrize(
    ("table", "expect"),
    [
        (pa.table({"video": ["a"], "label_name": ["x"]}), "missing required column(s) 'label'"),
        (pa.table({"video": ["a"], "label": ["one"], "label_name": ["x"]}), "column 'label'"),
        (pa.table({"video": ["a", None], "label": [0, 1], "label_name": ["x", "y"]}),
         "column 'video': 1 null value(s), first in row 1"),
        (pa.table({"video": ["a", "b"], "label": [0, -2], "label_name": ["x", "y"]}),
         "column 'label': negative label -2 in row 1"),
        (pa.table({"video": ["a"], "label": [0], "label_name": ["x"], "start": ["soon"]}),
         "column 'start'"),
    ],
)
def test_read_manifest_errors_name_file_and_column(tmp_path, table, expect):
    path = tmp_path / "bad.parquet"
    pq.write_table(table, path)
    with pytest.raises(ManifestError) as err:
        read_manifest(path)
    assert str(path) in str(err.value) and expect in str(err.value)
    assert isinstance(err.value, ConfigError)


def test_read_manifest_rejects_missing_and_non_parquet_files(tmp_path):
    with pytest.raises(ManifestError, match="nope.parquet: manifest file not found"):
        read_manifest(tmp_path / "nope.parquet")
    (tmp_path / "text.parquet").write_text("not parquet")
    with pytest.raises(ManifestError, match="text.parquet: not a readable Parquet file"):
        read_manifest(tmp_path / "text.parquet")


def test_resolve_video_and_rebase_paths(tmp_path):
    assert resolve_video("/abs/a.mp4", tmp_path) == resolve_video("/abs/a.mp4", None)
    assert resolve_video("x/a.mp4", tmp_path) == tmp_path / "x" / "a.mp4"
    data, out = tmp_path / "data", tmp_path / "manifests"
    table = pa.table({"video": ["v/a.mp4", "/elsewhere/b.mp4"], "label": [0, 0],
                      "label_name": ["x", "x"], "imu": [None, "i/b.csv"]})  # fmt: skip
    inside = rebase_paths(table, data, tmp_path).to_pydict()
    assert inside["video"] == ["data/v/a.mp4", "/elsewhere/b.mp4"]
    assert inside["imu"] == [None, "data/i/b.csv"]
    outside = rebase_paths(table, data, out).to_pydict()
    assert outside["video"][0] == str(data / "v" / "a.mp4")  # not under the manifest: absolute


# -------------------------------------------------------------------- class names


@pytest.mark.parametrize(
    "body",
    [
        "id,name\n0,abseiling\n1,brush hair\n2,cartwheel\n",  # (a) X-CLIP labels csv
        "id,name\n2,cartwheel\n0,abseiling\n1,brush hair\n",  # (a) any order
        "abseiling\nbrush hair\ncartwheel\n\n",  # (b) one per line (trailing blank ok)
        "0 abseiling\n1 brush hair\n2 cartwheel\n",  # (c) id name
    ],
)
def test_class_name_formats(tmp_path, body):
    path = tmp_path / "names.txt"
    path.write_text(body)
    assert read_class_names(path) == NAMES


@pytest.mark.parametrize(
    ("body", "expect"),
    [
        ("id,name\n0,a\n2,b\n", "line 3: id 2 outside 0..1"),
        ("id,name\n0,a\n0,b\n", "line 3: duplicate id 0 (line 2)"),
        ("id,name\n0,a\nx,b\n", "line 3: id 'x' is not an integer"),
        ("1 a\n2 b\n", "line 2: id 2 outside 0..1 (2 classes) (1-based ids"),
        ("a\n\nb\n", "line 2: blank line"),
        ("a\nb\na\n", "line 3: duplicate class name 'a' (line 1)"),
        ("", "empty class-name file"),
    ],
)
def test_class_name_errors_name_file_and_line(tmp_path, body, expect):
    path = tmp_path / "names.csv"
    path.write_text(body)
    with pytest.raises(ManifestError) as err:
        read_class_names(path)
    assert str(path) in str(err.value) and expect in str(err.value)


def test_write_class_names_round_trips_commas(tmp_path):
    names = ["a, b", "c"]
    path = write_class_names(names, tmp_path / "classnames.csv")
    assert path.read_text().splitlines()[0] == "id,name"
    assert read_class_names(path) == names
