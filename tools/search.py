"""`search`: BM25 ranked retrieval over an environment's document collection.

Scoring is delegated to `bm25s` (a maintained, numpy-only BM25); ranking is done here with an
explicit stable sort so ties always fall back to document order and runs replay exactly.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import bm25s
import numpy as np
from bm25s.stopwords import STOPWORDS_EN

from agentrl.tools.base import Tool, ToolError

_TOKEN_RE = re.compile(r"\w+")
# question words carry no topic, and small models often search with the whole question
_STOPWORDS = frozenset(STOPWORDS_EN) | {
    "who",
    "whom",
    "whose",
    "what",
    "which",
    "where",
    "when",
    "how",
    "why",
}
MAX_QUERY_CHARS = 500


@dataclass(frozen=True, slots=True)
class Document:
    doc_id: str
    title: str
    text: str


def tokenize(text: str) -> list[str]:
    """Lower-cased word tokens without English stopwords (single letters and digits are kept)."""
    return [t for t in _TOKEN_RE.findall(text.lower()) if t not in _STOPWORDS]


class SearchTool(Tool):
    """Keyword search; returns the best `k` documents, numbered, with title and text."""

    name: ClassVar[str] = "search"
    description: ClassVar[str] = (
        "Search the knowledge base with keywords and get the most relevant documents, best first. "
        "Use specific names and terms from the question, e.g. 'capital of Veridia'. "
        "Search again with new keywords from a result to follow a chain of facts."
    )
    parameters: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "query": {
                "type": "string",
                "description": "Keywords to search for",
                "maxLength": MAX_QUERY_CHARS,
            },
            "k": {"type": "integer", "description": "How many results to return (default 3)"},
        },
        "required": ["query"],
        "additionalProperties": False,
    }

    def __init__(
        self,
        documents: Sequence[Document],
        top_k: int = 3,
        max_k: int = 10,
        max_chars_per_result: int = 600,
        timeout: float = 5.0,
        max_concurrency: int = 64,
        rate_limit: tuple[int, float] | None = None,
    ) -> None:
        super().__init__(timeout=timeout, max_concurrency=max_concurrency, rate_limit=rate_limit)
        if not documents:
            raise ValueError("SearchTool needs at least one document")
        ids = [d.doc_id for d in documents]
        if len(set(ids)) != len(ids):
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            raise ValueError(f"SearchTool: duplicate doc_id(s): {', '.join(dupes[:5])}")
        if not 1 <= top_k <= max_k:
            raise ValueError(f"SearchTool: need 1 <= top_k <= max_k, got top_k={top_k}, max_k={max_k}")
        if max_chars_per_result < 20:
            raise ValueError(f"SearchTool: max_chars_per_result must be >= 20, got {max_chars_per_result}")
        self.documents = list(documents)
        self.top_k = top_k
        self.max_k = max_k
        self.max_chars_per_result = max_chars_per_result
        self._index = bm25s.BM25()
        # an empty token list would break bm25s; a document with no words simply never matches
        corpus = [tokenize(f"{d.title} {d.text}") or ["\x00"] for d in self.documents]
        self._index.index(corpus, show_progress=False)

    def search(self, query: str, k: int | None = None) -> list[tuple[Document, float]]:
        """The top `k` matching documents with their BM25 scores; ties keep document order."""
        if not query.strip():
            raise ToolError("query is empty; give some keywords to search for")
        k = self.top_k if k is None else k
        if not 1 <= k <= self.max_k:
            raise ToolError(f"k must be between 1 and {self.max_k}, got {k}")
        tokens = tokenize(query)
        if not tokens:
            return []
        scores = np.asarray(self._index.get_scores(tokens), dtype=np.float64)
        order = np.argsort(-scores, kind="stable")[:k]
        return [(self.documents[i], float(scores[i])) for i in order if scores[i] > 0]

    def _snippet(self, text: str) -> str:
        if len(text) <= self.max_chars_per_result:
            return text
        return text[: self.max_chars_per_result - 3].rstrip() + "..."

    async def run(self, **arguments: Any) -> str:
        query: str = arguments["query"]
        hits = self.search(query, arguments.get("k"))
        if not hits:
            return f"No documents match {query.strip()!r}. Try other keywords."
        return "\n\n".join(
            f"[{rank}] {doc.title}\n{self._snippet(doc.text)}" for rank, (doc, _) in enumerate(hits, 1)
        )
