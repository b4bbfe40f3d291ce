"""``load_metric``: one spec -> the :class:`~nearid.models.encoders.Encoder` or the
:class:`~nearid.models.pair_scorers.PairScorer` it names. It sits above the judges (``vlm:`` specs
load a judge) so that the models package never imports upward."""

from __future__ import annotations

from nearid.models.options import JudgeOptions, LoadOptions


def load_metric(
    spec: str,
    options: LoadOptions | None = None,
    *,
    device="auto",
    dtype="auto",
    allow_pickle: bool = False,
    judge_options: dict | None = None,
):
    """The :class:`~nearid.models.encoders.Encoder` or :class:`~nearid.models.pair_scorers.PairScorer` a
    spec names, loaded as ``options`` say (a :class:`~nearid.models.options.LoadOptions`, whose
    ``judge`` part acts on pair scorers only); without one, from the keyword arguments (``judge_options``:
    a dict of :class:`~nearid.models.options.JudgeOptions` fields)."""
    if options is None:
        judge = JudgeOptions(**(judge_options or {}))
        options = LoadOptions(device=device, dtype=dtype, allow_pickle=allow_pickle, judge=judge)
    from nearid.models.encoders import load_encoder
    from nearid.models.specs import parse_encoder_spec

    parsed = parse_encoder_spec(spec)
    if parsed.family == "vlm":
        from nearid.judges.vlm import load_vlm_judge

        return load_vlm_judge(
            parsed.argument,
            device=options.device,
            dtype=options.dtype,
            allow_pickle=options.allow_pickle,
            **options.judge.as_kwargs(),
        )
    return load_encoder(spec, options)


__all__ = ["load_metric"]
