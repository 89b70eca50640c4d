"""`agentrl/KBSearch-v0`: multi-hop questions over a synthetic knowledge base, answered by searching.

The knowledge base (countries, cities, people, companies) is fictional, so a model cannot answer from
memory, and it is built from a fixed seed on first use, so every machine sees the same facts. Each
document states only an entity's direct relations, so "In which country was the founder of X born?"
needs one search per hop: the company, then its founder, then the founder's birth city.
"""

from __future__ import annotations

import functools
import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from agentrl.envs.base import Task, ToolEnv
from agentrl.tools.base import Tool, ToolBox, format_answer, format_tool_call

SPLIT_SIZES = {"train": 1000, "test": 200, "warmup": 4000}
KB_SEED = "agentrl/kb_search/v1"
# The warmup split asks about other, freshly generated knowledge bases (same generator, other seeds),
# so supervised warm-starts teach searching and copying names, not the evaluation KB's facts.
WARMUP_KBS = 40
N_COUNTRIES, N_CITIES, N_PEOPLE, N_COMPANIES = 24, 120, 400, 200

_ONSETS = (
    "b",
    "d",
    "f",
    "g",
    "k",
    "l",
    "m",
    "n",
    "p",
    "r",
    "s",
    "t",
    "v",
    "z",
    "br",
    "dr",
    "kr",
    "st",
    "th",
    "sh",
)
_VOWELS = ("a", "e", "i", "o", "u", "ai", "ei", "ou")
_CODAS = ("", "", "n", "r", "l", "s", "m", "th", "nd", "rk")
_PROFESSIONS = ("engineer", "chemist", "architect", "writer", "pilot", "economist", "surgeon", "designer")
_INDUSTRIES = ("shipping", "software", "textile", "mining", "robotics", "food", "energy", "publishing")
_CORP = ("Labs", "Works", "Industries", "Systems", "Group", "Holdings", "Partners", "Dynamics")


@dataclass(frozen=True)
class KnowledgeBase:
    countries: dict[str, str]  # country -> capital city
    cities: dict[str, tuple[str, int]]  # city -> (country, population)
    people: dict[str, tuple[str, str, str]]  # person -> (profession, birth city, employer)
    companies: dict[str, tuple[str, int, str, str]]  # company -> (industry, year, founder, hq city)

    def documents(self) -> list[tuple[str, str, str]]:
        """(doc_id, title, text): one document per entity, stating only its direct relations."""
        docs = []
        for c, capital in self.countries.items():
            docs.append((f"country:{c}", c, f"{c} is a country. Its capital is {capital}."))
        for c, (country, pop) in self.cities.items():
            docs.append((f"city:{c}", c, f"{c} is a city in {country}, with about {pop:,} inhabitants."))
        for p, (job, city, employer) in self.people.items():
            docs.append(
                (
                    f"person:{p}",
                    p,
                    f"{p} is {_article(job)} {job} who was born in {city}. {p} works at {employer}.",
                )
            )
        for c, (industry, year, founder, hq) in self.companies.items():
            docs.append(
                (
                    f"company:{c}",
                    c,
                    f"{c} is {_article(industry)} {industry} company founded in {year} by {founder}. "
                    f"Its headquarters are in {hq}.",
                )
            )
        return docs


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _word(rng: random.Random, syllables: int) -> str:
    parts = [rng.choice(_ONSETS) + rng.choice(_VOWELS) for _ in range(syllables)]
    return ("".join(parts) + rng.choice(_CODAS)).capitalize()


@functools.cache
def knowledge_base(seed: str = KB_SEED) -> KnowledgeBase:
    """Build the knowledge base from `seed` (deterministic; cached per process)."""
    rng = random.Random(seed)
    used: set[str] = set()  # lower-cased, so no two entities differ only by case
    if seed != KB_SEED:  # another KB shares no name with the evaluation one
        main = knowledge_base()
        used = {
            n.lower() for names in (main.countries, main.cities, main.people, main.companies) for n in names
        }

    def fresh(make: Callable[[], str]) -> str:
        while True:
            name = make()
            if name.lower() not in used:
                used.add(name.lower())
                return name

    countries = [fresh(lambda: _word(rng, 2) + "ia") for _ in range(N_COUNTRIES)]
    cities = [fresh(lambda: _word(rng, rng.choice((2, 3)))) for _ in range(N_CITIES)]
    people = [fresh(lambda: f"{_word(rng, 2)} {_word(rng, rng.choice((2, 3)))}") for _ in range(N_PEOPLE)]
    companies = [fresh(lambda: f"{_word(rng, 2)} {rng.choice(_CORP)}") for _ in range(N_COMPANIES)]
    city_country = {
        c: countries[i % N_COUNTRIES] if i < N_COUNTRIES else rng.choice(countries)
        for i, c in enumerate(cities)
    }
    capitals = {country: next(c for c in cities if city_country[c] == country) for country in countries}
    city_info = {c: (city_country[c], rng.randrange(20, 3000) * 1000) for c in cities}
    founders = rng.sample(people, N_COMPANIES)  # each founder founded exactly one company
    company_info = {
        c: (rng.choice(_INDUSTRIES), rng.randint(1890, 2020), founders[i], rng.choice(cities))
        for i, c in enumerate(companies)
    }
    people_info = {p: (rng.choice(_PROFESSIONS), rng.choice(cities), rng.choice(companies)) for p in people}
    return KnowledgeBase(capitals, city_info, people_info, company_info)


# A question: template, the start entity kind, and the relation path the expert follows.
# Relations: founder (company->person), hq (company->city), born (person->city),
# employer (person->company), country (city->country), year (company->year).
_QUESTIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("In which city was the founder of {e} born?", "company", ("founder", "born")),
    ("In which country was the founder of {e} born?", "company", ("founder", "born", "country")),
    ("In which country are the headquarters of {e}?", "company", ("hq", "country")),
    ("Who founded the company that {e} works at?", "person", ("employer", "founder")),
    (
        "In which country is the company that {e} works at headquartered?",
        "person",
        ("employer", "hq", "country"),
    ),
    ("In what year was the company that {e} works at founded?", "person", ("employer", "year")),
    ("In which country was {e} born?", "person", ("born", "country")),
)

# How the expert reads one relation out of a search result: the entity's own sentence, by pattern.
_RELATION_PATTERNS = {
    "founder": r"{e} is an? \w+ company founded in \d+ by ([^.]+)\.",
    "year": r"{e} is an? \w+ company founded in (\d+) by",
    "hq": r"{e} is an? \w+ company founded in \d+ by [^.]+\. Its headquarters are in ([^.]+)\.",
    "born": r"{e} is an? \w+ who was born in ([^.]+)\.",
    "employer": r"{e} works at ([^.]+)\.",
    "country": r"{e} is a city in ([^,]+),",
}


def read_relation(text: str, entity: str, relation: str) -> str | None:
    """Find `relation` of `entity` in a search result, or None when its document is not there."""
    pattern = r"(?<![\w])" + _RELATION_PATTERNS[relation].format(e=re.escape(entity))
    m = re.search(pattern, text)
    return m.group(1).strip() if m else None


def follow(kb: KnowledgeBase, entity: str, relation: str) -> str:
    """Ground truth for one hop (used to build answers; the expert reads documents instead)."""
    if relation == "founder":
        return kb.companies[entity][2]
    if relation == "year":
        return str(kb.companies[entity][1])
    if relation == "hq":
        return kb.companies[entity][3]
    if relation == "born":
        return kb.people[entity][1]
    if relation == "employer":
        return kb.people[entity][2]
    if relation == "country":
        return kb.cities[entity][0]
    raise KeyError(relation)


def warmup_kb_seed(i: int) -> str:
    return f"{KB_SEED}/warmup/{i}"


def generate(
    split: str, n: int, avoid: frozenset[str] = frozenset(), kb_seed: str = KB_SEED, start: int = 0
) -> list[Task]:
    kb = knowledge_base(kb_seed)
    rng = random.Random(f"agentrl/kb_search/{split}" + ("" if kb_seed == KB_SEED else f"/{kb_seed}"))
    by_kind = {"company": sorted(kb.companies), "person": sorted(kb.people)}
    tasks: list[Task] = []
    seen = set(avoid)
    while len(tasks) < n:
        template, kind, path = rng.choice(_QUESTIONS)
        entity = rng.choice(by_kind[kind])
        prompt = template.format(e=entity)
        if prompt in seen:
            continue
        seen.add(prompt)
        value = entity
        for rel in path:
            value = follow(kb, value, rel)
        data: dict[str, object] = {"start": entity, "path": list(path)}
        if kb_seed != KB_SEED:
            data["kb"] = kb_seed
        tasks.append(
            Task(id=f"{start + len(tasks):05d}", prompt=prompt, answer=value, difficulty=len(path), data=data)
        )
    return tasks


def _search_tool(kb_seed: str = KB_SEED) -> Tool:
    from agentrl.tools.search import Document, SearchTool

    docs = [Document(doc_id, title, text) for doc_id, title, text in knowledge_base(kb_seed).documents()]
    return SearchTool(docs, top_k=3)


@functools.cache
def _shared_search_tool(kb_seed: str = KB_SEED) -> Tool:
    """One index per knowledge base and process: the corpus is fixed, so every env can share it."""
    return _search_tool(kb_seed)


@functools.cache
def _warmup_toolbox(kb_seed: str) -> ToolBox:
    return ToolBox([_shared_search_tool(kb_seed)])


class KBSearchEnv(ToolEnv):
    """Multi-hop questions about fictional entities; each hop is one `search` call."""

    name: ClassVar[str] = "kb_search"
    instructions: ClassVar[str] = (
        "The facts are in a private knowledge base about fictional people, companies, cities and "
        "countries: search for one entity at a time and follow the relations. Answer with a name or year."
    )
    max_turns = 8
    # "warmup": questions about other knowledge bases (`WARMUP_KBS`), for supervised warm-starts
    splits = ("train", "test", "warmup")

    def make_tools(self) -> list[Tool]:
        return [_shared_search_tool()]

    def load_tasks(self, split: str) -> Sequence[Task]:
        if split == "train":
            return generate("train", SPLIT_SIZES["train"])
        if split == "test":
            train = frozenset(t.prompt for t in self.tasks("train"))
            return generate("test", SPLIT_SIZES["test"], avoid=train)
        per_kb = SPLIT_SIZES[split] // WARMUP_KBS
        return [
            task
            for i in range(WARMUP_KBS)
            for task in generate(split, per_kb, kb_seed=warmup_kb_seed(i), start=i * per_kb)
        ]

    def toolbox_for(self, task: Task) -> ToolBox:
        kb = task.data.get("kb")
        return self.toolbox if kb is None else _warmup_toolbox(str(kb))

    def expert_action(self) -> str:
        """Search the current entity, read the relation from its document, and repeat."""
        assert self.task is not None, "call reset() first"
        path: list[str] = list(self.task.data["path"])
        entity = str(self.task.data["start"])
        hop = 0
        for output in self.tool_outputs("search"):
            if hop < len(path):
                found = read_relation(output, entity, path[hop])
                if found is not None:  # else the search missed: the next action repeats it
                    entity, hop = found, hop + 1
        if hop < len(path):
            return format_tool_call("search", {"query": entity})
        return format_answer(entity)
