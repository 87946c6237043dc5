"""The OpenVINO work a large trunk stage needs, in its own interpreter (``python -m sam3video.model.openvino_child``).

A full-size stage's conversion holds ~5 GB that the converting process never gives back, so ``openvino_trunk``
runs it here, as a fresh ``sys.executable`` with arguments, never as a ``multiprocessing`` child (a spawned child
imports the caller's main module again, which breaks any script without an ``if __name__ == "__main__"`` guard,
and a notebook). Nothing crosses as a pickle: a stage is described by JSON (``block_spec``: each block's sizes)
and its weights by safetensors; calibration samples by ``.npy`` (``allow_pickle=False``).

    python -m sam3video.model.openvino_child export STAGE_DIR ENTRY [STAGE_DIR ENTRY ...]   # spec.json, weights.safetensors
    python -m sam3video.model.openvino_child quantize XML SAMPLES.npy ENTRY [--bias-correction]

Exit status 0 on success; on failure 1 and the error as the last line of stderr.
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from .vitdet import Block, LayerScale

SPEC_NAME, WEIGHTS_NAME = "spec.json", "weights.safetensors"
PROGRESS = "sam3video-progress: "  # a line the child prints on stdout when a step ends


def block_spec(block: Block) -> dict:
    """The constructor arguments that rebuild ``block`` (its weights aside), read off its modules."""
    attn, mlp = block.attn, block.mlp
    dim = block.norm1.normalized_shape[0]
    if type(mlp.act) is not nn.GELU or type(block.norm1) is not nn.LayerNorm or attn.rope_theta != 10000.0:
        raise ValueError("only GELU, LayerNorm and the default RoPE theta are rebuilt")
    return {
        "dim": dim, "num_heads": attn.num_heads, "hidden": mlp.fc1.out_features, "qkv_bias": attn.qkv.bias is not None,
        "eps": block.norm1.eps, "gelu": mlp.act.approximate, "window_size": block.window_size,
        "input_size": list(attn.input_size) if attn.input_size is not None else None, "use_rope": attn.use_rope,
        "rope_pt_size": list(attn.rope_pt_size) if attn.rope_pt_size is not None else None,
        "rope_interp": attn.rope_interp, "layer_scale": isinstance(block.ls1, LayerScale),
    }


def block_from_spec(spec: dict) -> Block:
    """The block ``block_spec`` described, with fresh weights (and RoPE tables computed as its constructor does)."""
    block = Block(
        dim=spec["dim"], num_heads=spec["num_heads"], mlp_ratio=spec["hidden"] / spec["dim"], qkv_bias=spec["qkv_bias"],
        norm_layer=partial(nn.LayerNorm, eps=spec["eps"]), act_layer=partial(nn.GELU, approximate=spec["gelu"]),
        window_size=spec["window_size"], input_size=tuple(spec["input_size"]) if spec["input_size"] else None,
        use_rope=spec["use_rope"], rope_pt_size=tuple(spec["rope_pt_size"]) if spec["rope_pt_size"] else None,
        rope_interp=spec["rope_interp"], init_values=1.0 if spec["layer_scale"] else None,
    )
    if block.mlp.fc1.out_features != spec["hidden"]:
        raise ValueError(f"rebuilt MLP width {block.mlp.fc1.out_features}, saved {spec['hidden']}")
    return block


def save_stage(stage: nn.Sequential, grid: tuple[int, int], folder: Path) -> None:
    """``stage`` (Blocks) as ``folder/spec.json`` + ``folder/weights.safetensors`` (complex buffers as real pairs)."""
    from safetensors.torch import save_file

    spec = {"grid": list(grid), "blocks": [block_spec(block) for block in stage]}
    state = stage.state_dict()
    spec["complex"] = sorted(k for k, v in state.items() if v.is_complex())
    tensors = {k: (torch.view_as_real(v) if v.is_complex() else v).detach().contiguous() for k, v in state.items()}
    save_file(tensors, str(folder / WEIGHTS_NAME))
    (folder / SPEC_NAME).write_text(json.dumps(spec))


def load_stage(folder: Path) -> tuple[nn.Sequential, tuple[int, int]]:
    """What ``save_stage`` wrote: the stage with its weights (loaded strictly) and its token grid."""
    from safetensors.torch import load_file

    spec = json.loads((folder / SPEC_NAME).read_text())
    stage = nn.Sequential(*[block_from_spec(s) for s in spec["blocks"]])
    tensors = load_file(str(folder / WEIGHTS_NAME))
    for key in spec["complex"]:
        tensors[key] = torch.view_as_complex(tensors[key])
    stage.load_state_dict(tensors, strict=True)
    return stage.eval(), tuple(spec["grid"])


def run(*args, progress=None) -> None:
    """``python -m sam3video.model.openvino_child ARGS`` in a fresh interpreter; ``RuntimeError`` with its last
    error line if it fails. ``progress(kind)`` for each step the child reports (a ``PROGRESS`` line)."""
    with tempfile.TemporaryFile(mode="w+") as errors:
        child = subprocess.Popen([sys.executable, "-m", __name__, *map(str, args)], stdout=subprocess.PIPE,
                                 stderr=errors, text=True)
        for line in child.stdout:
            if line.startswith(PROGRESS) and progress is not None:
                progress(line[len(PROGRESS):].strip())
        returncode = child.wait()
        errors.seek(0)
        lines = [line for line in errors.read().strip().splitlines() if line.strip()]
    if returncode != 0:
        raise RuntimeError(f"OpenVINO conversion failed in a child process (exit code {returncode}"
                           + (f": {lines[-1]}" if lines else "") + ")")


def report(kind: str) -> None:
    """Tell the parent a step of ``kind`` ended (a line on stdout, which the child's libraries do not use)."""
    print(f"{PROGRESS}{kind}", flush=True)


def main(argv: list[str]) -> int:
    from .openvino_trunk import export_stages, quantize_stage

    if len(argv) >= 3 and len(argv) % 2 == 1 and argv[0] == "export":
        loaded = [load_stage(Path(folder)) for folder in argv[1::2]]
        export_stages([stage for stage, _ in loaded], loaded[0][1], [Path(entry) for entry in argv[2::2]], report)
    elif len(argv) in (4, 5) and argv[0] == "quantize" and argv[4:] in ([], ["--bias-correction"]):
        quantize_stage(Path(argv[1]), np.load(argv[2], allow_pickle=False), Path(argv[3]), len(argv) == 5)
    else:
        print(__doc__.splitlines()[0], file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main(sys.argv[1:]))
    except Exception as e:  # noqa: BLE001 - the parent reports the last line
        print(f"{type(e).__name__}: {e}", file=sys.stderr)
        sys.exit(1)
