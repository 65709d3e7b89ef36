"""QR codes of payment URIs, as SVG documents a page or an app can show as they are."""

from __future__ import annotations

import io

import segno

#: pixels per QR module; wallets' cameras read this size comfortably from a screen
MODULE_PIXELS = 4


def qr_svg(text: str) -> str:
    """``text`` as a QR code (error correction M or better) in a standalone SVG document."""
    code = segno.make(text, error="m", micro=False)
    out = io.BytesIO()
    code.save(out, kind="svg", xmldecl=False, scale=MODULE_PIXELS, svgclass=None, lineclass=None)
    return out.getvalue().decode()
