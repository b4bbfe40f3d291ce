"""Run by tests/test_pair_bench.py under torchrun: `nearid bench` with a test pair scorer (the cosine of
``tiny:<seed>`` behind the spec ``judge:<seed>``), each process writing the pairs it was asked to
``<out>/asked-<rank>.json``."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import nearid
from nearid.cli.app import main
from nearid.judges import loading as judge_loading
from nearid.models import specs
from nearid.models.pair_scorers import EncoderPairScorer

ASKED: list = []


class Judge(EncoderPairScorer):
    def score_pairs(self, pairs, masks=None):
        ASKED.extend((a.cache_key, b.cache_key) for a, b in pairs)
        return super().score_pairs(pairs, masks)


def _install() -> None:
    real_load, real_parse = judge_loading.load_metric, specs.parse_encoder_spec

    def load(spec, *args, **kw):
        if str(spec).startswith("judge:"):
            judge = Judge(nearid.load_encoder("tiny:" + spec.split(":", 1)[1], device="cpu"))
            judge.name = f"judge({judge.encoder.name})"
            return judge
        return real_load(spec, *args, **kw)

    specs.parse_encoder_spec = lambda s: real_parse("tiny:" + s.split(":", 1)[1] if str(s).startswith("judge:") else s)
    judge_loading.load_metric = load


if __name__ == "__main__":
    _install()
    argv = sys.argv[1:]
    code = main(argv)
    out = Path(argv[argv.index("--out") + 1])
    (out / f"asked-{os.environ.get('RANK', '0')}.json").write_text(json.dumps(ASKED))
    sys.exit(code)
