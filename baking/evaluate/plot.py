"""Draw reference and predicted features as tracks, so a user sees at a glance where the model is off.

Without a region the genome is cut into bins and the bins where the exact-match F1 is worst (and
something is annotated) are drawn, one panel each. Predicted features are coloured by how they
match: exact (green), right stop but wrong start (orange), neither (red).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrow, Patch  # noqa: E402

from baking.common.files import atomic_path  # noqa: E402
from baking.evaluate.metrics import Feature, exact_scores  # noqa: E402

Region = tuple[str, int, int]


def worst_regions(
    ref: Sequence[Feature], pred: Sequence[Feature], *, bin_bp: int = 10_000, n: int = 4
) -> list[Region]:
    """The ``n`` bins (seqid, start, end) with the lowest exact F1 that hold any feature."""
    bins: dict[tuple[str, int], tuple[list[Feature], list[Feature]]] = {}
    for side, feats in ((0, ref), (1, pred)):
        for f in feats:
            key = (f.seqid, (f.start - 1) // bin_bp)
            bins.setdefault(key, ([], []))[side].append(f)
    scored = sorted(
        (exact_scores(r, p).f1, -(len(r) + len(p)), key) for key, (r, p) in bins.items()
    )
    return [(seqid, b * bin_bp + 1, (b + 1) * bin_bp) for _, _, (seqid, b) in scored[:n]]


def _draw(
    ax: plt.Axes, feats: Sequence[Feature], y: float, colours: Sequence[str], lo: int, hi: int
) -> None:
    for f, colour in zip(feats, colours):
        if f.end < lo or f.start > hi:
            continue
        length = f.end - f.start + 1
        head = min(length, (hi - lo) * 0.015)
        x, dx = (f.start, length) if f.strand != "-" else (f.end, -length)
        ax.add_patch(
            FancyArrow(
                x,
                y,
                dx,
                0,
                width=0.25,
                head_width=0.35,
                head_length=head,
                length_includes_head=True,
                color=colour,
                alpha=0.85,
            )
        )


def plot_tracks(
    ref: Sequence[Feature],
    pred: Sequence[Feature],
    out_png: str | Path,
    *,
    regions: Sequence[Region] | None = None,
    title: str = "",
) -> list[Region]:
    """Write a PNG with one panel per region (reference above, prediction below); returns them."""
    regions = list(regions) if regions else worst_regions(ref, pred)
    if not regions:
        regions = [(ref[0].seqid if ref else "", 1, 10_000)]
    ref_keys = {(f.seqid, f.start, f.end, f.strand) for f in ref}
    ref_stops = {(f.seqid, f.three_prime, f.strand) for f in ref}
    fig, axes = plt.subplots(len(regions), 1, figsize=(12, 1.8 * len(regions)), squeeze=False)
    for ax, (seqid, lo, hi) in zip(axes[:, 0], regions):
        r = [f for f in ref if f.seqid == seqid]
        p = [f for f in pred if f.seqid == seqid]
        p_col = [
            "tab:green"
            if (f.seqid, f.start, f.end, f.strand) in ref_keys
            else "tab:orange"
            if (f.seqid, f.three_prime, f.strand) in ref_stops
            else "tab:red"
            for f in p
        ]
        _draw(ax, r, 1.0, ["tab:blue"] * len(r), lo, hi)
        _draw(ax, p, 0.0, p_col, lo, hi)
        ax.set_xlim(lo, hi)
        ax.set_ylim(-0.6, 1.6)
        ax.set_yticks([0, 1], ["predicted", "reference"])
        ax.set_title(f"{seqid}:{lo}-{hi}", fontsize=9, loc="left")
    handles = [
        Patch(color=c, label=lbl)
        for c, lbl in (
            ("tab:blue", "reference"),
            ("tab:green", "exact"),
            ("tab:orange", "stop only"),
            ("tab:red", "wrong"),
        )
    ]
    fig.legend(handles=handles, loc="upper right", ncol=4, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, x=0.01, ha="left", fontsize=10)
    fig.tight_layout()
    try:
        with atomic_path(out_png) as tmp:  # keeps the suffix: savefig picks the format from it
            fig.savefig(tmp, dpi=100)
    finally:
        plt.close(fig)
    return regions
