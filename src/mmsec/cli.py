"""The ``mmsec`` command line: thin — it parses, calls library functions and prints.

``main(argv)`` returns an exit code and is what tests call:

- 0: done;
- 1: cells of the run failed (each named with its error's first line; the store keeps the
  traceback), or an internal error of mmsec (one line; please report it);
- 2: bad input -- a usage error, an unknown name, a spec that does not validate or is too large
  (:mod:`mmsec.limits`), a missing, unsafe or damaged model or store file, a folder that cannot be
  written. One line on stderr naming the input and what was expected.

Never a traceback: set ``MMSEC_DEBUG=1`` to see one after the line. torch is imported only when a
command needs it, so ``mmsec --help`` answers at once.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
from contextlib import contextmanager
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Column, Table

from .progress import QUIET_ENV

DEBUG_ENV = "MMSEC_DEBUG"

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="mmsec: security evaluation of multimodal models (CLIP, VLMs, diffusion) on a laptop CPU.")
zoo_app = typer.Typer(no_args_is_help=True, help="The model zoo: list, inspect and train shipped models.")
data_app = typer.Typer(no_args_is_help=True, help="Data: export the shapes world in standard formats.")
app.add_typer(zoo_app, name="zoo")
app.add_typer(data_app, name="data")

out = Console(soft_wrap=True)  # stdout: results only
err = Console(stderr=True, soft_wrap=True)
DEFAULT_RESULTS = Path("mmsec-results")


class Backend(str, Enum):
    sequential = "sequential"
    ray = "ray"


class Format(str, Enum):
    table = "table"
    csv = "csv"
    json = "json"


class SeedView(str, Enum):
    auto = "auto"
    mean = "mean"
    each = "each"


@app.callback()
def _global(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads (default 1: on a shared "
                                "2-core machine, 2 threads beside another busy process run ~5x slower)."),
) -> None:
    if quiet:
        os.environ[QUIET_ENV] = "1"
    # torch reads OMP_NUM_THREADS when it is imported (by the command that needs it, not here: `--help`
    # stays fast); when it is already imported (tests calling main), set it directly.
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)


def _status(message: str) -> None:
    """Status lines go to stderr, and only for a person at a terminal."""
    if os.environ.get(QUIET_ENV) != "1" and sys.stderr.isatty():
        err.print(message)


@app.command()
def quickstart(
    json_output: bool = typer.Option(False, "--json", help="Print one JSON object and nothing else on stdout."),
    model: str = typer.Option("zoo:shapes-clip-resnet", help="Model to evaluate (zoo:NAME, hf:DIR, ...)."),
    n: int = typer.Option(1000, min=1, help="Number of shapes-world test images."),
    results_dir: Path = typer.Option(DEFAULT_RESULTS, help="Where the results store and artifacts go."),
) -> None:
    """Zero-shot accuracy, a noise baseline and PGD-10 robust accuracy at eps 1,2,4,8/255 on a shipped tiny CLIP."""
    from . import limits
    from .quickstart import run_quickstart

    problem = limits.over("--n", n, limits.MAX_IMAGES, "images")
    if problem:
        raise ValueError(problem)
    summary = run_quickstart(model=model, n=n, results_dir=results_dir, quiet=json_output)
    if json_output:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    table = Table(title=f"quickstart: {escape(summary['model'])} on {n} shapes-world test images")
    table.add_column("condition")
    table.add_column("zero-shot top-1", justify="right")
    table.add_row("clean", f"{summary['clean_accuracy']:.3f}")
    table.add_row("uniform noise 8/255", f"{summary['noise_accuracy']:.3f}")
    for eps, acc in summary["robust_accuracy"].items():
        table.add_row(f"PGD-10 L-inf {eps}", f"{acc:.3f}")
    out.print(table)
    if summary.get("cached_cells"):
        out.print(f"{summary['cached_cells']} of {len(summary['robust_accuracy'])} cells were read back from the "
                  "results store (computed by an earlier run)")
    out.print(f"results store: {escape(str(summary['results_store']))}", highlight=False)
    out.print(f"clean vs adversarial examples: {escape(str(summary['example_png']))}", highlight=False)


@app.command("list")
def list_(kind: str = typer.Argument(None, help="What to list: a kind (attacks, defenses, ...; all when omitted)."),
          json_output: bool = typer.Option(False, "--json", help="One JSON list of {kind, name, family, paper, "
                                           "file, summary} on stdout.")) -> None:
    """List registered methods, models, data sets and tasks, one line each."""
    from . import builtins
    from .registry import close_names, entries, kinds

    builtins.load()
    known = [k.name for k in kinds()]
    if kind is not None and kind not in known:
        raise ValueError(f"unknown kind {kind!r}; kinds: {', '.join(known)}.{close_names(kind, known)}")
    selected = [kind] if kind else known
    if json_output:
        sys.stdout.write(json.dumps([e.as_dict() for k in selected for e in entries(k)], indent=1) + "\n")
        return
    if not sys.stdout.isatty():  # a pipe or a file: one full line per entry (no wrapping, nothing cut)
        lines = []
        for k in selected:
            rows = entries(k)
            width = max([len(e.name) for e in rows] + [10])
            lines += [k] + [f"  {e.name.ljust(width)}  {e.summary}".rstrip() for e in rows] + (
                ["  (none yet)"] if not rows else [])
        _write("\n".join(lines))
        return
    for k in selected:  # a terminal: summaries wrapped whole, long words folded, never cut with an ellipsis
        table = Table(Column(no_wrap=True), Column(overflow="fold"), title=k, show_header=False, box=None)
        rows = entries(k)
        for e in rows:
            table.add_row(escape(e.name), escape(e.summary))
        if not rows:
            table.add_row("(none yet)", "")
        out.print(table)


# The card metrics `mmsec zoo list` shows, those a card has, in this order: contrastive and fusion models,
# classifiers (the judge), generators.
ZOO_HEADLINE = (("zeroshot_top1", "zero-shot top-1"), ("i2t_r1", "i2t R@1"), ("accuracy", "accuracy"),
                ("recognition_rate", "recognised"), ("prompt_adherence", "prompt adherence"))


@zoo_app.command("list")
def zoo_list() -> None:
    """Shipped zoo models with their measured quality."""
    from . import zoo

    table = Table("family", "architecture", "params", "quality", "recipe")
    table.columns.insert(0, Column("name", no_wrap=True))
    shipped = set(zoo.available())
    for name in zoo.recipe_names():
        if name in shipped:
            c = zoo.card(name)
            m = c["metrics"]
            quality = ", ".join(f"{label} {m[k]:.3f}" for k, label in ZOO_HEADLINE if isinstance(m.get(k), (int, float)))
            table.add_row(name, c.get("family", "contrastive"), str(c["recipe"]["model"].get("image_tower", "")),
                          f"{c['parameters'] / 1e6:.2f}M", quality, "yes")
        else:
            table.add_row(name, "", "", "", "not trained", "yes")
    out.print(table)


@zoo_app.command("info")
def zoo_info(name: str) -> None:
    """Print a zoo model's card (recipe, seed, data, metrics, sha256)."""
    from . import zoo

    if name not in zoo.available():
        from .registry import close_names

        raise KeyError(f"no shipped zoo model {name!r}; available: {zoo.available()}."
                       f"{close_names(name, zoo.available())}")
    out.print_json(json.dumps(zoo.card(name)))


@zoo_app.command("train")
def zoo_train(
    name: str,
    out_dir: Path = typer.Option(None, "--out", help="Write checkpoint + card here (default: ./mmsec-zoo, or "
                                 "$MMSEC_ZOO_DIR); never into the package's shipped zoo without --overwrite-shipped."),
    steps: int = typer.Option(None, min=1, help="Override the recipe's step count (smoke runs)."),
    overwrite_shipped: bool = typer.Option(False, "--overwrite-shipped", help="Replace the checkpoint and card "
                                           "shipped inside the package (re-training the zoo itself)."),
) -> None:
    """Train zoo model NAME from its recipe; writes the safetensors checkpoint and its card to a user folder.

    Load the result as model zoo:DIR/NAME.safetensors, or as zoo:NAME when no shipped model has that name.
    """
    from . import zoo
    from .zoo.train import output_dir, train_recipe

    target = output_dir(out_dir, overwrite_shipped)  # refuses the shipped zoo before any training
    card = train_recipe(name, out_dir=target, steps=steps, overwrite_shipped=overwrite_shipped)
    folder = (target / name).resolve()  # a folder model (diffusers layout: the diffusion zoo) or one file
    path = folder if folder.is_dir() else (target / f"{name}.safetensors").resolve()
    shadowed = name in zoo.available() and not overwrite_shipped
    _status(f"wrote {path} and its card {name}.json"
            + (f"; zoo:{name} still names the shipped model, load yours as zoo:{path}" if shadowed else ""))
    out.print_json(json.dumps({"name": card["name"], "checkpoint": str(path),
                               "model": f"zoo:{name}" if overwrite_shipped else f"zoo:{path}",
                               "sha256": card["sha256"], "metrics": card["metrics"],
                               "train_seconds": card["train_seconds"]}))


@data_app.command("export")
def data_export(
    out_dir: Path,
    split: str = typer.Option("test", help="train | val | test"),
    n: int = typer.Option(100, min=1, help="Number of images."),
    image_size: int = typer.Option(32, help="Image side in pixels."),
    seed: int = typer.Option(0, help="World seed."),
    overwrite: bool = typer.Option(False, help="Replace a non-empty output directory."),
) -> None:
    """Write shapes-world images as an image folder (class sub-folders) plus captions.jsonl/.csv."""
    from . import limits
    from .data.shapes import MIN_IMAGE_SIZE

    if image_size < MIN_IMAGE_SIZE:
        raise ValueError(f"--image-size: {image_size} is too small for the shapes world, which renders images of "
                         f"{MIN_IMAGE_SIZE} pixels or more")
    for problem in (limits.over("--n", n, limits.MAX_IMAGES, "images"),
                    limits.over("--image-size", image_size, limits.MAX_IMAGE_SIZE, "pixels"),
                    limits.over_memory("--n/--image-size", n, image_size)):
        if problem:
            raise ValueError(problem)
    from .data.export import export_shapes

    export_shapes(out_dir, split=split, n=n, image_size=image_size, seed=seed, overwrite=overwrite)
    out.print(f"wrote {n} {escape(split)} images to {escape(str(out_dir))}", highlight=False)


@app.command()
def run(
    spec: Path,
    results_dir: Path = typer.Option(DEFAULT_RESULTS, help="Where the results store and artifacts go."),
    backend: Backend = typer.Option(Backend.sequential, help="sequential, or ray (a local Ray cluster)."),
    preset: str = typer.Option(None, help="A size preset of the recipe: smoke (under a minute), dev, paper."),
) -> None:
    """Run an experiment spec (YAML); finished cells are skipped, interrupted grids resume."""
    from .runs.results import format_results, query
    from .runs.runner import run_spec
    from .runs.spec import load_spec

    parsed = load_spec(spec, preset=preset)
    if backend == Backend.ray:
        _load_models(parsed, results_dir)  # a bad model: one error here, not one per Ray task
    with _quiet_logger("mmsec.runs.runner"):  # (its per-cell lines: this command reports the cells itself)
        summaries = run_spec(parsed, results_dir, backend=backend.value)
    cached = {s["run_id"] for s in summaries if s["status"] == "cached"}
    _write(format_results(query(results_dir, spec_name=parsed.name), "table", cached=cached))
    if cached:
        out.print(f"{len(cached)} of {len(summaries)} cells were already in the store: their time_s reads "
                  "'cached' (the compute time of the run that made them is in `mmsec results`)", highlight=False)
    for s in summaries:
        if s["status"] == "busy":
            err.print(f"cell {escape(str(s['label'] or s['index']))} is being computed by another process; "
                      "run again when it has finished", highlight=False)
    failed = [s for s in summaries if s["status"] == "failed"]
    for s in failed:
        err.print(f"[bold red]error:[/] cell {escape(str(s['label'] or s['index']))} failed: "
                  f"{escape(_first_line(s['error']))}", highlight=False)
    if failed:
        err.print(f"{len(failed)} of {len(summaries)} cells failed; their tracebacks are in "
                  f"{escape(str(Path(results_dir) / 'results.sqlite'))} (table failures). Fix the cause and re-run: "
                  "finished cells are kept.", highlight=False)
        raise typer.Exit(1)


def _load_models(spec, results_dir: Path) -> None:
    """Load every model the spec's cells name (once): a model that cannot be loaded fails here, once."""
    from .runs.context import CellContext
    from .runs.grid import expand
    from .runs.task import get_task

    task = get_task(spec.task)
    ctx = CellContext(results_dir)
    for model in dict.fromkeys(m for c in expand(spec) for m in task.models_of(c.config) if m):
        ctx.load_model(model)


@contextmanager
def _quiet_logger(name: str):
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


@app.command()
def results(
    results_dir: Path = typer.Option(DEFAULT_RESULTS, help="The results directory to read."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    spec: str = typer.Option(None, help="Only runs of this spec name."),
    matrix: str = typer.Option(None, help="Transfer runs: print source x target matrices of this metric (e.g. asr)."),
    seeds: SeedView = typer.Option(SeedView.auto, "--seeds", help="Runs that differ only in their seed: 'mean' "
                                   "shows one line per group (mean, 95% t-interval, number of seeds), 'each' every "
                                   "run; 'auto': mean in the table, each in csv and json."),
) -> None:
    """Print stored results: finished cells, then the failed and running ones with their error."""
    from .registry import close_names
    from .runs.results import format_matrix, format_results, format_unfinished, query, spec_names, unfinished

    names = spec_names(results_dir)  # (a FileNotFoundError saying what to run when there is no store)
    if spec is not None and spec not in names:
        raise ValueError(f"--spec {spec!r}: no runs of that spec in {Path(results_dir) / 'results.sqlite'}; specs "
                         f"there: {', '.join(names) or '(none yet)'}.{close_names(spec, names)}")
    rows = query(results_dir, spec_name=spec)
    view = seeds.value if seeds != SeedView.auto else ("mean" if fmt == Format.table else "each")
    _write(format_matrix(rows, matrix) if matrix else format_results(rows, fmt.value, seeds=view))
    pending = unfinished(results_dir, spec_name=spec)
    if pending:
        text = format_unfinished(pending)
        if fmt == Format.table and not matrix:
            _write(text)
        else:  # (stdout stays one CSV / JSON document)
            sys.stderr.write(text if text.endswith("\n") else text + "\n")


@app.command()
def claims(
    results_dir: Path = typer.Option(DEFAULT_RESULTS, help="The results directory (the store the runs go to)."),
    preset: str = typer.Option("dev", help="The recipes' preset the claims are measured at (smoke, dev, paper)."),
    seeds: int = typer.Option(3, help="Independent repeats: seeds 0 .. SEEDS-1 (data sample and training vary)."),
    claim: list[str] = typer.Option(None, "--claim", help="Only this claim (repeatable); default: every claim."),
    run_missing: bool = typer.Option(True, "--run/--no-run", help="Run the cells the store lacks first (resuming)."),
    recipes: Path = typer.Option(None, help="The folder of recipes (default: the repository's recipes/)."),
    interval: str = typer.Option("t", help="t (Student's t over seeds, the default) or bootstrap (percentile)."),
    fmt: Format = typer.Option(Format.table, "--format", help="table or json."),
) -> None:
    """Check the papers' claims: run what is missing, then each claim's effect over seeds, its 95% interval and
    verdict (reproduced, not reproduced, inconclusive, not run)."""
    from .claims.evaluate import evaluate_claims, run_claims
    from .claims.table import format_claims

    if fmt == Format.csv:
        raise ValueError("--format: claims print as table or json, got csv")
    failed = []
    if run_missing:
        with _quiet_logger("mmsec.runs.runner"):
            summaries = run_claims(results_dir, claim or None, preset, seeds, recipes)
        failed = [s for s in summaries if s["status"] == "failed"]
        for s in failed:
            err.print(f"[bold red]error:[/] cell {escape(str(s['label'] or s['index']))} failed: "
                      f"{escape(_first_line(s['error']))}", highlight=False)
    _write(format_claims(evaluate_claims(results_dir, preset, seeds, claim or None, recipes, interval), fmt.value))
    if failed:
        raise typer.Exit(1)


@app.command()
def report(
    results_dir: Path = typer.Option(DEFAULT_RESULTS, help="The results directory to read (never written)."),
    out_file: Path = typer.Option(Path("report.html"), "--out", help="The HTML file to write (replaced whole)."),
    spec: list[str] = typer.Option(None, "--spec", help="Only this spec (repeatable); default: every spec."),
    claims_preset: str = typer.Option("dev", help="The preset whose claims the claims section shows."),
    claims_seeds: int = typer.Option(3, min=1, help="The seeds a claim is read over (as `mmsec claims --seeds`)."),
    recipes: Path = typer.Option(None, help="The folder of recipes the claims read (default: the repository's)."),
) -> None:
    """Write one self-contained HTML page from the results store: the claims with their verdicts, then per spec
    the plot that fits, its sortable table (seeds aggregated) with each number's provenance, and its images."""
    from .report.page import build_report

    info = build_report(results_dir, out_file, spec or None, claims_preset=claims_preset, claims_seeds=claims_seeds,
                        recipes=recipes)
    out.print(f"{escape(str(info.path))}: {info.bytes / 1e6:.2f} MB ({info.specs} specs, {info.cells} cells, "
              f"{info.images} images)", highlight=False)


def _write(text: str) -> None:
    """Write pre-formatted text to stdout as is (rich would re-wrap wide tables)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _first_line(text: str | None) -> str:
    return (str(text or "").strip().splitlines() or [""])[0]


def _exit_code(e: BaseException) -> tuple[int, str]:
    """(exit code, the one line to print) for an exception that ended a command."""
    import sqlite3

    from .quickstart import RunFailed

    if isinstance(e, RunFailed):
        return 1, str(e)
    # Errors about the input (SpecError, CheckpointError are ValueErrors; StoreError is the store's).
    if type(e).__name__ == "StoreError" or isinstance(e, (ValueError, KeyError, OSError, ImportError,
                                                           sqlite3.DatabaseError)):
        if isinstance(e, KeyError) and e.args:
            return 2, str(e.args[0])
        if isinstance(e, OSError) and e.filename is not None and e.strerror:  # [Errno 2] ... -> plain words
            return 2, f"{e.filename}: {e.strerror}"
        if isinstance(e, sqlite3.DatabaseError):  # (the store wraps its own; this is a last resort)
            return 2, f"the results store cannot be used: {_first_line(str(e))[:160]}"
        return 2, str(e) or type(e).__name__
    if isinstance(e, MemoryError):
        return 1, "out of memory; use a smaller spec (fewer or smaller images, a smaller batch_size)"
    return 1, (f"internal error: {type(e).__name__}: {_first_line(str(e))} (set {DEBUG_ENV}=1 to see the "
               "traceback; please report it)")


@functools.lru_cache(maxsize=1)
def _command():
    """The click command typer builds from ``app`` (built once per process: ``app(...)`` builds it per call)."""
    return typer.main.get_command(app)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv``; return the exit code (0 ok, 1 failure, 2 usage or input error).

    Never raises (except KeyboardInterrupt, which typer turns into "Aborted!" and 1) and never prints a
    traceback unless ``MMSEC_DEBUG=1``.
    """
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        # Standalone mode: click prints usage errors itself and ends with SystemExit(code).
        _command().main(args=argv, prog_name="mmsec")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except Exception as e:  # noqa: BLE001 - every error ends in one line and an exit code
        code, message = _exit_code(e)
        message = "".join(c if c.isprintable() or c == "\n" else "?" for c in message)  # (damaged bytes, escapes)
        if os.environ.get(DEBUG_ENV, "").strip() == "1":
            import traceback

            traceback.print_exc(file=sys.stderr)
        err.print(f"[bold red]error:[/] {escape(message)}", highlight=False)
        return code
    return 0


def entry_point() -> None:
    sys.exit(main())
