"""Pictures for a person to look at: tracks over a genomic region (``plot``) and saturation
mutagenesis scores (``sat-plot``). matplotlib is imported only when a picture is drawn."""
from .tracks import (BASE_COLORS, DPI, FIG_WIDTH, FORMATS, MARGIN_HEIGHT, MAX_BINS, MAX_PANELS, MAX_SAT_PANELS,
                     MAX_WINDOWS, PANEL_HEIGHT, SAT_INCH_PER_BP, SAT_MAX_WIDTH, SAT_PAIR_HEIGHT, SAT_TOP,
                     BigWigTrack, GenomicRegion, RegionTracks, SatScores, add_plot_subcommand,
                     add_sat_plot_subcommand, bigwig_tracks, binned_means, figure_size, main, model_windows,
                     parse_region, plot_region_from_bigwigs, plot_region_from_model, plot_sat, plot_tracks,
                     predict_region, read_bigwig_region, read_sat, resolve_tracks, run_plot, run_sat_plot,
                     sat_figure_size, sat_importance)
