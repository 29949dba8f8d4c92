"""Pictures for a person to look at: tracks over a genomic region (``plot``, :mod:`.tracks`),
saturation mutagenesis scores (``sat-plot``, :mod:`.sat`) and gradient contribution scores
(``saliency-plot``, :mod:`.saliency`), sharing :mod:`.figure` (and the logos :mod:`.logo`).
matplotlib is imported only when a picture is drawn."""
import argparse
from typing import List, Optional

from ..genome import GenomicRegion, parse_region
from ..coverage import binned_means
from .figure import DPI, FIG_WIDTH, FORMATS, output_format, panel_titles, save_figure
from .logo import BASE_COLORS
from .saliency import (SaliencyScores, add_saliency_plot_subcommand, plot_saliency, read_saliency,
                       run_saliency_plot)
from .sat import (MAX_SAT_PANELS, SAT_INCH_PER_BP, SAT_MAX_WIDTH, SAT_PAIR_HEIGHT, SAT_TOP, SatScores,
                  add_sat_plot_subcommand, plot_sat, read_sat, run_sat_plot, sat_figure_size, sat_importance)
from .tracks import (MARGIN_HEIGHT, MAX_BINS, MAX_PANELS, MAX_WINDOWS, PANEL_HEIGHT, BigWigTrack, RegionTracks,
                     add_plot_subcommand, bigwig_tracks, figure_size, model_windows, plot_region_from_bigwigs,
                     plot_region_from_model, plot_tracks, predict_region, read_bigwig_region, resolve_tracks,
                     run_plot)


def main(argv: Optional[List[str]] = None) -> int:
    """``python -m basenji2_fast.plots plot|sat-plot|saliency-plot ...``: the picture commands without the
    package CLI."""
    parser = argparse.ArgumentParser(prog="basenji2-fast")
    sub = parser.add_subparsers(dest="command", required=True)
    add_plot_subcommand(sub)
    add_sat_plot_subcommand(sub)
    add_saliency_plot_subcommand(sub)
    args = parser.parse_args(argv)
    return args.func(args)
