"""What `nslm-report` accepts as a run's `results.json` or an `nslm-bench` `bench.json`.

Each file is checked before anything is drawn from it, so a damaged one (truncated by a full disk, edited
by hand, written by something else) is skipped with one warning line that names it and says what is
wrong, instead of ending the whole report in a traceback, or being dropped without a word.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from nslm.utils.checks import is_number


class BadInput(ValueError):
    """A results.json or bench.json that cannot be used; the message says why (after the file's name)."""


#: results.json fields the table and plots compute with: a number or null
RESULT_NUMBERS = (
    "val/ppl",
    "test/ppl",
    "val/ppl_over_oracle",
    "test/ppl_over_oracle",
    "train/tokens_per_sec",
    "wall_seconds",
    "vocab_size",
    "epochs",
)
#: what every bench.json row must have (nslm.bench.cli writes them all)
BENCH_ROW_KEYS = ("vocab_size", "tokens_per_sec", "objective", "sampler", "k")


def _kind(value: Any) -> str:
    return {dict: "an object", list: "a list", str: "a string"}.get(type(value), repr(value))


def read_json(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise BadInput(f"cannot be read ({err.strerror or err})") from None
    except UnicodeDecodeError:
        raise BadInput("is not UTF-8 text") from None
    try:
        return json.loads(text)
    except ValueError as err:
        raise BadInput(f"is not valid JSON, truncated or damaged ({err})") from None


def check_results(payload: Any) -> dict[str, Any]:
    """`payload` if it is a usable results.json, else BadInput saying what is wrong."""
    if not isinstance(payload, dict):
        raise BadInput(f"holds {_kind(payload)}, not an object of results")
    for key in ("config", "history", "status", "output_dir"):
        wanted = {"config": dict, "history": list}.get(key, str)
        if payload.get(key) is not None and not isinstance(payload[key], wanted):
            raise BadInput(f'"{key}" is {_kind(payload[key])}, not {_kind(wanted())}')
    for key in RESULT_NUMBERS:
        if payload.get(key) is not None and not is_number(payload[key]):
            raise BadInput(f'"{key}" is {_kind(payload[key])}, not a number')
    for index, record in enumerate(payload.get("history") or []):
        if not isinstance(record, dict) or not all(is_number(record.get(key)) for key in ("seconds", "val/ppl")):
            raise BadInput(f'history entry {index} lacks a numeric "seconds" or "val/ppl": {record!r}')
    return payload


def check_bench(payload: Any) -> dict[str, Any]:
    """`payload` if it is a usable nslm-bench report, else BadInput saying what is wrong."""
    if not isinstance(payload, dict) or not isinstance(payload.get("rows"), list):
        raise BadInput('has no "rows" list: not an nslm-bench report')
    for index, row in enumerate(payload["rows"]):
        if not isinstance(row, dict):
            raise BadInput(f"row {index} is {_kind(row)}, not an object")
        if missing := [key for key in BENCH_ROW_KEYS if key not in row]:
            raise BadInput(f"row {index} lacks {', '.join(missing)}")
        if not (is_number(row["vocab_size"]) and is_number(row["tokens_per_sec"])):
            raise BadInput(f'row {index} has a non-numeric "vocab_size" or "tokens_per_sec"')
    return payload
