"""Merge recognition-grid results files that cover different regimes into one.

``recognition_grid.py --collect`` writes the results of one grid folder. When the regimes ran as separate grids
(e.g. regime (a) on one machine, regime (b) on another, each with ``--regimes``), this joins their results files:
the per-seed values and the paired tests of every regime, under the settings they share. It refuses to join
files whose regimes overlap, or whose settings, LFW pairs, alignment or contexts differ (the runs would then not
be comparable), and names the first difference.

    python benchmarks/merge_grid_results.py benchmarks/results/recognition_grid_v3_pretrained.json \\
        runs/rec-grid-v3/recognition_grid_v3_scratch.json --out benchmarks/results/recognition_grid_v3.json
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import click

log = logging.getLogger("merge_grid_results")

PER_REGIME = ("regimes", "configs")  # grid settings that may differ between the parts: they are joined
SHARED = ("pairs", "num_pairs", "alignment", "contexts")  # the evaluation: must agree
REL_TOL = 1e-5  # floats agree within this: a mean donor distance recomputed on another machine differs by ~6e-7


class MergeError(ValueError):
    """The parts cannot be merged into one results file."""


def first_difference(a, b, where: str = "") -> str | None:
    """The path of the first place where two JSON values differ (floats compared with ``REL_TOL``), else None."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in sorted(set(a) | set(b)):
            if key not in a or key not in b:
                return f"{where}/{key} (only in one)"
            found = first_difference(a[key], b[key], f"{where}/{key}")
            if found:
                return found
        return None
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return f"{where} (lengths {len(a)} and {len(b)})"
        return next((d for i, (x, y) in enumerate(zip(a, b)) if (d := first_difference(x, y, f"{where}[{i}]"))), None)
    if isinstance(a, float) or isinstance(b, float):
        ok = isinstance(a, (int, float)) and isinstance(b, (int, float)) and math.isclose(a, b, rel_tol=REL_TOL)
        return None if ok else f"{where} ({a!r} and {b!r})"
    return None if a == b else f"{where} ({a!r} and {b!r})"


def _check_compatible(first: dict, part: dict, name: str) -> None:
    common = {k: v for k, v in first["grid"].items() if k not in PER_REGIME}
    other = {k: v for k, v in part["grid"].items() if k not in PER_REGIME}
    for label, a, b in (("grid", common, other), *((key, first.get(key), part.get(key)) for key in SHARED)):
        found = first_difference(a, b, label)
        if found:
            raise MergeError(f"{name} differs from the first part at {found}: its runs are not comparable")


def merge_results(parts: list[tuple[str, dict]]) -> dict:
    """One results file from ``parts`` ((name, the JSON of ``recognition_grid.py --collect``) in order): the union
    of their regimes' results and the concatenation of their tests, with the shared settings of the first part."""
    if len(parts) < 2:
        raise MergeError("give at least two results files")
    for name, part in parts:
        missing = [key for key in ("grid", "results", "tests") if not isinstance(part, dict) or key not in part]
        if missing:
            raise MergeError(f"{name} is not a recognition_grid.py --collect file (no {', '.join(missing)})")
    names = [name for name, _ in parts]
    first = parts[0][1]
    merged = {key: first.get(key) for key in ("grid", *SHARED)}
    merged["grid"] = {**first["grid"], "regimes": [], "configs": {}}
    merged["results"], merged["tests"], merged["merged_from"] = {}, [], names
    for name, part in parts:
        _check_compatible(first, part, name)
        overlap = sorted(set(merged["results"]) & set(part["results"]))
        if overlap:
            raise MergeError(f"{name}: regime {', '.join(overlap)} is already in an earlier part")
        merged["results"].update(part["results"])
        merged["tests"].extend(part["tests"])
        merged["grid"]["regimes"].extend(r for r in part["grid"].get("regimes", part["results"]))
        merged["grid"]["configs"].update(part["grid"].get("configs", {}))
        log.info("%s: regimes %s, %d tests", name, ", ".join(part["results"]), len(part["tests"]))
    return merged


@click.command(context_settings={"show_default": True})
@click.argument("parts", nargs=-1, required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    required=True,
    metavar="JSON",
    help="The merged results file (e.g. benchmarks/results/recognition_grid_v3.json).",
)
def main(parts: tuple[Path, ...], out: Path) -> None:
    """Merge the results files PARTS of grids that ran different regimes (recognition_grid.py --collect)."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    try:
        merged = merge_results([(str(p), json.loads(p.read_text())) for p in parts])
    except (MergeError, json.JSONDecodeError) as error:
        raise click.ClickException(f"cannot merge: {error}") from error
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(merged, indent=2))
    click.echo(f"wrote {out}: regimes {', '.join(merged['results'])}, {len(merged['tests'])} tests")


if __name__ == "__main__":
    main()
