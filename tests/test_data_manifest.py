"""Manifest validation and stratified splits (no torch, no images read: files only need to exist)."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest

from gliodeploy.data.manifest import read_manifest
from gliodeploy.data.splits import load_or_create_splits, make_splits
from gliodeploy.errors import ConfigError, InputError

HEADER = "subject,image,label,scanner,site,split,weight_kg\n"


def _cohort(tmp_path: Path, n: int = 24, extra: str = "", create: bool = True) -> Path:
    lines = [HEADER]
    for i in range(n):
        name = f"sub-{i:03d}_pet.nii.gz"
        if create:
            (tmp_path / name).write_bytes(b"x")
        lines.append(f"sub-{i:03d},{name},{i % 2},{'A' if i % 4 < 2 else 'B'},S1,train,{60 + i}\n")
    lines.append(extra)
    path = tmp_path / "manifest.csv"
    path.write_text("".join(lines))
    return path


def test_reads_valid_manifest(tmp_path: Path) -> None:
    m = read_manifest(_cohort(tmp_path), n_folds=3)
    assert len(m.train) == 24 and not m.test
    row = m.train[6]
    assert row.image == (tmp_path / "sub-006_pet.nii.gz").resolve()
    assert row.label == 0 and row.scanner == "B" and row.suv_kwargs == {"weight_kg": 66.0}


def test_missing_column(tmp_path: Path) -> None:
    p = tmp_path / "m.csv"
    p.write_text("subject,image,label,site,split\na,a.nii,1,S,train\n")
    with pytest.raises(ConfigError, match="lacks column.*scanner"):
        read_manifest(p)


def test_missing_files_are_all_listed(tmp_path: Path) -> None:
    p = _cohort(tmp_path, n=4, create=False)
    with pytest.raises(InputError, match="4 image file") as info:
        read_manifest(p)
    assert "sub-000_pet.nii.gz" in str(info.value)


def test_duplicates_bad_labels_and_weights(tmp_path: Path) -> None:
    extra = "sub-000,sub-000_pet.nii.gz,1,A,S1,train,70\nsub-x,sub-001_pet.nii.gz,2,A,S1,train,-3\n"
    with pytest.raises(ConfigError) as info:
        read_manifest(_cohort(tmp_path, n=4, extra=extra))
    msg = str(info.value)
    assert "duplicate subject(s): sub-000" in msg
    assert "label '2'" in msg


def test_bad_weight(tmp_path: Path) -> None:
    extra = "sub-x,sub-001_pet.nii.gz,1,A,S1,train,heavy\n"
    with pytest.raises(ConfigError, match="weight_kg 'heavy'"):
        read_manifest(_cohort(tmp_path, n=4, extra=extra))


def test_no_train_rows(tmp_path: Path) -> None:
    (tmp_path / "a.nii").write_bytes(b"x")
    p = tmp_path / "m.csv"
    p.write_text(HEADER + "a,a.nii,1,A,S,test,70\n")
    with pytest.raises(ConfigError, match="no row with split 'train'"):
        read_manifest(p)


def test_small_stratum_names_it_and_suggests_fewer_folds(tmp_path: Path) -> None:
    # 24 subjects: each label x scanner stratum has 6 subjects
    with pytest.raises(ConfigError, match=r"stratum smaller than 10 folds .*label 0 x scanner 'A': 6.*<= 6"):
        read_manifest(_cohort(tmp_path), n_folds=10)


def test_splits_are_stratified_and_partition(tmp_path: Path) -> None:
    rows = read_manifest(_cohort(tmp_path, n=40)).train
    splits = make_splits(rows, n_folds=5, seed=0)
    strata = {r.subject: r.stratum for r in rows}
    val = [s for sp in splits for s in sp["val"]]
    assert sorted(val) == sorted(strata)  # each subject validated exactly once
    for sp in splits:
        assert not set(sp["train"]) & set(sp["val"])
        assert set(Counter(strata[s] for s in sp["val"]).values()) == {2}  # 10 per stratum / 5 folds
    assert make_splits(rows, n_folds=5, seed=0) == splits
    assert make_splits(rows, n_folds=5, seed=1) != splits


def test_splits_file_reused_and_checked(tmp_path: Path) -> None:
    rows = read_manifest(_cohort(tmp_path, n=24)).train
    path = tmp_path / "splits.json"
    first = load_or_create_splits(path, rows, 3, seed=0)
    # a hand-edited file is reused as is, not re-split
    edited = [{"train": sp["train"], "val": sp["val"]} for sp in reversed(first)]
    path.write_text(json.dumps(edited))
    assert load_or_create_splits(path, rows, 3, seed=0) == edited
    with pytest.raises(ConfigError, match="holds 3 folds but the experiment asks for 4"):
        load_or_create_splits(path, rows, 4, seed=0)
    edited[0]["val"].append("sub-999")
    path.write_text(json.dumps(edited))
    with pytest.raises(ConfigError, match="not among the manifest's training rows: sub-999"):
        load_or_create_splits(path, rows, 3, seed=0)


def _lesion_cohort(tmp_path: Path, rows: list[str]) -> Path:
    (tmp_path / "masks").mkdir(exist_ok=True)
    lines = ["subject,image,label,scanner,site,split,lesion_mm,lesion_voi,lesion_center_mm\n"]
    for i, extra in enumerate(rows):
        (tmp_path / f"s{i}.nii.gz").write_bytes(b"x")
        lines.append(f"s{i},s{i}.nii.gz,{i % 2},A,S1,train,{extra}\n")
    path = tmp_path / "manifest.csv"
    path.write_text("".join(lines))
    return path


def test_reader_lesion_columns_are_read(tmp_path: Path) -> None:
    (tmp_path / "masks" / "voi.nii.gz").parent.mkdir()
    (tmp_path / "masks" / "voi.nii.gz").write_bytes(b"x")
    m = read_manifest(
        _lesion_cohort(tmp_path, ["-34.85;54.5; 23.8,,", ",masks/voi.nii.gz,1;2;3", ",,not a point", ",,"])
    )
    a, b, c, d = m.rows
    assert a.lesion_mm == (-34.85, 54.5, 23.8) and a.lesion_voi is None and a.line == 2
    assert b.lesion_mm is None and b.lesion_voi == (tmp_path / "masks" / "voi.nii.gz").resolve()
    assert b.truth_lesion_mm == (1.0, 2.0, 3.0)
    assert c.truth_lesion_mm is None  # malformed ground truth only leaves the miss rate: no error
    assert (d.lesion_mm, d.lesion_voi, d.truth_lesion_mm) == (None, None, None)
    assert b.where("lesion_voi") == "line 3 (subject s1), column lesion_voi"


@pytest.mark.parametrize("bad", ["1;2", "1;2;x", "1;2;3;4", "1;nan;3", "1,2,3"])
def test_malformed_reader_point_names_line_and_column(tmp_path: Path, bad: str) -> None:
    cohort = _lesion_cohort(tmp_path, [",,", f'"{bad}",,'])
    with pytest.raises(ConfigError, match=r"line 3 \(s1\): column lesion_mm: .*x;y;z|non-finite") as info:
        read_manifest(cohort)
    assert "lesion_mm" in str(info.value)


def test_missing_reader_voi_file_names_line_and_column(tmp_path: Path) -> None:
    cohort = _lesion_cohort(tmp_path, [",,", ",masks/missing.nii.gz,"])
    with pytest.raises(
        InputError, match=r"1 lesion VOI file.*line 3 \(subject s1\), column lesion_voi: .*missing"
    ):
        read_manifest(cohort)
    assert read_manifest(cohort, check_files=False).rows[1].lesion_voi is not None
