"""A contact sheet of a NearID-style benchmark: what a person checks before trusting the numbers.

One row per identity: the anchor (view 1), the other views, then each source's distractor in the
anchor's background. Read back through the loaders, so it shows exactly what a benchmark sees.
"""

from __future__ import annotations

import os

from PIL import Image, ImageDraw

from nearid.images.decode import load_image
from nearid.io.atomic import atomic_path

LABEL_HEIGHT = 14


def contact_sheet(bench, out: str | os.PathLike, *, rows: int = 6, tile: int = 128) -> None:
    """Write a PNG grid of ``rows`` identities of ``bench`` (any sequence of Identity records)."""
    sources = list(getattr(bench, "source_names", []))
    headers = ["anchor (view 1)", "view 2", "view 3"] + [f"{s} distractor" for s in sources]
    identities = [bench[i] for i in range(min(rows, len(bench)))]
    sheet = Image.new("RGB", (tile * len(headers), LABEL_HEIGHT + tile * len(identities)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for column, header in enumerate(headers):
        draw.text((column * tile + 3, 1), header, fill=(0, 0, 0))
    for row, identity in enumerate(identities):
        anchor = identity.view_slots[0]
        others = identity.view_slots[1:]
        cells = [identity.views[anchor].image] + [identity.views[j].image for j in others] + [None] * (2 - len(others))
        cells += [identity.distractor(source, anchor) for source in sources]
        for column, ref in enumerate(cells):
            if ref is not None:
                sheet.paste(load_image(ref).resize((tile, tile)), (column * tile, LABEL_HEIGHT + row * tile))
    with atomic_path(out) as tmp:
        sheet.save(tmp, format="PNG")
