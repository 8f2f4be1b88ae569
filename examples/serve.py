"""A serving program that gets its model from this node's modelreg sidecar.

At start-up it resolves ``MODEL@REF`` through the sidecar (never central), copies the artifact
and verifies its sha256 against the version record (``fetch_artifact`` refuses a mismatch), loads
it and starts answering. A background thread ``watch``-es the alias: when it moves (a promotion,
a rollback), the new artifact is fetched, verified and loaded *beside* the current model, then
swapped in with one assignment; requests in flight finish on the model they started with. A new
artifact that fails verification or loading is refused and the current model keeps serving.

    python examples/serve.py fraud@production --port 8000
    curl -s localhost:8000/predict -d '{"amount": 120.5}'
    curl -s localhost:8000/healthz

Replace :func:`load_model` with your framework's loader (``onnxruntime.InferenceSession(path)``,
``joblib.load(path)``, ``torch.load(path)``…). The stand-in here treats the artifact as opaque
bytes and scores a request by hashing it with them, so the demo artifacts of ``reg up --demo``
and the README walkthrough serve as they are.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import signal
import sys
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from modelreg import Client, RegistryError, ResolvedModel
from modelreg.sidecar.artifacts import fetch_artifact
from modelreg.sidecar.client import DEFAULT_SOCKET_PATH

#: Largest request body accepted by /predict, in bytes.
MAX_REQUEST_BYTES = 1024 * 1024


@dataclass(frozen=True)
class LoadedModel:
    """A model ready to answer, and the version record it came from."""

    record: ResolvedModel
    path: Path
    weights: bytes

    def predict(self, features: Mapping[str, Any]) -> float:
        """Stand-in inference: a score in [0, 1) from the weights and the request."""
        digest = hashlib.sha256(self.weights + json.dumps(features, sort_keys=True).encode())
        return int.from_bytes(digest.digest()[:4], "big") / 2**32


def load_model(record: ResolvedModel, path: Path) -> LoadedModel:
    """Load a verified artifact. Replace the body with your framework's loader."""
    return LoadedModel(record=record, path=path, weights=path.read_bytes())


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class ModelHolder:
    """The model currently served; swapped atomically, read without a lock."""

    def __init__(self, cache_dir: Path) -> None:
        self.cache_dir = cache_dir
        self.current: LoadedModel | None = None
        self._swap = threading.Lock()

    def fetch_and_load(self, record: ResolvedModel) -> LoadedModel:
        """Copy, verify and load ``record``'s artifact (raises the errors of fetch_artifact)."""
        name = f"{record.model}-v{record.version}-{record.sha256[:12]}{_suffix(record)}"
        path = fetch_artifact(record, self.cache_dir / name)
        return load_model(record, path)

    def switch_to(self, record: ResolvedModel) -> bool:
        """Load ``record`` beside the current model and swap it in; False if it was refused."""
        with self._swap:
            current = self.current
            if current is not None and (current.record.version, current.record.sha256) == (
                record.version,
                record.sha256,
            ):
                return True
            try:
                loaded = self.fetch_and_load(record)
            except (RegistryError, OSError) as exc:
                what = current.record.version if current else "nothing"
                log(f"refused {record.model} v{record.version}: {exc}; still serving v{what}")
                return False
            self.current = loaded  # one assignment: the swap
            log(
                f"serving {record.model} v{record.version} (sha256 {record.sha256[:12]}, "
                f"{record.ref}, registry revision {record.revision})"
            )
            return True


def _suffix(record: ResolvedModel) -> str:
    return f".{record.format}" if record.format.isalnum() else ""


def watch_forever(client: Client, model: str, ref: str, holder: ModelHolder) -> None:
    """Follow ``model@ref``, switching on every move; the client reconnects after restarts."""
    try:
        for record in client.watch(model, ref):
            holder.switch_to(record)
    except RegistryError as exc:  # the alias was deleted, say: keep serving what we have
        log(f"watch of {model}@{ref} ended: {exc}; serving continues without hot reload")


def make_handler(holder: ModelHolder) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, body: Mapping[str, Any]) -> None:
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _about(self, loaded: LoadedModel) -> dict[str, Any]:
            record = loaded.record
            return {"model": record.model, "version": record.version, "sha256": record.sha256}

        def do_GET(self) -> None:
            loaded = holder.current
            if self.path != "/healthz":
                self._answer(404, {"error": "not found"})
            elif loaded is None:
                self._answer(503, {"status": "loading"})
            else:
                self._answer(200, {"status": "ok", **self._about(loaded)})

        def do_POST(self) -> None:
            loaded = holder.current  # read once: this request uses this model throughout
            if self.path != "/predict":
                self._answer(404, {"error": "not found"})
                return
            if loaded is None:
                self._answer(503, {"error": "no model loaded"})
                return
            try:
                length = int(self.headers.get("Content-Length") or 0)
                if not 0 <= length <= MAX_REQUEST_BYTES:
                    raise ValueError("body too large")
                features = json.loads(self.rfile.read(length) or b"{}")
                if not isinstance(features, dict):
                    raise ValueError("expected a JSON object")
            except ValueError as exc:
                self._answer(400, {"error": f"bad request: {exc}"})
                return
            self._answer(200, {**self._about(loaded), "score": loaded.predict(features)})

        def log_message(self, format: str, *args: Any) -> None:
            return  # quiet: one line per request would drown the model-swap lines

    return Handler


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model_ref", metavar="MODEL@REF", help="e.g. fraud@production")
    parser.add_argument("--socket", default=DEFAULT_SOCKET_PATH, help="the sidecar's socket")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--cache-dir", type=Path, default=Path(".reg/serve-cache"), help="verified artifacts"
    )
    args = parser.parse_args(argv)
    model, _, ref = args.model_ref.partition("@")
    if not model or not ref:
        parser.error("expected MODEL@REF, e.g. fraud@production")

    holder = ModelHolder(args.cache_dir)
    client = Client(args.socket)
    try:
        first = client.resolve(model, ref)  # start-up: the sidecar, never central
    except RegistryError as exc:
        log(f"cannot resolve {model}@{ref} through {args.socket}: {exc}")
        return 1
    if not holder.switch_to(first):
        return 1
    threading.Thread(
        target=watch_forever, args=(client, model, ref, holder), name="watch", daemon=True
    ).start()
    server = ThreadingHTTPServer((args.host, args.port), make_handler(holder))
    log(f"listening on http://{args.host}:{server.server_address[1]}")
    # SIGTERM (an orchestrator stopping us): finish the requests in flight, then exit.
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
        client.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
