"""A loopback fake of the few Hugging Face Hub endpoints a release push uses, for the unchanged
`huggingface_hub` client pointed at it with `HfApi(endpoint=server.url)` (or HF_ENDPOINT).

Endpoints (shapes as read in huggingface_hub's hf_api.py / _commit_api.py):
- POST /api/repos/create                                  -> {"url": ...}; 409 when it exists
- POST /api/validate-yaml (README.md front matter)        -> {"errors": [], "warnings": []}; 400 with errors if it does not parse
- POST /api/{type}s/{repo_id}/preupload/{revision}        -> {"files": [{"path", "uploadMode": "regular", "shouldIgnore", "oid"}]}
- POST /api/{type}s/{repo_id}/commit/{revision} (NDJSON)  -> {"commitUrl", "commitOid"}; inline base64 "file" lines only
- POST /api/{type}s/{repo_id}/tag/{revision}              -> {}; 409 when the tag exists
Every file is answered "regular" by preupload, so content arrives inline in the commit payload and no
LFS / Xet storage is involved; an "lfsFile" line is refused. Anything else gets 404 and is recorded in
`unexpected`. The server binds 127.0.0.1 on a free port, limits body size and request count, and shuts
itself down after `lifetime_s` even if a test forgets to stop it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import unquote, urlsplit

_REPO_PATH = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+|[^/]+)/(preupload|commit|tag)/(.+)$")


class FakeHub:
    """Records `repos` ({repo_id: {"files": {path: bytes}, "commits": [oid], "tags": {tag: oid}}}),
    `requests` ([(method, path)]), `unexpected` ([(method, path)]), `auth_headers` and
    `validated_metadata` (README.md front matter sent to validate-yaml)."""

    def __init__(self, *, lifetime_s: float = 60.0, max_body_bytes: int = 64 * 2**20, max_requests: int = 200):
        self.max_body_bytes = max_body_bytes
        self.max_requests = max_requests
        self.lifetime_s = lifetime_s
        self.repos: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        self.unexpected: list[tuple[str, str]] = []
        self.auth_headers: list[str | None] = []
        self.validated_metadata: list[dict] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._timer = threading.Timer(lifetime_s, self.stop)
        self._timer.daemon = True

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> FakeHub:
        self._thread.start()
        self._timer.start()
        return self

    def stop(self) -> None:
        self._timer.cancel()
        if self._thread.is_alive():
            self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------ handlers

    def _create_repo(self, body: bytes):
        payload = json.loads(body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        if not name:
            return 400, {"error": "name is required"}
        repo_id = f"{org}/{name}" if org else name
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            self.repos[repo_id] = {"files": {}, "commits": [], "tags": {}, "type": payload.get("type") or "model"}
        return 200, {"url": f"{self.url}/{repo_id}", "name": repo_id, "id": repo_id}

    def _validate_yaml(self, body: bytes):
        import yaml

        content = json.loads(body).get("content", "")
        match = re.match(r"^---\n(.*?)\n---\n", content, re.DOTALL)
        try:
            meta = yaml.safe_load(match.group(1)) if match else None
        except yaml.YAMLError as err:
            return 400, {"error": "invalid YAML", "errors": [{"message": str(err)}]}
        if not isinstance(meta, dict):
            return 200, {"errors": [], "warnings": [{"message": "empty or missing metadata"}]}
        with self._lock:
            self.validated_metadata.append(meta)
        return 200, {"errors": [], "warnings": []}

    def _preupload(self, repo: dict, body: bytes):
        files = json.loads(body).get("files", [])
        return 200, {
            "files": [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": None} for f in files]
        }

    def _commit(self, repo_id: str, repo: dict, body: bytes):
        lines = [json.loads(line) for line in body.splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            return 400, {"error": "expected an NDJSON header line first"}
        added: dict[str, bytes] = {}
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file" and value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key in ("deletedFile", "deletedFolder"):
                added[value["path"]] = None  # type: ignore[assignment]
            else:
                return 400, {"error": f"fake hub accepts only inline base64 files, got {key!r}"}
        with self._lock:
            for path, content in added.items():
                if content is None:
                    repo["files"].pop(path, None)
                else:
                    repo["files"][path] = content
            oid = hashlib.sha1(json.dumps([len(repo["commits"]), sorted(added)]).encode() + body).hexdigest()
            repo["commits"].append(oid)
        return 200, {"success": True, "commitOid": oid, "commitUrl": f"{self.url}/{repo_id}/commit/{oid}"}

    def _tag(self, repo: dict, revision: str, body: bytes):
        tag = json.loads(body).get("tag")
        with self._lock:
            if not tag:
                return 400, {"error": "tag is required"}
            if tag in repo["tags"]:
                return 409, {"error": f"Tag {tag} already exists"}
            oid = repo["commits"][-1] if revision == "main" and repo["commits"] else revision
            if oid not in repo["commits"]:
                return 404, {"error": f"Invalid rev id: {revision}"}
            repo["tags"][tag] = oid
        return 200, {}

    def _route(self, method: str, path: str, body: bytes):
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(body)
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(body)
        m = _REPO_PATH.match(path)
        if method == "POST" and m:
            _, repo_id, action, revision = m.groups()
            repo_id, revision = unquote(repo_id), unquote(revision)
            repo = self.repos.get(repo_id)
            if repo is None:
                return 404, {"error": "Repository not found"}
            if action == "preupload":
                return self._preupload(repo, body)
            if action == "commit":
                return self._commit(repo_id, repo, body)
            return self._tag(repo, revision, body)
        with self._lock:
            self.unexpected.append((method, path))
        return 404, {"error": f"fake hub: no route for {method} {path}"}

    def _handler_class(self):
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks, total = [], 0
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            self.rfile.readline()
                            break
                        total += size
                        if total > hub.max_body_bytes:
                            raise ValueError("body too large")
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(chunks)
                length = int(self.headers.get("Content-Length") or 0)
                if length > hub.max_body_bytes:
                    raise ValueError("body too large")
                return self.rfile.read(length) if length else b""

            def _handle(self):
                path = urlsplit(self.path).path
                with hub._lock:
                    hub.requests.append((self.command, path))
                    hub.auth_headers.append(self.headers.get("Authorization"))
                    too_many = len(hub.requests) > hub.max_requests
                try:
                    body = self._read_body()
                    status, payload = (429, {"error": "fake hub request limit"}) if too_many else hub._route(self.command, path, body)
                except ValueError as err:
                    status, payload = 413, {"error": str(err)}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                if status >= 400:
                    self.send_header("X-Error-Message", payload.get("error", ""))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = _handle

        return Handler
