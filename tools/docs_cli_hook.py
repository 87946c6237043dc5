"""MkDocs hook: the command-line page (docs/cli.md) gets every subcommand's ``--help``, generated from the parser
at build time, so it cannot drift from the code."""

from __future__ import annotations

import argparse
import os

MARKER = "<!-- cli-reference -->"


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield from action.choices.items()


def cli_reference() -> str:
    os.environ["COLUMNS"] = "110"  # argparse wraps to the terminal width: fix it
    from sam3video.cli import build_parser

    parser = build_parser()
    parts = ["## sam3video\n", "```text\n" + parser.format_help() + "```\n"]
    for name, sub in _subparsers(parser):
        parts += [f"## sam3video {name}\n", "```text\n" + sub.format_help() + "```\n"]
        for inner, leaf in _subparsers(sub):
            parts += [f"### sam3video {name} {inner}\n", "```text\n" + leaf.format_help() + "```\n"]
    return "\n".join(parts)


def on_page_markdown(markdown: str, page, config, files) -> str:
    return markdown.replace(MARKER, cli_reference()) if MARKER in markdown else markdown
