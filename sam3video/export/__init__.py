"""Output writers: MOT boxes, MOTS masks, saved detections, the overlay video and the summary JSON — all
written atomically.

Exporters are context managers consuming the predictor's ``(frame_index, Detections)`` stream::

    with MOTWriter(out / "tracks.txt") as mot, MOTSWriter(out / "tracks.mots.txt") as mots:
        for frame_index, dets in results:
            mot.write(frame_index, dets)
            mots.write(frame_index, dets)

Names are imported lazily (PyAV and OpenCV load only when the overlay is used).
"""

from importlib import import_module

_LAZY = {
    "atomic_open": "atomic",
    "atomic_path": "atomic",
    "MOTWriter": "mot",
    "read_mot": "mot",
    "read_detection_file": "mot",
    "MOTSWriter": "mots",
    "read_mots": "mots",
    "make_disjoint": "mots",
    "encode_rle": "mots",
    "OverlayWriter": "overlay",
    "annotate": "overlay",
    "color_for": "overlay",
    "PALETTE": "overlay",
    "read_saved_detections": "detections_store",
    "SavedFrame": "detections_store",
    "StoreMeta": "detections_store",
    "OUTPUT_NAMES": "outputs",
    "prompt_slug": "outputs",
    "per_prompt_names": "outputs",
    "prepare_out_dir": "outputs",
    "TrackStats": "summary",
    "write_summary": "summary",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
