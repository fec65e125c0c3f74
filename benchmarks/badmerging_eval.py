"""BadMerging vs a plain patch backdoor, after five model-merging methods, on the zoo's CLIPs.

Setting (:mod:`mmsec.merging`): four task models fine-tuned from one zoo CLIP (image tower only,
cross-entropy through each task's frozen zero-shot head) on the shapes-world tasks shape (6 classes),
color (8), position (4) and texture (3), merged by simple averaging, task arithmetic (lambda 0.3),
TIES-merging (k 20%, lambda 1), RegMean (alpha 0.1, Gram matrices of 256 training inputs per task)
and AdaMerging (layer-wise, entropy on unlabelled test inputs, Adam lr 1e-3, batch 16 per task).

The attacker contributes the ``--attacker-task`` model (default texture):

* on-task: target ``--on-target`` of its own task (default "striped");
* off-task: target ``--off-target`` of the ``--off-task`` task (default shape / "circle"),
  contributed by a benign party; the attacker holds 10 images of that class (train ids 50,000+).

Attacks: BadMerging (:class:`~mmsec.attacks.backdoor.badmerging.BadMerging`: stage-1 patch on
theta_pre, stage-2 fine-tuning with alpha = 5 and the feature-interpolation loss, p ~ U[0.2, 1]),
the plain patch backdoor (:class:`~mmsec.attacks.backdoor.badmerging.PatchBackdoor`: a fixed noise
patch of the same 4 x 4 size and place, triggered copies labelled as the target), and no attack (all
four models clean; its ASR is that of BadMerging's and the plain patch's triggers on the clean merge).
Every trained model starts from the same seeds; every merge gets the same benign models.

Metrics on ``--n-test`` single-object test scenes: clean accuracy per task of the merged model, and
ASR = triggered test images of the target task not of the target class, classified as the target by
that task's head. ``noise ASR``: the same with a random noise patch of the same size (control).

Acceptance (issue 6, item 8): BadMerging ASR >= 90% on the merged model for every method, on- and
off-task, where the plain patch backdoor loses most of its ASR after merging.

Usage::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/badmerging_eval.py                      # ResNet, ~25 min on one busy core
    .venv/bin/python benchmarks/badmerging_eval.py --models shapes-clip-resnet shapes-clip-vit
    .venv/bin/python benchmarks/badmerging_eval.py --steps 100 --ada-steps 50 --n-test 200   # quick look
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from _report import add_common_args, environment, pin_threads, write_report

OUT = Path(__file__).resolve().parent / "out" / "badmerging_eval.json"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["shapes-clip-resnet"])
    p.add_argument("--tasks", nargs="+", default=["shape", "color", "position", "texture"])
    p.add_argument("--attacker-task", default="texture")
    p.add_argument("--on-target", default="striped")
    p.add_argument("--off-task", default="shape")
    p.add_argument("--off-target", default="circle")
    p.add_argument("--n-train", type=int, default=2000, help="training scenes per task (train ids 0..)")
    p.add_argument("--steps", type=int, default=1000, help="fine-tuning steps of every task model (the paper: ~2,000)")
    p.add_argument("--patch-size", type=int, default=4, help="trigger side in pixels (4 = 1.6%% of the area)")
    p.add_argument("--ada-steps", type=int, default=500)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0)
    add_common_args(p, OUT)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    pin_threads(args.threads)
    from rich.console import Console
    from rich.table import Table

    from mmsec.attacks.backdoor.badmerging import BadMerging, PatchBackdoor, noise_patch
    from mmsec.merging import (
        AdaMerging,
        RegMean,
        TaskArithmetic,
        TiesMerging,
        WeightAveraging,
        attack_success_rate,
        finetune_tower,
        get_task,
        task_accuracy,
    )
    from mmsec.zoo import load_model

    console = Console()
    tasks = [get_task(t) for t in args.tasks]
    if args.attacker_task not in args.tasks or args.off_task not in args.tasks:
        raise SystemExit("--attacker-task and --off-task must be among --tasks")
    train = {t.name: t.data("train", 0, args.n_train) for t in tasks}
    test = {t.name: t.data("test", 0, args.n_test) for t in tasks}
    off_task = get_task(args.off_task)
    pool_x, pool_y = off_task.data("train", 50_000, 400)
    target_imgs = pool_x[pool_y == off_task.class_index(args.off_target)][:10]
    noise = noise_patch(args.patch_size)
    report = {"env": environment(args.threads), "args": {k: str(v) for k, v in vars(args).items()}, "models": {}}

    for name in args.models:
        pre = load_model(name).eval()
        t0 = time.perf_counter()
        clean = {t.name: finetune_tower(pre, t, *train[t.name], steps=args.steps, generator=args.seed).model for t in tasks}
        console.print(f"{name}: clean task models in {time.perf_counter() - t0:.0f}s")
        scenarios = {"none": (None, None)}
        for mode, (tt, target) in {"on": (args.attacker_task, args.on_target),
                                   "off": (args.off_task, args.off_target)}.items():
            for cls in (BadMerging, PatchBackdoor):
                t0 = time.perf_counter()
                attack = cls(tt, target, steps=args.steps, patch_size=args.patch_size, seed=args.seed)
                res = attack(pre, args.attacker_task, *train[args.attacker_task],
                             target_pixels=None if mode == "on" else target_imgs)
                scenarios[f"{cls.name}-{mode}"] = (res, (tt, target))
                alone = attack_success_rate(res.model, tt, *test[tt], res.trigger, target)
                console.print(f"  {cls.name}-{mode}: trained in {time.perf_counter() - t0:.0f}s, "
                              f"ASR of the attacker's task model alone {alone:.3f}")
        methods = [WeightAveraging(), TaskArithmetic(), TiesMerging(), RegMean(), AdaMerging(steps=args.ada_steps)]
        rows = []
        for scen, (res, goal) in scenarios.items():
            models = [res.model if (res is not None and t.name == args.attacker_task) else clean[t.name] for t in tasks]
            row_base = {"scenario": scen}
            if res is not None:
                row_base["asr_task_model"] = attack_success_rate(res.model, goal[0], *test[goal[0]], res.trigger, goal[1])
            for method in methods:
                t0 = time.perf_counter()
                data = None
                if method.name == "regmean":
                    data = [train[t.name][0] for t in tasks]
                elif method.name == "adamerging":
                    data = [(test[t.name][0], t.head(pre)) for t in tasks]
                merged = method(pre, models, data).model
                row = dict(row_base, method=method.name, merge_seconds=round(time.perf_counter() - t0, 1),
                           acc={t.name: task_accuracy(merged, t, *test[t.name]) for t in tasks})
                if res is not None:
                    row["asr"] = attack_success_rate(merged, goal[0], *test[goal[0]], res.trigger, goal[1])
                    row["noise_asr"] = attack_success_rate(merged, goal[0], *test[goal[0]], noise, goal[1])
                else:  # the clean merge under each attack's trigger
                    for key, r in scenarios.items():
                        if r[0] is not None:
                            row[f"asr[{key}]"] = attack_success_rate(merged, r[1][0], *test[r[1][0]], r[0].trigger, r[1][1])
                rows.append(row)
                console.print(f"  {scen} / {method.name}: asr {row.get('asr', '-')} acc {row['acc']}")
        pre_acc = {t.name: task_accuracy(pre, t, *test[t.name]) for t in tasks}
        ft_acc = {t.name: task_accuracy(clean[t.name], t, *test[t.name]) for t in tasks}
        report["models"][name] = {"pretrained_acc": pre_acc, "finetuned_acc": ft_acc, "rows": rows}

        by = {(r["scenario"], r["method"]): r for r in rows}
        scen = ("badmerging-on", "patch_backdoor-on", "badmerging-off", "patch_backdoor-off")
        table = Table(title=f"{name}: ASR after merging (attacker: {args.attacker_task}; on-task target "
                            f"{args.on_target}, off-task target {args.off_task}/{args.off_target})")
        for col in ("method", "BM-on", "plain-on", "BM-off", "plain-off", "clean merge: BM-on trig", "BM-off trig",
                    "noise patch: BM-on", "BM-off", "mean acc: clean", "BM-on", "BM-off"):
            table.add_column(col, justify="right")
        mean = lambda acc: sum(acc.values()) / len(acc)  # noqa: E731
        for method in methods:
            m = method.name
            c = by[("none", m)]
            table.add_row(m, *[f"{by[(s, m)]['asr']:.3f}" for s in scen],
                          f"{c['asr[badmerging-on]']:.3f}", f"{c['asr[badmerging-off]']:.3f}",
                          f"{by[('badmerging-on', m)]['noise_asr']:.3f}", f"{by[('badmerging-off', m)]['noise_asr']:.3f}",
                          *[f"{mean(by[(s, m)]['acc']):.3f}" for s in ("none", "badmerging-on", "badmerging-off")])
        table.add_row("task model alone", *[f"{by[(s, 'averaging')]['asr_task_model']:.3f}" for s in scen],
                      "", "", "", "", f"{mean(ft_acc):.3f}", "", "")
        console.print(table)
        acc_table = Table(title=f"{name}: clean accuracy per task (pre-trained {pre_acc}, fine-tuned {ft_acc})")
        acc_table.add_column("merge")
        for t in tasks:
            acc_table.add_column(t.name, justify="right")
        for r in rows:
            acc_table.add_row(f"{r['method']} / {r['scenario']}", *[f"{r['acc'][t.name]:.3f}" for t in tasks])
        console.print(acc_table)
    write_report(args.out, report)
    return report


if __name__ == "__main__":
    main()
