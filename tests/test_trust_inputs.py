"""Issue 21 (items 12, 26): the same input given twice is refused, not counted twice; environment
overrides are checked."""

from __future__ import annotations

import shutil

import pytest

from nearid.cli.app import main
from tests.test_cli_light import write_authors_csv


def test_metrics_refuses_the_same_table_twice_by_content(tmp_path, monkeypatch, capsys):
    write_authors_csv(tmp_path / "T.csv", n=20)
    shutil.copy(tmp_path / "T.csv", tmp_path / "copy.csv")
    monkeypatch.chdir(tmp_path)
    for second in ("T.csv", "./T.csv", str(tmp_path / "T.csv"), "copy.csv"):
        assert main(["metrics", "T.csv", second]) == 2
        err = capsys.readouterr().err
        assert "same table" in err and second.split("/")[-1] in err and len(err.strip().splitlines()) == 1
    write_authors_csv(tmp_path / "other.csv", n=20, seed=1)
    assert main(["metrics", "T.csv", "other.csv"]) == 0  # two different tables pool


@pytest.mark.parametrize("command", ["score", "bench"])
def test_one_metric_spelled_twice_is_refused(tmp_path, capsys, command):
    from nearid.models.specs import check_distinct_specs

    with pytest.raises(Exception, match="histogram:8"):
        check_distinct_specs(["histogram", "histogram:8"])
    check_distinct_specs(["histogram", "histogram:4"])
    if command == "score":
        argv = ["score", "--refs", str(tmp_path), "--gens", str(tmp_path), "--out", str(tmp_path / "s.csv")]
    else:
        argv = ["bench", "--data", str(tmp_path), "--out", str(tmp_path / "b")]
    assert main([*argv, "--model", "histogram", "--model", "histogram:8"]) == 2
    err = capsys.readouterr().err
    assert "histogram:8" in err and "once" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("value", ["-5", "nan", "1.5"])
def test_free_bytes_override_must_be_a_count(monkeypatch, tmp_path, value):
    from nearid.io.errors import NearIDError
    from nearid.training.cache_policy import free_bytes

    monkeypatch.setenv("NEARID_FREE_BYTES", value)
    with pytest.raises(NearIDError, match="NEARID_FREE_BYTES"):
        free_bytes(tmp_path)


def test_a_mistyped_local_data_name_leads_with_the_local_miss(tmp_path, monkeypatch, capsys):
    (tmp_path / "synth").mkdir()
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    argv = ["bench", "--data", "synn", "--model", "histogram", "--sources", "Instance", "--out", "o"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("nearid bench: error: synn: no such local folder; did you mean 'synth'?"), (
        err
    )  # the local miss first
    assert "ConnectionError" not in err and len(err.splitlines()) == 1
