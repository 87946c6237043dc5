"""Frames in: decoding backends (PyAV, decord, OpenCV), the loader (files, folders, arrays, iterables; windows of
long inputs) and the lazy cache of preprocessed frames."""
