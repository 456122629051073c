"""A real local HTTP server that stands in for the Hugging Face Hub in tests.

It speaks just enough of the Hub's protocol for huggingface_hub 2.x to download files and list
repos over plain HTTP:

- `HEAD`/`GET /{org}/{name}/resolve/{revision}/{path}`: the file, with the headers the client
  needs (`ETag`, `X-Repo-Commit`, `Content-Length`, `Accept-Ranges`) and `Range` -> 206.
- `GET /api/models/{org}/{name}/tree/{revision}[/{folder}]`: the file listing, with sizes.
- `GET /api/models/{org}/{name}` and `/api/models/{org}/{name}/revision/{revision}`: repo info;
  with `?blobs=true` the siblings carry sizes, as on the real Hub.

It never sends Xet headers (`X-Xet-Hash`, the `xet-auth` link), so huggingface_hub downloads with
plain HTTP even when hf_xet is installed. Errors carry the `X-Error-Code` header the real Hub
sends, because huggingface_hub picks its exception class from it.

Files live in memory. Faults can be injected: drop the connection after N body bytes (once),
answer a GET with an error status, cap the transfer rate, mark a repo gated (401). Every request
is recorded (method, path, Range header) so tests can count them.
"""

from __future__ import annotations

import hashlib
import json
import re
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, unquote, urlsplit

# Chunk size of the throttled writer: small enough that a rate cap is smooth.
_CHUNK = 16 * 1024

_RESOLVE = re.compile(r"^/(?P<repo>[^/]+/[^/]+)/resolve/(?P<rev>[^/]+)/(?P<path>.+)$")
_API = re.compile(
    r"^/api/models/(?P<repo>[^/]+/[^/]+)"
    r"(?:/(?P<kind>tree|revision)/(?P<rev>[^/]+)(?P<sub>/.*)?)?$"
)
_RANGE = re.compile(r"^bytes=(?P<start>\d*)-(?P<end>\d*)$")


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the server saw it."""

    method: str
    path: str  # without the query string, URL-decoded
    range: str | None  # the Range header, if any


@dataclass
class _Repo:
    files: dict[str, bytes] = field(default_factory=dict)
    gated: bool = False

    @property
    def commit(self) -> str:
        """A stable 40-hex commit id that changes whenever any file changes, like a git commit."""
        digest = hashlib.sha1()
        for name in sorted(self.files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(self.files[name]).digest())
        return digest.hexdigest()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _git_blob_id(data: bytes) -> str:
    """The git object id of a file, as the Hub reports it in `oid`/`blobId`."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """An in-memory Hub served over HTTP on 127.0.0.1 (random port).

    Use `add_file` to publish files, `start()` to serve, `endpoint` for HF_ENDPOINT, `stop()` to
    close every socket (afterwards, connections are refused). Fault knobs: `drop_after`,
    `fail_next_get`, `bytes_per_second`, `gated=True` in `add_file`/`set_gated`.
    """

    def __init__(self) -> None:
        self._repos: dict[str, _Repo] = {}
        self._lock = threading.Lock()
        self._requests: list[RecordedRequest] = []
        self._drop_after: dict[tuple[str, str], int] = {}
        self._fail_next_get: dict[tuple[str, str], list[int]] = {}
        self.bytes_per_second: int | None = None
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()

    # -- content ---------------------------------------------------------------------------

    def add_file(self, repo_id: str, path: str, data: bytes, *, gated: bool = False) -> None:
        """Publish `data` as `path` in `repo_id` (a new commit, as on the real Hub)."""
        with self._lock:
            repo = self._repos.setdefault(repo_id, _Repo())
            repo.files[path] = data
            repo.gated = repo.gated or gated

    def set_gated(self, repo_id: str, gated: bool = True) -> None:
        """Make the repo answer 401 (GatedRepo) to every request, as for an anonymous client."""
        with self._lock:
            self._repos.setdefault(repo_id, _Repo()).gated = gated

    def commit(self, repo_id: str) -> str:
        """The current commit id of a repo (what `X-Repo-Commit` says)."""
        with self._lock:
            return self._repos[repo_id].commit

    # -- faults ----------------------------------------------------------------------------

    def drop_after(self, repo_id: str, path: str, nbytes: int) -> None:
        """Close the connection after `nbytes` of the next GET body of this file (once)."""
        with self._lock:
            self._drop_after[(repo_id, path)] = nbytes

    def fail_next_get(self, repo_id: str, path: str, status: int) -> None:
        """Answer the next non-dropped GET of this file with `status` (queued, once each)."""
        with self._lock:
            self._fail_next_get.setdefault((repo_id, path), []).append(status)

    # -- request log -----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """A copy of every request received so far, oldest first."""
        with self._lock:
            return list(self._requests)

    def requests_for(
        self, method: str | None = None, path_contains: str = ""
    ) -> list[RecordedRequest]:
        """The recorded requests matching a method (any if None) and a path substring."""
        return [
            r
            for r in self.requests
            if (method is None or r.method == method) and path_contains in r.path
        ]

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def endpoint(self) -> str:
        """The base URL to put in HF_ENDPOINT."""
        if self._server is None:
            raise RuntimeError("FakeHub is not started")
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        """Serve on a free port of 127.0.0.1 in a background thread."""
        server = ThreadingHTTPServer(("127.0.0.1", 0), _make_handler(self))
        server.daemon_threads = True
        self._server = server
        # A short poll interval: `stop()` waits for the serving loop to notice, 0.5 s by default.
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.02},
            name="fake-hub",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and cut every open connection.

        Shutting the listener down is not enough: keep-alive connections would keep being served
        by their handler threads, and huggingface_hub's pooled client would happily reuse them.
        """
        server = self._server
        if server is None or self._thread is None:
            return
        server.shutdown()
        server.server_close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(timeout=5)
        self._thread = None
        # Keep `_server` so `endpoint` still names the (now refusing) address.

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- used by the handler ---------------------------------------------------------------

    def _record(self, request: RecordedRequest) -> None:
        with self._lock:
            self._requests.append(request)

    def _track(self, sock: socket.socket, open_: bool) -> None:
        with self._lock:
            if open_:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)

    def _snapshot(self, repo_id: str) -> _Repo | None:
        with self._lock:
            repo = self._repos.get(repo_id)
            return None if repo is None else _Repo(dict(repo.files), repo.gated)

    def _take_drop(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            return self._drop_after.pop((repo_id, path), None)

    def _take_failure(self, repo_id: str, path: str) -> int | None:
        with self._lock:
            queue = self._fail_next_get.get((repo_id, path))
            return queue.pop(0) if queue else None


def _make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(_HubHandler):
        pass

    Handler.hub = hub
    return Handler


class _HubHandler(BaseHTTPRequestHandler):
    """Routes one HTTP request to the fake Hub."""

    hub: FakeHub
    # HTTP/1.1 so the client keeps connections alive, as with the real Hub.
    protocol_version = "HTTP/1.1"

    def setup(self) -> None:
        super().setup()
        self.hub._track(self.connection, True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.hub._track(self.connection, False)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - stdlib signature
        """Silence the default per-request log on stderr."""

    def do_HEAD(self) -> None:
        self._dispatch(body=False)

    def do_GET(self) -> None:
        self._dispatch(body=True)

    # -- routing ---------------------------------------------------------------------------

    def _dispatch(self, *, body: bool) -> None:
        split = urlsplit(self.path)
        path = unquote(split.path)
        self.hub._record(RecordedRequest(self.command, path, self.headers.get("Range")))
        if match := _RESOLVE.match(path):
            self._resolve(match["repo"], match["rev"], match["path"], body=body)
        elif match := _API.match(path):
            query = parse_qs(split.query)
            revision = match["rev"] or "main"
            self._api(match["repo"], match["kind"], revision, match["sub"], query, body)
        else:
            self._error(404, "", "Sorry, we can't find the page you are looking for.", body=body)

    def _repo_or_error(self, repo_id: str, revision: str, body: bool) -> _Repo | None:
        """The repo at `revision`, or None after answering with the Hub's error for it."""
        repo = self.hub._snapshot(repo_id)
        if repo is None:
            self._error(404, "RepoNotFound", "Repository not found", body=body)
            return None
        if repo.gated:
            message = f"Access to model {repo_id} is restricted. You must be authenticated."
            self._error(401, "GatedRepo", message, body=body)
            return None
        if revision not in ("main", repo.commit):
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}", body=body)
            return None
        return repo

    # -- /resolve --------------------------------------------------------------------------

    def _resolve(self, repo_id: str, revision: str, path: str, *, body: bool) -> None:
        repo = self._repo_or_error(repo_id, revision, body)
        if repo is None:
            return
        data = repo.files.get(path)
        if data is None:
            # The real Hub names the commit even on a 404, and huggingface_hub caches the miss.
            self._error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"", body=body,
                        commit=repo.commit)
            return
        drop = self.hub._take_drop(repo_id, path) if body else None
        if body and drop is None and (status := self.hub._take_failure(repo_id, path)) is not None:
            self._error(status, "", f"injected failure {status}", body=True)
            return

        start, end = 0, len(data) - 1
        status = 200
        if (header := self.headers.get("Range")) is not None:
            parsed = _parse_range(header, len(data))
            if parsed is None:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            start, end = parsed
            status = 206

        self.send_response(status)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(end - start + 1))
        self.send_header("Accept-Ranges", "bytes")
        # LFS-style: the ETag is the content's sha256, which becomes the blob name in the cache.
        self.send_header("ETag", f'"{_sha256(data)}"')
        self.send_header("X-Repo-Commit", repo.commit)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{len(data)}")
        self.end_headers()
        if body:
            self._send_body(data[start : end + 1], drop)

    def _send_body(self, payload: bytes, drop_after: int | None) -> None:
        """Write the body, honouring the rate cap; cut the connection early if asked to."""
        limit = len(payload) if drop_after is None else min(drop_after, len(payload))
        sent = 0
        while sent < limit:
            chunk = payload[sent : min(sent + _CHUNK, limit)]
            self.wfile.write(chunk)
            self.wfile.flush()
            sent += len(chunk)
            if self.hub.bytes_per_second:
                time.sleep(len(chunk) / self.hub.bytes_per_second)
        if drop_after is not None and limit < len(payload):
            # Close mid-body: the client sees fewer bytes than Content-Length announced.
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    # -- /api/models -----------------------------------------------------------------------

    def _api(self, repo_id: str, kind: str | None, revision: str, sub: str | None,
             query: dict[str, list[str]], body: bool) -> None:
        repo = self._repo_or_error(repo_id, revision, body)
        if repo is None:
            return
        if kind == "tree":
            recursive = query.get("recursive", ["False"])[0].lower() == "true"
            payload: object = _tree(repo, (sub or "").strip("/"), recursive)
            if payload is None:
                message = f"{sub} does not exist"
                self._error(404, "EntryNotFound", message, body=body, commit=repo.commit)
                return
        else:
            with_blobs = query.get("blobs", ["False"])[0].lower() == "true"
            payload = _model_info(repo_id, repo, with_blobs)
        self._json(200, payload, body=body, commit=repo.commit)

    # -- responses -------------------------------------------------------------------------

    def _json(self, status: int, payload: object, *, body: bool, commit: str | None = None,
              extra: dict[str, str] | None = None) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        if commit is not None:
            self.send_header("X-Repo-Commit", commit)
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)

    def _error(self, status: int, code: str, message: str, *, body: bool,
               commit: str | None = None) -> None:
        extra = {"X-Error-Message": message}
        if code:
            extra["X-Error-Code"] = code
        self._json(status, {"error": message}, body=body, commit=commit, extra=extra)


def _parse_range(header: str, size: int) -> tuple[int, int] | None:
    """(start, end) inclusive for a single `bytes=` range, or None if unsatisfiable."""
    match = _RANGE.match(header.strip())
    if match is None or (not match["start"] and not match["end"]):
        return None
    if not match["start"]:  # suffix range: the last N bytes
        start, end = max(size - int(match["end"]), 0), size - 1
    else:
        start = int(match["start"])
        end = min(int(match["end"]), size - 1) if match["end"] else size - 1
    return None if start >= size or start > end else (start, end)


def _file_entry(path: str, data: bytes) -> dict[str, object]:
    """A tree entry as the Hub's `/tree` endpoint returns it (GGUF files are LFS files)."""
    entry: dict[str, object] = {
        "type": "file",
        "oid": _git_blob_id(data),
        "size": len(data),
        "path": path,
    }
    if path.endswith(".gguf"):
        entry["lfs"] = {"oid": _sha256(data), "size": len(data), "pointerSize": 134}
    return entry


def _tree(repo: _Repo, folder: str, recursive: bool) -> list[dict[str, object]] | None:
    """The `/tree` listing of `folder` (repo root if empty), or None if no such folder."""
    prefix = f"{folder}/" if folder else ""
    inside = {p: d for p, d in repo.files.items() if p.startswith(prefix)}
    if folder and not inside:
        return None
    entries: list[dict[str, object]] = []
    folders: set[str] = set()
    for path in sorted(inside):
        rest = path[len(prefix):]
        if recursive or "/" not in rest:
            entries.append(_file_entry(path, inside[path]))
        if "/" in rest:
            parts = rest.split("/")[:-1]
            depth = len(parts) if recursive else 1
            for i in range(1, depth + 1):
                folders.add(prefix + "/".join(parts[:i]))
    for name in sorted(folders):
        oid = hashlib.sha1(name.encode()).hexdigest()
        entries.append({"type": "directory", "oid": oid, "size": 0, "path": name})
    return entries


def _model_info(repo_id: str, repo: _Repo, with_blobs: bool) -> dict[str, object]:
    """What `/api/models/{repo}` returns; sizes only with `?blobs=true`, as on the real Hub."""
    siblings: list[dict[str, object]] = []
    for path in sorted(repo.files):
        data = repo.files[path]
        sibling: dict[str, object] = {"rfilename": path}
        if with_blobs:
            sibling["blobId"] = _git_blob_id(data)
            sibling["size"] = len(data)
            if path.endswith(".gguf"):
                sibling["lfs"] = {"sha256": _sha256(data), "size": len(data), "pointerSize": 134}
        siblings.append(sibling)
    return {
        "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
        "id": repo_id,
        "modelId": repo_id,
        "author": repo_id.split("/")[0],
        "sha": repo.commit,
        "private": False,
        "gated": False,
        "disabled": False,
        "tags": ["gguf"],
        "library_name": "gguf",
        "siblings": siblings,
    }
