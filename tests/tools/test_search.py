"""BM25 search: relevant documents first, deterministic ties, readable output, clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agentrl.tools.search import Document, SearchTool, tokenize

DOCS = [
    Document("d0", "Veridia", "Veridia is a country. Its capital is Lumen. Veridia borders Ostmark."),
    Document("d1", "Lumen", "Lumen is the capital city of Veridia. The mayor of Lumen is Ada Quill."),
    Document("d2", "Ada Quill", "Ada Quill is a politician born in 1961 in Ostmark."),
    Document("d3", "Ostmark", "Ostmark is a country east of Veridia. Its capital is Harn."),
    Document("d4", "Harn", "Harn is a port city on the river Vell."),
]


def test_tokenize_drops_stopwords_keeps_numbers() -> None:
    assert tokenize("Who is the Mayor of Lumen in 1961, and B?") == ["mayor", "lumen", "1961", "b"]


async def test_most_relevant_first() -> None:
    tool = SearchTool(DOCS)
    hits = tool.search("mayor of Lumen")
    assert hits[0][0].doc_id == "d1"
    assert [s for _, s in hits] == sorted((s for _, s in hits), reverse=True)
    result = await tool({"query": "Ada Quill born"})
    assert result.ok
    assert result.content.startswith("[1] Ada Quill\nAda Quill is a politician")


async def test_k_argument_and_default() -> None:
    tool = SearchTool(DOCS, top_k=2)
    assert len(tool.search("capital Veridia Ostmark")) == 2
    result = await tool({"query": "capital Veridia Ostmark", "k": 4})
    assert result.content.count("\n\n") == 3 and "[4]" in result.content


def test_ties_keep_document_order() -> None:
    docs = [Document(f"t{i}", f"T{i}", "same words here") for i in range(6)]
    tool = SearchTool(docs, top_k=5)
    assert [d.doc_id for d, _ in tool.search("same words")] == ["t0", "t1", "t2", "t3", "t4"]


def test_replays_identically() -> None:
    a, b = SearchTool(DOCS), SearchTool(list(DOCS))
    for q in ["capital", "Veridia", "river port", "country east"]:
        assert a.search(q, 5) == b.search(q, 5)


async def test_no_match_is_a_normal_result() -> None:
    tool = SearchTool(DOCS)
    result = await tool({"query": "zeppelin"})
    assert result.ok and "No documents match 'zeppelin'" in result.content
    only_stopwords = await tool({"query": "the of and"})
    assert only_stopwords.ok and "No documents match" in only_stopwords.content


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ({"query": ""}, "query is empty"),
        ({"query": "   "}, "query is empty"),
        ({"query": "capital", "k": 0}, "k must be between 1 and 10"),
        ({"query": "capital", "k": 11}, "k must be between 1 and 10"),
        ({"query": "capital", "k": "2"}, "must be of type integer"),
        ({"query": "capital", "k": True}, "must be of type integer"),
        ({"query": 5}, "must be of type string"),
        ({}, "missing required argument(s): query"),
        ({"query": "x", "limit": 2}, "unexpected argument(s): limit"),
        ({"query": "x" * 501}, "longer than 500"),
    ],
)
async def test_errors(arguments: dict[str, object], message: str) -> None:
    result = await SearchTool(DOCS)(arguments)
    assert not result.ok and message in result.content


def test_constructor_validation() -> None:
    with pytest.raises(ValueError, match="at least one document"):
        SearchTool([])
    with pytest.raises(ValueError, match="duplicate doc_id"):
        SearchTool([DOCS[0], DOCS[0]])
    with pytest.raises(ValueError, match="top_k"):
        SearchTool(DOCS, top_k=0)


async def test_long_texts_are_cut() -> None:
    tool = SearchTool([Document("x", "Long", "word " * 1000)], max_chars_per_result=100)
    result = await tool({"query": "word"})
    body = result.content.split("\n", 1)[1]
    assert len(body) == 100 and body.endswith("...")


def test_empty_document_never_matches() -> None:
    tool = SearchTool([Document("e", "", ""), *DOCS])
    assert all(d.doc_id != "e" for d, _ in tool.search("capital", 10))


def test_schema() -> None:
    fn = SearchTool(DOCS).schema()["function"]
    assert fn["name"] == "search" and fn["parameters"]["required"] == ["query"]
    assert set(fn["parameters"]["properties"]) == {"query", "k"}


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300), st.integers(min_value=-3, max_value=15))
async def test_fuzz_never_raises(query: str, k: int) -> None:
    result = await SearchTool(DOCS)({"query": query, "k": k})
    assert isinstance(result.content, str) and result.content
