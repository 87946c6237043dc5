"""The page of ``sam3video app``: Gradio Blocks over ``AppWork`` (one per browser tab).

Gradio because it is the field's convention for model pages (HF Spaces show SAM 3 in it) and its ``Image.select``
event gives a click's pixel in the frame, which is all the clicks need. A drag on the frame is a box: ``DRAG_SCRIPT``
(given to ``launch(head=...)``) draws it while the mouse moves and hands its corners, in the frame's pixels, to a
hidden textbox whose ``change`` event the page handles (and keeps the drag from also being a click).

Safe defaults: the server binds the host it is given (127.0.0.1 by default); a tab sees only the videos given on the
command line (by name, never a path) and its own uploads (size-limited); the model runs one request at a time for
all tabs (Gradio's queue shows a waiting tab its position); a closed tab's clip and folder are freed.
"""

from __future__ import annotations

import tempfile
import uuid
from pathlib import Path

import gradio as gr

from ..errors import Sam3VideoError
from .work import AppWork

TABLE_HEADERS = ["id", "prompt", "first frame", "last frame", "frames", "mean score"]
MODEL = "model"  # the concurrency group of every request that runs the model
STATE_TTL_S = 3600  # a tab idle this long is freed like a closed one
NEW = "new:"  # the click target values: "#<id>" a track, "new:<prompt>" a new object
DRAG_MODES = ("exemplar box", "object box")  # what a box dragged on the frame is
MIN_DRAG_PX = 6  # on screen: a shorter move is a click
FRAME_HEIGHT_PX = 480  # the frame's box on the page (a larger frame is scaled down into it, aspect kept)
PAGE_CSS = "#drag_box {display: none !important}"
DRAG_SCRIPT = """<script>
(() => {
  // A drag on the frame (#frame img) is a box: drawn while the mouse moves, then its corners in the image's own
  // pixels go to the hidden #drag_box textbox (x1,y1,x2,y2,count), whose change event the page handles.
  let start = null, rect = null, dragged = false, count = 0;
  const pixel = (img, clientX, clientY) => {  // object-fit: scale-down, as Gradio shows the frame and reads a click
    const r = img.getBoundingClientRect();
    const scale = Math.min(r.width / img.naturalWidth, r.height / img.naturalHeight, 1);
    const left = r.left + (r.width - img.naturalWidth * scale) / 2, top = r.top + (r.height - img.naturalHeight * scale) / 2;
    return [Math.min(Math.max((clientX - left) / scale, 0), img.naturalWidth),
            Math.min(Math.max((clientY - top) / scale, 0), img.naturalHeight)];
  };
  document.addEventListener("mousedown", (e) => {
    if (e.button !== 0 || !e.target.matches || !e.target.matches("#frame img")) return;
    e.preventDefault();  // not the browser's own image drag
    start = {img: e.target, x: e.clientX, y: e.clientY};
  }, true);
  document.addEventListener("mousemove", (e) => {
    if (!start) return;
    if (!rect) {
      rect = document.createElement("div");
      rect.id = "drag_rect";
      rect.style.cssText = "position:fixed;border:2px dashed #ffc800;pointer-events:none;z-index:1000";
      document.body.appendChild(rect);
    }
    Object.assign(rect.style, {left: Math.min(start.x, e.clientX) + "px", top: Math.min(start.y, e.clientY) + "px",
                               width: Math.abs(e.clientX - start.x) + "px", height: Math.abs(e.clientY - start.y) + "px"});
  }, true);
  document.addEventListener("mouseup", (e) => {
    if (!start) return;
    const from = start;
    start = null;
    if (rect) { rect.remove(); rect = null; }
    if (Math.abs(e.clientX - from.x) < MIN_DRAG_PX || Math.abs(e.clientY - from.y) < MIN_DRAG_PX) return;  // a click
    dragged = true;  // the click event this mouseup may fire is not a click on the frame
    setTimeout(() => { dragged = false; }, 0);
    const [x1, y1] = pixel(from.img, Math.min(from.x, e.clientX), Math.min(from.y, e.clientY));
    const [x2, y2] = pixel(from.img, Math.max(from.x, e.clientX), Math.max(from.y, e.clientY));
    const field = document.querySelector("#drag_box textarea, #drag_box input");
    field.value = [x1, y1, x2, y2].map((v) => v.toFixed(1)).join(",") + "," + (++count);
    field.dispatchEvent(new Event("input", {bubbles: true}));
  }, true);
  document.addEventListener("click", (e) => {
    if (dragged) { dragged = false; e.stopPropagation(); e.preventDefault(); }
  }, true);
})();
</script>""".replace("MIN_DRAG_PX", str(MIN_DRAG_PX))


def build_page(model, checkpoint_name: str, videos: dict[str, Path], *, max_upload_mb: float = 200.0,
               thresholds=None, workroot: "str | Path | None" = None) -> gr.Blocks:
    """The page: ``videos`` name -> path, offered by name; uploads up to ``max_upload_mb`` (enforced by
    ``launch(max_file_size=...)``)."""
    root = Path(workroot or tempfile.mkdtemp(prefix="sam3video-app-"))
    open_tabs: dict[str, AppWork] = {}  # Gradio's session hash -> its tab's work, until the tab is closed

    def work_of(work: AppWork | None, request: gr.Request) -> AppWork:
        if work is None:
            work = AppWork(model, checkpoint_name, root / uuid.uuid4().hex, thresholds)
            open_tabs[request.session_hash] = work
        return work

    def expired(work: AppWork | None) -> None:  # a tab idle for STATE_TTL_S
        if work is not None:
            work.close()
            for key in [k for k, v in open_tabs.items() if v is work]:
                del open_tabs[key]

    def tab_closed(request: gr.Request) -> None:
        work = open_tabs.get(request.session_hash)
        if work is not None:
            work.close()  # before it leaves open_tabs: a tab listed there may still hold its folder
            open_tabs.pop(request.session_hash, None)

    def failed(error: Exception) -> str:
        return f"**Error:** {error}"

    def targets(work: AppWork, value: str | None = None, typed: str = ""):
        choices = [(label, f"#{t}" if isinstance(t, int) else NEW + t) for label, t in work.targets(typed.splitlines())]
        values = [v for _, v in choices]
        return gr.Dropdown(choices=choices, value=value if value in values else (values[0] if values else None))

    def removable(work: AppWork):
        choices = [(f"#{row.track_id} {row.prompt}", str(row.track_id)) for row in work.tracks()]
        return gr.Dropdown(choices=choices, value=choices[0][1] if choices else None)

    def table(work: AppWork) -> list[list]:
        return [[r.track_id, r.prompt, r.first_frame, r.last_frame, r.frames, r.mean_score] for r in work.tracks()]

    def exemplar_list(work: AppWork) -> str:
        if not work.exemplars:
            return ""
        lines = [f"{i}. frame {e.frame}: ({', '.join(f'{v:.0f}' for v in e.box)}) "
                 f"{'positive' if e.positive else 'negative'}, {e.prompt}" for i, e in enumerate(work.exemplars, 1)]
        return "**Exemplar boxes** (they act at the next Track):\n" + "\n".join(lines)

    def open_video(work, path, name, typed, request):
        work = work_of(work, request)
        try:
            info_line = work.open(path, name)
        except Sam3VideoError as error:
            return work, "", gr.skip(), gr.skip(), gr.skip(), "", failed(error)
        return (work, info_line, work.view(0), gr.Slider(minimum=0, maximum=1, value=0, step=1), targets(work, None, typed),
                "", "video ready: type prompts and press Track (drag boxes on the frame to add exemplars)")

    def choose(work, name, typed, request: gr.Request):
        if not name:
            return (work, *[gr.skip()] * 6)
        return open_video(work, videos[name], name, typed, request)

    def upload(work, path, typed, request: gr.Request):
        if not path:
            return (work, *[gr.skip()] * 6)
        return open_video(work, path, Path(path).name, typed, request)

    def typed_prompts(work, typed, current):
        if work is None or work.clip is not None:
            return gr.skip()  # after Track the targets are the run's
        return targets(work, current, typed)

    def track(work, prompts, direction, request: gr.Request, progress=gr.Progress()):
        work = work_of(work, request)
        try:
            message = work.track(prompts.splitlines(), direction,
                                 progress=lambda done, total: progress(done / total, desc="tracking"))
        except Sam3VideoError as error:
            return work, gr.skip(), gr.skip(), gr.skip(), gr.skip(), gr.skip(), failed(error)
        return (work, work.view(0), gr.Slider(minimum=0, maximum=max(1, work.num_frames - 1), value=0, step=1),
                targets(work), removable(work), table(work), message)

    def show(work, frame):
        if work is None or work.video is None:
            return gr.skip()
        return work.view(int(frame))

    def goal_of(target: str) -> "int | str":
        return target[len(NEW):] if target.startswith(NEW) else int(target.lstrip("#"))

    def drag(work, value, frame, mode, label, target):
        """A box dragged on the frame (``value`` "x1,y1,x2,y2,count" from DRAG_SCRIPT)."""
        skip = [gr.skip()] * 5
        if work is None or work.video is None or not value:
            return work, *skip, "choose a video first"
        if not target:
            return work, *skip, "type a prompt and choose it under \"click on\" first"
        box = tuple(float(v) for v in value.split(",")[:4])
        try:
            if mode == DRAG_MODES[0]:
                message = work.add_exemplar(int(frame) if work.clip is not None else 0, box, label == "positive",
                                            work.prompt_of(goal_of(target)))
                return work, work.view(int(frame)), gr.skip(), gr.skip(), gr.skip(), exemplar_list(work), message
            if work.clip is None:
                return work, *skip, "press Track first: an object box adds to or fixes a run's tracks"
            track_id = work.box(int(frame), box, goal_of(target))
        except Sam3VideoError as error:
            return work, *skip, failed(error)
        return (work, work.view(int(frame)), targets(work, f"#{track_id}"), removable(work), table(work), gr.skip(),
                f"object box on #{track_id}, frame {int(frame)}: press Propagate to track it")

    def clear_exemplars(work, frame):
        if work is None or work.video is None:
            return gr.skip(), gr.skip(), gr.skip()
        work.clear_exemplars()
        return work.view(int(frame)), "", "exemplar boxes cleared: they are gone at the next Track"

    def click(work, frame, label, target, event: gr.SelectData):
        if work is None or work.clip is None or not target:
            return work, gr.skip(), gr.skip(), gr.skip(), gr.skip(), "track a prompt first, then choose what to click on"
        x, y = event.index
        try:
            track_id = work.click(int(frame), float(x), float(y), label == "positive", goal_of(target))
        except Sam3VideoError as error:
            return work, gr.skip(), gr.skip(), gr.skip(), gr.skip(), failed(error)
        return (work, work.view(int(frame)), targets(work, f"#{track_id}"), removable(work), table(work),
                f"{label} click on #{track_id} at ({x}, {y}), frame {int(frame)}: press Propagate to track it")

    def propagate(work, frame, progress=gr.Progress()):
        if work is None or work.clip is None:
            return work, gr.skip(), gr.skip(), gr.skip(), "track a prompt first"
        frames = work.propagate()
        return (work, work.view(int(frame)), removable(work), table(work),
                f"propagated: {frames} frames tracked again" if frames else "no click to propagate")

    def remove(work, frame, track_id):
        if work is None or work.clip is None or not track_id:
            return work, gr.skip(), gr.skip(), gr.skip(), gr.skip(), "no track to remove"
        try:
            work.remove(int(track_id))
        except Sam3VideoError as error:
            return work, gr.skip(), gr.skip(), gr.skip(), gr.skip(), failed(error)
        return (work, work.view(int(frame)), targets(work), removable(work), table(work),
                f"removed #{track_id}")

    def export(work):
        if work is None or work.clip is None:
            return gr.skip(), "track a prompt first"
        try:
            folder, archive = work.export()
        except Sam3VideoError as error:
            return gr.skip(), failed(error)
        files = [archive, *sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))]
        return [str(p) for p in files], f"exported {len(files) - 1} files ({archive.name} holds them all)"

    with gr.Blocks(title="sam3video") as page:
        state = gr.State(None, delete_callback=expired, time_to_live=STATE_TTL_S)
        gr.Markdown(f"## sam3video: track concepts in a video, fix them by clicking\nModel: `{checkpoint_name}`. "
                    f"Clips of at most 30 s; uploads up to {max_upload_mb:g} MB.")
        with gr.Row():
            video_name = gr.Dropdown(choices=list(videos), value=next(iter(videos), None), label="video",
                                     elem_id="video")
            upload_file = gr.File(label="or upload one", file_types=["video"], type="filepath", elem_id="upload")
        info = gr.Markdown(elem_id="info")
        with gr.Row():
            prompts = gr.Textbox(label="prompts, one per line", lines=2, elem_id="prompts")
            direction = gr.Radio(["forward", "both"], value="forward", label="direction", elem_id="direction")
            track_button = gr.Button("Track", variant="primary", elem_id="track")
        status = gr.Markdown(elem_id="status")
        frame_image = gr.Image(label="frame (click to add points, drag to draw a box)", type="numpy",
                               interactive=False, elem_id="frame", height=FRAME_HEIGHT_PX)
        frame_slider = gr.Slider(0, 1, value=0, step=1, label="frame", elem_id="frame_slider")
        with gr.Row():
            label = gr.Radio(["positive", "negative"], value="positive", label="click / box", elem_id="label")
            target = gr.Dropdown(label="click on", choices=[], elem_id="target")
            drag_mode = gr.Radio(list(DRAG_MODES), value=DRAG_MODES[0], label="a dragged box is", elem_id="drag")
            propagate_button = gr.Button("Propagate", elem_id="propagate")
            remove_id = gr.Dropdown(label="track to remove", choices=[], elem_id="remove_id")
            remove_button = gr.Button("Remove", elem_id="remove")
        with gr.Row():
            exemplars = gr.Markdown(elem_id="exemplars")
            clear_button = gr.Button("Clear exemplar boxes", elem_id="clear_exemplars", size="sm")
        drag_box = gr.Textbox(elem_id="drag_box", show_label=False, container=False)  # DRAG_SCRIPT fills it
        tracks_table = gr.Dataframe(headers=TABLE_HEADERS, label="tracks", interactive=False, elem_id="tracks")
        export_button = gr.Button("Export", elem_id="export")
        downloads = gr.File(label="run folder", file_count="multiple", interactive=False, elem_id="downloads")

        opened = [state, info, frame_image, frame_slider, target, exemplars, status]
        page.load(choose, [state, video_name, prompts], opened)  # the first video, ready to prompt
        video_name.change(choose, [state, video_name, prompts], opened)
        upload_file.upload(upload, [state, upload_file, prompts], opened)
        prompts.change(typed_prompts, [state, prompts, target], target)
        heavy = {"concurrency_id": MODEL, "concurrency_limit": 1}
        track_button.click(track, [state, prompts, direction],
                           [state, frame_image, frame_slider, target, remove_id, tracks_table, status], **heavy)
        frame_slider.change(show, [state, frame_slider], frame_image)
        frame_image.select(click, [state, frame_slider, label, target],
                           [state, frame_image, target, remove_id, tracks_table, status], **heavy)
        propagate_button.click(propagate, [state, frame_slider], [state, frame_image, remove_id, tracks_table, status],
                               **heavy)
        remove_button.click(remove, [state, frame_slider, remove_id],
                            [state, frame_image, target, remove_id, tracks_table, status], **heavy)
        export_button.click(export, [state], [downloads, status], **heavy)
        drag_box.change(drag, [state, drag_box, frame_slider, drag_mode, label, target],
                       [state, frame_image, target, remove_id, tracks_table, exemplars, status], **heavy)
        clear_button.click(clear_exemplars, [state, frame_slider], [frame_image, exemplars, status])
        page.unload(tab_closed)  # Gradio calls it when a tab's connection ends
    page.open_tabs, page.workroot = open_tabs, root  # what the tests watch
    return page
