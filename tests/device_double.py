"""A second device on a CPU-only machine, for tests: ``DeviceDouble`` marks the tensors that would live on the
model's accelerator and reports every torch call that mixes them with host tensors (an error on CUDA), and every
host sync (``.item()``, ``.tolist()``, ``.cpu()``, ``.numpy()``, ``bool()`` of an accelerator tensor), by the line
of sam3video that made it.

What lives on the device: the model's parameters and buffers (marked on entry) and the outputs of any call with a
device tensor among its inputs. On the host: tensors made without a device (``torch.tensor(...)``,
``torch.from_numpy``) and ``.cpu()``'s. Where a factory call is given a device (``torch.zeros(..., device=x.device)``)
or a tensor is moved by ``.to(device)``, the double cannot tell which (``x.device`` is not seen): such a tensor
goes with either kind, and takes the kind of what it meets. As on CUDA, a 0-dim host tensor may meet device tensors,
and indexing, assignment and copies may cross. Runs as a ``TorchFunctionMode``: it sees every call made from Python, in this
thread and in the threads of any ``ThreadPoolExecutor`` (the predictor's detection worker).
"""

from __future__ import annotations

import traceback
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_flatten

MARK = "_device_double_kind"
DEVICE, HOST, EITHER = "device", "host", "either"
# calls that may take tensors of both kinds on CUDA (indices, values to copy) or move them
CROSSING = {torch.Tensor.__getitem__, torch.Tensor.__setitem__, torch.Tensor.copy_, torch.Tensor.to,
            torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.index_put_,
            torch.Tensor.__bool__, torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__,
            torch.Tensor.__len__, torch.Tensor.__iter__, torch.Tensor.__repr__, torch.Tensor.__format__}
SYNCS = {torch.Tensor.item, torch.Tensor.tolist, torch.Tensor.cpu, torch.Tensor.numpy, torch.Tensor.__bool__,
         torch.Tensor.__int__, torch.Tensor.__float__, torch.Tensor.__index__}
FACTORIES = {torch.zeros, torch.ones, torch.empty, torch.full, torch.arange, torch.linspace, torch.tensor,
             torch.as_tensor, torch.rand, torch.randn, torch.randint, torch.eye, torch.from_numpy, torch.scalar_tensor}
TO_HOST = {torch.Tensor.cpu, torch.Tensor.numpy}


def kind(tensor: torch.Tensor) -> str:
    """DEVICE, HOST (also any tensor the double never saw) or EITHER."""
    return getattr(tensor, MARK, HOST)


def on_device(tensor: torch.Tensor) -> bool:
    return kind(tensor) == DEVICE


def _mark(value, which: str) -> None:
    for leaf in tree_flatten(value)[0]:
        if isinstance(leaf, torch.Tensor):
            try:
                setattr(leaf, MARK, which)
            except (AttributeError, RuntimeError):  # a tensor that takes no attributes
                pass


def _where() -> str:
    """The innermost line of sam3video that made the current call."""
    for frame in reversed(traceback.extract_stack()[:-2]):  # not this function, nor the mode's
        if "/sam3video/" in frame.filename and "/tests/" not in frame.filename:
            return f"{frame.filename.split('/sam3video/', 1)[1]}:{frame.lineno} {frame.name}"
    return "outside sam3video"


class DeviceDouble:
    """``with DeviceDouble(model) as double: ...``; then ``double.mixed`` (Counter of "call @ line") and
    ``double.syncs`` (Counter of "line"), both empty in a loop that keeps its tensors on the model's device."""

    def __init__(self, *modules: torch.nn.Module):
        self.modules = modules
        self.mixed: Counter = Counter()
        self.syncs: Counter = Counter()

    def __enter__(self):
        for module in self.modules:
            for tensor in [*module.parameters(), *module.buffers()]:
                _mark(tensor, DEVICE)
        self._submit = submit = ThreadPoolExecutor.submit
        double = self

        def submit_under_double(executor, fn, /, *args, **kwargs):
            def run():
                with _Mode(double):
                    return fn(*args, **kwargs)
            return submit(executor, run)

        ThreadPoolExecutor.submit = submit_under_double
        self._mode = _Mode(self).__enter__()
        return self

    def __exit__(self, *exc):
        ThreadPoolExecutor.submit = self._submit
        return self._mode.__exit__(*exc)


class _Mode(TorchFunctionMode):
    """One thread's part of a ``DeviceDouble``."""

    def __init__(self, double: DeviceDouble):
        super().__init__()
        self.double = double

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        inputs = [t for t in tree_flatten((args, kwargs))[0] if isinstance(t, torch.Tensor)]
        kinds = {kind(t) for t in inputs if t.dim() > 0 or kind(t) != HOST}  # 0-dim host tensors meet anything
        name = getattr(func, "__name__", str(func))
        if DEVICE in kinds and HOST in kinds and func not in CROSSING:
            self.double.mixed[f"{name} @ {_where()}"] += 1
        if func in SYNCS and inputs and on_device(inputs[0]):
            self.double.syncs[_where()] += 1
        out = func(*args, **kwargs)
        if out is (args[0] if args else None) and func in (torch.Tensor.cpu, torch.Tensor.to):
            out = out.view_as(out)  # on a CPU they return the tensor itself: the copy a GPU would make
        if func in TO_HOST:
            _mark(out, HOST)
        elif func in FACTORIES or name.endswith("_like") and "device" in kwargs:
            _mark(out, EITHER if kwargs.get("device") is not None else HOST)
        elif func is torch.Tensor.to and kind(args[0]) != DEVICE and any(
                isinstance(a, (torch.device, str)) for a in [*args[1:], kwargs.get("device")]):
            _mark(out, EITHER)
        elif DEVICE in kinds:
            _mark(out, DEVICE)
        elif HOST not in kinds and EITHER in kinds:
            _mark(out, EITHER)
        return out
