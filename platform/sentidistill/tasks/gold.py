"""Gold builders: turn one dataset row into the canonical gold answer, exactly as the reference does.

Classification gold is a label string; extraction gold is a list of string tuples in the order the
reference renders them as demonstrations (its `label_seq`). Registry: `GOLD_BUILDERS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from sentidistill.tasks.entry import Entry

if TYPE_CHECKING:
    from sentidistill.tasks.spec import TaskSpec

Tuples = list[tuple[str, ...]]
NULL = "NULL"


class GoldError(ValueError):
    """A row does not hold what the task's fields promise; the loader adds file and row."""


def canonical_label(task: TaskSpec, raw: Any) -> str:
    """Dataset label -> canonical label: label_map first, else lowercased (reference: `.lower()`)."""
    value = str(raw)
    label = task.label_map.get(value, value.lower() if task.lowercase_labels else value)
    for canonical in task.labels:
        if canonical.lower() == label.lower():
            return canonical
    raise GoldError(f"label {value!r} is not one of {task.labels} (add it to label_map)")


def _label(task: TaskSpec, row: dict[str, Any]) -> str:
    return canonical_label(task, _get(row, task.fields.label))


def _get(row: dict[str, Any], key: str | None) -> Any:
    if key is None or key not in row:
        raise GoldError(f"missing field {key!r}")
    return row[key]


def _dedup(items: Tuples) -> Tuples:
    return list(dict.fromkeys(items))


def _offset_key(aspect: dict[str, Any]) -> tuple[Any, Any]:
    # The reference sorts by the offsets as stored; Rest16 stores strings, so "100" < "51".
    # Reproduced on purpose: demo label order (hence prompts) must match the reference.
    start, end = aspect.get("from") or 0, aspect.get("to") or 0
    if isinstance(start, str) or isinstance(end, str):
        return str(start), str(end)
    return start, end


def _atsa(task: TaskSpec, row: dict[str, Any]) -> Tuples:
    """(aspect term, polarity) sorted by offset; implicit (NULL/None) targets dropped."""
    kept = [a for a in _get(row, task.fields.tuples) if a.get("target") not in (NULL, None)]
    unique = list(dict.fromkeys((a["target"], a["polarity"], _offset_key(a)) for a in kept))
    unique.sort(key=lambda t: t[2])  # stable: ties keep file order (the reference's set order is random)
    return [(term, polarity) for term, polarity, _ in unique]


def _acsa(task: TaskSpec, row: dict[str, Any]) -> Tuples:
    """(category lowercased with '#' -> ' ', polarity), first occurrence order."""
    return _dedup([(a["category"].lower().replace("#", " "), a["polarity"]) for a in _get(row, task.fields.tuples)])


def _asqp(task: TaskSpec, row: dict[str, Any]) -> Tuples:
    """(category, aspect, opinion, sentiment): category first, whatever the instruction says."""
    return _dedup([(q["category"], q["aspect"], q["opinion"], q["sentiment"]) for q in _get(row, task.fields.tuples)])


def _ssa(task: TaskSpec, row: dict[str, Any]) -> Tuples:
    """(holder, target, expression, polarity); multi-span fields joined by ' AND '; no opinion -> all NULL."""
    opinions = _get(row, task.fields.tuples)
    out = []
    for o in opinions:
        holder = " AND ".join(o["Source"][0]) if o["Source"][0] else NULL
        target = " AND ".join(o["Target"][0]) if o["Target"][0] else NULL
        out.append((holder, target, " AND ".join(o["Polar_expression"][0]), o["Polarity"].lower()))
    return _dedup(out) if opinions else [(NULL, NULL, NULL, NULL)]


def _records(task: TaskSpec, row: dict[str, Any]) -> Tuples:
    """Generic: each structure is an object (read `tuple_keys`) or a list (read positions); polarity lowercased."""
    keys = task.fields.tuple_keys or task.tuple_fields
    out = []
    for item in _get(row, task.fields.tuples):
        if isinstance(item, dict):
            missing = [k for k in keys if k not in item]
            if missing:
                raise GoldError(f"structure {item!r} lacks keys {missing} (fields.tuple_keys)")
            values = [item[k] for k in keys]
        elif isinstance(item, list | tuple) and len(item) == len(keys):
            values = list(item)
        else:
            raise GoldError(f"structure {item!r} is neither an object nor a list of {len(keys)} values")
        values = [NULL if v is None else str(v) for v in values]
        values[-1] = values[-1].lower()
        out.append(tuple(values))
    return _dedup(out)


GOLD_BUILDERS: dict[str, Entry] = {
    "label": Entry("classify", _label, "the row's label, mapped and lowercased"),
    "atsa": Entry("extract", _atsa, "Rest16 aspects -> (term, polarity) by offset, NULL terms dropped"),
    "acsa": Entry("extract", _acsa, "Rest16 aspects -> (category, polarity)"),
    "asqp": Entry("extract", _asqp, "quards -> (category, aspect, opinion, sentiment)"),
    "ssa": Entry("extract", _ssa, "OpeNER opinions -> (holder, target, expression, polarity)"),
    "records": Entry("extract", _records, "a list of objects/lists -> tuples via fields.tuple_keys"),
}


def build_gold(task: TaskSpec, row: dict[str, Any]) -> str | Tuples:
    """The canonical gold of one row; raises GoldError (the loader names the file and row)."""
    try:
        return GOLD_BUILDERS[task.gold_builder].fn(task, row)
    except (KeyError, TypeError, AttributeError, IndexError) as e:
        raise GoldError(f"unexpected row shape for gold_builder {task.gold_builder!r}: {e!r}") from None
