"""Lazy frames: memory stays flat however long the clip.

``LazyFrames`` is the ``img_batch_all_stages`` the detector indexes: frame ``i`` of a window is
decoded and preprocessed only when asked for (a background thread decodes a few frames ahead), and only
the last ``capacity`` preprocessed frames are kept. Each frame's backbone features live only while its
batch is post-processed.
"""

from __future__ import annotations

import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import torch

_END = object()


class LazyFrames:
    """An indexable of preprocessed (3, R, R) frames over a forward-only frame iterator.

    ``frames`` yields items (e.g. loader ``Frame`` objects); ``preprocess(item) -> tensor``. Index ``i``
    is the i-th item of the iterator; indices must be requested in (roughly) increasing order: asking
    for one older than the last ``capacity`` raises ``IndexError``. ``len()`` is ``num_frames`` when
    known, else the number of frames decoded so far (it grows; the detector only needs it to exceed
    the indices it asked for).
    """

    def __init__(
        self,
        frames: Iterator[Any],
        preprocess: Callable[[Any], torch.Tensor],
        num_frames: int | None = None,
        capacity: int = 4,
        lookahead: int = 4,
    ):
        self.num_frames = num_frames
        self.capacity = capacity
        self._preprocess = preprocess
        self._items: OrderedDict[int, tuple[Any, torch.Tensor]] = OrderedDict()
        self._next_index = 0
        self.exhausted = False
        self._queue: queue.Queue = queue.Queue(maxsize=max(lookahead, 1))
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._produce, args=(iter(frames),), daemon=True)
        self._thread.start()

    def _produce(self, frames: Iterator[Any]) -> None:
        try:
            for item in frames:
                tensor = self._preprocess(item)
                while not self._stop.is_set():
                    try:
                        self._queue.put((item, tensor), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if self._stop.is_set():
                    return
        except BaseException as e:  # re-raised in the consumer's thread
            self._error = e
        self._queue.put(_END)

    def __len__(self) -> int:
        return self.num_frames if self.num_frames is not None else self._next_index

    def _pull(self) -> bool:
        item = self._queue.get()
        if item is _END:
            self._queue.put(_END)
            self.exhausted = True
            if self._error is not None:
                raise self._error
            return False
        self._items[self._next_index] = item
        self._next_index += 1
        while len(self._items) > self.capacity:
            self._items.popitem(last=False)
        return True

    def get(self, index: int) -> tuple[Any, torch.Tensor]:
        """(raw item, preprocessed tensor) of frame ``index``."""
        if index < 0 or (self.num_frames is not None and index >= self.num_frames):
            raise IndexError(f"frame {index} out of range [0, {self.num_frames})")
        while index >= self._next_index:
            if not self._pull():
                raise IndexError(f"frame {index}: the source ended after {self._next_index} frames")
        if index not in self._items:
            raise IndexError(f"frame {index} was evicted (cache keeps the last {self.capacity})")
        return self._items[index]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.get(int(index))[1]

    def close(self) -> None:
        """Stop the decoding thread (also done when the source is exhausted)."""
        self._stop.set()
        while self._thread.is_alive():
            try:
                self._queue.get_nowait()
            except queue.Empty:
                pass
            self._thread.join(timeout=0.05)
