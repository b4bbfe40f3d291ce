"""``nearid distract``: matched-context near-identity distractors for any NearID-layout dataset.

For every view j of every selected identity: choose a similar but different object (prompts), inpaint
it into view j's (dilated) mask with a diffusers pipeline (generators), paste the original back outside
the mask (compositing), judge the result (quality), and write the hub's distractor schema
index-aligned with the positives, so ``bench --sources NAME`` and ``train --sources NAME`` read it.

Work is done per row into a shard folder beside the output (``.<out>.shards/``). A shard is named by
a content key — the generator and its settings, the compositing options, the seed, the row's prompt
and the bytes of its views and masks — and written atomically, so a killed run resumes where it
stopped and a changed setting never reuses a stale image. Rows are split across processes (accelerate;
``torchrun``/``accelerate launch``); every image depends only on its (identity, view, source) seed, so
any number of processes gives the same bytes. The main process assembles the dataset at the end.
"""

from __future__ import annotations

import contextlib
import io
import json
import shutil
import time
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from nearid.distract import compositing
from nearid.distract.generators import generator_spec, load_generator, quiet, settings_key, view_seed
from nearid.distract.inputs import Inputs, open_inputs
from nearid.distract.prompts import PromptChoice, choose_prompts
from nearid.distract.quality import Verdict, anchor_slot, quality_string
from nearid.distract.settings import check_settings
from nearid.images.decode import load_image, load_mask
from nearid.io.atomic import atomic_path, write_text_atomic
from nearid.io.errors import NearIDError
from nearid.io.locks import output_lock
from nearid.io.outputs import check_outputs
from nearid.io.ownership import check_removable, is_owned, mark, remove_owned, seal_owned

#: the command named in the output's ownership marker (nearid.io.ownership)
COMMAND = "distract"
FORMAT_VERSION = 2  # 2: outside measures are None (n/a) when the dilated mask covers the whole view


@dataclass(frozen=True)
class DistractConfig:
    data: str
    generator: str
    source: str
    out: str | None = None
    split: str | None = "all"
    split_file: str | None = None
    model: str | None = None
    steps: int | None = None
    guidance: float | None = None
    strength: float | None = None
    negative_prompt: str | None = None
    true_cfg: float | None = None
    resolution: int | None = None
    dilate: int = 8
    feather: int = 6
    paste_back: bool = True
    seed: int = 0
    prompts: str | None = None
    template: str = "{description}"
    band: tuple[float, float] = (0.1, 0.8)
    quality_encoder: str | None = None
    change_threshold: float = 2.0
    filter: bool = False
    limit: int | None = None  # only the first N selected rows (a quick look)
    device: str = "auto"
    dtype: str = "auto"
    offload: bool = False
    controlnet: str | None = None
    lora: str | None = None
    overwrite: bool = False
    keep_shards: bool = False
    contact_rows: int = 8
    progress: bool = True


def _state(device: str):
    import torch
    from accelerate import PartialState

    return PartialState(cpu=device == "cpu" or not torch.cuda.is_available())


def _png(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG", compress_level=6)
    return buffer.getvalue()


def _settings_payload(config: DistractConfig, generator_fingerprint: dict) -> dict:
    return {
        "version": FORMAT_VERSION,
        "generator": generator_fingerprint,
        "source": config.source,
        "seed": config.seed,
        "dilate": config.dilate,
        "feather": config.feather,
        "paste_back": config.paste_back,
    }


def _generator_fingerprint(config: DistractConfig) -> dict:
    """The generator's identity and settings without loading it (to find finished shards first)."""
    spec = generator_spec(config.generator)
    overrides = {
        "steps": config.steps,
        "guidance": config.guidance,
        "strength": config.strength,
        "negative_prompt": config.negative_prompt,
        "true_cfg": config.true_cfg,
        "resolution": config.resolution,
    }
    settings = {**asdict(spec.defaults), **{k: v for k, v in overrides.items() if v is not None}}
    options = {"controlnet": config.controlnet, "lora": config.lora} if spec.name == "qwen-image" else {}
    return {"generator": spec.name, "model": config.model or spec.model, "settings": settings, **options}


# ------------------------------------------------------------------------------------- one row
def generate_row(generator, config: DistractConfig, inputs: Inputs, row: int, choice: PromptChoice) -> dict:
    """Distractors of every view of ``row``: PNG bytes and measurements per slot."""
    images, info = {}, {}
    for slot, (image_ref, mask_ref) in sorted(inputs.views[row].items()):
        view = load_image(image_ref)
        mask = load_mask(mask_ref)
        if mask.shape != (view.height, view.width):
            mask = np.asarray(Image.fromarray(mask).resize(view.size, Image.Resampling.NEAREST))
        if not mask.any():
            raise NearIDError(
                f"{mask_ref.key}: the mask is empty, so there is nothing to inpaint; fix or drop the view"
            )
        region = compositing.dilate(mask, config.dilate)
        started = time.perf_counter()
        raw = np.asarray(
            generator.inpaint(
                view, region, choice.prompts[slot], view_seed(config.seed, inputs.ids[row], slot, config.source)
            )
        )
        seconds = time.perf_counter() - started
        original = np.asarray(view)
        weights = compositing.blend_weights(region, config.feather)
        final = compositing.paste_back(original, raw, weights) if config.paste_back else raw
        images[slot] = _png(final)
        info[slot] = {
            "seconds": round(seconds, 4),
            "changed": compositing.inside_difference(original, final, mask),
            "outside": compositing.outside_difference(original, final, region),
            "seam": compositing.seam_strength(original, final, region),
            "outside_without_paste_back": compositing.outside_difference(original, raw, region),
            "seam_without_paste_back": compositing.seam_strength(original, raw, region),
            "outside_with_paste_back": compositing.outside_difference(
                original, compositing.paste_back(original, raw, weights), region
            ),
            "seam_with_paste_back": compositing.seam_strength(
                original, compositing.paste_back(original, raw, weights), region
            ),
        }
    return {"images": images, "info": info}


# ------------------------------------------------------------------------------------- shards
class ShardFolder:
    """``<folder>/row-<row>-<key>.safetensors``: PNG bytes per slot, measurements in the metadata."""

    def __init__(self, folder: Path):
        self.folder = folder

    def path(self, row: int, key: str) -> Path:
        return self.folder / f"row-{row:08d}-{key[:20]}.safetensors"

    def write(self, row: int, key: str, result: dict, prompts: tuple) -> None:
        from safetensors.numpy import save_file

        tensors = {f"slot{j}": np.frombuffer(data, dtype=np.uint8) for j, data in result["images"].items()}
        meta = {
            "row": row,
            "key": key,
            "prompts": list(prompts),
            "info": {str(j): v for j, v in result["info"].items()},
        }
        with atomic_path(self.path(row, key)) as tmp:
            save_file(tensors, str(tmp), metadata={"nearid": json.dumps(meta)})

    def read(self, row: int, key: str) -> dict:
        from safetensors import safe_open

        with safe_open(self.path(row, key), "np") as handle:
            meta = json.loads(handle.metadata()["nearid"])
            images = {int(name[4:]): handle.get_tensor(name).tobytes() for name in handle.keys()}  # noqa: SIM118 (safe_open is not iterable)
        return {"images": images, "info": {int(j): v for j, v in meta["info"].items()}, "prompts": meta["prompts"]}


# ------------------------------------------------------------------------------------- driver
def resolve_out(config: DistractConfig, inputs: Inputs) -> Path:
    """The output folder, checked before any model loads by the shared mechanisms: not the dataset
    being read nor inside it (:func:`~nearid.io.outputs.check_outputs`), and -- when it exists and
    ``--overwrite`` asks to replace it -- made by ``nearid distract`` and holding nothing distract did not
    write (:func:`~nearid.io.ownership.check_removable`: a user's note in it refuses the run, one line)."""
    out = Path(config.out).expanduser() if config.out else inputs.default_out(config.source)
    if out.resolve() == Path(inputs.location).expanduser().resolve():
        raise NearIDError(f"--out {out}: is the input dataset; choose another folder")
    check_outputs([], [inputs.location], replaced=[out])  # the default, a new source beside the positives, is fine
    if out.exists() and any(out.iterdir()):
        if not config.overwrite:
            raise NearIDError(f"{out}: already exists and is not empty; choose another --out or pass --overwrite")
        if is_owned(out):
            check_removable(out, COMMAND)
        elif not _summary_path(out, inputs, config).is_file():
            raise NearIDError(
                f"{out}: was not written by nearid distract, so it will not be replaced; choose another --out"
            )
    return out


def distract(config: DistractConfig) -> dict | None:
    """Run ``nearid distract``; the summary (also ``<out>/distract.json``) on the main process, else None."""
    check_settings(config)
    spec = generator_spec(config.generator)
    if not config.source or "/" in config.source or "=" in config.source:
        raise NearIDError(f"--source '{config.source}': give a plain name such as Gen or MyFlux")
    inputs = open_inputs(config.data, split=config.split, split_file=config.split_file)
    rows = [r for r in inputs.rows if inputs.views[r]]
    if config.limit is not None:
        rows = rows[: config.limit]
    out = resolve_out(config, inputs)
    state = _state(config.device)
    # the main process assembles and swaps in the output: a second run into the same --out is refused
    lock = output_lock(out, "nearid distract") if state.is_main_process else contextlib.nullcontext()
    with lock:
        return _generate(config, spec, inputs, rows, out, state)


def _generate(config: DistractConfig, spec, inputs: Inputs, rows: list[int], out: Path, state) -> dict | None:
    """Generate the missing shards of ``rows`` (this process's share) and, on the main process, assemble."""
    from tqdm.auto import tqdm

    slots = {row: sorted(inputs.views[row]) for row in rows}
    choices = choose_prompts(
        inputs.ids,
        inputs.descriptions,
        inputs.categories,
        inputs.assets,
        slots,
        band=config.band,
        template=config.template,
        prompts_file=config.prompts,
    )
    base = _settings_payload(config, _generator_fingerprint(config))
    keys = {
        row: settings_key(
            {
                **base,
                "row": row,
                "id": str(inputs.ids[row]),
                "prompts": choices[row].prompts,
                "input": inputs.fingerprint(row),
            }
        )
        for row in rows
    }
    shards = ShardFolder(out.parent / f".{out.name}.shards")
    todo = [row for row in rows if not shards.path(row, keys[row]).is_file()]
    mine = todo[state.process_index :: state.num_processes]
    started = time.perf_counter()
    if mine:
        generator = load_generator(
            config.generator,
            model=config.model,
            device=str(state.device) if config.device == "auto" else config.device,
            dtype=config.dtype,
            offload=config.offload,
            controlnet=config.controlnet,
            lora=config.lora,
            steps=config.steps,
            guidance=config.guidance,
            strength=config.strength,
            negative_prompt=config.negative_prompt,
            true_cfg=config.true_cfg,
            resolution=config.resolution,
        )
        bar = tqdm(
            mine,
            desc=f"distract {config.source}",
            unit="identity",
            disable=not (config.progress and state.is_main_process),
        )
        with quiet():  # no per-call truncation warnings (long prompts are cut to the text encoders' length)
            for row in bar:
                shards.write(
                    row, keys[row], generate_row(generator, config, inputs, row, choices[row]), choices[row].prompts
                )
    if state.num_processes > 1:
        print(f"process {state.process_index}: generated {len(mine)} identities", flush=True)
    state.wait_for_everyone()
    if not state.is_main_process:
        return None
    summary = _assemble(config, inputs, rows, keys, choices, shards, out, spec)
    summary["resumed_identities"] = len(rows) - len(todo)
    summary["processes"] = state.num_processes
    summary["seconds"]["wall"] = round(time.perf_counter() - started, 2)
    write_text_atomic(_summary_path(out, inputs, config), json.dumps(summary, indent=2) + "\n")
    seal_owned(out, COMMAND)  # what distract wrote; anything added later is not its to delete
    if not config.keep_shards:
        shutil.rmtree(shards.folder, ignore_errors=True)
    return summary


def _summary_path(out: Path, inputs: Inputs, config: DistractConfig) -> Path:
    return out / "distract.json" if inputs.kind == "nearid" else out / f"NearID-{config.source}" / "distract.json"


def _assemble(config, inputs: Inputs, rows, keys, choices, shards: ShardFolder, out: Path, spec) -> dict:
    from datasets import Dataset, DatasetDict
    from datasets.utils.logging import disable_progress_bar

    from nearid.data.schema import distractor_column, distractors_features

    disable_progress_bar()
    results = {row: shards.read(row, keys[row]) for row in rows}
    verdicts = _verdicts(config, inputs, results)
    columns: dict[str, list] = {name: [] for name in distractors_features()}
    kept = Counter()
    for row in range(len(inputs)):
        result = results.get(row)
        columns["id"].append(inputs.ids[row])
        columns["category"].append(inputs.categories[row])
        columns["category_description"].append(inputs.descriptions[row])
        columns["n_images"].append(inputs.n_images[row])
        columns["objaverse_id"].append(inputs.assets[row])
        columns["quality"].append(quality_string(verdicts[row]) if result else None)
        judged = {v.slot: v for v in verdicts.get(row, [])}
        for j in range(3):
            present = result is not None and j in result["images"]
            keep = present and (not config.filter or judged[j].ok)
            kept["kept" if keep else ("filtered" if present else "absent")] += 1
            columns[distractor_column(j)].append({"bytes": result["images"][j], "path": None} if keep else None)
            columns[f"prompts{j + 1}"].append(result["prompts"][j] if present else None)
    partial = out.with_name(out.name + ".partial")
    remove_owned(partial, COMMAND)  # a killed run's half-built folder (marked when it was made), never a user's
    target = partial if inputs.kind == "nearid" else partial / f"NearID-{config.source}"
    features = distractors_features()
    DatasetDict({"train": Dataset.from_dict(columns, features=features)}).save_to_disk(str(target))
    mark(partial, COMMAND)
    if inputs.kind == "folder":
        _write_folder_positives(inputs, partial / "NearID")
    summary = _summary(config, inputs, rows, results, verdicts, choices, kept, spec, out)
    side = target
    _contact_sheet(config, inputs, rows, results, verdicts, choices, spec, side / "contact_sheet.png")
    write_text_atomic(side / "quality.md", _quality_markdown(summary))
    with atomic_path(side / "prompts.jsonl") as tmp, open(tmp, "w", encoding="utf-8") as handle:
        for row in rows:
            c = choices[row]
            handle.write(
                json.dumps(
                    {
                        "row": row,
                        "id": inputs.ids[row],
                        "prompt": next(p for p in c.prompts if p),
                        "how": c.source,
                        "from_row": c.donor_row,
                        "from_id": None if c.donor_row is None else inputs.ids[c.donor_row],
                        "similarity": None if c.similarity is None else round(c.similarity, 4),
                    },
                    default=str,
                )
                + "\n"
            )
    if is_owned(out):
        remove_owned(out, COMMAND)  # checked before any model loaded; checked again now, files may have come
    elif out.exists():
        shutil.rmtree(out)  # an output of a release before the ownership marker (its distract.json checked)
    partial.rename(out)
    return summary


def _verdicts(config, inputs: Inputs, results: dict) -> dict[int, list[Verdict]]:
    sims = _identity_similarities(config, inputs, results) if config.quality_encoder else {}
    verdicts = {}
    for row, result in results.items():
        verdicts[row] = [
            Verdict(
                j,
                info["changed"],
                *sims.get((row, j), (None, None)),
                change_threshold=config.change_threshold,
                background=info["outside"] is not None,
            )
            for j, info in sorted(result["info"].items())
        ]
    return verdicts


def _identity_similarities(config, inputs: Inputs, results: dict) -> dict[tuple[int, int], tuple[float, float]]:
    """(row, slot) -> (similarity of the distractor to the anchor view, of the true view to the anchor)."""
    from nearid.models.embedding import embed
    from nearid.models.encoders import load_encoder

    encoder = load_encoder(config.quality_encoder, device=config.device)
    images, masks, index = [], [], {}

    def add(key, image, mask):
        if key not in index:
            index[key] = len(images)
            images.append(image)
            masks.append(mask)
        return index[key]

    triples = {}
    for row, result in results.items():
        slots = sorted(inputs.views[row])
        for j in result["images"]:
            k = anchor_slot(slots, j)
            if k is None:
                continue
            view_j, mask_j = inputs.views[row][j]
            view_k, mask_k = inputs.views[row][k]
            d = add(("d", row, j), Image.open(io.BytesIO(result["images"][j])).convert("RGB"), mask_j)
            triples[(row, j)] = (d, add(("v", row, j), view_j, mask_j), add(("v", row, k), view_k, mask_k))
    if not images:
        return {}
    vectors = embed(encoder, images, masks, progress=False).double().numpy()
    return {key: (float(vectors[d] @ vectors[a]), float(vectors[v] @ vectors[a])) for key, (d, v, a) in triples.items()}


def _summary(config, inputs: Inputs, rows, results, verdicts, choices, kept, spec, out: Path) -> dict:
    infos = [info for result in results.values() for info in result["info"].values()]
    labels = Counter(v.label for vs in verdicts.values() for v in vs)

    def mean(name):
        values = [info[name] for info in infos if info[name] is not None]  # n/a views have no background
        return round(float(np.mean(values)), 4) if values else None

    return {
        "generator": spec.name,
        "untrained": spec.untrained,
        "settings": _generator_fingerprint(config),
        "config": {k: v for k, v in asdict(config).items() if k not in {"progress"}},
        "input": inputs.label,
        "out": str(out),
        "rows": len(inputs),
        "identities": len(rows),
        "distractors": len(infos),
        "kept": kept["kept"],
        "filtered": kept["filtered"],
        "quality": dict(sorted(labels.items())),
        "prompts": dict(Counter(choices[row].source for row in rows)),
        "measurements": {
            "changed_inside_mask": mean("changed"),
            "outside_mean_abs": {
                "with_paste_back": mean("outside_with_paste_back"),
                "without_paste_back": mean("outside_without_paste_back"),
            },
            "seam": {
                "with_paste_back": mean("seam_with_paste_back"),
                "without_paste_back": mean("seam_without_paste_back"),
            },
        },
        "seconds": {"per_image": mean("seconds"), "generation": round(sum(i["seconds"] for i in infos), 2)},
    }


def _quality_markdown(summary: dict) -> str:
    m = summary["measurements"]

    def na(value):  # no view kept any background: nothing outside the mask was measured
        return "n/a" if value is None else value

    title = f"{summary['generator']}{' (untrained: random weights, noise not objects)' if summary['untrained'] else ''}"
    lines = [
        f"# Distractors {summary['config']['source']} from {summary['input']}",
        "",
        f"generator: {title}",
        "",
        f"{summary['identities']} identities, {summary['distractors']} distractors; kept {summary['kept']}, "
        f"filtered {summary['filtered']}",
        "",
        "| verdict | count |",
        "|---|---|",
        *[f"| {k} | {v} |" for k, v in summary["quality"].items()],
        "",
        "| measurement (0-255) | with paste-back | without |",
        "|---|---|---|",
        f"| mean abs difference outside the dilated mask | {na(m['outside_mean_abs']['with_paste_back'])} | {na(m['outside_mean_abs']['without_paste_back'])} |",
        f"| seam (excess step across the mask border) | {na(m['seam']['with_paste_back'])} | {na(m['seam']['without_paste_back'])} |",
        "",
        f"mean change inside the mask: {m['changed_inside_mask']}; seconds per image: {summary['seconds']['per_image']}",
        f"prompts: {summary['prompts']}",
        "",
    ]
    return "\n".join(lines)


def _contact_sheet(config, inputs: Inputs, rows, results, verdicts, choices, spec, path: Path, tile: int = 128) -> None:
    """Anchor view, its (dilated) mask, the distractor and the prompt, for the first few views."""
    from PIL import ImageDraw

    cells = [(row, j) for row in rows for j in sorted(results[row]["images"])][: config.contact_rows]
    text_width, header = 3 * tile, 28
    sheet = Image.new("RGB", (3 * tile + text_width, header + tile * max(1, len(cells))), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    label = f"{spec.name}{' (UNTRAINED: random weights)' if spec.untrained else ''} -> {config.source}"
    draw.text((3, 1), label, fill=(200, 0, 0) if spec.untrained else (0, 0, 0))
    draw.text((3, 14), "view | mask (dilated) | distractor | prompt, verdict", fill=(0, 0, 0))
    judged = {(row, v.slot): v.label for row, vs in verdicts.items() for v in vs}
    for n, (row, j) in enumerate(cells):
        image_ref, mask_ref = inputs.views[row][j]
        view = load_image(image_ref)
        mask = compositing.dilate(load_mask(mask_ref), config.dilate)
        distractor = Image.open(io.BytesIO(results[row]["images"][j])).convert("RGB")
        y = header + n * tile
        for c, image in enumerate([view, Image.fromarray(mask.astype(np.uint8) * 255).convert("RGB"), distractor]):
            sheet.paste(image.resize((tile, tile)), (c * tile, y))
        prompt = choices[row].prompts[j] or ""
        words, line, lines = prompt.split(), "", []
        for word in words:
            if len(line) + len(word) > 58:
                lines.append(line)
                line = ""
            line += word + " "
        lines = [*([*lines, line])[:7], f"id {inputs.ids[row]} view {j + 1}: {judged.get((row, j), '')}"]
        draw.multiline_text((3 * tile + 4, y + 2), "\n".join(lines), fill=(0, 0, 0))
    with atomic_path(path) as tmp:
        sheet.save(tmp, format="PNG")


def _write_folder_positives(inputs: Inputs, target: Path) -> None:
    """The folder layout's identities as a hub-schema positives dataset (``id`` = row position)."""
    from datasets import Dataset, DatasetDict

    from nearid.data.schema import image_column, mask_column, positives_features

    features = positives_features()
    columns: dict[str, list] = {name: [] for name in features}
    for row, identity in enumerate(inputs.folder_identities):
        values = {
            "id": row,
            "category": inputs.categories[row],
            "category_description": inputs.descriptions[row],
            "n_images": len(identity.view_slots),
            "objaverse_id": str(identity.id),
            "dino_01": None,
            "dino_02": None,
            "dino_12": None,
            "quality": None,
            "id_safe": None,
            "split": identity.split or "test",
        }
        for j in range(3):
            view = identity.views[j]
            present = view is not None
            values[image_column(j)] = (
                {"bytes": Path(view.image.fetch()).read_bytes(), "path": None} if present else None
            )
            values[mask_column(j)] = (
                {"bytes": Path(view.mask.fetch()).read_bytes(), "path": None} if present and view.mask else None
            )
            values[f"aesthetics{j + 1}"] = None
            values[f"size{j + 1}"] = None
            values[f"prompts{j + 1}"] = inputs.descriptions[row] if present else None
            values[f"filenames{j + 1}"] = f"{identity.id}/{Path(view.image.key).name}" if present else None
        for name in features:
            columns[name].append(values[name])
    DatasetDict({"train": Dataset.from_dict(columns, features=features)}).save_to_disk(str(target))
