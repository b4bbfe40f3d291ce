"""The cut of ``nearid score --threshold``: a number, or ``calibrated`` from a ``nearid bench`` results
file (found by the loaded metric's content fingerprint, not its spec text) or a ``{"value": x}`` file."""

from __future__ import annotations

import json
import os
from pathlib import Path

from nearid.eval.results import BenchResults, read_results
from nearid.io.errors import NearIDError


def resolve_thresholds(
    threshold: str | None, metrics: list[tuple[str, object]], calibration: str | os.PathLike | None
) -> tuple[dict[str, dict | None], list[str]]:
    """Each metric's threshold (:func:`resolve_threshold`, by its fingerprint) and the problems of those
    that have none. With several metrics, ``calibrated`` decides for those the results file calibrated
    and says why not for the others; when it has none of them (or with one metric) the error stands."""
    thresholds: dict[str, dict | None] = {}
    problems: list[NearIDError] = []
    for spec, metric in metrics:
        try:
            thresholds[spec] = resolve_threshold(threshold, metric, calibration, spec=spec)
        except NearIDError as exc:
            if len(metrics) == 1:
                raise
            thresholds[spec] = None
            problems.append(exc)
    if problems and len(problems) == len(metrics):
        raise problems[0]
    return thresholds, [str(p) for p in problems]


def resolve_threshold(
    threshold: str | None, encoder, calibration: str | os.PathLike | None, *, spec: str | None = None
) -> dict | None:
    """``None``, a number, or ``calibrated`` (from a bench ``results.json`` or a ``{"value": x}`` file).

    In a results file the threshold is found by the loaded ``encoder``'s content fingerprint, not by
    its spec text: ``nearid:./m`` finds what bench recorded for ``nearid:m``, and weights re-exported to
    the same path do not find the old model's threshold (a one-line error says so, with the ``nearid
    bench`` command that calibrates it: ``spec``, the model as the user typed it, on that benchmark)."""
    if threshold is None:
        return None
    if threshold != "calibrated":
        try:
            return {"value": float(threshold), "source": "given"}
        except ValueError:
            raise NearIDError(f"--threshold {threshold}: give a number or 'calibrated'") from None
    if calibration is None:
        raise NearIDError(
            "--threshold calibrated needs --calibration FILE: a `nearid bench` results.json "
            '(run on a validation split) or a JSON file {"value": x}'
        )
    path = Path(calibration)
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise NearIDError(f"{path}: cannot read the calibration ({str(exc).splitlines()[0]})") from None
    is_results = isinstance(data, dict) and bool({"kind", "schema_version", "encoders"} & set(data))
    if not is_results:
        if isinstance(data, dict) and isinstance(data.get("value"), (int, float)):
            return {"value": float(data["value"]), "source": path.name}
        raise NearIDError(f'{path}: not a calibration file (expected a bench results.json or {{"value": x}})')
    results = read_results(path, (BenchResults,))
    entry = _calibrated_entry(results, encoder, path, spec)
    return {
        "value": entry.calibration.threshold.value,
        "source": f"calibrated on {entry.calibration.split_label} ({path.name})",
        "balanced_accuracy": entry.calibration.threshold.balanced_accuracy,
    }


def bench_command(spec: str, results: BenchResults, out: Path) -> str:
    """The ``nearid bench`` command line (shell-quoted) that adds ``spec`` to the benchmark of ``results``
    in its folder ``out``: the same data, rows, sources, masks and MTG, so the run is accepted there."""
    import shlex

    bench = results.benchmark
    words = ["nearid", "bench", "--model", spec, "--data", bench.data, "--sources", *bench.sources]
    words += ["--split-file", bench.split_file] if bench.split_file else ["--split", str(bench.split)]
    if bench.condition == "foreground":
        words += ["--foreground", "--mask-cleaning", str(bench.mask_cleaning), "--mask-dilate", str(bench.mask_dilate)]
    if bench.mtg:
        words += ["--mtg", bench.mtg, "--mtg-split", str(bench.mtg_split)]
    return shlex.join([*words, "--out", str(out)])


def _calibrated_entry(results, encoder, path: Path, spec: str | None = None):
    """The bench entry made with ``encoder``'s exact weights and preprocessing (its fingerprint)."""
    name, fingerprint = encoder.name, getattr(encoder, "fingerprint", None)
    command = bench_command(spec or getattr(encoder, "spec", None) or name, results, path.absolute().parent)
    rerun = f"run `{command}` to calibrate this model"
    matches = [e for e in results.encoders.values() if fingerprint and e.fingerprint == fingerprint]
    calibrated = [e for e in matches if e.calibration is not None]
    if calibrated:
        return calibrated[0]
    if matches:
        raise NearIDError(f"{path}: records '{matches[0].spec}' (this model) without a calibration; {rerun}")
    same_name = results.encoders.get(name)
    if same_name is not None and same_name.fingerprint is None:
        raise NearIDError(
            f"{path}: records no model fingerprints (written by an older nearid), so it cannot "
            f"show that '{name}' is the model it calibrated; {rerun}"
        )
    if same_name is not None:
        raise NearIDError(
            f"{path}: '{name}' was calibrated with other weights or preprocessing than the model "
            f"loaded now (fingerprint {same_name.fingerprint[:12]}, now {str(fingerprint)[:12]}); {rerun}"
        )
    known = ", ".join(results.encoders) or "none"
    raise NearIDError(f"{path}: has no calibration for '{name}' (it has: {known}); {rerun}")
