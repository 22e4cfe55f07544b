"""Builders of small test inputs (a real PDF included), shared by the index tests."""

from __future__ import annotations

import json
from pathlib import Path


def minimal_pdf(text: str) -> bytes:
    """A valid one-page PDF whose text layer is ``text`` (ASCII), built by hand with a correct xref."""
    stream = f"BT /F1 12 Tf 72 720 Td ({text}) Tj ET".encode()
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< /Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def write_corpus(folder: Path) -> Path:
    """A small corpus in every supported format; returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "bees.md").write_text(
        "# Honey bees\n\nHoney bees live in colonies ruled by a single queen. "
        "Worker bees collect nectar and pollen from flowers.\n"
    )
    (folder / "volcano.txt").write_text(
        "Volcanoes erupt when magma rises through the crust. Iceland has many active volcanoes.\n"
    )
    (folder / "chess.html").write_text(
        "<html><head><title>Chess</title><script>var tracking = 1;</script></head><body>"
        "<nav>Home | About</nav><p>Chess is played on a board of sixty-four squares.</p>"
        "<p>The knight moves in an L shape.</p><footer>Copyright 2024 Example</footer></body></html>"
    )
    (folder / "tides.pdf").write_bytes(minimal_pdf("Tides are caused by the gravity of the Moon and the Sun."))
    rows = [
        {"id": "kb-1", "text": "The Eiffel Tower is in Paris and was finished in 1889.", "metadata": {"lang": "en"}},
        {"id": "kb-2", "text": "Photosynthesis turns light, water and carbon dioxide into sugar.", "tenant": "acme"},
    ]
    (folder / "kb.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder
