"""Column layouts of the hub datasets (spec section 3), shared by the loaders and the generator.

``Aleksandar/NearID`` holds the positives; each ``Aleksandar/NearID-<Source>`` holds, row for row, the
distractor inpainted into the background of each view; ``abdo-eldesokey/mtg-dataset`` holds part edits.
"""

from __future__ import annotations

VIEW_SLOTS = (0, 1, 2)  # view j lives in column images{j+1}; its distractors in nimg{j+1}


def image_column(j: int) -> str:
    return f"images{j + 1}"


def mask_column(j: int) -> str:
    return f"masks{j + 1}"


def distractor_column(j: int) -> str:
    return f"nimg{j + 1}"


POSITIVES_REQUIRED = ("id", "n_images", *map(image_column, VIEW_SLOTS), *map(mask_column, VIEW_SLOTS))
DISTRACTORS_REQUIRED = ("id", *map(distractor_column, VIEW_SLOTS))

MTG_COLUMNS = {
    "original": ("image_1_original", "image_2_original"),
    "edited": ("image_1_inpainted", "image_2_inpainted"),
    "object_mask": ("image_1_object_mask", "image_2_object_mask"),
    "part_mask": ("image_1_part_mask", "image_2_part_mask"),
}
MTG_REQUIRED = tuple(column for pair in MTG_COLUMNS.values() for column in pair)

#: The paper's distractor sources; the headline average pools the 7 fill-based ones.
HUB_POSITIVES = "Aleksandar/NearID"
HUB_MTG = "abdo-eldesokey/mtg-dataset"
HUB_SOURCES = ("Flux", "Flux_1024", "Qwen", "Qwen_1328", "PowerPaint", "SDXL", "SDXL_1024", "FluxC", "FluxC_1024")
TRAINING_SOURCES = ("Flux", "Flux_1024", "Qwen", "Qwen_1328")
UNSEEN_FILL_SOURCES = ("PowerPaint", "SDXL", "SDXL_1024")
HEADLINE_SOURCES = TRAINING_SOURCES + UNSEEN_FILL_SOURCES


def positives_features():
    """``datasets.Features`` of the positives dataset, exactly as on the hub."""
    from datasets import Features, Image, List, Value

    columns = {"id": Value("int64"), "category": Value("string"), "category_description": Value("string")}
    columns.update({image_column(j): Image() for j in VIEW_SLOTS})
    columns.update({mask_column(j): Image() for j in VIEW_SLOTS})
    columns.update({"n_images": Value("int64"), "objaverse_id": Value("string")})
    columns.update({name: Value("float64") for name in ("dino_01", "dino_02", "dino_12")})
    columns.update({f"aesthetics{j + 1}": Value("float64") for j in VIEW_SLOTS})
    columns.update({f"size{j + 1}": List(Value("int64")) for j in VIEW_SLOTS})
    columns.update({f"prompts{j + 1}": Value("string") for j in VIEW_SLOTS})
    columns.update({f"filenames{j + 1}": Value("string") for j in VIEW_SLOTS})
    columns.update({"quality": Value("string"), "id_safe": Value("bool"), "split": Value("string")})
    return Features(columns)


def distractors_features():
    """``datasets.Features`` of one ``NearID-<Source>`` dataset (no mask columns, as on the hub)."""
    from datasets import Features, Image, Value

    columns = {"id": Value("int64"), "category": Value("string"), "category_description": Value("string")}
    columns.update({distractor_column(j): Image() for j in VIEW_SLOTS})
    columns.update({"n_images": Value("int64"), "objaverse_id": Value("string")})
    columns.update({f"prompts{j + 1}": Value("string") for j in VIEW_SLOTS})
    columns["quality"] = Value("string")
    return Features(columns)


def mtg_features():
    from datasets import Features, Image

    return Features({column: Image() for column in MTG_REQUIRED})
