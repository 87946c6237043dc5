"""sam3video: video concept tracking with the SAM 3 detector.

Public API (imported lazily, so ``import sam3video`` and ``sam3video --help`` stay fast):
``build_model``, ``load_model``, ``load_config``, ``Sam3Config``, ``Sam3Processor`` (images);
``VideoPredictor``, ``TrackingConfig``, ``Detections`` (video); ``TrackJob``, ``track`` (a whole run to files).
"""

from importlib import import_module

__version__ = "0.1.0"

_LAZY = {
    "build_model": "sam3video.model.build",
    "load_config": "sam3video.model.build",
    "Sam3Config": "sam3video.model.build",
    "load_model": "sam3video.model.checkpoint",
    "Sam3Processor": "sam3video.processor",
    "VideoPredictor": "sam3video.video.predictor",
    "TrackingConfig": "sam3video.video.predictor",
    "TrackJob": "sam3video.run",
    "track": "sam3video.run",
    "Detections": "sam3video.detections",
    "InputError": "sam3video.errors",
    "CheckpointError": "sam3video.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'sam3video' has no attribute {name!r}")
