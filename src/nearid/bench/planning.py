"""What a bench run measures, planned once: the settings, the identities, every image it embeds, and
the content key of all of it.

A bench run and the merge (:mod:`nearid.bench.merge`) plan through :func:`plan_benchmark`, so a merge
that plans again from a record's settings and locations gets the very plan the run had. Local
inputs are read through their real paths (links resolved, made absolute): the image keys in the plan
name the data by its folder and content version (:attr:`~nearid.images.decode.ImageRef.cache_key`), so
the same data through a link, another relative spelling or another working directory gives the same
keys -- the stores reuse its vectors and its records merge -- while data regenerated at the same path
gives other keys. :func:`plan_fingerprint` hashes those keys and the plan's layout: a record's ``inputs``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from nearid.data import load_mtg, load_nearid
from nearid.data.folder import is_folder_benchmark, load_folder
from nearid.eval.evaluate import ImagePlan, plan_images
from nearid.eval.trials import form_trials
from nearid.io.errors import NearIDError


@dataclass
class BenchConfig:
    encoders: list[str]
    data: str
    sources: list[str] | None
    out: str
    split: str | None = "test"
    split_file: str | None = None
    masks: bool = False
    mask_cleaning: str = "authors"  # under masks: the authors' cleaning (spec 12.2) or "none"
    mask_dilate: int = 0
    mtg: str | None = None
    mtg_split: str = "test"  # MTG has train and test; the paper's benchmark is test
    trials: str = "slot"  # "slot" (by background) or "authors" (compacted lists; nearid.eval.trials)
    mtg_mask_cleaning: str = "none"  # under masks: MTG's object masks raw (the authors') or "authors"
    batch_size: int = 32
    device: str = "auto"
    dtype: str = "auto"
    allow_pickle: bool = False
    num_shards: int | None = None  # rendezvous-free shards (nearid.bench.shards): this run is one share
    shard_index: int | None = None
    judge_options: dict | None = None  # a pair scorer's options (a VLM judge's prompt file, readout, ...)
    #: a judge's pair without an answer (NaN): "lose" (its trials count and lose, as ties do) or "skip"
    #: (no trial: the published protocol's NaN-aware metrics; the entry is named so)
    judge_unanswered: str = "lose"
    num_workers: int | str = 0  # input worker processes per bench process (nearid.images.pipeline)
    fast_decode: bool = False  # JPEG draft decoding; its embeddings get a store of their own
    log: list[str] = field(default_factory=list)

    @property
    def split_name(self) -> str | None:
        """The split column value the rows came from; ``None`` when a split file chose them instead."""
        return None if self.split_file else self.split


def real_location(location: str | None) -> str | None:
    """A local file or folder by its real path (links resolved, absolute); anything else (a hub id) as given."""
    if location is None:
        return None
    path = os.path.expanduser(os.fspath(location))
    return os.path.realpath(path) if os.path.exists(path) else location


def real_sources(sources: list[str] | None) -> list[str] | None:
    """``--sources`` with each ``NAME=LOCATION``'s location by its real path (plain names as given)."""
    if not sources:
        return sources
    return [f"{s.split('=', 1)[0]}={real_location(s.split('=', 1)[1])}" if "=" in s else s for s in sources]


def plan_benchmark(config: BenchConfig):
    """``(bench, mtg, plan)``: the identities, the MTG samples (or ``None``) and every (image, mask) the
    run embeds, as ``config`` selects them; a bench run and ``nearid merge`` plan through this one path."""
    bench = load_data(config)
    mtg = load_mtg(real_location(config.mtg), split=config.mtg_split) if config.mtg else None
    plan = plan_images(
        bench,
        bench.source_names,
        masks=config.masks,
        mtg=mtg,
        mask_cleaning=config.mask_cleaning,
        mask_dilate=config.mask_dilate,
        mtg_mask_cleaning=config.mtg_mask_cleaning,
        accept_masks=True,
    )
    return bench, mtg, form_trials(plan, config.trials)


def load_data(config: BenchConfig):
    """The benchmark's identities: a dataset (hub id, ``save_to_disk``, parquet, a ``nearid synth`` root)
    through :func:`~nearid.data.load_nearid`, or a folder in :mod:`nearid.data.folder`'s layout, whose
    split comes from each identity's ``meta.json`` and whose sources default to all found. An empty
    selection is an error here, not a ``nan`` score later. Local inputs are read by their real paths."""
    data = real_location(config.data)
    if is_folder_benchmark(data):
        if config.split_file:
            raise NearIDError(
                f"--split-file: {config.data} is a folder benchmark; its split is each identity's "
                'meta.json "split" (default test): pass --split NAME or --split all'
            )
        bench = load_folder(data, config.sources or None, split=config.split)
    else:
        if not config.sources:
            from nearid.data.nearid_bench import bench_locations, sources_beside

            there = sources_beside(bench_locations(config.data, [])[0])
            raise NearIDError(
                f"--sources is required for {config.data}: name its distractor sources "
                "(<data>-<Source>, or NAME=LOCATION)" + (f"; the sources there are {', '.join(there)}" if there else "")
            )
        bench = load_nearid(
            data,
            real_sources(config.sources),
            split=config.split,
            split_file=real_location(config.split_file),
            masks=config.masks,
        )
    if not len(bench):
        which = f"the rows of {config.split_file}" if config.split_file else f"split '{config.split}'"
        raise NearIDError(
            f"{config.data}: no identity with 2 or more views in {which} ({bench.report.summary()}); "
            "choose another --split (or --split all)"
        )
    check_sources_have_distractors(bench, config)
    return bench


def check_sources_have_distractors(bench, config: BenchConfig) -> None:
    """Refuse a source with no distractor in the selected identities (every slot empty, e.g. all
    dropped by ``distract --filter``): its SSR / PA and the calibration would have nothing to count."""
    for source in bench.source_names:
        if not any(identity.distractor(source, j) is not None for identity in bench for j in range(3)):
            raise NearIDError(
                f"--sources {source}: no distractor in the {len(bench)} selected identities (every slot is empty, "
                "e.g. all filtered by nearid distract --filter); drop it from --sources or generate it again"
            )


def plan_fingerprint(plan: ImagePlan) -> str:
    """The content key of a plan: every planned (image, mask) key -- each carries its content version --
    and where each one sits (identities, views, distractors, MTG). Equal for the same data however its
    path is spelled; another for data regenerated at the same path."""
    from nearid.io.fingerprint import of_json

    return of_json(
        {
            "keys": plan.keys,
            "ids": [str(i) for i in plan.ids],
            "categories": list(plan.categories),
            "views": plan.views.tolist(),
            "distractors": {source: rows.tolist() for source, rows in plan.distractors.items()},
            "mtg": plan.mtg.tolist() if plan.mtg is not None else None,
        }
    )


#: the settings that make two bench records parts of one benchmark (with the inputs' content)
SETTINGS = ("sources", "split", "condition", "mask_cleaning", "mask_dilate", "mtg", "mtg_split")


@dataclass
class PlannedBench:
    """One benchmark as planned: the config, the identities, MTG, the whole plan and its content key;
    the MTG oracles and a judge's pairs are derived once, when first needed."""

    config: BenchConfig
    bench: object  # NearIDBenchmark or FolderBenchmark
    mtg: object | None  # MTGBenchmark
    plan: ImagePlan
    inputs: str
    _oracles: tuple | None = field(default=None, repr=False)
    _judged_pairs: object | None = field(default=None, repr=False)

    @property
    def out(self) -> Path:
        return Path(self.config.out)

    @property
    def condition(self) -> str:
        return "foreground" if self.config.masks else "full"

    @property
    def oracles(self) -> tuple:
        """The MTG oracles (decoded from the masks once for every metric)."""
        if self._oracles is None:
            from nearid.eval.evaluate import mtg_oracles

            self._oracles = mtg_oracles(self.mtg)
        return self._oracles

    @property
    def judged_pairs(self):
        """The pairs a pair scorer is asked: the cells the metrics read (:func:`~nearid.eval.evaluate.plan_judged_pairs`)."""
        if self._judged_pairs is None:
            from nearid.eval.evaluate import plan_judged_pairs

            self._judged_pairs = plan_judged_pairs(self.plan)
        return self._judged_pairs

    def settings(self) -> dict:
        """The settings that change results (:data:`SETTINGS`); where the inputs lie is not one of them."""
        config, masks = self.config, self.config.masks
        return {
            "sources": self.plan.sources,
            "split": config.split_name,
            "condition": self.condition,
            "mask_cleaning": config.mask_cleaning if masks else None,
            "mask_dilate": config.mask_dilate if masks else 0,
            "mtg": self.mtg is not None,
            "mtg_split": config.mtg_split if self.mtg is not None else None,
        }

    def _mask_report(self) -> str:
        """The masks accepted as the authors accept them, for the load report ("" when none)."""
        plan, parts = self.plan, []
        if plan.masks_emptied:
            parts.append(f"{plan.masks_emptied} view masks empty after cleaning (views embedded all black)")
        if plan.masks_resized:
            parts.append(f"{plan.masks_resized} view masks of another aspect ratio resized to their image")
        return "".join(f"; {part}" for part in parts)

    def locations(self) -> dict:
        """Where the inputs are (absolute local paths), for a merge that plans again: never compared."""
        from nearid.io.outputs import recorded_path

        config = self.config
        sources = config.sources
        if sources:
            sources = [f"{s.split('=', 1)[0]}={recorded_path(s.split('=', 1)[1])}" if "=" in s else s for s in sources]
        return {
            "data": recorded_path(config.data),
            "sources": sources,
            "split": config.split,
            "split_file": recorded_path(config.split_file),
            "masks": config.masks,
            "mask_cleaning": config.mask_cleaning,
            "mask_dilate": config.mask_dilate,
            "mtg": recorded_path(config.mtg),
            "mtg_split": config.mtg_split,
            "trials": config.trials,
            "mtg_mask_cleaning": config.mtg_mask_cleaning,
        }

    def info(self):
        """The run metadata at the top of ``results.json`` (:class:`~nearid.eval.results.BenchInfo`)."""
        from nearid.eval.results import BenchInfo

        config, where, bench = self.config, self.locations(), self.bench
        return BenchInfo(
            data=where["data"],
            split=config.split_name,
            split_file=where["split_file"],
            sources=self.plan.sources,
            condition=self.condition,
            identities=len(bench),
            load_report=bench.report.summary() + self._mask_report(),
            mtg=where["mtg"],
            mtg_split=config.mtg_split if self.mtg is not None else None,
            mtg_samples=len(self.mtg) if self.mtg is not None else 0,
            mask_cleaning=config.mask_cleaning if config.masks else None,
            mask_dilate=config.mask_dilate if config.masks else 0,
            views_without_mask=bench.report.views_without_mask + self.plan.views_without_mask,
            inputs=self.inputs,
            trials=config.trials,
            masks_emptied=self.plan.masks_emptied,
            masks_resized=self.plan.masks_resized,
            mtg_mask_cleaning=config.mtg_mask_cleaning if config.masks and self.mtg is not None else None,
        )


def planned(config: BenchConfig) -> PlannedBench:
    """Plan ``config``'s benchmark (:func:`plan_benchmark`) and key it by content (:func:`plan_fingerprint`)."""
    bench, mtg, plan = plan_benchmark(config)
    return PlannedBench(config, bench, mtg, plan, plan_fingerprint(plan))


def config_of(locations: dict, out: str | os.PathLike) -> BenchConfig:
    """The config that plans a record's benchmark again, from its ``locations`` (no encoder)."""
    chosen = ("split", "split_file", "masks", "mask_cleaning", "mask_dilate", "mtg", "mtg_split")
    config = BenchConfig(encoders=[], data=locations["data"], sources=locations["sources"], out=str(out))
    # records written before these settings existed were made with what was then the only behaviour
    later = {
        "trials": locations.get("trials", "slot"),
        "mtg_mask_cleaning": locations.get("mtg_mask_cleaning", locations["mask_cleaning"]),
    }
    return dataclasses.replace(config, **{name: locations[name] for name in chosen}, **later)
