"""The recognition experiment of issues 17 and 25: arms x seeds x regimes, LFW under several contexts, compared.

Every step is a command, run in order and skipped when its output is already there, so an interrupted grid resumes
where it stopped (an unfinished fine-tune continues with ``finetune --resume``):

1. ``preprocess`` the training sets (``celeba`` and ``celeba-extra`` under ``--data``): the real crops.
2. ``run`` K copies (``--copies``) of every training face for the arms that use them: ``cascade`` (the generator),
   ``donor`` (a real donor's context, plain composition, ``--no-refine``) and ``donor-refined`` (the seamless
   composition, ``--refine``); donors come from the real ``celeba`` crops, never LFW.
3. ``finetune`` each regime x arm x seed into ``OUT/runs/<regime>/<arm>-s<seed>/``, every arm with the same
   ``--copy-probability`` (issue 25: each epoch is one pass over the real crops, each swapped with probability p
   for one of its copies; the real arm, with no copies, draws the same real images in the same order), or with
   ``--union`` on the union of real crops and copies (issue 17).
4. ``verify-lfw`` every finished model on LFW View 2 under every context (one call: alignment and features are
   cached in ``OUT/verify/``), models labelled ``<regime>/<arm>-s<seed>``.
5. ``compare`` them by arm (mean ± std over seeds, paired tests against ``real``): ``OUT/compare.md``,
   ``OUT/compare.json``.
6. ``results``: per regime, arm and context, each seed's accuracy and TPR at FPR 0.01 and 0.001, with the tests, in
   one JSON file (``--results``; this script's ``--collect`` mode).

LFW is only ever scored, never trained or tuned on. ``--dry-run`` prints the plan with its estimated time, from the
rates measured on the 2-core development machine (``RATES``; see docs/recognition.md).

    python benchmarks/recognition_grid.py --out runs/rec-grid-v3 --dry-run
    python benchmarks/recognition_grid.py --out runs/rec-grid-v3 --results benchmarks/results/recognition_grid_v3.json
    python benchmarks/recognition_grid.py --out runs/rec-grid --union --copies 1 --arms real,cascade,donor \\
        --contexts original,masked,donor                                                   # issue 17's grid
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import click

from augmentor.layout import CONFIG_FILE
from augmentor.options import float_option, folder_option, int_option

log = logging.getLogger("recognition_grid")

ROOT = Path(__file__).resolve().parents[1]
DATASETS = ("celeba", "celeba-extra")  # training sets under --data, each with identities.tsv
DONOR_SOURCE = "celeba"  # the real crops that lend their context (LFW-framed, so their context is whole)
ARMS = {  # arm -> the manifests it trains on: real crops + copies of each kind
    "real": ("real",),
    "cascade": ("real", "cascade"),
    "donor": ("real", "donor"),
    "donor-refined": ("real", "donor-refined"),
    "both": ("real", "cascade", "donor"),
}
COPY_METHODS = {  # kind of copy -> its `augmentor run` options (donors added by the plan)
    "cascade": ("--method", "cascade"),
    "donor": ("--method", "donor", "--no-refine"),
    "donor-refined": ("--method", "donor", "--refine"),
}
REGIMES = {
    "pretrained": ROOT / "configs" / "recognition" / "grid-pretrained.yaml",
    "scratch": ROOT / "configs" / "recognition" / "grid-scratch.yaml",
}
CONTEXTS = ("original", "masked", "donor", "donor-refined")  # recognition.contexts.CONTEXTS
DONOR_CONTEXTS = ("donor", "donor-refined")
# issue 25's grid, the CLI defaults; the Grid dataclass defaults are issue 17's (union, one copy)
V3_ARMS, V3_CONTEXTS, V3_COPIES = "real,cascade,donor,donor-refined", "original,masked,donor,donor-refined", 3
# Half the draws a copy: the copy share of issue 17's union arms (1 copy per face), so v3 differs from it only in
# drawing every real image once per epoch and in K = 3 distinct copies. Not tuned: choose p on CelebA validation.
V3_COPY_PROBABILITY = 0.5
# issue 25's regime (a): the frozen trunk, chosen on held-out CelebA identities (benchmarks/regime_recipe.py); issue
# 17's trunk x 0.01 recipe fell below the untouched dlib port there and on LFW
V3_CONFIGS = {"pretrained": ROOT / "configs" / "recognition" / "grid-pretrained-v3.yaml"}
RESULTS_NAME = "recognition_grid_v3.json"  # --results default, under OUT/
METRIC_KEYS = {"accuracy": "accuracy", "tpr_at_fpr_0.01": "0.01", "tpr_at_fpr_0.001": "0.001"}
# img/s on the 2-core development machine (docs/recognition.md, "Sizing"): fine-tuning (train) and embedding
# (validation and LFW features) per regime, and the data steps. Used only for the --dry-run estimate.
RATES = {
    "pretrained": {"train": 13.9, "embed": 45.7},  # dlib-resnet (150 px chip), batch 32: 144 / 44 CPU-ms per image
    "scratch": {"train": 38.9, "embed": 247.0},  # ResNet-18 at 64 px, batch 64: 51 / 8.1 CPU-ms per image
    "preprocess": 171.0,  # CelebA preprocess summary.json: 5,037 images in 29 s on 2 workers
    "align": 171.0,  # LFW alignment is the same preprocess on 250 px images
    "cascade": 36.0,  # docs/pipeline.md: the pipeline on 3,463 CelebA images, bf16
    "donor": 36.0,  # not measured: assumed as fast as the cascade
    "donor-refined": 36.0,  # not measured: assumed as fast as the plain composition
}
STARTUP_S = 20.0  # per command: imports, reading the manifests, Ray start-up (10-22 s measured for `augmentor run`)
VAL_FRACTION = 0.1
RATES_FILE = "rates.json"  # --measure's output in OUT/: this machine's wall rates, used by the plan instead of RATES
GRID_FILE = "grid.json"  # the settings of the last run in OUT/, written before its first step
VERIFY_LIMIT = 0  # all 6,000 View 2 pairs (0: no limit); they fit the budget on 2 free cores (docs/recognition.md)


@dataclass
class Step:
    """One command of the grid."""

    name: str
    command: list[str]
    seconds: float  # estimated
    done: bool = False
    output: Path | None = None
    notes: list[str] = field(default_factory=list)


def _augmentor() -> str:
    found = Path(sys.executable).parent / "augmentor"
    return str(found) if found.is_file() else (shutil.which("augmentor") or "augmentor")


def count_rows(tsv: Path) -> int:
    """Images listed in an ``identities.tsv`` (header excluded)."""
    with tsv.open() as fh:
        return max(0, sum(1 for line in fh if line.strip()) - 1)


def run_folder(root: Path) -> Path | None:
    """The finetune run folder under an ``--out`` root (``00000-...``), if one was started."""
    runs = sorted(p for p in root.glob("[0-9][0-9][0-9][0-9][0-9]-*") if (p / "finetune_config.json").is_file())
    return runs[-1] if runs else None


def finished(run: Path | None) -> bool:
    """A run that trained all its epochs and wrote its checkpoint."""
    if run is None or not (run / "checkpoint" / CONFIG_FILE).is_file() or not (run / "last" / CONFIG_FILE).is_file():
        return False
    epochs = json.loads((run / "finetune_config.json").read_text())["epochs"]
    return json.loads((run / "last" / CONFIG_FILE).read_text()).get("epochs_trained") == epochs


def _config(config: Path) -> dict:
    import yaml

    return yaml.safe_load(config.read_text())


@dataclass
class Grid:
    """The grid's settings; :meth:`plan` lists its steps."""

    out: Path
    data: Path
    lfw: Path
    arms: tuple[str, ...]
    seeds: tuple[int, ...]
    regimes: tuple[str, ...]
    contexts: tuple[str, ...]
    cascade_model: Path | None = None
    epochs: dict[str, int] = field(default_factory=dict)  # regime -> epochs override
    verify_limit: int | None = None
    device: str = "cpu"
    copies: int = 1  # K copies of every training face per kind of copy
    copy_probability: float | None = None  # finetune --copy-probability for every arm; None: the union (issue 17)
    configs: dict[str, Path] = field(default_factory=dict)  # regime -> finetune config, replacing REGIMES'
    results: Path | None = None  # the results JSON (default OUT/recognition_grid_v3.json)

    def data_dir(self, kind: str, dataset: str) -> Path:
        """``OUT/data/<kind>-<dataset>``; copies made K > 1 at a time are ``<kind>-k<K>-<dataset>``."""
        if kind != "real" and self.copies != 1:
            return self.out / "data" / f"{kind}-k{self.copies}-{dataset}"
        return self.out / "data" / f"{kind}-{dataset}"

    def config(self, regime: str) -> Path:
        return self.configs.get(regime, REGIMES[regime])

    def settings(self) -> dict:
        """What the grid was run with, for ``OUT/grid.json`` and the results file."""
        keys = ("arms", "seeds", "regimes", "contexts", "copies", "copy_probability", "epochs", "verify_limit")
        values = {k: getattr(self, k) for k in keys}
        values["mode"] = "union" if self.copy_probability is None else "probability"
        values["configs"] = {r: str(self.config(r)) for r in self.regimes}
        values["cascade_model"] = str(self.cascade_model) if self.cascade_model else "shipped"
        return json.loads(json.dumps(values))

    def manifests(self, arm: str) -> list[Path]:
        return [self.data_dir(kind, ds) for kind in ARMS[arm] for ds in DATASETS]

    def rates(self) -> dict:
        """:data:`RATES`, with the regimes' rates replaced by ``OUT/rates.json`` when ``--measure`` wrote one."""
        rates = {k: dict(v) if isinstance(v, dict) else v for k, v in RATES.items()}
        measured = self.out / RATES_FILE
        if measured.is_file():
            for regime, values in json.loads(measured.read_text())["regimes"].items():
                rates[regime] = {"train": values["train_wall"], "embed": values["embed_wall"]}
        return rates

    def plan(self) -> list[Step]:
        """Every step of the grid in order: data, fine-tunes, LFW verification, compare, results."""
        exe = _augmentor()
        rates = self.rates()
        counts = {ds: count_rows(self.data / ds / "identities.tsv") for ds in DATASETS}
        steps = [step for ds in DATASETS for step in self._data_steps(exe, ds, counts[ds], rates)]
        models: dict[str, Path] = {}
        for regime in self.regimes:
            steps += self._finetune_steps(exe, regime, sum(counts.values()), rates, models)
        return [*steps, self._verify_step(exe, models, rates), *self._report_steps()]

    def _data_steps(self, exe: str, ds: str, count: int, rates: dict) -> list[Step]:
        """Preprocess one training dataset, then make its copies of every kind the arms use."""
        kinds = {kind for arm in self.arms for kind in ARMS[arm]}
        listing = ["--dataset", "list", "--root", str(self.data / ds / "identities.tsv")]
        out = self.data_dir("real", ds)
        command = [exe, "preprocess", *listing, "--out", str(out), "--no-progress"]
        seconds = STARTUP_S + count / rates["preprocess"]
        steps = [Step(f"preprocess {ds}", command, seconds, (out / "summary.json").is_file(), out)]
        for kind, method in COPY_METHODS.items():
            if kind not in kinds:
                continue
            out = self.data_dir(kind, ds)
            extra = [*method]
            if kind == "cascade" and self.cascade_model:
                extra += ["--model", str(self.cascade_model)]
            if kind != "cascade":
                extra += ["--donors", str(self.data_dir("real", DONOR_SOURCE))]
            command = [exe, "run", *listing, *extra, "--copies", str(self.copies), "--out", str(out), "--no-progress"]
            seconds = STARTUP_S + count * self.copies / rates[kind]
            steps.append(Step(f"{kind} copies of {ds}", command, seconds, (out / "manifest.parquet").is_file(), out))
        return steps

    def _finetune_steps(self, exe: str, regime: str, total: int, rates: dict, models: dict[str, Path]) -> list[Step]:
        """One fine-tune per arm and seed of ``regime`` (a resume where a run stopped); adds their labels to
        ``models``."""
        config = self.config(regime)
        values = _config(config)
        epochs = self.epochs.get(regime) or int(values["epochs"])
        # every arm takes the same optimisation steps: at most one pass over the real training faces per epoch
        # (fewer when the config caps it), so an arm with copies sees a different random share of its rows each
        # epoch, not more steps
        steps_per_epoch = max(1, int((1 - VAL_FRACTION) * total) // int(values["batch_size"]))
        steps_per_epoch = min(steps_per_epoch, int(values.get("max_steps_per_epoch") or steps_per_epoch))
        rate = rates[regime]
        per_epoch = steps_per_epoch * int(values["batch_size"]) / rate["train"] + VAL_FRACTION * total / rate["embed"]
        steps = []
        for arm in self.arms:
            for seed in self.seeds:
                label = f"{regime}/{arm}-s{seed}"
                root = self.out / "runs" / regime / f"{arm}-s{seed}"
                run = run_folder(root)
                if run is not None and not finished(run):
                    command = [exe, "finetune", "--resume", str(run), "--no-progress"]
                else:
                    command = [exe, "finetune", *[a for m in self.manifests(arm) for a in ("--manifest", str(m))]]
                    command += ["--config", str(config), "--set", f"seed={seed}", "--device", self.device]
                    command += ["--set", f"max_steps_per_epoch={steps_per_epoch}"]
                    if self.copy_probability is not None:  # every arm, so real draws the same real images
                        command += ["--copy-probability", str(self.copy_probability)]
                    command += ["--out", str(root), "--no-progress"]
                    if regime in self.epochs:
                        command += ["--epochs", str(self.epochs[regime])]
                steps.append(Step(f"finetune {label}", command, STARTUP_S + epochs * per_epoch, finished(run), root))
                models[label] = root
        return steps

    def _report_steps(self) -> list[Step]:
        """``augmentor compare`` over the verification, then this script's ``--collect`` into the results file."""
        compare = [_augmentor(), "compare", str(self.out / "verify"), "--json", str(self.out / "compare.json")]
        results = self.results or self.out / RESULTS_NAME
        command = [sys.executable, str(Path(__file__).resolve()), "--out", str(self.out), "--data", str(self.data)]
        return [
            Step("compare", compare, 5.0, output=self.out / "compare.md"),
            Step("results", [*command, "--collect", "--results", str(results)], 5.0, output=results),
        ]

    def _verify_step(self, exe: str, models: dict[str, Path], rates: dict) -> Step:
        from recognition.lfw import read_pairs

        pairs = self.lfw / "pairs.txt"
        listed = read_pairs(pairs)
        if self.verify_limit:
            listed = listed.limit(self.verify_limit)
        num_images, num_right = len(listed.images()), len(set(listed.right))
        embed = sum(
            (num_images + (len(self.contexts) - 1) * num_right) / rates[label.split("/")[0]]["embed"]
            for label in models
        )
        seconds = STARTUP_S + num_images / rates["align"] + embed
        command = [exe, "verify-lfw", "--root", str(self.lfw / "images"), "--pairs", str(pairs)]
        command += ["--out", str(self.out / "verify"), "--device", self.device, "--no-progress"]
        command += ["--context", ",".join(self.contexts)]
        if any(c in DONOR_CONTEXTS for c in self.contexts):
            command += ["--donors", str(self.data_dir("real", DONOR_SOURCE))]
        if self.verify_limit:
            command += ["--limit", str(self.verify_limit)]
        # a placeholder per model; run() replaces it with the run folder once the fine-tune has finished
        command += [a for label, root in models.items() for a in ("--model", f"{label}={root}")]
        return Step("verify-lfw", command, seconds, output=self.out / "verify")


def _hms(seconds: float) -> str:
    minutes = round(seconds / 60)
    return f"{minutes // 60}h{minutes % 60:02d}m"


def show(steps: list[Step]) -> str:
    """The plan as a markdown table, with the estimated time left."""
    lines = ["| step | status | estimated |", "|---|---|---:|"]
    for step in steps:
        lines.append(f"| {step.name} | {'done' if step.done else 'to do'} | {_hms(step.seconds)} |")
    left = sum(s.seconds for s in steps if not s.done)
    total = sum(s.seconds for s in steps)
    lines.append(f"| **total** | {_hms(left)} left | {_hms(total)} |")
    return "\n".join(lines)


def _resolve_models(command: list[str]) -> list[str]:
    """``--model LABEL=ROOT`` -> ``--model LABEL=RUN_FOLDER`` for the finished runs; unfinished ones are dropped."""
    out: list[str] = []
    i = 0
    while i < len(command):
        if command[i] == "--model":
            label, _, root = command[i + 1].partition("=")
            run = run_folder(Path(root))
            if finished(run):
                out += ["--model", f"{label}={run}"]
            else:
                log.warning("%s has not finished: left out of verify-lfw", label)
            i += 2
            continue
        out.append(command[i])
        i += 1
    return out


def collect_results(out: Path) -> dict:
    """The results of a grid in ``out``: per regime, arm and context, every seed's accuracy and pooled TPR at FPR
    0.01 and 0.001 (from ``verify/report.json``), and the paired tests over seeds (from ``compare.json``)."""
    from recognition.arms import SEED_LABEL

    report = json.loads((out / "verify" / "report.json").read_text())
    results: dict[str, dict[str, dict[str, dict]]] = {}
    for label, entry in report["models"].items():
        match = SEED_LABEL.match(label)
        if match is None:
            continue
        regime, _, arm = match["arm"].rpartition("/")
        for context, scores in {"original": entry, **entry["contexts"]}.items():
            cell = results.setdefault(regime, {}).setdefault(arm, {}).setdefault(context, {"seeds": []})
            cell["seeds"].append(int(match["seed"]))
            for name, key in METRIC_KEYS.items():
                value = scores["accuracy_mean"] if key == "accuracy" else scores["tpr_pooled"][key]
                cell.setdefault(name, []).append(float(value))
    for cell in (c for arms in results.values() for contexts in arms.values() for c in contexts.values()):
        order = sorted(range(len(cell["seeds"])), key=cell["seeds"].__getitem__)
        for name in ("seeds", *METRIC_KEYS):
            cell[name] = [cell[name][i] for i in order]
        cell["mean"] = {name: float(sum(cell[name]) / len(cell[name])) for name in METRIC_KEYS}
    compared = out / "compare.json"
    grid = out / GRID_FILE
    contexts = {
        c: {k: v for k, v in info.items() if k != "unchanged"} for c, info in report.get("contexts", {}).items()
    }
    return {
        "grid": json.loads(grid.read_text()) if grid.is_file() else {},
        "pairs": report["pairs"],
        "num_pairs": report["num_pairs"],
        "alignment": report.get("alignment"),
        "contexts": contexts,
        "results": results,
        "tests": json.loads(compared.read_text())["tests"] if compared.is_file() else [],
    }


DATA_STEPS = ("preprocess ", " copies of ")  # the names of the data steps (--data-only)


def is_data_step(step: Step) -> bool:
    return any(part in step.name for part in DATA_STEPS)


def run(grid: Grid, data_only: bool = False) -> None:
    """Run every step not yet done (only the data steps with ``data_only``); append each step's wall time to
    ``OUT/timings.jsonl``."""
    grid.out.mkdir(parents=True, exist_ok=True)
    (grid.out / GRID_FILE).write_text(json.dumps(grid.settings(), indent=2))
    for step in grid.plan():
        if data_only and not is_data_step(step):
            continue
        if step.done:
            log.info("skip (done): %s", step.name)
            continue
        command = _resolve_models(step.command) if step.name == "verify-lfw" else step.command
        log.info("%s: %s", step.name, " ".join(command))
        start = time.perf_counter()
        if step.name == "compare":
            result = subprocess.run(command, check=True, capture_output=True, text=True)
            (grid.out / "compare.md").write_text(result.stdout)
            click.echo(result.stdout)
        else:
            subprocess.run(command, check=True)
        seconds = time.perf_counter() - start
        with (grid.out / "timings.jsonl").open("a") as fh:
            fh.write(json.dumps({"step": step.name, "seconds": round(seconds, 1), "estimated": round(step.seconds)}))
            fh.write("\n")


def measure_rates(regime: str, manifest: Path, steps: int, config: Path | None = None) -> dict[str, float]:
    """A regime's training and embedding cost on ``manifest``'s faces: wall img/s and CPU-ms per image.

    CPU time counts every thread of this process and the decoding (no loader processes), so on a busy machine
    ``2 / cpu_seconds_per_image`` still estimates the rate on 2 free cores: the numbers behind :data:`RATES`.
    """
    import os

    import torch

    from augmentor.config import load_config
    from recognition.finetune import FinetuneConfig, Finetuner

    overrides = [f"manifests={json.dumps([str(manifest)])}", "device=cpu", "data.loader_workers=0"]
    cfg = load_config(FinetuneConfig, config or REGIMES[regime], overrides)
    with tempfile.TemporaryDirectory() as tmp:
        trainer = Finetuner(cfg, tmp, progress=False)
    batches = iter(trainer._loader(trainer.train_set, 0))
    trainer.net.train()
    for _ in range(2):  # warm-up
        trainer.train_step(*next(batches))
    load = os.getloadavg()[0]
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(steps):
        trainer.train_step(*next(batches))
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    num = steps * cfg.batch_size
    trainer.net.eval()
    val = [images for images, _ in trainer._loader(trainer.val_set, None)][:4]
    with torch.inference_mode():
        trainer.net(val[0])
        embed_wall, embed_cpu = time.perf_counter(), time.process_time()
        for images in val[1:]:
            trainer.net(images)
        embed_wall, embed_cpu = time.perf_counter() - embed_wall, time.process_time() - embed_cpu
    num_val = sum(len(v) for v in val[1:])
    return {
        "train_wall": num / wall,
        "train_cpu_ms": 1000 * cpu / num,
        "train_2core": 2 * num / cpu,
        "embed_wall": num_val / embed_wall,
        "embed_cpu_ms": 1000 * embed_cpu / num_val,
        "embed_2core": 2 * num_val / embed_cpu,
        "load": load,
    }


def write_results(out: Path, results: Path) -> None:
    """--collect: the grid's results file from ``out``'s verification and comparison."""
    if not (out / "verify" / "report.json").is_file():
        raise click.BadParameter(f"{out / 'verify' / 'report.json'} not found: run the grid first", param_hint="--out")
    results.parent.mkdir(parents=True, exist_ok=True)
    results.write_text(json.dumps(collect_results(out), indent=2))
    click.echo(f"wrote {results}")


def write_rates(out: Path, shards: Path, steps: int, regimes: tuple[str, ...], configs: dict[str, Path]) -> None:
    """--measure: each regime's training and embedding rates on ``shards``, as a table and in ``OUT/rates.json``."""
    measured = {}
    click.echo(
        "| regime | train img/s (wall) | train CPU-ms/img | train img/s, 2 free cores | embed img/s (wall) "
        "| embed CPU-ms/img | embed img/s, 2 free cores | load |"
    )
    click.echo("|---|---:|---:|---:|---:|---:|---:|---:|")
    for regime in regimes:
        r = measured[regime] = measure_rates(regime, shards, steps, configs.get(regime))
        click.echo(
            f"| {regime} | {r['train_wall']:.1f} | {r['train_cpu_ms']:.0f} | {r['train_2core']:.1f} "
            f"| {r['embed_wall']:.1f} | {r['embed_cpu_ms']:.1f} | {r['embed_2core']:.1f} | {r['load']:.1f} |"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / RATES_FILE).write_text(json.dumps({"shards": str(shards), "regimes": measured}, indent=2))
    click.echo(f"wrote {out / RATES_FILE}: the plan of this --out now uses these wall rates")


def _csv(value: str, allowed=None) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if allowed is not None and (bad := [v for v in items if v not in allowed]):
        raise click.BadParameter(f"{', '.join(bad)}: choose from {', '.join(allowed)}")
    return items


def _specs(specs: tuple[str, ...], convert, what: str) -> dict:
    """``("REGIME=VALUE", ...)`` -> ``{regime: convert(value)}``."""
    out = {}
    for spec in specs:
        regime, _, value = spec.partition("=")
        try:
            if regime not in REGIMES:
                raise ValueError(regime)
            out[regime] = convert(value)
        except ValueError:
            raise click.BadParameter(f"{spec!r}: expected REGIME={what} with REGIME in {', '.join(REGIMES)}") from None
    return out


def _positive(value: str) -> int:
    if not value.isdigit() or int(value) < 1:
        raise ValueError(value)
    return int(value)


def _yaml_file(value: str) -> Path:
    if not Path(value).is_file():
        raise ValueError(value)
    return Path(value)


@click.command(context_settings={"show_default": True})
@click.option("--out", type=click.Path(path_type=Path), required=True, metavar="DIR", help="Grid folder.")
@click.option(
    "--data",
    type=click.Path(file_okay=False, path_type=Path),
    default=ROOT.parent / "shared" / "data",
    metavar="DIR",
    help="Holds celeba/ and celeba-extra/ (training) and lfw/ (testing only).",
)
@click.option("--arms", default=V3_ARMS, metavar="A,B", help=f"Arms: {', '.join(ARMS)}.")
@click.option("--seeds", default="0,1,2", metavar="S,S", help="Training seeds (split, init, data order).")
@click.option("--regimes", default="pretrained,scratch", metavar="R,R", help=f"Regimes: {', '.join(REGIMES)}.")
@click.option("--contexts", default=V3_CONTEXTS, metavar="C,C", help="verify-lfw --context values.")
@int_option(
    "--copies",
    minimum=1,
    maximum=8,
    default=V3_COPIES,
    metavar="K",
    help="Copies of every training face per kind (augmentor run --copies); K > 1 goes to data/<kind>-k<K>-*/.",
)
@float_option(
    "--copy-probability",
    minimum=0,
    maximum=1,
    default=V3_COPY_PROBABILITY,
    metavar="P",
    help="finetune --copy-probability for every arm: each epoch is one pass over the real crops, each swapped for "
    "one of its copies with probability P. Not tuned (choose it on CelebA validation, never on LFW).",
)
@click.option("--union", is_flag=True, help="Issue 17's mode instead: train on the union of real crops and copies.")
@folder_option(
    "--cascade-model",
    metavar="CKPT",
    help="Generator checkpoint for the cascade copies. Default: the shipped model.",
)
@click.option("--epochs", "epoch_specs", multiple=True, metavar="REGIME=N", help="Override a regime's epochs.")
@click.option(
    "--regime-config",
    "config_specs",
    multiple=True,
    metavar="REGIME=YAML",
    help="Fine-tune a regime with another config. Default: issue 25's frozen-trunk recipe for pretrained "
    "(configs/recognition/grid-pretrained-v3.yaml; with --union, issue 17's configs). Use a fresh --out: finished "
    "runs are not retrained.",
)
@int_option(
    "--verify-limit",
    minimum=0,
    default=VERIFY_LIMIT,
    help="verify-lfw --limit: the first N matched and N mismatched pairs of each fold; 0: all 300 + 300.",
)
@click.option("--device", default="cpu", metavar="DEVICE", help="Fine-tuning and feature device.")
@click.option(
    "--results",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    metavar="JSON",
    help=f"The results file: per-seed accuracy and TPR per regime, arm and context, and the tests. "
    f"Default: OUT/{RESULTS_NAME}.",
)
@click.option("--collect", is_flag=True, help="Only write --results from OUT/verify and OUT/compare.json, then stop.")
@folder_option(
    "--measure",
    metavar="SHARDS",
    help="Measure each regime's training and embedding rates on this preprocess output (a few batches), then stop.",
)
@int_option("--measure-steps", minimum=1, default=8, help="--measure: batches.")
@click.option(
    "--data-only",
    is_flag=True,
    help="Make the training data (preprocess and copies), then stop; e.g. while a fine-tuning recipe is chosen.",
)
@click.option("-n", "--dry-run", is_flag=True, help="Print the plan and its estimated time, then stop.")
def main(
    out,
    data,
    arms,
    seeds,
    regimes,
    contexts,
    copies,
    copy_probability,
    union,
    cascade_model,
    epoch_specs,
    config_specs,
    verify_limit,
    device,
    results,
    collect,
    measure,
    measure_steps,
    data_only,
    dry_run,
):
    """Run (or with --dry-run, plan) the recognition grid; rerun the same command to resume.

    The defaults are issue 25's grid: arms real, cascade, donor (plain composition) and donor-refined (seamless),
    K = 3 copies each, --copy-probability 0.5, contexts original, masked, donor and donor-refined.

    \b
    Examples:
      python benchmarks/recognition_grid.py --out runs/rec-grid-v3 --dry-run
      python benchmarks/recognition_grid.py --out runs/rec-grid-v3 --results benchmarks/results/recognition_grid_v3.json
      python benchmarks/recognition_grid.py --out runs/rec-grid-v3 --measure runs/rec-grid-v3/data/real-celeba
      python benchmarks/recognition_grid.py --out runs/rec-smoke --seeds 0 --epochs scratch=1 --verify-limit 30
      python benchmarks/recognition_grid.py --out runs/rec-grid --union --copies 1 --arms real,cascade,donor \\
          --contexts original,masked,donor                                   # issue 17's grid
    """
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = results or out / RESULTS_NAME
    if collect:
        return write_results(out, results)
    configs = _specs(config_specs, _yaml_file, "YAML (an existing file)")
    if not union:
        configs = {**V3_CONFIGS, **configs}
    if measure is not None:
        return write_rates(out, measure, measure_steps, _csv(regimes, REGIMES), configs)
    epochs = _specs(epoch_specs, _positive, "N")
    for ds in DATASETS:
        if not (data / ds / "identities.tsv").is_file():
            raise click.BadParameter(f"{data / ds / 'identities.tsv'} not found", param_hint="--data")
    grid = Grid(
        out=out,
        data=data,
        lfw=data / "lfw",
        arms=_csv(arms, ARMS),
        seeds=tuple(int(s) for s in _csv(seeds)),
        regimes=_csv(regimes, REGIMES),
        contexts=tuple(dict.fromkeys(("original", *_csv(contexts, CONTEXTS)))),
        cascade_model=cascade_model,
        epochs=epochs,
        verify_limit=verify_limit or None,
        device=device,
        copies=copies,
        copy_probability=None if union else copy_probability,
        configs=configs,
        results=results,
    )
    if "real" not in grid.arms:
        raise click.BadParameter("the arms must include real, the baseline", param_hint="--arms")
    steps = grid.plan()
    click.echo(show(steps))
    if dry_run:
        for step in steps:
            click.echo(f"# {step.name}\n{' '.join(step.command)}")
        return
    run(grid, data_only)


if __name__ == "__main__":
    main()
