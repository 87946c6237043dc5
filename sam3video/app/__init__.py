"""``sam3video app``: a local web page to track concepts in a video and fix the tracks by clicking.

``serve`` checks everything (videos, checkpoint, address) before it starts the server; ``page.build_page`` is the
page, ``work.AppWork`` what one tab does (the page's only caller of ``run``)."""

from __future__ import annotations

from pathlib import Path

from ..errors import InputError

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860


def load_app_model(checkpoint: str | None, device: str = "auto", resolution: int | None = None):
    """(video model, its name): ``checkpoint`` (sam3.pt, sam3.1_multiplex.pt, a hub id) or, None, the demo video
    model (the demo detector and the demo tracker), at input size ``resolution`` (None: its config's)."""
    from ..model.checkpoint import DEMO_VIDEO
    from ..model.video_checkpoint import load_for_tracker

    name = checkpoint or DEMO_VIDEO
    model, tracker = load_for_tracker(name, device=device, resolution=resolution)  # the checkpoint read once
    if tracker != "sam3":
        raise InputError(f"the page needs a checkpoint with tracker weights (sam3.pt, sam3.1_multiplex.pt, or "
                         f"demo-video, the default); {name} has none")
    return model, name


def serve(videos: list[str], checkpoint: str | None = None, *, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
          max_upload_mb: float = 200.0, device: str = "auto", resolution: int | None = None, block: bool = True,
          model=None):
    """Start the page on ``host:port`` offering ``videos`` (files, by name); returns the running Gradio app (it
    blocks until interrupted unless ``block`` is False). ``model``: a video model already loaded (else the
    checkpoint's at ``resolution``)."""
    from .page import DRAG_SCRIPT, PAGE_CSS, build_page

    offered: dict[str, Path] = {}
    for video in videos:
        path = Path(video)
        if not path.is_file():
            raise InputError(f"video {video} does not exist")
        name = path.name if path.name not in offered else str(path)
        offered[name] = path.resolve()
    if not 0 < max_upload_mb:
        raise InputError(f"--max-upload-mb must be > 0, got {max_upload_mb:g}")
    from ..model.checkpoint import DEMO_VIDEO

    model_name = checkpoint or DEMO_VIDEO
    if model is None:
        model, model_name = load_app_model(checkpoint, device, resolution)
    page = build_page(model, model_name, offered, max_upload_mb=max_upload_mb)
    page.queue()
    try:
        page.launch(server_name=host, server_port=port, max_file_size=int(max_upload_mb * 2**20),
                    prevent_thread_lock=True, quiet=True, show_error=False, inbrowser=False, head=DRAG_SCRIPT,
                    css=PAGE_CSS)
    except OSError as error:
        raise InputError(f"cannot serve on {host}:{port}: {error}") from None
    print(f"sam3video app: {page.local_url}  (Ctrl-C stops it)", flush=True)
    if block:
        page.block_thread()
    return page
