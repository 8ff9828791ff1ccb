"""ccu_vision.manifest: CSV/JSONL manifests, validated all-or-nothing with errors naming file and line."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from ccu_vision.errors import ManifestError
from ccu_vision.manifest import MAX_REPORTED_ERRORS, read_manifest

REQ = ("path", "brand", "kind")


def write(path: Path, text: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8", newline="")
    return path


def strip_lines(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in r.items() if k != "_line"} for r in rows]


def test_csv_basic_with_relative_paths(tmp_path):
    m = write(tmp_path / "refs" / "m.csv", "path,brand,kind\nimg/a.png,Nike,logo\n/abs/b.jpg,Puma,product\n")
    rows = read_manifest(m, REQ, path_column="path")
    assert rows == [
        {"path": str(tmp_path / "refs" / "img" / "a.png"), "brand": "Nike", "kind": "logo", "_line": 2},
        {"path": "/abs/b.jpg", "brand": "Puma", "kind": "product", "_line": 3},
    ]


def test_jsonl_basic_and_equivalent_to_csv(tmp_path):
    lines = [{"path": "a.png", "brand": "Nike", "kind": "logo"}, {"path": "b.png", "brand": "Hugo", "kind": "logo"}]
    j = write(tmp_path / "m.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    c = write(tmp_path / "m.csv", "path,brand,kind\na.png,Nike,logo\nb.png,Hugo,logo\n")
    rj, rc = read_manifest(j, REQ, path_column="path"), read_manifest(c, REQ, path_column="path")
    assert strip_lines(rj) == strip_lines(rc)
    assert [r["_line"] for r in rj] == [1, 2] and [r["_line"] for r in rc] == [2, 3]


def test_format_sniffed_for_other_extensions(tmp_path):
    j = write(tmp_path / "m.txt", '\n{"image": "x.jpg"}\n')
    c = write(tmp_path / "m2.txt", "image\nx.jpg\n")
    assert read_manifest(j, ["image"])[0] == {"image": "x.jpg", "_line": 2}
    assert read_manifest(c, ["image"])[0] == {"image": "x.jpg", "_line": 2}


def test_utf8_bom_crlf_case_and_whitespace(tmp_path):
    text = "\ufeff Path ;BRAND; kind\r\n  ünï/商品.png ; Hugo Boss ;logo\r\n"
    for name in ("semi.csv", "semi.txt"):  # European Excel writes ";" into .csv files
        m = write(tmp_path / name, text.encode("utf-8"))
        rows = read_manifest(m, REQ, path_column="path")
        assert rows == [{"path": str(tmp_path / "ünï" / "商品.png"), "brand": "Hugo Boss", "kind": "logo", "_line": 2}]


def test_utf8_bom_csv_and_utf16(tmp_path):
    m = write(tmp_path / "bom.csv", "\ufeffpath,brand,kind\na.png,BMW,logo\n".encode())
    assert read_manifest(m, REQ)[0]["path"] == "a.png"  # BOM not glued to the first column name
    tsv = write(tmp_path / "excel.tsv", "path\tbrand\tkind\na.png\tBMW\tlogo\n".encode("utf-16"))
    assert read_manifest(tsv, REQ)[0]["brand"] == "BMW"  # Excel "Unicode text": UTF-16 + tabs
    commas = write(tmp_path / "commas.tsv", "path,brand,kind\na.png,BMW,logo\n")
    assert "missing required column(s): path, brand, kind" in _err(commas)


def test_bad_encoding_names_file_and_line(tmp_path):
    m = write(tmp_path / "latin1.csv", "path,brand,kind\na.png,Nike,logo\nb.png,Herm\xe8s,logo\n".encode("latin-1"))
    with pytest.raises(ManifestError) as e:
        read_manifest(m, REQ)
    msg = str(e.value)
    assert msg.startswith(f"{m}:3: not valid UTF-8") and "0xe8" in msg and "column 11" in msg


def test_missing_required_columns_named(tmp_path):
    m = write(tmp_path / "m.csv", "path,label\na.png,x\n")
    with pytest.raises(ManifestError) as e:
        read_manifest(m, REQ)
    msg = str(e.value)
    assert msg.startswith(f"{m}:1: missing required column(s): brand, kind") and "header has: path, label" in msg


def test_missing_required_keys_jsonl(tmp_path):
    m = write(tmp_path / "m.jsonl", '{"path": "a", "brand": "x", "kind": "logo"}\n{"path": "b"}\n')
    with pytest.raises(ManifestError) as e:
        read_manifest(m, REQ)
    assert str(e.value) == f"{m}:2: missing required key(s): brand, kind"


def test_malformed_json_line_named(tmp_path):
    m = write(tmp_path / "m.jsonl", '{"image": "a.jpg"}\n{"image": "b.jpg",}\n{"image": "c.jpg"}\n[1, 2]\n')
    with pytest.raises(ManifestError) as e:
        read_manifest(m, ["image"])
    msg = str(e.value)
    assert "2 problems, nothing was read" in msg
    assert f"{m}:2: malformed JSON" in msg and f"{m}:4: expected a JSON object, got list" in msg
    assert [line for line, _ in e.value.errors] == [2, 4]


def test_all_problems_reported_at_once_and_nothing_returned(tmp_path):
    body = "".join(f"x{i}.png,,logo\n" for i in range(30))  # 30 rows with an empty brand
    m = write(tmp_path / "m.csv", "path,brand,kind\nok.png,Nike,logo\n" + body)
    with pytest.raises(ManifestError) as e:
        read_manifest(m, REQ)
    msg = str(e.value)
    assert "30 problems" in msg and f"{m}:3: empty value for required column 'brand'" in msg
    assert msg.count("empty value") == MAX_REPORTED_ERRORS and "... and 10 more" in msg
    assert len(e.value.errors) == 30


def test_csv_row_shape_errors(tmp_path):
    m = write(tmp_path / "m.csv", 'path,brand,kind\na.png,Nike,logo,,\nb.png,Puma,logo,extra\n"c.png,Hugo,logo\n')
    with pytest.raises(ManifestError) as e:
        read_manifest(m, REQ)
    msg = str(e.value)
    assert f"{m}:3: 4 fields but the header has 3 columns" in msg
    assert ":2:" not in msg  # trailing empty cells (Excel) are fine


def test_quoted_multiline_field_keeps_start_line(tmp_path):
    m = write(tmp_path / "m.csv", 'image,title\na.jpg,"two\nlines"\nb.jpg,plain\n')
    rows = read_manifest(m, ["image"], optional=["title", "listing_id"])
    assert [(r["image"], r["_line"]) for r in rows] == [("a.jpg", 2), ("b.jpg", 4)]
    assert rows[0]["title"] == "two\nlines" and rows[0]["listing_id"] is None


def test_optional_columns_none_when_absent_or_empty(tmp_path):
    m = write(tmp_path / "m.csv", "image,listing_id,seller_id\na.jpg,,s1\n")
    row = read_manifest(m, ["image"], optional=["listing_id", "seller_id", "title"])[0]
    assert row == {"image": "a.jpg", "listing_id": None, "seller_id": "s1", "title": None, "_line": 2}


def test_exact_duplicates_dropped_with_warning(tmp_path, caplog):
    m = write(tmp_path / "m.csv", "path,brand,kind\na.png,Nike,logo\nb.png,Nike,logo\na.png,Nike,logo\na.png,Puma,logo\n")
    with caplog.at_level(logging.WARNING, logger="ccu_vision.manifest"):
        rows = read_manifest(m, REQ)
    assert [(r["path"], r["brand"], r["_line"]) for r in rows] == [
        ("a.png", "Nike", 2), ("b.png", "Nike", 3), ("a.png", "Puma", 5)
    ]
    assert f"{m}:4: exact duplicate of line 2; dropped" in caplog.text


def test_paths_escaping_root_are_errors(tmp_path):
    root = tmp_path / "partner"
    (root / "imgs").mkdir(parents=True)
    (tmp_path / "secret").mkdir()
    (root / "imgs" / "sneaky").symlink_to(tmp_path / "secret", target_is_directory=True)
    m = write(
        root / "m.csv",
        "path,brand,kind\nimgs/ok.png,Nike,logo\n../secret/x.png,Nike,logo\n/etc/passwd,Nike,logo\n"
        "imgs/sneaky/y.png,Nike,logo\nimgs/../imgs/fine.png,Nike,logo\n",
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(m, REQ, root=root, path_column="path")
    msg = str(e.value)
    assert f"{m}:3: path '../secret/x.png' escapes the root folder {root}" in msg
    assert f"{m}:4: path '/etc/passwd' escapes" in msg and f"{m}:5: path 'imgs/sneaky/y.png' escapes" in msg
    assert ":2:" not in msg and ":6:" not in msg and [line for line, _ in e.value.errors] == [3, 4, 5]
    # without root the same manifest is fine (relative to the manifest's folder)
    rows = read_manifest(m, REQ, path_column="path")
    assert rows[1]["path"] == str(tmp_path / "secret" / "x.png") and rows[4]["path"] == str(root / "imgs" / "fine.png")


def test_path_column_type_and_url_errors(tmp_path):
    m = write(
        tmp_path / "m.jsonl",
        '{"image": 5}\n{"image": "https://cdn.example.com/a.jpg"}\n{"image": null}\n{"image": ""}\n',
    )
    with pytest.raises(ManifestError) as e:
        read_manifest(m, ["image"], path_column="image")
    got = dict(e.value.errors)
    assert "must be a string path" in got[1] and "is a URL" in got[2]
    assert "empty value for required column 'image'" in got[3] and "empty value" in got[4]


def test_whole_file_errors(tmp_path):
    cases = {
        "missing.csv": None,
        "empty.csv": b"",
        "blank.jsonl": b"\n \n",
        "nul.csv": b"path,brand,kind\na.png\x00,x,logo\n",
        "header_only.csv": b"path,brand,kind\n",
    }
    for name, data in cases.items():
        p = tmp_path / name
        if data is not None:
            p.write_bytes(data)
        if name == "header_only.csv":
            assert read_manifest(p, REQ) == []
            continue
        with pytest.raises(ManifestError) as e:
            read_manifest(p, REQ)
        assert str(e.value).startswith(str(p)), name
    assert "NUL byte" in _err(tmp_path / "nul.csv") and ":2:" in _err(tmp_path / "nul.csv")
    assert _err(tmp_path / "missing.csv").endswith("manifest not found")
    assert "is a folder" in _err(tmp_path)


def _err(p: Path) -> str:
    with pytest.raises(ManifestError) as e:
        read_manifest(p, REQ)
    return str(e.value)


def test_duplicate_columns_and_keys(tmp_path):
    c = write(tmp_path / "m.csv", "path,Path,brand,kind\na,b,c,d\n")
    assert "duplicate column(s) in header: path" in _err(c)
    j = write(tmp_path / "m.jsonl", '{"path": "a", "PATH": "b", "brand": "c", "kind": "d"}\n')
    assert "duplicate key 'path'" in _err(j)


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root can read mode-000 files")
def test_unreadable_manifest(tmp_path):
    m = write(tmp_path / "m.csv", "path,brand,kind\n")
    os.chmod(m, 0)
    assert _err(m).endswith("permission denied")
