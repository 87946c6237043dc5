"""Plain-text table of an ``EvalResult``: one row per sequence and a COMBINED row."""

from __future__ import annotations

from sam3video.eval.metrics import EvalResult, SequenceResult

# (metric key, column header); fractions print as percentages, counts as integers
TABLE_COLUMNS = (
    ("HOTA", "HOTA"), ("DetA", "DetA"), ("AssA", "AssA"), ("LocA", "LocA"), ("DetRe", "DetRe"),
    ("DetPr", "DetPr"), ("MOTA", "MOTA"), ("MOTP", "MOTP"), ("IDF1", "IDF1"), ("CLR_Re", "Rcll"),
    ("CLR_Pr", "Prcn"), ("IDSW", "IDSW"), ("CLR_FP", "FP"), ("CLR_FN", "FN"), ("GT_IDs", "GT_IDs"),
    ("IDs", "IDs"),
)


def _cell(value: float | int) -> str:
    return str(value) if isinstance(value, int) else f"{100.0 * value:.2f}"


def format_table(result: EvalResult, columns: tuple[tuple[str, str], ...] = TABLE_COLUMNS) -> str:
    """Aligned text table; scores in percent, counts as integers, the library named in the title."""
    rows: list[SequenceResult] = [*result.sequences, result.combined]
    header = ["Sequence", *(title for _, title in columns)]
    body = [[r.name, *(_cell(r.metrics[key]) for key, _ in columns)] for r in rows]
    widths = [max(len(row[i]) for row in [header, *body]) for i in range(len(header))]

    def line(cells: list[str]) -> str:
        first = cells[0].ljust(widths[0])
        return "  ".join([first, *(c.rjust(w) for c, w in zip(cells[1:], widths[1:]))])

    title = (f"{result.kind.upper()} evaluation, {result.library} {result.library_version}: scores in %, "
             f"CLEAR/Identity match at IoU >= {result.iou_threshold:g}")
    rule = "-" * len(line(header))
    return "\n".join([title, line(header), rule, *(line(b) for b in body[:-1]), rule, line(body[-1])])
