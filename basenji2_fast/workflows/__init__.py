"""The workflows, one module each: it owns its inputs, its tasks (the units a distributed run
hands to :mod:`basenji2_fast.runner`), its output writer, its resume and its subcommand.

==================  =================  =====================================================
module              command            output
==================  =================  =====================================================
genome_tiling       predict-genome     one bigWig per track over whole chromosomes
regions             predict-bed        predict.h5 for BED regions (basenji_predict_bed.py)
variants            sad                sad.h5 / sad.tsv variant effects (basenji_sad.py)
ism                 sat                scores.h5 saturation mutagenesis (basenji_sat_bed.py)
embed               embed              trunk embeddings of BED regions
heads               fit-head           a new head on the frozen trunk
evaluate            test               accuracy against observed coverage (basenji_test.py)
orthologs           orthologs          human vs mouse predictions at orthologous loci
==================  =================  =====================================================
"""
