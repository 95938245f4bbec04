"""A persistent SQLite cache of completions, keyed by (backend, model, request)."""

from __future__ import annotations

import hashlib
import sqlite3
import threading
import time
from pathlib import Path

from theraloop.io import sha256_json
from theraloop.llm._types import ChatModel, ChatRequest, ChatResponse


def request_key(backend: str, model_id: str, request: ChatRequest) -> str:
    return sha256_json({"backend": backend, "model": model_id, "request": request.model_dump(mode="json")})


class CompletionCache:
    """Thread-safe SQLite store. WAL mode lets a second process read while a run writes."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(
            "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, response TEXT NOT NULL, "
            "created REAL NOT NULL)"
        )
        self._db.commit()
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> ChatResponse | None:
        with self._lock:
            row = self._db.execute("SELECT response FROM completions WHERE key = ?", (key,)).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return ChatResponse.model_validate_json(row[0]).model_copy(update={"cached": True})

    def put(self, key: str, response: ChatResponse) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO completions (key, response, created) VALUES (?, ?, ?)",
                             (key, response.model_dump_json(), time.time()))
            self._db.commit()

    def __len__(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        with self._lock:
            self._db.close()


class CachedChatModel:
    """Wraps any ChatModel: a request seen before is answered from the cache at no cost."""

    def __init__(self, inner: ChatModel, cache: CompletionCache):
        self.inner = inner
        self.cache = cache

    @property
    def backend(self) -> str:
        return self.inner.backend

    @property
    def model_id(self) -> str:
        return self.inner.model_id

    @property
    def supports_json_schema(self) -> bool:
        return self.inner.supports_json_schema

    async def complete(self, request: ChatRequest) -> ChatResponse:
        key = request_key(self.backend, self.model_id, request)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        response = await self.inner.complete(request)
        self.cache.put(key, response)
        return response


def adapter_fingerprint(adapter: str | Path) -> str:
    """`name@sha256[:12]` over the adapter's files (a folder, or one file for llama.cpp LoRA)."""
    path = Path(adapter)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.relative_to(path).as_posix().encode() if path.is_dir() else b"")
        digest.update(file.read_bytes())
    return f"{path.name}@{digest.hexdigest()[:12]}"
