#!/usr/bin/env python3
"""Serve the browser sample and bundle dirs on 127.0.0.1, cross-origin isolated.

    python3 serve.py --bundle onnx-fp32=../../runs/bundles/onnx-fp32      # → http://127.0.0.1:8000/?bundle=bundles/onnx-fp32/

The page is served from this directory (node_modules/ included: the import map points into it), each
`--bundle NAME=DIR` under /bundles/NAME/. Every response carries COOP / COEP (and CORP) headers: with them the
page is cross-origin isolated, which SharedArrayBuffer and so multi-threaded wasm require. Standard library
only, so the tests (tests/test_web.py) run it in a thread.
"""

from __future__ import annotations

import argparse
import functools
import http.server
import posixpath
import urllib.parse
from pathlib import Path

ROOT = Path(__file__).resolve().parent


class Handler(http.server.SimpleHTTPRequestHandler):
    """Static files from ROOT, /bundles/NAME/... from the mapped dirs, isolation headers on every response."""

    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map,
                      ".mjs": "text/javascript", ".js": "text/javascript", ".wasm": "application/wasm",
                      ".json": "application/json", ".onnx": "application/octet-stream"}

    def __init__(self, *args, bundles: dict[str, Path], **kwargs):
        self.bundles = bundles
        super().__init__(*args, directory=str(ROOT), **kwargs)

    def translate_path(self, path: str) -> str:
        parts = posixpath.normpath(urllib.parse.unquote(urllib.parse.urlsplit(path).path)).split("/")
        if len(parts) >= 3 and parts[1] == "bundles" and parts[2] in self.bundles:
            rest = [p for p in parts[3:] if p not in ("", ".", "..")]
            return str(self.bundles[parts[2]].joinpath(*rest))
        return super().translate_path(path)

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cross-Origin-Resource-Policy", "same-origin")
        self.send_header("Cache-Control", "no-store")
        super().end_headers()

    def log_message(self, format, *args):  # quiet: the tests and the bench read stdout
        pass


def make_server(bundles: dict[str, Path], port: int = 0) -> http.server.ThreadingHTTPServer:
    """A server on 127.0.0.1 (port 0: any free port; read `server.server_port`)."""
    handler = functools.partial(Handler, bundles={k: Path(v).resolve() for k, v in bundles.items()})
    return http.server.ThreadingHTTPServer(("127.0.0.1", port), handler)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8000)
    ap.add_argument("--bundle", action="append", default=[], metavar="NAME=DIR",
                    help="serve the bundle dir DIR at /bundles/NAME/ (repeatable)")
    args = ap.parse_args()
    bundles = {}
    for spec in args.bundle:
        name, sep, path = spec.partition("=")
        if not sep or not Path(path).is_dir():
            ap.error(f"--bundle {spec!r}: expected NAME=DIR with an existing directory")
        bundles[name] = Path(path)
    server = make_server(bundles, args.port)
    url = f"http://127.0.0.1:{server.server_port}/"
    print(f"serving {ROOT} at {url}", flush=True)
    for name in bundles:
        print(f"  {url}?bundle=bundles/{name}/", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
