"""The ``mmsec`` command line: thin — it parses, calls library functions and prints.

``main(argv)`` returns an exit code and is what tests call. Errors a user can fix (unknown
names, bad specs, missing or unsafe files) print one clear line on stderr and exit with 2,
never a traceback.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from enum import Enum
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Column, Table

from .progress import QUIET_ENV
from .quickstart import RunFailed

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


@app.callback()
def _global(
    quiet: bool = typer.Option(False, "--quiet", "-q", help="No progress bars or status lines."),
    threads: int = typer.Option(1, "--threads", min=1, help="torch CPU threads (default 1: on a shared "
                                "2-core machine, 2 threads beside another busy process run ~5x slower)."),
) -> None:
    if quiet:
        os.environ[QUIET_ENV] = "1"
    import torch

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
    from .quickstart import run_quickstart

    summary = run_quickstart(model=model, n=n, results_dir=results_dir, quiet=json_output)
    if json_output:
        sys.stdout.write(json.dumps(summary) + "\n")
        return
    table = Table(title=f"quickstart: {summary['model']} on {n} shapes-world test images")
    table.add_column("condition")
    table.add_column("zero-shot top-1", justify="right")
    table.add_row("clean", f"{summary['clean_accuracy']:.3f}")
    table.add_row("uniform noise 8/255", f"{summary['noise_accuracy']:.3f}")
    for eps, acc in summary["robust_accuracy"].items():
        table.add_row(f"PGD-10 L-inf {eps}", f"{acc:.3f}")
    out.print(table)
    out.print(f"results store: {summary['results_store']}")
    out.print(f"clean vs adversarial examples: {summary['example_png']}")


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
    for k in selected:
        table = Table(Column(no_wrap=True), Column(), title=k, show_header=False, box=None)
        rows = entries(k)
        for e in rows:
            table.add_row(e.name, e.summary)
        if not rows:
            table.add_row("(none yet)", "")
        out.print(table)


@zoo_app.command("list")
def zoo_list() -> None:
    """Shipped zoo models with their measured quality."""
    from . import zoo

    table = Table("image tower", "params", "zero-shot top-1", "i2t R@1", "recipe")
    table.columns.insert(0, Column("name", no_wrap=True))
    shipped = set(zoo.available())
    for name in zoo.recipe_names():
        if name in shipped:
            c = zoo.card(name)
            m = c["metrics"]
            table.add_row(name, c["recipe"]["model"]["image_tower"], f"{c['parameters'] / 1e6:.2f}M",
                          f"{m['zeroshot_top1']:.3f}", f"{m['i2t_r1']:.3f}", "yes")
        else:
            table.add_row(name, "", "", "not trained", "", "yes")
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
    path = (target / f"{name}.safetensors").resolve()
    shadowed = name in zoo.available() and not overwrite_shipped
    _status(f"wrote {path} and its card {path.with_suffix('.json').name}"
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
    from .data.export import export_shapes

    export_shapes(out_dir, split=split, n=n, image_size=image_size, seed=seed, overwrite=overwrite)
    out.print(f"wrote {n} {split} images to {out_dir}")


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
    summaries = run_spec(parsed, results_dir, backend=backend.value)
    _write(format_results(query(results_dir, spec_name=parsed.name), "table"))
    busy = [s for s in summaries if s["status"] == "busy"]
    if busy:
        err.print(f"{len(busy)} of {len(summaries)} cells are being computed by another process on this store; "
                  "they were left to it. Run again later to collect them.", highlight=False)
    failed = [s for s in summaries if s["status"] == "failed"]
    for s in failed:
        err.print(f"[bold red]error:[/] cell {s['label'] or s['index']} failed: {s['error']}", highlight=False)
    if failed:
        err.print(f"{len(failed)} of {len(summaries)} cells failed; their errors are in {results_dir}/results.sqlite "
                  "(table failures). Fix the cause and re-run: finished cells are kept.", highlight=False)
        raise typer.Exit(1)


@app.command()
def results(
    results_dir: Path = typer.Option(DEFAULT_RESULTS, help="The results directory to read."),
    fmt: Format = typer.Option(Format.table, "--format", help="table, csv or json."),
    spec: str = typer.Option(None, help="Only runs of this spec name."),
    matrix: str = typer.Option(None, help="Transfer runs: print source x target matrices of this metric (e.g. asr)."),
) -> None:
    """Print stored results."""
    from .runs.results import format_matrix, format_results, query

    if not (Path(results_dir) / "results.sqlite").is_file():
        raise FileNotFoundError(f"no results store in {results_dir} (expected {results_dir}/results.sqlite); "
                                "run `mmsec quickstart` or `mmsec run SPEC` first")
    rows = query(results_dir, spec_name=spec)
    _write(format_matrix(rows, matrix) if matrix else format_results(rows, fmt.value))


def _write(text: str) -> None:
    """Write pre-formatted text to stdout as is (rich would re-wrap wide tables)."""
    sys.stdout.write(text if text.endswith("\n") else text + "\n")


def _user_errors() -> tuple[type[BaseException], ...]:
    from .models.checkpoint import CheckpointError

    errors: list[type[BaseException]] = [ValueError, KeyError, OSError, ImportError, CheckpointError]
    try:
        from .runs.spec import SpecError

        errors.append(SpecError)
    except ImportError:
        pass
    return tuple(errors)


def main(argv: list[str] | None = None) -> int:
    """Run the CLI on ``argv``; return the exit code (0 ok, 1 failure, 2 usage or input error)."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    user_errors = _user_errors()
    try:
        # Standalone mode: typer prints usage errors itself and ends with SystemExit(code).
        app(args=argv, prog_name="mmsec")
    except SystemExit as e:
        return e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except RunFailed as e:
        err.print(f"[bold red]error:[/] {e}", highlight=False)
        return 1
    except user_errors as e:
        message = e.args[0] if isinstance(e, KeyError) and e.args else str(e)
        err.print(f"[bold red]error:[/] {message}", highlight=False)
        return 2
    return 0


def entry_point() -> None:
    sys.exit(main())
