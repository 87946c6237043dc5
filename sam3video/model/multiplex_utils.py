"""Buckets of SAM 3.1's multiplex tracker (official names: ``MultiplexState``, ``MultiplexController``).

Objects are packed ``multiplex_count`` (16) to a bucket; a bucket shares one memory map, one memory
attention pass and one mask-decoder pass. ``assignments[b][s]`` is the object index (0..N-1, in the
order the objects were added) in slot s of bucket b, ``PADDING`` for an empty slot and ``REMOVED`` for
a removed object's slot (not refilled). ``mux`` maps per-object tensors (N, ...) to per-slot tensors
(num_buckets, multiplex_count, ...) with zeros in the empty slots; ``demux`` maps back.
"""

from __future__ import annotations

import math
from typing import List, Optional

import torch

PADDING = -1  # an empty slot (official _PADDING_NUM)
REMOVED = -1116  # the slot of a removed object (official _REMOVED_NUM)


class MultiplexState:
    """The bucket assignment of one tracker state, with its mux / demux matrices.

    ``object_ids`` (optional) are the caller's ids of the valid entries, in object-index order.
    ``allowed_bucket_capacity`` is how many slots of a bucket may be used (16 at inference).
    """

    def __init__(
        self,
        assignments: List[List[int]],
        device: torch.device,
        dtype: torch.dtype,
        allowed_bucket_capacity: int,
        *,
        object_ids: Optional[List[int]] = None,
    ):
        self.device = device
        self.dtype = dtype
        self.allowed_bucket_capacity = allowed_bucket_capacity
        self._set_assignments(assignments, object_ids)

    def _set_assignments(self, assignments: List[List[int]], object_ids: Optional[List[int]]) -> None:
        if not assignments:
            raise ValueError("a multiplex state needs at least one bucket")
        self.assignments = assignments
        self.num_buckets = len(assignments)
        self.multiplex_count = len(assignments[0])
        assert all(len(bucket) == self.multiplex_count for bucket in assignments)
        self.total_valid_entries = sum(x >= 0 for bucket in assignments for x in bucket)
        self.total_non_padding_entries = sum(x != PADDING for bucket in assignments for x in bucket)
        self.object_ids = object_ids
        assert object_ids is None or len(object_ids) == self.total_valid_entries
        seen = set()
        for bucket in assignments:
            assert sum(x != PADDING for x in bucket) <= self.allowed_bucket_capacity
            for x in bucket:
                if x >= 0:
                    assert x < self.total_non_padding_entries and x not in seen
                    seen.add(x)
        slots = self.num_buckets * self.multiplex_count
        self.mux_matrix = torch.zeros(slots, self.total_valid_entries, device=self.device, dtype=self.dtype)
        for b, bucket in enumerate(assignments):
            for s, x in enumerate(bucket):
                if x >= 0:
                    self.mux_matrix[b * self.multiplex_count + s, x] = 1.0
        self.demux_matrix = self.mux_matrix.t().contiguous()

    @property
    def available_slots(self) -> int:
        return self.num_buckets * self.allowed_bucket_capacity - self.total_non_padding_entries

    def find_next_batch_of_available_indices(self, num_objects: int, *, allow_new_buckets: bool = False,
                                             prefer_new_buckets: bool = False) -> List[int]:
        """The object indices the next ``num_objects`` new objects get (they follow the existing ones)."""
        assert num_objects > 0
        if not allow_new_buckets:
            assert self.available_slots >= num_objects, f"{self.available_slots} free slots < {num_objects}"
        return list(range(self.total_valid_entries, self.total_valid_entries + num_objects))

    def add_objects(self, object_indices: List[int], *, object_ids: Optional[List[int]] = None,
                    allow_new_buckets: bool = False, prefer_new_buckets: bool = False) -> None:
        """Put new objects (sorted indices following the existing ones) into the empty slots, bucket by
        bucket, then into new buckets (``allow_new_buckets``); ``prefer_new_buckets`` skips the empty slots."""
        if not object_indices:
            return
        assert (object_ids is None) == (self.object_ids is None)
        assert object_indices == sorted(object_indices)
        assert not prefer_new_buckets or allow_new_buckets
        pending = list(zip(object_indices, object_ids if object_ids is not None else [None] * len(object_indices)))
        pending.reverse()
        new_ids = list(self.object_ids) if self.object_ids is not None else None

        def place() -> int:
            index, object_id = pending.pop()
            if new_ids is not None:
                new_ids.append(object_id)
            return index

        if not prefer_new_buckets:
            for bucket in self.assignments:
                for s in range(self.allowed_bucket_capacity):
                    if pending and bucket[s] == PADDING:
                        bucket[s] = place()
                if not pending:
                    break
        if pending and not allow_new_buckets:
            raise ValueError(f"cannot place objects {[i for i, _ in reversed(pending)]} without new buckets")
        while pending:
            bucket = [PADDING] * self.multiplex_count
            for s in range(self.allowed_bucket_capacity):
                if pending:
                    bucket[s] = place()
            self.assignments.append(bucket)
        expected = self.total_valid_entries + len(object_indices)
        self._set_assignments(self.assignments, new_ids)
        assert self.total_valid_entries == expected

    def remove_objects(self, object_indices: List[int], strict: bool = True) -> List[int]:
        """Mark the objects' slots ``REMOVED``, drop buckets left with no object, renumber the remaining
        objects 0..N'-1 in their old order. Returns the indices of the kept buckets (empty when none
        is left: the state is then invalid, ``assignments`` None)."""
        todo = list(object_indices)
        for bucket in self.assignments:
            for s, x in enumerate(bucket):
                if x in todo:
                    bucket[s] = REMOVED
                    todo.remove(x)
        if strict:
            assert not todo, f"objects not in the state: {todo}"
        keep = [b for b, bucket in enumerate(self.assignments) if any(x >= 0 for x in bucket)]
        if not keep:
            self.assignments = None
            if self.object_ids is not None:
                self.object_ids = []
            return keep
        assignments = [self.assignments[b] for b in keep]
        old = sorted(x for bucket in assignments for x in bucket if x >= 0)
        renumber = {x: i for i, x in enumerate(old)}
        assignments = [[renumber[x] if x >= 0 else x for x in bucket] for bucket in assignments]
        object_ids = [self.object_ids[x] for x in old] if self.object_ids is not None else None
        self._set_assignments(assignments, object_ids)
        return keep

    def mux(self, x: torch.Tensor) -> torch.Tensor:
        """(N, ...) per object -> (num_buckets, multiplex_count, ...), zeros in empty slots."""
        assert x.shape[0] == self.total_valid_entries, f"{x.shape[0]} != {self.total_valid_entries}"
        flat = self.mux_matrix @ x.reshape(x.shape[0], -1)
        return flat.view(self.num_buckets, self.multiplex_count, *x.shape[1:])

    def demux(self, x: torch.Tensor) -> torch.Tensor:
        """(num_buckets, multiplex_count, ...) -> (N, ...) per object."""
        assert tuple(x.shape[:2]) == (self.num_buckets, self.multiplex_count)
        flat = self.demux_matrix @ x.reshape(self.num_buckets * self.multiplex_count, -1)
        return flat.view(self.total_valid_entries, *x.shape[2:])

    def get_valid_object_mask(self) -> torch.Tensor:
        """(num_buckets, multiplex_count) bool: True where a slot holds an object."""
        return (self.mux_matrix.sum(dim=1) > 0).reshape(self.num_buckets, self.multiplex_count)

    def get_all_valid_object_idx(self) -> set:
        return {x for bucket in self.assignments for x in bucket if x >= 0}


def new_multiplex_state(num_objects: int, multiplex_count: int, device: torch.device,
                        dtype: torch.dtype = torch.float32, object_ids: Optional[List[int]] = None) -> MultiplexState:
    """Objects 0..N-1 in order, ``multiplex_count`` per bucket, the last bucket padded (the official
    ``MultiplexController.get_state`` at inference, ``random=False``)."""
    num_buckets = max(1, math.ceil(num_objects / multiplex_count))
    ids = list(range(num_objects)) + [PADDING] * (num_buckets * multiplex_count - num_objects)
    assignments = [ids[b * multiplex_count:(b + 1) * multiplex_count] for b in range(num_buckets)]
    return MultiplexState(assignments, device, dtype, allowed_bucket_capacity=multiplex_count,
                          object_ids=object_ids)
