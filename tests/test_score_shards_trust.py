"""Issue 21 (trust, third round), sharded `nearid score`: content-keyed shards, empty shards, merges
after the data changed."""

from __future__ import annotations

import os

import pytest

from nearid.cli.app import main
from tests.test_shards import _draw


def _folders(root, n: int = 2):
    for i in range(n):
        _draw(root / "refs" / f"s{i}.png", i)
        _draw(root / "gens" / f"s{i}.png", 100 + i)


ARGS = ["--model", "histogram", "--threshold", "0.5"]


def _score(root, out, *more) -> int:
    return main(["score", "--refs", str(root / "refs"), "--gens", str(root / "gens"), *ARGS, "--out", str(out), *more])


def _outputs(folder):
    return {p.name: p.read_bytes() for p in folder.iterdir() if ".shard-" not in p.name}


def test_more_shards_than_pairs_merge(tmp_path, capsys):
    """Issue 21.14: an empty shard exited 2 ("no pairs to score") and `nearid merge` kept asking for it."""
    _folders(tmp_path, 2)
    assert _score(tmp_path, tmp_path / "one" / "s.csv") == 0
    for index in range(5):  # 2 pairs, 5 shards: shards 2..4 have nothing to score
        assert _score(tmp_path, tmp_path / "five" / "s.csv", "--num-shards", "5", "--shard-index", str(index)) == 0
    capsys.readouterr()
    assert main(["merge", str(tmp_path / "five" / "s.csv")]) == 0, capsys.readouterr().err
    assert "merged 2 pairs" in capsys.readouterr().out
    assert _outputs(tmp_path / "five") == _outputs(tmp_path / "one")


def test_an_image_changed_between_shards_is_named_never_mixed(tmp_path, capsys):
    """Issue 21.2: a shard made before an image changed must not be merged with one made after it."""
    _folders(tmp_path, 4)
    out = tmp_path / "run" / "s.csv"
    assert _score(tmp_path, out, "--num-shards", "2", "--shard-index", "0") == 0
    _draw(tmp_path / "gens" / "s3.png", 999)  # shard 1's image, rewritten between the shards
    os.utime(tmp_path / "gens" / "s3.png", (1e9, 1e9))
    assert _score(tmp_path, out, "--num-shards", "2", "--shard-index", "1") == 0
    capsys.readouterr()
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "s3.png" in err and err.count("\n") == 1, err
    assert not out.exists()


def test_merge_after_the_data_changed_says_so(tmp_path, capsys):
    """Issue 21.21: `merge` after the data was regenerated blamed the shards ("a shard did not finish")."""
    _folders(tmp_path, 4)
    out = tmp_path / "run" / "s.csv"
    for index in range(2):
        assert _score(tmp_path, out, "--num-shards", "2", "--shard-index", str(index)) == 0
    _draw(tmp_path / "refs" / "s1.png", 555)
    os.utime(tmp_path / "refs" / "s1.png", (1e9, 1e9))
    capsys.readouterr()
    assert main(["merge", str(out)]) == 2
    err = capsys.readouterr().err
    assert "changed since the shards ran" in err and "s1.png" in err and "did not finish" not in err, err
    assert err.count("\n") == 1


def test_the_calibration_refusal_prints_a_command_that_runs(tmp_path, capsys):
    """Issue 21.20: the refusal said "run `nearid bench --model tiny:0 (untrained)`": a display name, not a
    spec, and no data; the command printed must run as printed and then calibrate the model."""
    import re
    import shlex

    from tests.test_judge_trust import _synth

    data, out = tmp_path / "my data", tmp_path / "bench out"
    _synth(data, 5)
    _folders(tmp_path, 2)
    bench = ["bench", "--model", "tiny:1", "--data", str(data), "--sources", "Part", "Shape", "--split", "val"]
    assert main([*bench, "--out", str(out)]) == 0
    argv = ["score", "--refs", str(tmp_path / "refs"), "--gens", str(tmp_path / "gens"), "--model", "tiny:2"]
    argv += ["--threshold", "calibrated", "--calibration", str(out / "results.json"), "--out", str(tmp_path / "s.csv")]
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    command = re.search(r"run `([^`]*)`", err).group(1)
    words = shlex.split(command)
    assert words[:2] == ["nearid", "bench"] and "(untrained)" not in command, command
    assert main(words[1:]) == 0  # runs as printed
    capsys.readouterr()
    assert main(argv) == 0  # and calibrated the model: score finds its threshold now
    assert "calibrated on val" in capsys.readouterr().out


def _sharded(root, out, shards: int = 3) -> None:
    for index in range(shards):
        assert _score(root, out, "--num-shards", str(shards), "--shard-index", str(index)) == 0
    assert main(["merge", str(out)]) == 0


def test_score_shards_twice_and_after_a_change_equal_a_fresh_out(tmp_path, capsys):
    """Issue 21, acceptance for `score` (shards): all shards and the merge run twice into one --out, then
    again after an image changed: each time the outputs equal those of a fresh --out."""
    _folders(tmp_path, 5)
    out = tmp_path / "same" / "s.csv"
    _sharded(tmp_path, out)
    first = _outputs(out.parent)
    _sharded(tmp_path, out)  # again: the same files
    assert _outputs(out.parent) == first
    _draw(tmp_path / "gens" / "s2.png", 4242)
    os.utime(tmp_path / "gens" / "s2.png", (1e9, 1e9))
    _sharded(tmp_path, out)  # the inputs changed: the new shards' records replace the old ones
    fresh = tmp_path / "fresh" / "s.csv"
    _sharded(tmp_path, fresh)
    assert _outputs(out.parent) == _outputs(fresh.parent) != first


@pytest.mark.slow
def test_score_shards_run_at_the_same_time_equal_a_fresh_out(tmp_path):
    """Issue 21, acceptance for `score` (shards), concurrently with itself: two processes each run every
    shard and the merge into one --out at the same time; the outputs equal a fresh --out's."""
    import subprocess
    import sys

    _folders(tmp_path, 6)
    out = tmp_path / "same" / "s.csv"
    base = [sys.executable, "-m", "nearid", "score", "--refs", str(tmp_path / "refs"), "--gens", str(tmp_path / "gens")]
    script = " && ".join(
        [
            *(
                " ".join([*base, *ARGS, "--out", str(out), "--num-shards", "3", "--shard-index", str(i)])
                for i in range(3)
            ),
            f"{sys.executable} -m nearid merge {out}",
        ]
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "HF_HUB_OFFLINE": "1"}
    runs = [subprocess.Popen(script, shell=True, env=env, stdout=subprocess.DEVNULL) for _ in range(2)]
    assert [run.wait(timeout=300) for run in runs] == [0, 0]
    fresh = tmp_path / "fresh" / "s.csv"
    _sharded(tmp_path, fresh)
    assert _outputs(out.parent) == _outputs(fresh.parent)
