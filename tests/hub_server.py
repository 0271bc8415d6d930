"""A loopback fake of the few Hugging Face Hub endpoints that releases, pushes while training and downloads
use, for the unchanged `huggingface_hub` client pointed at it with `HfApi(endpoint=server.url)` or HF_ENDPOINT.

The Hub is unreachable from these machines, so the tests run the real client (huggingface_hub 2.4) against
this server on 127.0.0.1 and check what arrived. Endpoints, with the shapes read in huggingface_hub's
hf_api.py, _commit_api.py, _upload_pipeline.py, _snapshot_download.py and file_download.py:

Uploads (`create_repo`, `upload_folder` / `create_commit`, `create_tag`):
- POST /api/repos/create                                  -> {"url": ...}; 409 when it exists
- POST /api/validate-yaml (README.md front matter)        -> {"errors": [], "warnings": []}; 400 with errors if it does not parse
- POST /api/{type}s/{repo_id}/preupload/{revision}        -> {"files": [{"path", "uploadMode": "regular", "shouldIgnore", "oid"}]}
- POST /api/{type}s/{repo_id}/commit/{revision} (NDJSON)  -> {"commitUrl", "commitOid"}; inline base64 "file" lines and
                                                             "deletedFile"/"deletedFolder" lines only
- POST /api/{type}s/{repo_id}/tag/{revision}              -> {}; 409 when the tag exists
- GET  /api/{type}s/{repo_id}/refs (`list_repo_refs`)     -> {"branches", "converts", "tags", "pullRequests"}, each a list of
                                                             {"name", "ref", "targetCommit"} ("main" once it has a commit)
Downloads (`model_info`/`repo_info`, `list_repo_tree`, `snapshot_download`, `hf_hub_download`):
- GET  /api/models/{repo_id}[/revision/{revision}]        -> {"id", "sha", "siblings": [{"rfilename"}], ...} (revision
                                                             resolution: "main" = last commit, a tag, or a commit id)
- GET  /api/{type}s/{repo_id}/tree/{revision}[/{path}]    -> [{"type": "file"|"directory", "path", "oid", "size"}]
                                                             (`?recursive=True` lists every level; one page, no Link header)
- HEAD/GET /{repo_id}/resolve/{revision}/{path}           -> the file, with X-Repo-Commit, ETag (sha256 of the content)
                                                             and Content-Length, as the client's metadata call needs
Errors carry the X-Error-Code the client maps to its exceptions: RepoNotFound, RevisionNotFound, EntryNotFound.
The main branch of a repo without commits lists as an empty tree (on the Hub a new repo has an initial commit),
so `upload_folder(..., delete_patterns=...)` works on the first push. GET /api/agent-harnesses (the client's
once-per-process agent detection, when HF_ENDPOINT was set before it was imported) is answered 404 on purpose.

Every file is answered "regular" by preupload, so content arrives inline in the commit payload and no LFS / Xet
storage is involved; an "lfsFile" line is refused. Each commit keeps a snapshot of the whole tree, so any past
revision can be downloaded. Anything else gets 404 and is recorded in `unexpected`. The server binds 127.0.0.1
on a free port, limits body size and request count, and shuts itself down after `lifetime_s` even if a test
forgets to stop it.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self
from urllib.parse import parse_qs, unquote, urlsplit

_REPO_PATH = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+|[^/]+)/(preupload|commit|tag)/(.+)$")
_INFO_PATH = re.compile(r"^/api/models/([^/]+/[^/]+|[^/]+?)(?:/revision/([^/]+))?$")
_TREE_PATH = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/tree/([^/]+)(?:/(.+))?$")
_RESOLVE_PATH = re.compile(r"^/([^/]+/[^/]+)/resolve/([^/]+)/(.+)$")
_REFS_PATH = re.compile(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+|[^/]+)/refs$")


def _git_blob_id(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


class FakeHub:
    """Records `repos` ({repo_id: {"files": {path: bytes}, "commits": [oid], "tags": {tag: oid},
    "snapshots": {oid: {path: bytes}}, "messages": {oid: commit summary}, "private": bool}}),
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

    def resolve(self, repo_id: str, revision: str) -> str | None:
        """The commit id a branch ("main"), tag or commit id names, or None."""
        repo = self.repos[repo_id]
        if revision == "main":
            return repo["commits"][-1] if repo["commits"] else None
        if revision in repo["tags"]:
            return repo["tags"][revision]
        return revision if revision in repo["snapshots"] else None

    # ------------------------------------------------------------------ upload handlers

    def _create_repo(self, body: bytes):
        payload = json.loads(body or b"{}")
        name, org = payload.get("name"), payload.get("organization")
        if not name:
            return 400, {"error": "name is required"}
        repo_id = f"{org}/{name}" if org else name
        with self._lock:
            if repo_id in self.repos:
                return 409, {"error": "You already created this model repo", "url": f"{self.url}/{repo_id}"}
            self.repos[repo_id] = {
                "files": {}, "commits": [], "tags": {}, "snapshots": {}, "messages": {},
                "type": payload.get("type") or "model",
                "private": payload.get("visibility") == "private" or bool(payload.get("private")),
            }
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
        added: dict[str, bytes | None] = {}
        deleted_folders: list[str] = []
        for line in lines[1:]:
            key, value = line.get("key"), line.get("value", {})
            if key == "file" and value.get("encoding") == "base64":
                added[value["path"]] = base64.b64decode(value["content"])
            elif key == "deletedFile":
                added[value["path"]] = None
            elif key == "deletedFolder":
                deleted_folders.append(value["path"].rstrip("/") + "/")
            else:
                return 400, {"error": f"fake hub accepts only inline base64 files, got {key!r}"}
        with self._lock:
            for folder in deleted_folders:
                for path in [p for p in repo["files"] if p.startswith(folder)]:
                    repo["files"].pop(path)
            for path, content in added.items():
                if content is None:
                    repo["files"].pop(path, None)
                else:
                    repo["files"][path] = content
            oid = hashlib.sha1(json.dumps([len(repo["commits"]), sorted(added)]).encode() + body).hexdigest()
            repo["commits"].append(oid)
            repo["snapshots"][oid] = dict(repo["files"])
            repo["messages"][oid] = lines[0].get("value", {}).get("summary", "")
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

    def _refs(self, repo_id: str):
        if repo_id not in self.repos:
            return 404, {"error": "Repository not found", "_code": "RepoNotFound"}
        with self._lock:
            repo = self.repos[repo_id]
            branches = [{"name": "main", "ref": "refs/heads/main", "targetCommit": repo["commits"][-1]}] if repo["commits"] else []
            tags = [{"name": t, "ref": f"refs/tags/{t}", "targetCommit": oid} for t, oid in sorted(repo["tags"].items())]
        return 200, {"branches": branches, "converts": [], "tags": tags, "pullRequests": []}

    # ------------------------------------------------------------------ download handlers

    def _snapshot(self, repo_id: str, revision: str):
        """(commit, {path: bytes}) or an error response (404 with the client's X-Error-Code). The main branch of a
        repo without commits is empty (commit None): on the Hub a new repo has an initial commit."""
        if repo_id not in self.repos:
            return None, (404, {"error": "Repository not found", "_code": "RepoNotFound"})
        with self._lock:
            if revision == "main" and not self.repos[repo_id]["commits"]:
                return (None, {}), None
            oid = self.resolve(repo_id, revision)
            if oid is None:
                return None, (404, {"error": f"Invalid rev id: {revision}", "_code": "RevisionNotFound"})
            return (oid, self.repos[repo_id]["snapshots"][oid]), None

    def _model_info(self, repo_id: str, revision: str):
        found, error = self._snapshot(repo_id, revision)
        if error:
            return error
        oid, files = found
        if oid is None:
            return 404, {"error": f"{repo_id} has no commit yet", "_code": "RevisionNotFound"}
        repo = self.repos[repo_id]
        return 200, {
            "id": repo_id, "modelId": repo_id, "sha": oid, "private": repo["private"],
            "siblings": [{"rfilename": p} for p in sorted(files)], "tags": [],
        }

    def _tree(self, repo_id: str, revision: str, prefix: str, recursive: bool):
        found, error = self._snapshot(repo_id, revision)
        if error:
            return error
        _, files = found
        prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        entries: dict[str, dict] = {}
        for path, content in sorted(files.items()):
            if not path.startswith(prefix):
                continue
            parts = path[len(prefix):].split("/")
            for depth in range(1, len(parts)):  # the folders on the way
                folder = prefix + "/".join(parts[:depth])
                if recursive or depth == 1:
                    entries.setdefault(folder, {"type": "directory", "path": folder, "oid": _git_blob_id(folder.encode()), "size": 0})
            if recursive or len(parts) == 1:
                entries[path] = {"type": "file", "path": path, "oid": _git_blob_id(content), "size": len(content)}
        if prefix and not entries:
            return 404, {"error": f"{prefix} does not exist", "_code": "EntryNotFound"}
        return 200, list(entries.values())

    def _resolve_file(self, repo_id: str, revision: str, path: str):
        found, error = self._snapshot(repo_id, revision)
        if error:
            return error
        oid, files = found
        if path not in files or oid is None:
            return 404, {"error": f"{path} does not exist at {oid}", "_code": "EntryNotFound", "_headers": {"X-Repo-Commit": oid}}
        content = files[path]
        return 200, content, {"X-Repo-Commit": oid, "ETag": f'"{hashlib.sha256(content).hexdigest()}"'}

    def _route(self, method: str, path: str, query: dict, body: bytes):
        if method == "POST" and path == "/api/repos/create":
            return self._create_repo(body)
        if method == "POST" and path == "/api/validate-yaml":
            return self._validate_yaml(body)
        if method == "GET" and path == "/api/agent-harnesses":
            # The client's best-effort agent detection fetches this registry once per process (and would cache
            # it under HF_HOME): answered "not found", which the client treats as "no registry".
            return 404, {"error": "not served by the fake hub"}
        m = _REPO_PATH.match(path)
        if method == "POST" and m:
            _, repo_id, action, revision = m.groups()
            repo_id, revision = unquote(repo_id), unquote(revision)
            repo = self.repos.get(repo_id)
            if repo is None:
                return 404, {"error": "Repository not found", "_code": "RepoNotFound"}
            if action == "preupload":
                return self._preupload(repo, body)
            if action == "commit":
                return self._commit(repo_id, repo, body)
            return self._tag(repo, revision, body)
        if method == "GET" and (m := _REFS_PATH.match(path)):
            return self._refs(unquote(m.group(2)))
        if method == "GET" and (m := _TREE_PATH.match(path)):
            _, repo_id, revision, prefix = m.groups()
            recursive = query.get("recursive", ["False"])[0].lower() == "true"
            return self._tree(unquote(repo_id), unquote(revision), unquote(prefix or ""), recursive)
        if method == "GET" and (m := _INFO_PATH.match(path)):
            repo_id, revision = m.groups()
            return self._model_info(unquote(repo_id), unquote(revision or "main"))
        if method in ("GET", "HEAD") and (m := _RESOLVE_PATH.match(path)):
            repo_id, revision, file_path = (unquote(g) for g in m.groups())
            return self._resolve_file(repo_id, revision, file_path)
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
                parts = urlsplit(self.path)
                with hub._lock:
                    hub.requests.append((self.command, parts.path))
                    hub.auth_headers.append(self.headers.get("Authorization"))
                    too_many = len(hub.requests) > hub.max_requests
                try:
                    body = self._read_body()
                    result = (429, {"error": "fake hub request limit"}) if too_many else hub._route(
                        self.command, parts.path, parse_qs(parts.query), body
                    )
                except ValueError as err:
                    result = 413, {"error": str(err)}
                except Exception as err:  # noqa: BLE001  (a bug in the fake: answer, so the client does not retry, and record it)
                    with hub._lock:
                        hub.unexpected.append((self.command, f"{parts.path}: {type(err).__name__}: {err}"))
                    result = 500, {"error": f"fake hub error: {err}"}
                status, payload, headers = result if len(result) == 3 else (*result, {})
                if isinstance(payload, bytes):  # a file from /resolve/
                    data, content_type = payload, "application/octet-stream"
                elif isinstance(payload, list):  # a tree listing
                    data, content_type = json.dumps(payload).encode(), "application/json"
                else:
                    code = payload.pop("_code", None)
                    headers = {**headers, **payload.pop("_headers", {})}
                    if code:
                        headers["X-Error-Code"] = code
                    if status >= 400:
                        headers["X-Error-Message"] = payload.get("error", "")
                    data, content_type = json.dumps(payload).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(data)))
                for key, value in headers.items():
                    self.send_header(key, value)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _handle

        return Handler
