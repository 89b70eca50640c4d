"""`agentrl/Dataset-v0`: tasks from your own JSONL, CSV or Hugging Face `datasets` data, no subclassing.

    env = gymnasium.make("agentrl/Dataset-v0", path="problems.jsonl", scorer="math")

Sources (`path`): a `.jsonl`/`.csv`/`.tsv` file; a mapping {split: file}; a directory holding
`{split}.jsonl` or `{split}.csv` files; or a directory written by `datasets`' `save_to_disk`. A
dataset already in the Hugging Face cache is named with `dataset=` (and `dataset_config=`); nothing
is downloaded: loading runs with the hub offline.

Columns: `prompt_column` and `answer_column` (default "prompt" and "answer") are required in every
row; `id_column`, `tools_column` (tool names the task may use), `difficulty_column` and
`split_column` are optional. Splits come from the source (files, a `DatasetDict`), from
`split_column`, or else from a seeded split (`test_size`, `split_seed`) reported in the reset info.

Scorers (`scorer`): "math" (`math-verify`: LaTeX, fractions, sets, intervals), "numeric" (with
`tolerance`), "exact" (normalised text), "default" (agentrl's own number/text matcher), or an import
path "module:function" to a sync or async function `(prediction, answer[, row]) -> float in [0, 1]`.

Every check of the input runs in the constructor, so a missing file, a row without a prompt or an
answer, or a scorer that does not import or returns a non-number fails with a one-line `ValueError`
before any episode starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import csv
import inspect
import json
import math
import numbers
import os
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from agentrl.envs.answers import answers_match, normalize_text, parse_number, to_sympy
from agentrl.envs.base import Task, ToolEnv
from agentrl.envs.latency import LatencyProfile
from agentrl.tools.base import Tool, ToolBox, format_answer
from agentrl.tools.function import import_object

__all__ = ["SCORERS", "DatasetEnv", "exact_scorer", "math_scorer", "numeric_scorer"]

_FILE_KINDS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".tsv": "tsv"}
_HF_MARKERS = ("dataset_info.json", "dataset_dict.json", "state.json")


# ---- built-in scorers ---------------------------------------------------------------------------


def _golds(answer: Any) -> list[Any]:
    return list(answer) if isinstance(answer, list | tuple) else [answer]


def exact_scorer(prediction: str, answer: Any) -> float:
    """1.0 when the prediction equals the answer (or one of a list) after case, space, punctuation
    and article normalisation."""
    pred = normalize_text(prediction)
    return float(any(pred == normalize_text(str(g)) for g in _golds(answer)))


def _as_float(text: Any) -> float | None:
    if isinstance(text, bool):
        return None
    if isinstance(text, int | float):
        return float(text)
    exact = parse_number(str(text))
    if exact is not None:
        return float(exact)
    expr = to_sympy(str(text))
    if expr is None or not expr.is_number:
        return None
    try:
        return float(expr.evalf(30))
    except (TypeError, ValueError):
        return None


def numeric_scorer(prediction: str, answer: Any, tolerance: float = 1e-6) -> float:
    """1.0 when the prediction is a number (or numeric expression) within `tolerance` of the answer,
    relative or absolute, whichever is looser."""
    pred = _as_float(prediction)
    if pred is None or not math.isfinite(pred):
        return 0.0
    for gold in _golds(answer):
        g = _as_float(gold)
        if g is not None and math.isclose(pred, g, rel_tol=tolerance, abs_tol=tolerance):
            return 1.0
    return 0.0


def _math_parse(text: str, timeout: int | None) -> list[list[Any]]:
    from math_verify import parse

    out = []
    for candidate in (f"${text}$", text):  # LaTeX first: intervals and sets parse whole that way
        with contextlib.suppress(Exception):
            parsed = parse(candidate, parsing_timeout=timeout)
            if parsed:
                out.append(parsed)
    return out


def math_scorer(prediction: str, answer: Any) -> float:
    """1.0 when `math-verify` finds the prediction mathematically equal to the answer (LaTeX,
    fractions, sets, intervals, `\\boxed{}`); the answer may be a list of acceptable answers."""
    from math_verify import verify

    # math-verify times out with SIGALRM, which exists only in the main thread
    timeout = 5 if threading.current_thread() is threading.main_thread() else None
    preds = _math_parse(str(prediction), timeout)
    for gold in _golds(answer):
        for g in _math_parse(str(gold), timeout):
            for p in preds:
                with contextlib.suppress(Exception):
                    if verify(g, p, timeout_seconds=timeout):
                        return 1.0
    return 0.0


def default_scorer(prediction: str, answer: Any) -> float:
    """agentrl's own matcher: numbers as numbers (exactly, or symbolically), text as normalised text."""
    return float(answers_match(prediction, answer))


SCORERS: dict[str, Callable[..., float]] = {
    "math": math_scorer,
    "numeric": numeric_scorer,
    "exact": exact_scorer,
    "default": default_scorer,
}


# ---- an async scorer called from synchronous code runs on one shared background loop ------------

_SCORER_LOOP: asyncio.AbstractEventLoop | None = None
_SCORER_LOCK = threading.Lock()


def _scorer_loop() -> asyncio.AbstractEventLoop:
    global _SCORER_LOOP
    with _SCORER_LOCK:
        if _SCORER_LOOP is None:
            _SCORER_LOOP = asyncio.new_event_loop()
            threading.Thread(target=_SCORER_LOOP.run_forever, name="agentrl-scorer", daemon=True).start()
        return _SCORER_LOOP


@dataclass(frozen=True)
class _Scorer:
    """A scorer with its calling convention worked out once."""

    spec: str
    fn: Callable[..., Any]
    takes_row: bool
    is_async: bool
    timeout: float

    def _args(self, prediction: str, answer: Any, row: Mapping[str, Any]) -> tuple[Any, ...]:
        return (prediction, answer, row) if self.takes_row else (prediction, answer)

    async def acall(self, prediction: str, answer: Any, row: Mapping[str, Any]) -> Any:
        """Score on the caller's loop: an async scorer is awaited there, under the timeout."""
        args = self._args(prediction, answer, row)
        if not self.is_async:
            return self.fn(*args)
        try:
            return await asyncio.wait_for(self.fn(*args), self.timeout)
        except TimeoutError:
            raise TimeoutError(f"scorer {self.spec} took longer than {self.timeout:g} s") from None

    def __call__(self, prediction: str, answer: Any, row: Mapping[str, Any]) -> Any:
        """Score from synchronous code: an async scorer runs on the shared background loop."""
        args = self._args(prediction, answer, row)
        if not self.is_async:
            return self.fn(*args)
        fut = asyncio.run_coroutine_threadsafe(self.fn(*args), _scorer_loop())
        try:
            return fut.result(timeout=self.timeout)
        except concurrent.futures.TimeoutError:
            fut.cancel()
            raise TimeoutError(f"scorer {self.spec} took longer than {self.timeout:g} s") from None


def _make_scorer(spec: str | Callable[..., Any], tolerance: float, timeout: float) -> _Scorer:
    if callable(spec):
        fn, name = spec, getattr(spec, "__qualname__", repr(spec))
    elif spec == "numeric":
        fn, name = (lambda p, a: numeric_scorer(p, a, tolerance)), "numeric"
    elif spec in SCORERS:
        fn, name = SCORERS[spec], spec
    elif isinstance(spec, str) and (":" in spec or "." in spec):
        fn, name = import_object(spec, "scorer"), spec
        if not callable(fn):
            raise ValueError(f"scorer {spec!r} is a {type(fn).__name__}, not a function")
    else:
        raise ValueError(
            f"scorer {spec!r}: expected one of {sorted(SCORERS)} or an import path 'module:function'"
        )
    if spec == "math":
        try:
            import math_verify  # noqa: F401
        except ImportError:
            raise ValueError(
                "scorer 'math' needs the math-verify package: pip install 'agentrl[data]'"
            ) from None
    try:
        params = [
            p
            for p in inspect.signature(fn).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.default is p.empty
        ]
        var = any(p.kind is p.VAR_POSITIONAL for p in inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):
        params, var = [], True
    if not var and len(params) not in (2, 3):
        raise ValueError(
            f"scorer {name!r} takes {len(params)} required argument(s); it must take "
            "(prediction, answer) or (prediction, answer, row)"
        )
    is_async = inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)
    return _Scorer(str(name), fn, len(params) == 3, is_async, timeout)


# ---- reading rows -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    index: int  # position in its source
    values: Mapping[str, Any]
    where: str  # "data.jsonl: row 3 (line 4)", for error messages


def _read_jsonl(path: Path) -> Iterator[_Row]:
    with path.open(encoding="utf-8") as f:
        index = 0
        for line_no, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}: row {index} (line {line_no})"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where} is not valid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(obj, dict):
                raise ValueError(f"{where} is a JSON {type(obj).__name__}, expected an object")
            yield _Row(index, obj, where)
            index += 1


def _read_csv(path: Path, delimiter: str) -> Iterator[_Row]:
    with path.open(encoding="utf-8", newline="") as f:
        reader = csv.DictReader(f, delimiter=delimiter)
        for index, row in enumerate(reader):
            values = {k: v for k, v in row.items() if k is not None}
            yield _Row(index, values, f"{path}: row {index} (line {reader.line_num})")


def _read_file(path: Path) -> list[_Row]:
    kind = _FILE_KINDS.get(path.suffix.lower())
    if kind is None:
        raise ValueError(f"{path}: unknown file type {path.suffix!r}; expected .jsonl, .csv or .tsv")
    if kind == "jsonl":
        return list(_read_jsonl(path))
    return list(_read_csv(path, "," if kind == "csv" else "\t"))


def _hf_rows(ds: Any, label: str, columns: Sequence[str]) -> list[_Row]:
    keep = [c for c in columns if c in ds.column_names]
    if keep:
        ds = ds.select_columns(keep)
    return [_Row(i, row, f"{label}: row {i}") for i, row in enumerate(ds)]


def _datasets_module() -> Any:
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    try:
        import datasets
    except ImportError:
        raise ValueError(
            "reading a Hugging Face dataset needs the datasets package: pip install 'agentrl[data]'"
        ) from None
    return datasets


@contextlib.contextmanager
def _hub_offline(datasets: Any) -> Iterator[None]:
    config = datasets.config
    saved = (getattr(config, "HF_HUB_OFFLINE", None), getattr(config, "HF_DATASETS_OFFLINE", None))
    config.HF_HUB_OFFLINE = config.HF_DATASETS_OFFLINE = True
    try:
        yield
    finally:
        config.HF_HUB_OFFLINE, config.HF_DATASETS_OFFLINE = saved


def _load_hf(obj: Any, label: str, columns: Sequence[str]) -> dict[str, list[_Row]] | list[_Row]:
    if isinstance(obj, Mapping):  # a DatasetDict (a dict of split -> Dataset)
        return {str(name): _hf_rows(obj[name], f"{label} [{name}]", columns) for name in obj}
    return _hf_rows(obj, label, columns)


def _load_source(
    path: str | os.PathLike[str] | Mapping[str, Any] | None,
    dataset: str | None,
    dataset_config: str | None,
    columns: Sequence[str],
) -> tuple[str, dict[str, list[_Row]] | list[_Row]]:
    """(a label for the source, rows per split when the source has splits, else one list of rows)."""
    if (path is None) == (dataset is None):
        raise ValueError(
            "Dataset-v0: give exactly one of path= (a file or directory) and dataset= (a cached HF dataset)"
        )
    if dataset is not None:
        datasets = _datasets_module()
        label = dataset + (f" ({dataset_config})" if dataset_config else "")
        try:
            with _hub_offline(datasets):
                obj = datasets.load_dataset(dataset, dataset_config)
        except Exception as e:
            raise ValueError(
                f"dataset {label!r} is not a local dataset or in the Hugging Face cache (nothing is "
                f"downloaded at run time): {type(e).__name__}: {' '.join(str(e).split())[:300]}"
            ) from None
        return label, _load_hf(obj, label, columns)
    if isinstance(path, Mapping):
        out: dict[str, list[_Row]] = {}
        for split, file in path.items():
            p = Path(file).expanduser()
            if not p.is_file():
                raise ValueError(f"Dataset-v0: file {p} (split {split!r}) does not exist")
            out[str(split)] = _read_file(p)
        return ", ".join(f"{k}={v}" for k, v in path.items()), out
    p = Path(path).expanduser()
    if not p.exists():
        raise ValueError(f"Dataset-v0: file {p} does not exist")
    if p.is_file():
        return str(p), _read_file(p)
    if any((p / m).is_file() for m in _HF_MARKERS):
        datasets = _datasets_module()
        try:
            obj = datasets.load_from_disk(str(p))
        except Exception as e:
            raise ValueError(f"{p}: not a readable saved dataset ({type(e).__name__}: {e})") from None
        return str(p), _load_hf(obj, str(p), columns)
    files = {f.stem: f for f in sorted(p.iterdir()) if f.is_file() and f.suffix.lower() in _FILE_KINDS}
    if not files:
        raise ValueError(
            f"{p}: a directory without data: expected {{split}}.jsonl / {{split}}.csv files or a "
            "dataset written by datasets' save_to_disk"
        )
    return str(p), {split: _read_file(f) for split, f in files.items()}


def _order_splits(names: Sequence[str]) -> tuple[str, ...]:
    first = [s for s in ("train", "validation", "test") if s in names]
    return tuple(first + sorted(s for s in names if s not in first))


# ---- the environment ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Columns:
    prompt: str
    answer: str
    id: str | None
    tools: str | None
    difficulty: str | None
    split: str | None


def _cell(row: _Row, column: str, what: str) -> Any:
    if column not in row.values:
        cols = ", ".join(map(str, row.values)) or "none"
        raise ValueError(f"{row.where} has no {what} column {column!r} (its columns: {cols})")
    value = row.values[column]
    if value is None or (isinstance(value, str) and not value.strip()):
        raise ValueError(f"{row.where}: {what} column {column!r} is empty")
    return value


def _task(row: _Row, cols: _Columns) -> Task:
    prompt = _cell(row, cols.prompt, "prompt")
    if isinstance(prompt, bool) or not isinstance(prompt, str | int | float):
        raise ValueError(
            f"{row.where}: prompt column {cols.prompt!r} holds a {type(prompt).__name__}, expected text"
        )
    answer = _cell(row, cols.answer, "answer")
    task_id = f"{row.index:05d}" if cols.id is None else str(_cell(row, cols.id, "id")).strip()
    tools: tuple[str, ...] | None = None
    if cols.tools is not None and row.values.get(cols.tools) not in (None, ""):
        raw = row.values[cols.tools]
        if isinstance(raw, str):
            try:
                raw = json.loads(raw) if raw.strip().startswith("[") else raw.split(",")
            except json.JSONDecodeError:
                raise ValueError(
                    f"{row.where}: tools column {cols.tools!r} is not a JSON list or comma list"
                ) from None
        if not isinstance(raw, list | tuple) or not all(isinstance(x, str) for x in raw):
            raise ValueError(f"{row.where}: tools column {cols.tools!r} must list tool names")
        tools = tuple(x.strip() for x in raw if x.strip())
    difficulty = 1
    if cols.difficulty is not None:
        try:
            difficulty = int(_cell(row, cols.difficulty, "difficulty"))
        except (TypeError, ValueError):
            raise ValueError(
                f"{row.where}: difficulty column {cols.difficulty!r} is not an integer"
            ) from None
    data = {"row": dict(row.values), "where": row.where, "tools": tools}
    return Task(id=task_id, prompt=str(prompt), answer=answer, difficulty=difficulty, data=data)


_LOADED: dict[Any, tuple[dict[str, list[Task]], dict[str, Any]]] = {}


def _source_key(path: Any, dataset: str | None) -> Any:
    """Identity of a source for the in-process cache: paths with their size and mtime."""
    if dataset is not None:
        return ("hf", dataset)
    paths = [Path(p) for p in path.values()] if isinstance(path, Mapping) else [Path(path)]
    stamp = []
    for p in paths:
        p = p.expanduser()
        with contextlib.suppress(OSError):
            st = p.stat()
            stamp.append((str(p.resolve()), st.st_size, st.st_mtime_ns))
            if p.is_dir():
                stamp += [(str(f), f.stat().st_size, f.stat().st_mtime_ns) for f in sorted(p.iterdir())]
    return ("path", repr(path), tuple(stamp))


class DatasetEnv(ToolEnv):
    """Tasks from a JSONL/CSV file or a `datasets` dataset, scored by a built-in or your own scorer."""

    name: ClassVar[str] = "dataset"
    max_turns = 4

    def __init__(
        self,
        path: str | os.PathLike[str] | Mapping[str, Any] | None = None,
        *,
        dataset: str | None = None,
        dataset_config: str | None = None,
        prompt_column: str = "prompt",
        answer_column: str = "answer",
        id_column: str | None = None,
        tools_column: str | None = None,
        difficulty_column: str | None = None,
        split_column: str | None = None,
        test_size: float = 0.1,
        split_seed: int = 0,
        scorer: str | Callable[..., Any] = "default",
        tolerance: float = 1e-6,
        scorer_timeout: float = 60.0,
        tools: Sequence[Any] | None = None,
        mcp: Mapping[str, Any] | Sequence[Mapping[str, Any]] | None = None,
        instructions: str | None = None,
        name: str | None = None,
        split: str | None = None,
        max_turns: int | None = None,
        latency: LatencyProfile | Mapping[str, Any] | None = None,
        seed: int | None = None,
        render_mode: str | None = None,
        shaping: Any = None,
    ) -> None:
        """See the module docstring; `tools` takes Tool instances, functions or import paths
        ("module:function"), `mcp` one or more `MCPToolset` keyword mappings ({"command": [...]})."""
        if name is not None:
            if not name or "/" in name:
                raise ValueError(f"Dataset-v0: name {name!r} must be non-empty and contain no '/'")
            self.name = name  # type: ignore[misc]
        if instructions is not None:
            self.instructions = instructions  # type: ignore[misc]
        cols = _Columns(
            prompt_column, answer_column, id_column, tools_column, difficulty_column, split_column
        )
        self.columns = cols
        self._tasks, self.dataset_info = self._load(
            path, dataset, dataset_config, cols, test_size, split_seed
        )
        self._index = {s: {t.id: i for i, t in enumerate(ts)} for s, ts in self._tasks.items()}
        self.splits = tuple(self._tasks)  # type: ignore[misc]
        if split is None:
            split = "train" if "train" in self.splits else self.splits[0]
        self.scorer = _make_scorer(scorer, tolerance, scorer_timeout)
        built = self._build_tools(tools, mcp)
        self._task_boxes: dict[tuple[str, ...], ToolBox] = {}
        try:
            super().__init__(
                split=split,
                max_turns=max_turns,
                latency=latency,
                seed=seed,
                render_mode=render_mode,
                tools=built,
                shaping=shaping,
            )
            self._check_task_tools()
            self._probe_scorer()
        except BaseException:
            for t in built:
                if hasattr(t, "close"):
                    t.close()
            raise

    # ---- loading ------------------------------------------------------------------------------

    @staticmethod
    def _load(
        path: Any,
        dataset: str | None,
        dataset_config: str | None,
        cols: _Columns,
        test_size: float,
        split_seed: int,
    ) -> tuple[dict[str, list[Task]], dict[str, Any]]:
        key = (_source_key(path, dataset), dataset_config, cols, test_size, split_seed)
        if key in _LOADED:
            return _LOADED[key]
        wanted = [
            c for c in (cols.prompt, cols.answer, cols.id, cols.tools, cols.difficulty, cols.split) if c
        ]
        label, rows = _load_source(path, dataset, dataset_config, wanted)
        info: dict[str, Any] = {"source": label}
        if isinstance(rows, dict):
            groups = rows
            info["split_source"] = "source"
        elif cols.split is not None:
            groups = {}
            for row in rows:
                groups.setdefault(str(_cell(row, cols.split, "split")), []).append(row)
            info["split_source"] = f"column {cols.split!r}"
        else:
            groups = _seeded_split(rows, test_size, split_seed, label)
            info.update(split_source="seeded", split_seed=split_seed, test_size=test_size)
        tasks: dict[str, list[Task]] = {}
        for split in _order_splits(list(groups)):
            if not groups[split]:
                raise ValueError(f"{label}: split {split!r} has no rows")
            tasks[split] = [_task(r, cols) for r in groups[split]]
            seen: dict[str, str] = {}
            for t in tasks[split]:
                if t.id in seen:
                    raise ValueError(f"{t.data['where']}: task id {t.id!r} repeats {seen[t.id]}")
                seen[t.id] = t.data["where"]
        info["sizes"] = {s: len(ts) for s, ts in tasks.items()}
        _LOADED[key] = (tasks, info)
        return tasks, info

    @staticmethod
    def _build_tools(tools: Sequence[Any] | None, mcp: Any) -> list[Any]:
        built: list[Any] = []
        for entry in tools or ():
            obj = import_object(entry, "tool") if isinstance(entry, str) else entry
            if isinstance(obj, type) and issubclass(obj, Tool):
                obj = obj()
            built.append(obj)
        servers = [mcp] if isinstance(mcp, Mapping) else list(mcp or ())
        if servers:
            from agentrl.tools.mcp import MCPToolset

            try:
                for spec in servers:
                    if "command" not in spec:
                        raise ValueError(f"mcp server {dict(spec)!r} has no 'command'")
                    built.append(MCPToolset(**dict(spec)))
            except BaseException:
                for t in built:
                    if isinstance(t, MCPToolset):
                        t.close()
                raise
        return built

    def _check_task_tools(self) -> None:
        if self.columns.tools is None:
            return
        known = set(self.toolbox.tools)
        for tasks in self._tasks.values():
            for t in tasks:
                unknown = sorted(set(t.data["tools"] or ()) - known)
                if unknown:
                    raise ValueError(
                        f"{t.data['where']}: tools column names unknown tool(s) {unknown}; "
                        f"the env has {sorted(known) or 'none'}"
                    )

    def _probe_scorer(self) -> None:
        """Score the first task's answer against itself, so a broken scorer fails now, not mid-run."""
        task = next(iter(self._tasks.values()))[0]
        try:
            value = self.scorer(_answer_text(task.answer), task.answer, task.data["row"])
        except Exception as e:
            raise ValueError(
                f"scorer {self.scorer.spec!r} failed on {task.data['where']}: {type(e).__name__}: {e}"
            ) from None
        if not isinstance(value, numbers.Real) or isinstance(value, complex) or value != value:
            raise ValueError(
                f"scorer {self.scorer.spec!r} returned {type(value).__name__} {value!r:.60} on "
                f"{task.data['where']}; it must return a number in [0, 1]"
            )

    # ---- ToolEnv hooks -------------------------------------------------------------------------

    def load_tasks(self, split: str) -> list[Task]:
        return self._tasks[split]

    def _split_tasks(self, split: str) -> tuple[list[Task], dict[str, int]]:
        if split not in self._tasks:
            raise ValueError(f"{self.name}: unknown split {split!r}; expected one of {self.splits}")
        return self._tasks[split], self._index[split]

    def score(self, task: Task, answer: str) -> float:
        return float(self.scorer(answer, task.answer, task.data["row"]))

    async def ascore(self, task: Task, answer: str) -> float:
        return float(await self.scorer.acall(answer, task.answer, task.data["row"]))

    def expert_action(self) -> str:
        """Answer with the dataset's answer directly (a demonstration for supervised warm-starts)."""
        assert self.task is not None, "call reset() first"
        return format_answer(_answer_text(self.task.answer))

    def toolbox_for(self, task: Task) -> ToolBox:
        names = task.data.get("tools")
        if names is None:
            return self.toolbox
        key = tuple(names)
        box = self._task_boxes.get(key)
        if box is None:
            box = self._task_boxes[key] = ToolBox([self.toolbox.tools[n] for n in key])
        return box

    def system_prompt(self) -> str:
        box = self.toolbox if self.task is None else self.toolbox_for(self.task)
        if box.tools:
            saved, self.toolbox = self.toolbox, box
            try:
                return super().system_prompt()
            finally:
                self.toolbox = saved
        lines = [
            "Solve the user's task.",
            "Write the final answer as <answer>...</answer>, which ends the episode.",
            f"You have at most {self.max_turns} turns.",
        ]
        if self.instructions:
            lines.insert(1, self.instructions)
        return "\n".join(lines)

    async def areset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[str, dict[str, Any]]:
        obs, info = await super().areset(seed=seed, options=options)
        assert self.task is not None
        info["tools"] = self.toolbox_for(self.task).schemas()
        info["dataset"] = dict(self.dataset_info)
        return obs, info


def _answer_text(answer: Any) -> str:
    if isinstance(answer, list | tuple) and answer:
        answer = answer[0]
    return (
        answer if isinstance(answer, str) else json.dumps(answer) if isinstance(answer, dict) else str(answer)
    )


def _seeded_split(rows: list[_Row], test_size: float, seed: int, label: str) -> dict[str, list[_Row]]:
    n = len(rows)
    if n == 0:
        raise ValueError(f"{label}: no rows")
    if not 0 <= test_size < (n if test_size >= 1 else 1):
        raise ValueError(f"test_size must be a fraction in [0, 1) or a row count below {n}, got {test_size}")
    k = int(test_size) if test_size >= 1 else round(n * test_size)
    if test_size > 0:
        k = min(max(k, 1), n - 1)
    if k == 0:
        return {"train": rows}
    if n < 2:
        raise ValueError(f"{label}: one row cannot be split into train and test; set test_size=0")
    chosen = set(np.random.default_rng(seed).permutation(n)[:k].tolist())
    return {
        "train": [r for i, r in enumerate(rows) if i not in chosen],
        "test": [r for i, r in enumerate(rows) if i in chosen],
    }
