"""A run's resume state on disk without pickles: ``state.json`` (the object tree) + ``state.npz`` (its arrays).

``save_state(folder, obj)`` writes both atomically; ``load_state(folder)`` reads them back. What can be saved: None,
bool, int, float, str; lists, tuples, sets, deques, dicts, Counters, OrderedDicts and defaultdicts of builtin factories (any
hashable of these as keys); numpy arrays and scalars; torch
tensors (CPU, any dtype); enums; classes and instances of classes defined in the modules of ``ALLOWED_MODULES`` (ours
and the ``trackers`` package), saved as their ``__dict__``. Reading builds instances with ``cls.__new__`` and sets
their ``__dict__`` (no ``__init__``, ``__setstate__`` or other code of the file's choosing runs), only for classes of
those modules, found by name; arrays are read with ``allow_pickle=False``. Anything else is refused when saving
(``StateError``), and a file that does not follow the format, names another class or another version is refused
when reading (``StateError``, one line).
"""

from __future__ import annotations

import enum
import importlib
import io
import json
import zipfile
from collections import Counter, OrderedDict, defaultdict, deque
from pathlib import Path
from typing import Any

import numpy as np

from .atomic import atomic_open

FORMAT, VERSION = "sam3video-run-state", 2
TREE_NAME, ARRAYS_NAME = "state.json", "state.npz"
ALLOWED_MODULES = ("sam3video", "trackers")  # classes of these packages (and their submodules) only
MAPPINGS = {"dict": dict, "Counter": Counter, "OrderedDict": OrderedDict}
DEFAULT_FACTORIES = {"list": list, "int": int, "float": float, "dict": dict, "set": set}
# Modules that moved since states were first written (0.x: `video/` split into `sources/` and `trackers/`): a state
# saved before the move names the old module, read as the new one.
MOVED_MODULES = {
    "sam3video.video.backends": "sam3video.sources.backends",
    "sam3video.video.loader": "sam3video.sources.loader",
    "sam3video.video.cache": "sam3video.sources.cache",
    "sam3video.video.association": "sam3video.trackers.association.matching",
    "sam3video.video.motion": "sam3video.trackers.association.motion",
    "sam3video.video.tracker": "sam3video.trackers.association.tracker",
    "sam3video.video.exemplars": "sam3video.trackers.association.exemplars",
    "sam3video.video.peers": "sam3video.trackers.association.peers",
    "sam3video.video.propagation": "sam3video.trackers.sam3.propagation",
    "sam3video.video.sam3_loop": "sam3video.trackers.sam3.loop",
    "sam3video.video.sam3_planning": "sam3video.trackers.sam3.planning",
    "sam3video.video.sam3_tracking": "sam3video.trackers.sam3.tracking",
    "sam3video.video.sam31_loop": "sam3video.trackers.sam31.loop",
    "sam3video.video.sam31_planning": "sam3video.trackers.sam31.planning",
}


class StateError(ValueError):
    """A state that cannot be saved or read (the message is one line)."""


def _slots(cls: type) -> list[str]:
    """The slot attributes a class's instances hold (beyond ``__dict__``)."""
    return [name for c in cls.__mro__ for name in getattr(c, "__slots__", ()) if name not in ("__dict__", "__weakref__")]


def _class_name(cls: type) -> str:
    return f"{cls.__module__}:{cls.__qualname__}"


def _allowed(module: str) -> bool:
    return any(module == m or module.startswith(m + ".") for m in ALLOWED_MODULES)


def _find_class(name: object) -> type:
    """The class ``module:qualname`` of an allowed module (imported if needed); ``StateError`` otherwise."""
    if not isinstance(name, str) or name.count(":") != 1:
        raise StateError(f"bad class reference {name!r}")
    module_name, qualname = name.split(":")
    module_name = MOVED_MODULES.get(module_name, module_name)
    if not _allowed(module_name):
        raise StateError(f"class {name} is not one a run state may hold")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError):
        raise StateError(f"class {name} does not exist here") from None
    if not isinstance(obj, type):
        raise StateError(f"{name} is not a class")
    return obj


class _Writer:
    def __init__(self):
        self.arrays: dict[str, np.ndarray] = {}

    def array(self, value: np.ndarray) -> dict:
        if value.dtype == object:
            raise StateError("arrays of Python objects cannot be saved")
        key = f"a{len(self.arrays)}"
        self.arrays[key] = value
        return {"__array__": key}

    def encode(self, value: Any) -> Any:
        if isinstance(value, enum.Enum):  # before str and int: str- and int-based enums are enums
            cls = type(value)
            if not _allowed(cls.__module__):
                raise StateError(f"cannot save an instance of {_class_name(cls)}")
            return {"__enum__": _class_name(cls), "value": self.encode(value.value)}
        if value is None or type(value) in (bool, str):
            return value
        if isinstance(value, (int, float)) and type(value) in (int, float):
            return value
        if isinstance(value, np.generic):
            return {"__scalar__": self.array(np.asarray(value))}
        if isinstance(value, np.ndarray):
            return self.array(value)
        if type(value).__module__ == "torch" and type(value).__name__ == "Tensor":
            import torch

            tensor = value.detach().cpu()
            as_numpy = tensor.view(torch.int16) if tensor.dtype == torch.bfloat16 else tensor
            return {"__tensor__": self.array(as_numpy.numpy()), "dtype": str(tensor.dtype).removeprefix("torch.")}
        if isinstance(value, list):
            return [self.encode(v) for v in value]
        if isinstance(value, tuple) and type(value) is tuple:
            return {"__tuple__": [self.encode(v) for v in value]}
        if isinstance(value, (set, frozenset)):
            return {"__set__": [self.encode(v) for v in value], "frozen": isinstance(value, frozenset)}
        if isinstance(value, deque):
            return {"__deque__": [self.encode(v) for v in value], "maxlen": value.maxlen}
        if type(value) in (dict, Counter, OrderedDict):
            return {"__dict__": [[self.encode(k), self.encode(v)] for k, v in value.items()],
                    "kind": type(value).__name__}
        if type(value) is defaultdict:
            if value.default_factory not in DEFAULT_FACTORIES.values():
                raise StateError(f"cannot save a defaultdict of {value.default_factory!r}")
            return {"__dict__": [[self.encode(k), self.encode(v)] for k, v in value.items()], "kind": "defaultdict",
                    "factory": value.default_factory.__name__}
        if isinstance(value, type):
            if not _allowed(value.__module__):
                raise StateError(f"cannot save the class {_class_name(value)}")
            return {"__class__": _class_name(value)}
        cls = type(value)
        if not _allowed(cls.__module__) or not (hasattr(value, "__dict__") or _slots(cls)):
            raise StateError(f"cannot save an instance of {_class_name(cls)}")
        attrs = dict(getattr(value, "__dict__", {}))
        attrs.update({name: getattr(value, name) for name in _slots(cls) if hasattr(value, name)})
        return {"__object__": _class_name(cls), "attrs": {k: self.encode(v) for k, v in attrs.items()}}


class _Reader:
    def __init__(self, arrays):
        self.arrays = arrays

    def array(self, ref: object) -> np.ndarray:
        if not isinstance(ref, dict) or set(ref) != {"__array__"} or ref["__array__"] not in self.arrays:
            raise StateError("bad array reference")
        return self.arrays[ref["__array__"]]

    def decode(self, value: Any) -> Any:
        if value is None or isinstance(value, (bool, int, float, str)):
            return value
        if isinstance(value, list):
            return [self.decode(v) for v in value]
        if not isinstance(value, dict) or not value:
            raise StateError(f"unexpected {type(value).__name__} in the state")
        kind = next(iter(value))
        if kind == "__array__":
            return self.array(value)
        if kind == "__scalar__":
            return self.array(value["__scalar__"])[()]
        if kind == "__tensor__":
            import torch

            dtype = getattr(torch, str(value.get("dtype")), None)
            if not isinstance(dtype, torch.dtype):
                raise StateError(f"bad tensor dtype {value.get('dtype')!r}")
            tensor = torch.from_numpy(self.array(value["__tensor__"]).copy())
            return tensor.view(torch.bfloat16) if dtype == torch.bfloat16 else tensor.to(dtype)
        if kind == "__tuple__":
            return tuple(self.decode(v) for v in value["__tuple__"])
        if kind == "__set__":
            items = [self.decode(v) for v in value["__set__"]]
            return frozenset(items) if value.get("frozen") else set(items)
        if kind == "__deque__":
            return deque((self.decode(v) for v in value["__deque__"]), maxlen=value.get("maxlen"))
        if kind == "__dict__":
            items = [(self.decode(k), self.decode(v)) for k, v in value["__dict__"]]
            container = value.get("kind", "dict")
            if container == "defaultdict":
                if value.get("factory") not in DEFAULT_FACTORIES:
                    raise StateError(f"bad defaultdict factory {value.get('factory')!r}")
                return defaultdict(DEFAULT_FACTORIES[value["factory"]], items)
            if container not in MAPPINGS:
                raise StateError(f"bad mapping kind {container!r}")
            return MAPPINGS[container](dict(items))
        if kind == "__class__":
            return _find_class(value["__class__"])
        if kind == "__enum__":
            cls = _find_class(value["__enum__"])
            if not issubclass(cls, enum.Enum):
                raise StateError(f"{value['__enum__']} is not an enum")
            return cls(self.decode(value["value"]))
        if kind == "__object__":
            cls = _find_class(value["__object__"])
            if issubclass(cls, enum.Enum) or not isinstance(value.get("attrs"), dict):
                raise StateError(f"bad instance of {value['__object__']}")
            obj = cls.__new__(cls)
            slots = _slots(cls)
            for name, attr in value["attrs"].items():
                if not isinstance(name, str) or not (name in slots or hasattr(obj, "__dict__")):
                    raise StateError(f"bad attribute {name!r} of {value['__object__']}")
                object.__setattr__(obj, name, self.decode(attr))
            return obj
        raise StateError(f"unknown entry {kind!r} in the state")


def save_state(folder: Path, obj: Any) -> None:
    """``obj`` as ``folder/state.json`` + ``folder/state.npz`` (each written atomically, the arrays first)."""
    writer = _Writer()
    tree = {"format": FORMAT, "version": VERSION, "state": writer.encode(obj)}
    buffer = io.BytesIO()
    np.savez(buffer, **writer.arrays)
    with atomic_open(folder / ARRAYS_NAME, "wb") as f:
        f.write(buffer.getvalue())
    with atomic_open(folder / TREE_NAME, "w") as f:
        json.dump(tree, f)


def load_state(folder: Path) -> Any:
    """What ``save_state`` wrote in ``folder``; ``StateError`` (one line) if it is missing parts, damaged, of
    another format or version, or names a class a state may not hold."""
    try:
        tree = json.loads((folder / TREE_NAME).read_text())
        with np.load(folder / ARRAYS_NAME, allow_pickle=False) as npz:
            arrays = {key: npz[key] for key in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile) as e:
        raise StateError(f"unreadable ({type(e).__name__})") from None
    if not isinstance(tree, dict) or tree.get("format") != FORMAT:
        raise StateError("not a sam3video run state")
    if tree.get("version") != VERSION:
        raise StateError(f"version {tree.get('version')!r}, this sam3video reads version {VERSION}")
    try:
        return _Reader(arrays).decode(tree.get("state"))
    except (KeyError, TypeError, ValueError, IndexError) as e:
        if isinstance(e, StateError):
            raise
        raise StateError(f"damaged ({type(e).__name__})") from None
