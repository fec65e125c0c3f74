"""Diffusion speed: mmsec's samplers and training steps vs a plain diffusers loop on the same zoo model.

On each shipped diffusion model (default: ``shapes-ddpm`` and ``shapes-t2i``), at ``--batch`` (64):

(a) **Sampling.** ``DiffusersUNet.sample`` with DDIM and with the ancestral sampler (``sampler="ddpm"``),
    both at ``--steps`` (25), against the plain diffusers loop on the same UNet::

        scheduler = DDIMScheduler.from_config(model.scheduler.config); scheduler.set_timesteps(steps)
        for t in scheduler.timesteps:
            out = unet(x, t).sample
            x = scheduler.step(out, t, x).prev_sample

    For the text-to-image model both run classifier-free guidance at ``--guidance`` (3) on the doubled batch
    (the empty prompt as the null condition, as mmsec does), the plain loop's ``encoder_hidden_states``
    computed once by the model's text encoder. Ratios are mmsec / plain per image (same batch, same initial
    noise); the ancestral sampler is also set against the same plain loop on a ``DDPMScheduler``, to
    separate mmsec's overhead from the sampler's own cost. mmsec's and the plain loop's images are
    compared (max abs difference, pixels in [0, 1]): they must agree, or the ratio compares different work.
(b) **Trojan sampling** (unconditional models, the ones the backdoor recipes attack):
    :func:`mmsec.attacks.backdoor.trojdiff.trojan_sample`, DDIM at ``--steps``, from the Trojan noise of
    ``TrojDiff().noise(16)`` (the blend trigger, gamma 0.6), over the plain DDIM loop.
(c) **Training.** ``--train-steps`` steps of :func:`mmsec.train.diffusion.train_diffusion` (its
    ``noise_prediction_loss``, a fresh ``DiffusionTrainConfig`` at the zoo's defaults: AdamW 2e-3, gradients
    clipped to norm 1, EMA 0.995, 10% prompt dropout on the text-to-image model) on a fresh copy of the
    model, over as many plain steps (``unet`` forward on ``scheduler.add_noise``'d images, MSE to the
    scheduler's target -- the noise, or ``scheduler.get_velocity`` for a v-prediction model --, backward,
    AdamW step; the prompts' token states recomputed each step without gradients, as diffusers'
    ``train_text_to_image.py`` does). On unconditional models also the attacks' per-step cost with their
    own configs (no EMA): BadDiffusion's ``baddiffusion_batch_loss`` with each coefficient and TrojDiff's
    ``trojdiff_batch_loss``, on 64 rows of which 10% are poisoned (the real TrojDiff step appends its
    poisoned rows to the batch: 70 rows at batch 64, ~9% more work). Reported as CPU-seconds per step and
    as ratios to the plain step. Each model's full training cost from its card (``train_cpu_seconds``) is
    set against its ``steps_run`` x the plain step (when ``--batch`` is the card's batch size).

Timings are CPU seconds (``time.process_time``; wall seconds are kept in the JSON): the machine is
shared, and a process's CPU time does not grow while it waits for a core. Each round runs every
measurement once, interleaved, each mmsec run beside its plain baseline; ratios are medians over
``--repeats`` rounds of the per-round ratios. A short warm-up of every runner precedes the rounds.
Goal: mmsec's sampling within ~1.10x of the plain loop, its training step within ~1.10x of the plain step.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/diffusion_speed.py     # writes benchmarks/out/diffusion_speed.json
    .venv/bin/python benchmarks/diffusion_speed.py --quick               # ~30 s wiring check (diffusion_speed_quick.json)
    .venv/bin/python benchmarks/diffusion_speed.py --models shapes-ddpm --repeats 5
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from collections.abc import Callable
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "diffusion_speed.json"
QUICK_OUT = OUT.with_name("diffusion_speed_quick.json")
GOAL = 1.10
AGREEMENT = 1e-4  # mmsec's and the plain loop's images differ by more: they did different work
QUICK = {"repeats": 1, "steps": 5, "train_steps": 1}  # --quick: a wiring check, its ratios are not a measurement
POISON_RATE = 0.1  # poisoned rows of the attack batches (both papers' rate)


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-ddpm", "shapes-t2i"], help="zoo diffusion models")
    p.add_argument("--checkpoint-dir", default=None, help="zoo checkpoint folder (default: the shipped ones)")
    p.add_argument("--batch", type=positive_int, default=64, help="images per sampling call and per training step")
    p.add_argument("--steps", type=positive_int, default=25, help="sampling steps (DDIM, ancestral, Trojan)")
    p.add_argument("--guidance", type=float, default=3.0, help="classifier-free guidance of conditional models")
    p.add_argument("--train-steps", type=positive_int, default=4, help="training steps per timed run")
    p.add_argument("--repeats", type=positive_int, default=3, help="rounds; ratios are medians of per-round ratios")
    p.add_argument("--quick", action="store_true",
                   help=f"wiring check (~30 s): {QUICK}, written to {QUICK_OUT.name} unless --out is given")
    add_common_args(p, OUT)
    args = p.parse_args(argv)
    if args.guidance <= 1.0:
        p.error(f"--guidance must be > 1 (classifier-free guidance on the doubled batch), got {args.guidance}")
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
        if args.out == OUT:
            args.out = QUICK_OUT
    return args


def timed(fn: Callable[[], object]) -> tuple[float, float, object]:
    """(CPU seconds, wall seconds, result) of ``fn()``."""
    cpu, wall = time.process_time(), time.perf_counter()
    out = fn()
    return time.process_time() - cpu, time.perf_counter() - wall, out


def paired(num: list[float], den: list[float]) -> float:
    """Median over rounds of num[r] / den[r]."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


# -- the plain diffusers baselines -------------------------------------------------------------------------

def plain_sample(unet, scheduler, noise, steps, embeds=None, null=None, guidance=1.0, generator=None):
    """diffusers' pipeline loop on ``unet`` and ``scheduler`` from ``noise`` (B, C, S, S): images in [0, 1].
    With ``null`` (B, L, D): classifier-free guidance on the doubled batch, null rows first (as mmsec)."""
    import torch

    with torch.no_grad():
        scheduler.set_timesteps(steps)
        x = noise * scheduler.init_noise_sigma
        states = None if null is None else torch.cat([null, embeds])
        for t in scheduler.timesteps:
            if embeds is None:
                out = unet(x, t).sample
            else:
                out_null, out_cond = unet(torch.cat([x, x]), t, encoder_hidden_states=states).sample.chunk(2)
                out = out_null + guidance * (out_cond - out_null)
            x = scheduler.step(out, t, x, generator=generator).prev_sample
        return ((x + 1) / 2).clamp(0, 1)


def plain_train(unet, scheduler, text_encoder, pixels, prompts, steps, lr, seed) -> None:
    """``steps`` plain training steps of ``unet`` in place: add_noise, forward, MSE to the scheduler's target,
    backward, AdamW step (a fresh optimizer, as each train_diffusion call makes one)."""
    import torch
    import torch.nn.functional as F

    opt = torch.optim.AdamW([p for p in unet.parameters() if p.requires_grad], lr=lr)
    g = torch.Generator().manual_seed(seed)
    velocity = scheduler.config.prediction_type == "v_prediction"
    unet.train()
    for _ in range(steps):
        x0 = pixels * 2 - 1
        noise = torch.randn(x0.shape, generator=g)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (x0.shape[0],), generator=g)
        x_t = scheduler.add_noise(x0, noise, t)
        target = scheduler.get_velocity(x0, noise, t) if velocity else noise
        if text_encoder is None:
            out = unet(x_t, t).sample
        else:
            with torch.no_grad():
                states = text_encoder(prompts)
            out = unet(x_t, t, encoder_hidden_states=states).sample
        loss = F.mse_loss(out, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()


# -- one model ---------------------------------------------------------------------------------------------

def bench_model(name: str, args: argparse.Namespace) -> dict:
    import torch
    from diffusers import DDIMScheduler, DDPMScheduler

    from mmsec.attacks.backdoor.baddiffusion import BadDiffusion, baddiffusion_batch_loss, trigger_shift
    from mmsec.attacks.backdoor.trojdiff import TrojDiff, trojan_sample, trojdiff_batch_loss
    from mmsec.data.shapes import ShapesWorld
    from mmsec.train.diffusion import DiffusionBatch, DiffusionTrainConfig, train_diffusion
    from mmsec.zoo import load_model
    from mmsec.zoo.diffusion import class_prompt

    model = load_model(name, checkpoint_dir=args.checkpoint_dir)
    size, channels, b = model.image_size, model.channels, args.batch
    batch = ShapesWorld(image_size=size).batch("train", 0, b)
    pixels = batch.pixels()  # (B, 3, S, S) in [0, 1]
    prompts = [class_prompt(int(y)) for y in batch.labels] if model.conditional else None
    guidance = args.guidance if model.conditional else 1.0
    ddim = DDIMScheduler.from_config(model.scheduler.config)
    ancestral = DDPMScheduler.from_config(model.scheduler.config)

    def noise(r: int) -> torch.Tensor:
        return torch.randn(b, channels, size, size, generator=torch.Generator().manual_seed(r))

    def plain_embeds():
        if not model.conditional:
            return None, None
        with torch.no_grad():  # computed once per call, inside the timing (mmsec's sample encodes them too)
            return model.text_encoder(prompts), model.text_encoder([""] * b)

    def run_plain(scheduler, steps, r):
        embeds, null = plain_embeds()
        return plain_sample(model.unet, scheduler, noise(r), steps, embeds, null, guidance,
                            torch.Generator().manual_seed(r))

    def run_mmsec(sampler, steps, r):
        return model.sample(noise(r), prompts, steps=steps, guidance=guidance,
                            generator=torch.Generator().manual_seed(r), sampler=sampler)

    sampling: dict[str, Callable[[int, int], torch.Tensor]] = {
        "plain_ddim": lambda steps, r: run_plain(ddim, steps, r),
        "mmsec_ddim": lambda steps, r: run_mmsec("ddim", steps, r),
        "plain_ddpm": lambda steps, r: run_plain(ancestral, steps, r),
        "mmsec_ddpm": lambda steps, r: run_mmsec("ddpm", steps, r),
    }
    attacks = not model.conditional  # the backdoor recipes attack the unconditional model
    if attacks:
        trojan = TrojDiff().noise(size)
        sampling["trojan_ddim"] = lambda steps, r: trojan_sample(model, trojan.apply(noise(r)), trojan.scale,
                                                                 trojan.shift, steps, "ddim")

    # training: each run on a fresh copy (made outside the timing); the same batch every step
    poisoned = torch.zeros(b, dtype=torch.bool)
    poisoned[: max(1, round(POISON_RATE * b))] = True
    target = ShapesWorld(image_size=size).batch("test", 0, 1).pixels()[0]  # (3, S, S)
    clean_batch = DiffusionBatch(pixels, prompts)
    troj_pixels = torch.where(poisoned.view(-1, 1, 1, 1), target, pixels)  # poisoned rows: the target image
    lr = 2e-3  # the zoo's (DiffusionTrainConfig's default)

    def fresh():
        tuned = copy.deepcopy(model)
        tuned.unet.requires_grad_(True)
        return tuned

    def run_train(batch_, loss_fn=None, **cfg):
        def setup(steps, r):
            tuned = fresh()
            config = DiffusionTrainConfig(steps=steps, seed=r, **cfg)
            kwargs = {} if loss_fn is None else {"loss_fn": loss_fn}
            return lambda: train_diffusion(tuned, lambda step: batch_, config, quiet=True, **kwargs)
        return setup

    def setup_plain(steps, r):
        unet = copy.deepcopy(model.unet).requires_grad_(True)
        return lambda: plain_train(unet, model.scheduler, model.text_encoder if model.conditional else None,
                                   pixels, prompts, steps, lr, r)

    training: dict[str, Callable[[int, int], Callable[[], object]]] = {
        "plain": setup_plain,
        "mmsec": run_train(clean_batch, lr=lr),
    }
    if attacks:
        y, shift = target * 2 - 1, trigger_shift(BadDiffusion().trigger, size)
        attack_cfg = {"ema": None, "prompt_dropout": 0.0, "warmup": 1}  # both attacks train without EMA
        bad_batch = DiffusionBatch(pixels, extra={"poisoned": poisoned})
        for coefficient in ("baddiffusion", "ddim"):
            training[f"baddiffusion_{coefficient}"] = run_train(
                bad_batch, baddiffusion_batch_loss(y, shift, coefficient), lr=2e-4, **attack_cfg)
        training["trojdiff"] = run_train(DiffusionBatch(troj_pixels, extra={"poisoned": poisoned}),
                                         trojdiff_batch_loss(trojan.scale, trojan.shift), lr=1e-3, **attack_cfg)

    # warm-up: every runner once, short
    for fn in sampling.values():
        fn(2, 0)
    for setup in training.values():
        setup(1, 0)()

    cpu: dict[str, list[float]] = {k: [] for k in [*sampling, *(f"train_{k}" for k in training)]}
    wall: dict[str, list[float]] = {k: [] for k in cpu}
    agreement: dict[str, float] = {"ddim": 0.0, "ddpm": 0.0}
    for r in range(args.repeats):
        images = {}
        for key, fn in sampling.items():
            c, w, images[key] = timed(lambda fn=fn, r=r: fn(args.steps, r))
            cpu[key].append(c)
            wall[key].append(w)
        for sampler in ("ddim", "ddpm"):
            gap = (images[f"mmsec_{sampler}"] - images[f"plain_{sampler}"]).abs().max().item()
            agreement[sampler] = max(agreement[sampler], gap)
        for key, setup in training.items():
            run = setup(args.train_steps, r)
            c, w, _ = timed(run)
            cpu[f"train_{key}"].append(c / args.train_steps)
            wall[f"train_{key}"].append(w / args.train_steps)

    med = {k: statistics.median(v) for k, v in cpu.items()}
    # "same": the max |mmsec - plain| of the images where both ran the same sampler on the same noise
    sampling_rows = [
        {"run": "mmsec DDIM", "baseline": "plain DDIM", "key": "mmsec_ddim", "base": "plain_ddim",
         "same": agreement["ddim"]},
        {"run": "mmsec ancestral", "baseline": "plain DDIM", "key": "mmsec_ddpm", "base": "plain_ddim", "same": None},
        {"run": "mmsec ancestral", "baseline": "plain ancestral", "key": "mmsec_ddpm", "base": "plain_ddpm",
         "same": agreement["ddpm"]},
    ]
    if attacks:
        sampling_rows.append({"run": "Trojan DDIM", "baseline": "plain DDIM", "key": "trojan_ddim",
                              "base": "plain_ddim", "same": None})
    for row in sampling_rows:
        row.update({"cpu_seconds": med[row["key"]], "baseline_cpu_seconds": med[row["base"]],
                    "ratio": paired(cpu[row["key"]], cpu[row["base"]]),
                    "ratio_wall": paired(wall[row["key"]], wall[row["base"]]),
                    "images_per_cpu_second": b / med[row["key"]],
                    "baseline_images_per_cpu_second": b / med[row["base"]]})
    training_rows = []
    for key in training:
        if key == "plain":
            continue
        training_rows.append({"run": key, "cpu_seconds_per_step": med[f"train_{key}"],
                              "plain_cpu_seconds_per_step": med["train_plain"],
                              "ratio": paired(cpu[f"train_{key}"], cpu["train_plain"]),
                              "ratio_wall": paired(wall[f"train_{key}"], wall["train_plain"]),
                              "ratio_over_mmsec_clean": paired(cpu[f"train_{key}"], cpu["train_mmsec"])})
    return {"model": name, "prediction_type": model.prediction_type, "conditional": model.conditional,
            "guidance": guidance, "parameters": sum(p.numel() for p in model.unet.parameters()),
            "sampling": sampling_rows, "training": training_rows,
            "plain_train_cpu_seconds_per_step": med["train_plain"],
            "agreement_max_abs": agreement, "card": card_cost(name, args, med["train_plain"]),
            "cpu_seconds": cpu, "wall_seconds": wall}


def card_cost(name: str, args: argparse.Namespace, plain_step: float) -> dict | None:
    """The card's full training cost against ``steps_run`` x the plain step (None without a card)."""
    from mmsec.models.checkpoint import read_card
    from mmsec.zoo import CHECKPOINTS

    path = Path(args.checkpoint_dir or CHECKPOINTS) / f"{name}.json"
    if not path.is_file():
        return None
    info = read_card(path)
    steps, seconds = info.get("steps_run"), info.get("train_cpu_seconds")
    card_batch = info.get("recipe", {}).get("train", {}).get("batch_size")
    out = {"steps_run": steps, "train_cpu_seconds": seconds, "batch_size": card_batch, "ratio": None}
    if steps and seconds and card_batch == args.batch:
        out["ratio"] = seconds / (steps * plain_step)  # includes data batching, clipping, EMA, prompt dropout
    return out


# -- report ------------------------------------------------------------------------------------------------

def print_tables(report: dict) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=160)
    s = report["settings"]
    title = (f"Sampling, batch {s['batch']}, {s['steps']} steps, {s['threads']} thread(s), median of "
             f"{s['repeats']} (CPU seconds; ratio = median of per-round ratios; goal <= {GOAL})")
    table = Table(title=title)
    for col in ("model", "run", "baseline", "run CPU-s", "baseline CPU-s", "ratio", "img / CPU-s",
                "baseline img / CPU-s", "mmsec = plain (max |diff|)"):
        table.add_column(col, justify="right")
    for m in report["models"]:
        for row in m["sampling"]:
            same = "-" if row["same"] is None else f"{row['same']:.1e}"
            table.add_row(m["model"], row["run"], row["baseline"], f"{row['cpu_seconds']:.2f}",
                          f"{row['baseline_cpu_seconds']:.2f}", f"{row['ratio']:.3f}",
                          f"{row['images_per_cpu_second']:.1f}", f"{row['baseline_images_per_cpu_second']:.1f}", same)
    console.print(table)
    table = Table(title=f"Training, batch {s['batch']}, {s['train_steps']} steps per run (CPU seconds per step)")
    for col in ("model", "run", "CPU-s / step", "plain CPU-s / step", "ratio to plain", "ratio to mmsec clean"):
        table.add_column(col, justify="right")
    for m in report["models"]:
        for row in m["training"]:
            table.add_row(m["model"], row["run"], f"{row['cpu_seconds_per_step']:.3f}",
                          f"{row['plain_cpu_seconds_per_step']:.3f}", f"{row['ratio']:.3f}",
                          f"{row['ratio_over_mmsec_clean']:.3f}")
    console.print(table)
    table = Table(title="Full training cost from the card vs steps x the plain step")
    for col in ("model", "steps", "card CPU-s", "steps x plain CPU-s", "ratio"):
        table.add_column(col, justify="right")
    for m in report["models"]:
        c = m["card"]
        if c is None:
            table.add_row(m["model"], "-", "-", "-", "no card")
            continue
        plain_total = c["steps_run"] * m["plain_train_cpu_seconds_per_step"] if c["steps_run"] else None
        table.add_row(m["model"], str(c["steps_run"]), f"{c['train_cpu_seconds']}",
                      f"{plain_total:.0f}" if plain_total else "-",
                      f"{c['ratio']:.2f}" if c["ratio"] else f"- (card batch {c['batch_size']})")
    console.print(table)
    for m in report["models"]:
        for sampler, gap in m["agreement_max_abs"].items():
            if gap > AGREEMENT:
                console.print(f"[bold red]warning:[/] {m['model']} {sampler}: mmsec's images differ from the plain "
                              f"loop's by {gap:.2e} (> {AGREEMENT}); the ratio compares different computations")


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    import psutil

    start_cpu, start_wall = time.process_time(), time.perf_counter()
    models = [bench_model(name, args) for name in args.models]
    report = {
        "benchmark": "diffusion_speed", "quick": args.quick, "goal_ratio": GOAL,
        "settings": {"batch": args.batch, "steps": args.steps, "guidance": args.guidance,
                     "train_steps": args.train_steps, "repeats": args.repeats, "threads": args.threads},
        "models": models,
        "total_cpu_seconds": time.process_time() - start_cpu, "total_wall_seconds": time.perf_counter() - start_wall,
        "environment": environment(args.threads), "load_average": list(psutil.getloadavg()),
    }
    print_tables(report)
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
