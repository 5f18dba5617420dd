#!/usr/bin/env python3
"""Markdown tables of the last `cargo bench` run, every row next to its baselines.

Reads what criterion left in target/criterion (each bench's `new/benchmark.json` and
`new/estimates.json`) and prints, per benchmark group, the median time per element
(criterion's `Throughput::Elements`: a delivery, a look-up, a plugin or edge, a
request), elements per second, and the ratio to each baseline of the group measured in
the same run (see BASELINES). This is what docs/performance.md's tables are made of:

    cargo bench -p ixp-core -- --warm-up-time 1 --measurement-time 2
    cargo bench -p ixp-plugins --features analytics --bench analytics -- --warm-up-time 1 --measurement-time 2
    python3 scripts/bench-tables.py            # every group
    python3 scripts/bench-tables.py events/    # groups whose name starts with events/

Only the standard library; no third-party module.
"""

import json
import pathlib
import re
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CRITERION = ROOT / "target" / "criterion"

# Per group (a regular expression matched against the whole group name): the baselines
# each row is compared with, as function ids. `{param}` is the row's own parameter, so
# a row of size N is compared with the baseline of size N; `{function}` is the row's
# own function (so `{function}/1` is the same path at size 1); `{path}` the last part of
# the row's function (`ixp/hello` against `bare_axum/hello`); `{smallest}` the row of
# the smallest size (of the same function with `{function}/{smallest}`). A baseline
# given as (template, pattern) applies only to rows whose function matches the pattern.
BASELINES = [
    (
        r"events/routing",
        [("direct_call_new_event/topics/{param}", r".*/topics"), "{function}/{smallest}"],
    ),
    (r"events/emit_on_2_threads", ["direct_call_new_event/own_topic"]),
    (r"events/queued_on_2_threads", ["mpsc_channel"]),
    (r"events/(subscribe_then_unsubscribe|remove_owner)", ["{smallest}"]),
    (r"events/.*", ["direct_call", "direct_call_new_event", "broadcast"]),
    (r"services/.*", ["arc_field_clone"]),
    (r"startup", ["baseline_direct_hooks/{param}", "{function}/{smallest}"]),
    (r"http/dispatch", ["bare_axum/{path}"]),
    (r"analytics/.*", ["emit_no_subscriber", "serde_json_to_vec"]),
]


def load():
    """Every measured bench: (group, function id, parameter, ns per element, elements)."""
    rows = []
    for bench in sorted(CRITERION.glob("**/new/benchmark.json")):
        meta = json.loads(bench.read_text())
        estimates = json.loads((bench.parent / "estimates.json").read_text())
        elements = (meta.get("throughput") or {}).get("Elements") or 1
        median = estimates["median"]["point_estimate"]
        rows.append(
            {
                "group": meta["group_id"],
                "function": meta.get("function_id") or "",
                "param": meta.get("value_str") or "",
                "ns": median / elements,
                "run_ns": median,
                "elements": elements,
            }
        )
    return rows


def full_id(row):
    return "/".join(part for part in (row["function"], row["param"]) if part)


def baselines_of(group):
    for pattern, baselines in BASELINES:
        if re.fullmatch(pattern, group):
            return baselines
    return []


def size(param):
    """The number in a parameter (`10000`, `graph-10000`), for ordering."""
    digits = re.search(r"\d+", param)
    return int(digits.group()) if digits else 0


def resolve(template, row, rows):
    """The baseline row a template names for `row`, or None when it was not measured."""
    if isinstance(template, tuple):
        template, applies = template
        if not re.fullmatch(applies, row["function"]):
            return None
    if template in ("{smallest}", "{function}/{smallest}"):
        any_function = template == "{smallest}"
        sized = [
            r
            for r in rows
            if r["param"] and (any_function or r["function"] == row["function"])
        ]
        return min(sized, key=lambda r: size(r["param"]), default=None)
    if "{param}" in template and not row["param"]:
        return None
    path = row["function"].split("/")[-1]
    name = (
        template.replace("{param}", row["param"])
        .replace("{function}", row["function"])
        .replace("{path}", path)
    )
    found = [r for r in rows if full_id(r) == name]
    return found[0] if found else None


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e4:
        return f"{ns / 1e3:.1f} µs"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.1f} ns"


def fmt_rate(ns):
    per_second = 1e9 / ns
    if per_second >= 1e6:
        return f"{per_second / 1e6:.2f} M"
    if per_second >= 1e3:
        return f"{per_second / 1e3:.1f} k"
    return f"{per_second:.0f}"


def table(group, rows):
    templates = baselines_of(group)
    def label(template):
        if isinstance(template, tuple):
            template = template[0]
        if template == "{function}/{smallest}":
            return "vs its own smallest size"
        if template == "{smallest}":
            return "vs the smallest size"
        if template.startswith("{function}/"):
            return f"vs its own {template.split('/', 1)[1]} row"
        return "vs `" + template.replace("/{param}", "").replace("/{path}", "") + "`"

    many = any(row["elements"] > 1 for row in rows)
    head = ["bench"] + (["time per run", "elements"] if many else [])
    head += ["time per element", "elements/s"] + [label(t) for t in templates]
    out = [f"### `{group}`", "", "| " + " | ".join(head) + " |"]
    out.append("| " + " | ".join("---" for _ in head) + " |")
    for row in rows:
        cells = [f"`{full_id(row)}`"]
        if many:
            cells += [fmt_ns(row["run_ns"]), f"{row['elements']:,}"]
        cells += [fmt_ns(row["ns"]), fmt_rate(row["ns"])]
        for template in templates:
            base = resolve(template, row, rows)
            cells.append(f"{row['ns'] / base['ns']:.2f}x" if base else "-")
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def main():
    if not CRITERION.is_dir():
        sys.exit(f"no criterion results in {CRITERION}: run `cargo bench` first")
    prefix = sys.argv[1] if len(sys.argv) > 1 else ""
    groups = {}
    for row in load():
        if row["group"].startswith(prefix):
            groups.setdefault(row["group"], []).append(row)
    if not groups:
        sys.exit(f"no measured group starts with {prefix!r}")
    for group in sorted(groups):
        rows = sorted(
            groups[group],
            key=lambda r: (r["function"], size(r["param"]), r["param"]),
        )
        print(table(group, rows))
        print()


if __name__ == "__main__":
    main()
