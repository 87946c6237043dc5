"""Tracking evaluation (HOTA, CLEAR MOT, Identity) of MOT box files and MOTS mask files, with TrackEval."""

from sam3video.export.tables import TrackTable, read_mot, read_mots
from sam3video.eval.metrics import EvalResult, SequenceResult, run_eval
from sam3video.eval.report import format_table
from sam3video.eval.sequences import SequencePair, pair_sequences

__all__ = ["EvalResult", "SequencePair", "SequenceResult", "TrackTable", "format_table", "pair_sequences",
           "read_mot", "read_mots", "run_eval"]
