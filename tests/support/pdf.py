"""What a ticket PDF shows, read from its content stream."""

from __future__ import annotations

import re
import zlib


def text_runs(document: bytes) -> dict[str, float]:
    """Each text run's left edge (points), from the page's content stream."""
    runs: dict[str, float] = {}
    for stream in re.finditer(rb"stream\r?\n(.*?)\r?\nendstream", document, re.S):
        try:
            content = zlib.decompress(stream.group(1))
        except zlib.error:
            continue  # the QR image
        for x, _, text in re.findall(rb"BT ([\d.]+) ([\d.]+) Td \((.*?)\) Tj ET", content):
            runs[text.decode("latin-1")] = float(x)
    return runs
