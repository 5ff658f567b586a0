"""A loopback stand-in for the Hugging Face Hub HTTP API, for tests.

It speaks enough of the Hub for the real ``huggingface_hub`` and ``datasets`` clients to
create a dataset repo, push parquet shards and a card, and read them back with
``load_dataset``: ``whoami-v2``, ``repos/create`` (409 with ``url`` when the repo exists),
``validate-yaml``, repo info (``/api/datasets/{id}`` and ``.../revision/{rev}``),
``preupload`` (parquet and binary files as ``lfs``, text as ``regular``), the NDJSON
``commit`` (with ``parentCommit`` checks), the git-LFS batch API with a basic ``PUT``,
``tree``, ``paths-info`` and ``resolve`` (``X-Repo-Commit``, ``ETag``, ``X-Linked-*``
headers and ``Range`` requests).

Repos are kept in memory with a full snapshot per commit, so reads at an old commit sha
work as on the Hub. Tokens: ``Authorization: Bearer <token>`` must name a known token
(401 otherwise); writing to a repo of another namespace answers 403.

The clients read ``HF_ENDPOINT`` and ``HF_HUB_DISABLE_XET`` when they are imported, so set
them (and a fresh ``HF_HOME``) before importing ``huggingface_hub`` / ``datasets``::

    from tests.helpers.hub_server import HubStandin

    with HubStandin(tokens={"hf_test": "alice"}) as hub:
        os.environ.update(hub.env(home=tmp_path / "hf-home"))
        ...  # now import datasets and push to "alice/my-dataset"

Every request is logged in ``hub.requests`` as ``(method, path, status)``; requests the
stand-in does not know are answered 404 and also listed in ``hub.unknown``.
"""
from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, quote, unquote, urlsplit

LFS_SUFFIXES = (".parquet", ".arrow", ".bin", ".safetensors", ".npz", ".npy", ".zip", ".gz", ".png", ".jpg")


def git_blob_sha(data: bytes) -> str:
    """The git object id of a blob with this content."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _plural(repo_type: str) -> str:
    return repo_type if repo_type.endswith("s") else repo_type + "s"


def lfs_pointer(oid: str, size: int) -> bytes:
    return f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {size}\n".encode()


@dataclass
class StoredFile:
    """One file at one commit."""

    data: bytes
    lfs: bool

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def blob_id(self) -> str:
        return git_blob_sha(lfs_pointer(self.sha256, len(self.data)) if self.lfs else self.data)


@dataclass
class Repo:
    """An in-memory repository: commit shas in order and a file snapshot per commit."""

    repo_type: str
    repo_id: str
    private: bool
    commits: list[str] = field(default_factory=list)
    snapshots: dict[str, dict[str, StoredFile]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)

    @property
    def owner(self) -> str:
        return self.repo_id.split("/")[0]

    @property
    def head(self) -> str:
        return self.commits[-1]

    def files(self, revision: str) -> dict[str, StoredFile] | None:
        if revision in ("main", "HEAD"):
            return self.snapshots[self.head]
        return self.snapshots.get(revision)

    def resolve_rev(self, revision: str) -> str | None:
        if revision in ("main", "HEAD"):
            return self.head
        return revision if revision in self.snapshots else None


class HubStandin:
    """The stand-in server; a context manager that serves on ``127.0.0.1`` (free port)."""

    def __init__(self, tokens: dict[str, str] | None = None, orgs: dict[str, list[str]] | None = None) -> None:
        self.tokens = dict(tokens or {"hf_standin_token": "alice"})
        """Known tokens -> user name."""
        self.orgs = dict(orgs or {})
        """User name -> organisations the user may write to."""
        self.repos: dict[tuple[str, str], Repo] = {}
        self.lfs_objects: dict[str, bytes] = {}
        self.requests: list[tuple[str, str, int]] = []
        self.unknown: list[tuple[str, str]] = []
        self.commit_log: list[tuple[str, list[str]]] = []
        """(repo_id, paths touched) of every commit, in order."""
        self.fail_commits_matching: str | None = None
        """When set, a commit whose summary (commit message) contains this string answers 500 (tests)."""
        self._lock = threading.RLock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> "HubStandin":
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    def start(self) -> None:
        standin = self

        class Handler(_Handler):
            hub = standin

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    @property
    def url(self) -> str:
        assert self._server is not None, "start the stand-in first"
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def env(self, home: Any) -> dict[str, str]:
        """Environment for the clients: endpoint, no Xet, a private HF_HOME, no telemetry."""
        return {"HF_ENDPOINT": self.url, "HF_HUB_DISABLE_XET": "1", "HF_HOME": str(home),
                "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_IMPLICIT_TOKEN": "1",
                "HF_DATASETS_CACHE": str(home) + "/datasets", "HF_HUB_OFFLINE": "0", "HF_DATASETS_OFFLINE": "0"}

    # -- helpers for tests -----------------------------------------------------------------
    def create(self, repo_id: str, repo_type: str = "dataset", private: bool = False) -> Repo:
        """Create a repo directly (e.g. one owned by someone else)."""
        repo_type = _plural(repo_type)
        with self._lock:
            repo = Repo(repo_type, repo_id, private)
            sha = self._new_sha(repo_id, "initial")
            repo.commits.append(sha)
            repo.snapshots[sha] = {".gitattributes": StoredFile(b"*.parquet filter=lfs diff=lfs merge=lfs -text\n",
                                                                 False)}
            repo.messages[sha] = "initial commit"
            self.repos[(repo_type, repo_id)] = repo
            return repo

    def file(self, repo_id: str, path: str, repo_type: str = "dataset") -> bytes:
        """Content of ``path`` at the head of a repo (KeyError when missing)."""
        repo = self.repos[(_plural(repo_type), repo_id)]
        return repo.snapshots[repo.head][path].data

    def paths(self, repo_id: str, repo_type: str = "dataset") -> list[str]:
        """Files at the head of a repo."""
        repo = self.repos[(_plural(repo_type), repo_id)]
        return sorted(repo.snapshots[repo.head])

    def _new_sha(self, repo_id: str, salt: str) -> str:
        return hashlib.sha1(f"{repo_id}:{salt}:{time.time_ns()}:{len(self.requests)}".encode()).hexdigest()


class _Handler(BaseHTTPRequestHandler):
    hub: HubStandin
    protocol_version = "HTTP/1.1"

    def log_message(self, *args: Any) -> None:  # quiet
        pass

    # -- plumbing --------------------------------------------------------------------------
    def _body(self) -> bytes:
        return self._raw_body

    def _read_body(self) -> bytes:
        """Read the whole request body up front, so an early error answer never leaves bytes
        on a kept-alive connection."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
            return b"".join(chunks)
        n = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(n) if n else b""

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None,
              ctype: str = "application/json") -> None:
        self.hub.requests.append((self.command, self.path, status))
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        if "Content-Length" not in (headers or {}):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, status: int, obj: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(obj).encode(), headers)

    def _error(self, status: int, message: str, code: str | None = None) -> None:
        headers = {"X-Error-Message": message}
        if code:
            headers["X-Error-Code"] = code
        self._json(status, {"error": message}, headers)

    def _user(self) -> tuple[bool, str | None]:
        """(token ok, user); a missing header is ok with no user, a wrong token is not ok."""
        auth = self.headers.get("Authorization")
        if not auth:
            return True, None
        m = re.fullmatch(r"Bearer (\S+)", auth.strip())
        if not m or m.group(1) not in self.hub.tokens:
            return False, None
        return True, self.hub.tokens[m.group(1)]

    def _may_write(self, user: str | None, namespace: str) -> bool:
        return user is not None and (namespace == user or namespace in self.hub.orgs.get(user, []))

    def _repo_for_read(self, repo_type: str, repo_id: str) -> Repo | None:
        """The repo, or None after answering 401/404 the way the Hub does."""
        ok, user = self._user()
        if not ok:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._may_write(user, repo.owner)):
            self._error(404 if user else 401, f"Repository not found: {repo_id}", "RepoNotFound")
            return None
        return repo

    def _repo_for_write(self, repo_type: str, repo_id: str) -> Repo | None:
        ok, user = self._user()
        if not ok:
            self._error(401, "Invalid credentials in Authorization header")
            return None
        if user is None:
            self._error(401, "You must be authenticated to write to a repository", "RepoNotFound")
            return None
        repo = self.hub.repos.get((repo_type, repo_id))
        if repo is None or (repo.private and not self._may_write(user, repo.owner)):
            self._error(404, f"Repository not found: {repo_id}", "RepoNotFound")
            return None
        if not self._may_write(user, repo.owner):
            self._error(403, f"You don't have the rights to write to {repo_id}; it belongs to {repo.owner}")
            return None
        return repo

    # -- routing ---------------------------------------------------------------------------
    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def do_POST(self) -> None:
        self._route()

    def do_PUT(self) -> None:
        self._route()

    def _route(self) -> None:
        self._raw_body = self._read_body()
        parts = urlsplit(self.path)
        path, query = parts.path, parse_qs(parts.query)
        m = self.command
        rt = r"(?P<rt>models|datasets|spaces)"
        rid = r"(?P<rid>[^/]+/[^/]+)"
        routes = [
            ("GET", r"/api/whoami-v2", self._whoami),
            ("POST", r"/api/repos/create", self._create_repo),
            ("POST", r"/api/validate-yaml", self._validate_yaml),
            ("GET", rf"/api/{rt}/{rid}", self._repo_info),
            ("GET", rf"/api/{rt}/{rid}/revision/(?P<rev>[^/]+)", self._repo_info),
            ("POST", rf"/api/{rt}/{rid}/preupload/(?P<rev>[^/]+)", self._preupload),
            ("POST", rf"/api/{rt}/{rid}/commit/(?P<rev>[^/]+)", self._commit),
            ("GET", rf"/api/{rt}/{rid}/tree/(?P<rev>[^/]+)(?P<sub>/.*)?", self._tree),
            ("POST", rf"/api/{rt}/{rid}/paths-info/(?P<rev>[^/]+)", self._paths_info),
            ("POST", rf"/(?:(?P<rt>datasets|spaces)/)?{rid}\.git/info/lfs/objects/batch", self._lfs_batch),
            ("PUT", r"/_lfs/(?P<oid>[0-9a-f]{64})", self._lfs_put),
            ("GET", rf"/(?:(?P<rt>datasets|spaces)/)?{rid}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
            ("HEAD", rf"/(?:(?P<rt>datasets|spaces)/)?{rid}/resolve/(?P<rev>[^/]+)/(?P<file>.+)", self._resolve),
        ]
        try:
            for method, pattern, fn in routes:
                if method == m:
                    mm = re.fullmatch(pattern, path)
                    if mm:
                        groups = {k: (unquote(v) if v is not None else None) for k, v in mm.groupdict().items()}
                        if groups.get("rt") is None and "rt" in mm.groupdict():
                            groups["rt"] = "models"
                        with self.hub._lock:
                            fn(query=query, **groups)
                        return
            self.hub.unknown.append((m, self.path))
            self._error(404, f"stand-in Hub: no route for {m} {path}")
        except BrokenPipeError:
            pass

    # -- endpoints -------------------------------------------------------------------------
    def _whoami(self, query: dict) -> None:
        ok, user = self._user()
        if not ok or user is None:
            self._error(401, "Invalid user token." if not ok else "You must be authenticated")
            return
        self._json(200, {"type": "user", "name": user, "fullname": user, "email": None,
                         "orgs": [{"name": o, "type": "org"} for o in self.hub.orgs.get(user, [])],
                         "auth": {"type": "access_token",
                                  "accessToken": {"displayName": "standin", "role": "write"}}})

    def _create_repo(self, query: dict) -> None:
        ok, user = self._user()
        if not ok or user is None:
            self._error(401, "Invalid credentials in Authorization header")
            return
        body = json.loads(self._body() or b"{}")
        namespace = body.get("organization") or user
        repo_id = f"{namespace}/{body['name']}"
        rtype = {None: "models", "model": "models", "dataset": "datasets", "space": "spaces"}[body.get("type")]
        url = f"{self.hub.url}/{'' if rtype == 'models' else rtype + '/'}{repo_id}"
        if not self._may_write(user, namespace):
            self._error(403, f"You don't have the rights to create a repo under the namespace {namespace!r}")
            return
        if (rtype, repo_id) in self.hub.repos:
            self._json(409, {"error": "You already created this dataset repo", "url": url})
            return
        self.hub.create(repo_id, rtype, bool(body.get("private")))
        self._json(200, {"url": url, "name": repo_id, "id": repo_id})

    def _validate_yaml(self, query: dict) -> None:
        body = json.loads(self._body() or b"{}")
        if not isinstance(body.get("content"), str):
            self._error(400, "content must be a string")
            return
        self._json(200, {"errors": [], "warnings": []})

    def _repo_info(self, query: dict, rt: str, rid: str, rev: str = "main") -> None:
        repo = self._repo_for_read(rt, rid)
        if repo is None:
            return
        sha = repo.resolve_rev(rev)
        if sha is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        files = repo.snapshots[sha]
        self._json(200, {"_id": rid, "id": rid, "author": repo.owner, "sha": sha, "private": repo.private,
                         "disabled": False, "gated": False, "downloads": 0, "likes": 0, "tags": [],
                         "lastModified": "2026-01-01T00:00:00.000Z", "createdAt": "2026-01-01T00:00:00.000Z",
                         "siblings": [{"rfilename": p} for p in sorted(files)]})

    def _preupload(self, query: dict, rt: str, rid: str, rev: str) -> None:
        repo = self._repo_for_write(rt, rid)
        if repo is None:
            return
        body = json.loads(self._body() or b"{}")
        files = repo.files(rev) or {}
        out = []
        for f in body.get("files", []):
            sample = base64.b64decode(f.get("sample", ""))
            lfs = f["path"].endswith(LFS_SUFFIXES) or b"\0" in sample or int(f.get("size", 0)) > 10_000_000
            entry: dict[str, Any] = {"path": f["path"], "uploadMode": "lfs" if lfs else "regular",
                                     "shouldIgnore": False}
            old = files.get(f["path"])
            if old is not None:
                entry["oid"] = old.sha256 if old.lfs else old.blob_id
            out.append(entry)
        self._json(200, {"files": out, "commitOid": repo.head})

    def _lfs_batch(self, query: dict, rt: str | None, rid: str) -> None:
        rt = "datasets" if rt == "datasets" else ("spaces" if rt == "spaces" else "models")
        repo = self._repo_for_write(rt, rid)
        if repo is None:
            return
        body = json.loads(self._body() or b"{}")
        objects = []
        for o in body.get("objects", []):
            item: dict[str, Any] = {"oid": o["oid"], "size": int(o["size"])}
            if o["oid"] not in self.hub.lfs_objects:
                item["actions"] = {"upload": {"href": f"{self.hub.url}/_lfs/{o['oid']}", "header": {}}}
            objects.append(item)
        self._json(200, {"transfer": "basic", "objects": objects})

    def _lfs_put(self, query: dict, oid: str) -> None:
        data = self._body()
        if hashlib.sha256(data).hexdigest() != oid:
            self._error(400, "sha256 of the uploaded content does not match the oid")
            return
        self.hub.lfs_objects[oid] = data
        self._send(200, b"")

    def _commit(self, query: dict, rt: str, rid: str, rev: str) -> None:
        repo = self._repo_for_write(rt, rid)
        if repo is None:
            return
        if rev not in ("main", repo.head):
            self._error(400, f"the stand-in commits to main only, not {rev!r}")
            return
        lines = [json.loads(x) for x in self._body().decode().splitlines() if x.strip()]
        header = next((x["value"] for x in lines if x["key"] == "header"), {})
        parent = header.get("parentCommit")
        if parent and parent != repo.head:
            self._error(412, "A commit has happened since. Please refresh and try again.")
            return
        files = dict(repo.snapshots[repo.head])
        touched = []
        for op in lines:
            key, v = op["key"], op["value"]
            if key == "file":
                data = base64.b64decode(v["content"]) if v.get("encoding") == "base64" else v["content"].encode()
                files[v["path"]] = StoredFile(data, False)
                touched.append(v["path"])
            elif key == "lfsFile":
                data = self.hub.lfs_objects.get(v["oid"])
                if data is None:
                    self._error(400, f"LFS object {v['oid']} of {v['path']} was never uploaded")
                    return
                files[v["path"]] = StoredFile(data, True)
                touched.append(v["path"])
            elif key == "deletedFile":
                if v["path"] not in files:
                    self._error(404, f"{v['path']} does not exist", "EntryNotFound")
                    return
                del files[v["path"]]
                touched.append(v["path"])
            elif key == "deletedFolder":
                prefix = v["path"].rstrip("/") + "/"
                for p in [p for p in files if p.startswith(prefix)]:
                    del files[p]
                touched.append(v["path"])
            elif key != "header":
                self._error(400, f"the stand-in does not support commit operation {key!r}")
                return
        hub = self.hub
        if hub.fail_commits_matching and hub.fail_commits_matching in header.get("summary", ""):
            self._error(500, "stand-in: commit failure injected by the test")
            return
        sha = hub._new_sha(rid, json.dumps(touched))
        repo.commits.append(sha)
        repo.snapshots[sha] = files
        repo.messages[sha] = header.get("summary", "")
        hub.commit_log.append((rid, touched))
        prefix = "" if rt == "models" else rt + "/"
        self._json(200, {"success": True, "commitOid": sha,
                         "commitUrl": f"{hub.url}/{prefix}{rid}/commit/{sha}"})

    def _entries(self, files: dict[str, StoredFile], paths: list[str], recursive: bool,
                 children_of: str | None) -> list[dict[str, Any]]:
        """Tree entries: the children of ``children_of`` ('' = root), or exactly ``paths``."""
        out: dict[str, dict[str, Any]] = {}

        def file_entry(p: str, f: StoredFile) -> dict[str, Any]:
            e: dict[str, Any] = {"type": "file", "oid": f.blob_id, "size": len(f.data), "path": p}
            if f.lfs:
                e["lfs"] = {"oid": f.sha256, "size": len(f.data),
                            "pointerSize": len(lfs_pointer(f.sha256, len(f.data)))}
            return e

        def dir_entry(p: str) -> dict[str, Any]:
            return {"type": "directory", "oid": hashlib.sha1(p.encode()).hexdigest(), "size": 0, "path": p}

        if children_of is None:
            dirs = {"/".join(p.split("/")[:i]) for p in files for i in range(1, p.count("/") + 1)}
            for p in paths:
                p = p.strip("/")
                if p in files:
                    out[p] = file_entry(p, files[p])
                elif p in dirs:
                    out[p] = dir_entry(p)
            return list(out.values())
        base = children_of.strip("/")
        pre = base + "/" if base else ""
        for p, f in sorted(files.items()):
            if not p.startswith(pre):
                continue
            rest = p[len(pre):].split("/")
            for i in range(1, len(rest)):
                d = pre + "/".join(rest[:i])
                out.setdefault(d, dir_entry(d))
                if not recursive:
                    break
            if len(rest) == 1 or recursive:
                out[p] = file_entry(p, f)
        return sorted(out.values(), key=lambda e: e["path"])

    def _tree(self, query: dict, rt: str, rid: str, rev: str, sub: str | None) -> None:
        repo = self._repo_for_read(rt, rid)
        if repo is None:
            return
        files = repo.files(rev)
        if files is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        sub = (sub or "").strip("/")
        if sub and not any(p.startswith(sub + "/") for p in files):
            self._error(404, f"{sub} does not exist on {rev}", "EntryNotFound")
            return
        recursive = query.get("recursive", ["false"])[0].lower() in ("1", "true")
        self._json(200, self._entries(files, [], recursive, sub))

    def _paths_info(self, query: dict, rt: str, rid: str, rev: str) -> None:
        repo = self._repo_for_read(rt, rid)
        if repo is None:
            return
        files = repo.files(rev)
        if files is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        raw = self._body()
        ctype = self.headers.get("Content-Type", "")
        if "json" in ctype:
            paths = json.loads(raw or b"{}").get("paths", [])
        else:
            paths = parse_qs(raw.decode()).get("paths", [])
        self._json(200, self._entries(files, list(paths), False, None))

    def _resolve(self, query: dict, rt: str | None, rid: str, rev: str, file: str) -> None:
        rt = rt or "models"
        repo = self._repo_for_read(rt, rid)
        if repo is None:
            return
        sha = repo.resolve_rev(rev)
        if sha is None:
            self._error(404, f"Invalid rev id: {rev}", "RevisionNotFound")
            return
        f = repo.snapshots[sha].get(file)
        headers = {"X-Repo-Commit": sha}
        if f is None:
            self.hub.requests.append((self.command, self.path, 404))
            self.send_response(404)
            body = json.dumps({"error": "Entry not found"}).encode()
            for k, v in {**headers, "X-Error-Code": "EntryNotFound", "X-Error-Message": "Entry not found",
                         "Content-Type": "application/json", "Content-Length": str(len(body))}.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
            return
        etag = f.sha256 if f.lfs else f.blob_id
        headers["ETag"] = f'"{etag}"'
        if f.lfs:
            headers["X-Linked-Etag"] = f'"{etag}"'
            headers["X-Linked-Size"] = str(len(f.data))
        headers["Accept-Ranges"] = "bytes"
        data = f.data
        rng = self.headers.get("Range")
        status = 200
        if rng:
            m = re.fullmatch(r"bytes=(\d*)-(\d*)", rng.strip())
            if not m:
                self._error(416, f"bad Range {rng!r}")
                return
            n = len(data)
            if m.group(1) == "":
                start, end = max(0, n - int(m.group(2))), n - 1
            else:
                start = int(m.group(1))
                end = min(int(m.group(2)), n - 1) if m.group(2) else n - 1
            if start >= n and n > 0:
                self._send(416, b"", {**headers, "Content-Range": f"bytes */{n}"})
                return
            headers["Content-Range"] = f"bytes {start}-{end}/{n}"
            data = data[start:end + 1]
            status = 206
        self._send(status, data, headers, ctype="application/octet-stream")


def _main() -> None:  # pragma: no cover - manual use
    import argparse

    ap = argparse.ArgumentParser(description="Serve the stand-in Hub until interrupted.")
    ap.add_argument("--token", default="hf_standin_token")
    ap.add_argument("--user", default="alice")
    args = ap.parse_args()
    with HubStandin(tokens={args.token: args.user}) as hub:
        print(json.dumps({"endpoint": hub.url}), flush=True)
        try:
            threading.Event().wait()
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":  # pragma: no cover
    _main()


__all__ = ["HubStandin", "Repo", "StoredFile", "git_blob_sha", "lfs_pointer", "quote"]
