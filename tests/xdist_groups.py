"""How ``pytest -n 2`` (pytest-xdist) splits the tests between its workers, without training a model twice.

Each worker is a process of its own: a module's fixtures (a hardened model, a crafted batch) would be built
again on the other worker if its tests were split, and so would a session fixture used by modules on both
workers. The scheduler below (tests/conftest.py hands it to xdist for ``--dist load``, the default of
``-n``) therefore sends whole *groups* to a worker: a module, or all the modules of one entry of
:data:`GROUPS` (they share a model trained once per process). It hands out the heaviest groups first
(:data:`HEAVY_FIRST`), so that the two workers finish together; the others follow in xdist's order.

tests/test_xdist_groups.py checks that every module using a session fixture of :data:`SHARED` is in that
fixture's group. A module missing from :data:`HEAVY_FIRST` costs balance, never correctness.
"""

from __future__ import annotations

# Session fixtures of tests/conftest.py that train a model, and the group of the modules that use each.
SHARED = {"badencoder_resnet": "badencoder"}

GROUPS = {
    # tests/conftest.py's badencoder_resnet: BadEncoder's effect test trains it, the repairs start from it
    "badencoder": ("tests/attacks/test_badencoder.py", "tests/defenses/test_invertune.py",
                   "tests/defenses/test_mudjacking.py"),
    # the runner's process-wide model cache: the PBCL-backdoored model and its control, trained once
    "runs-backdoor": ("tests/runs/test_backdoor_defenses.py", "tests/runs/test_backdoor_task.py"),
}

# Groups and modules handed out first, heaviest first: CPU seconds of their tests on one thread (a sequential
# run; test_ray's is wall time, spent in Ray's own processes).
HEAVY_FIRST = (
    "runs-backdoor",  # ~76
    "tests/defenses/test_tecoa_fare.py",  # ~61
    "badencoder",  # ~59
    "tests/attacks/test_pbcl.py",  # ~42
    "tests/attacks/test_baddiffusion.py",  # ~31
    "tests/defenses/diffusion/test_elijah.py",  # ~26
    "tests/runs/test_t2i_backdoor_task.py",  # ~25
    "tests/runs/test_diffusion_backdoor_task.py",  # ~25
    "tests/attacks/test_trojdiff.py",  # ~27
    "tests/attacks/test_multimodal_poisoning.py",  # ~26
    "tests/defenses/test_advpt.py",  # ~25
    "tests/runs/test_merging_task.py",  # ~25
    "tests/evaluation/test_robustness.py",  # ~24
    "tests/defenses/test_cleanclip.py",  # ~23
    "tests/attacks/test_sga.py",  # ~23
    "tests/attacks/test_badmerging.py",  # ~21
    "tests/runs/test_targeted_poisoning_task.py",  # ~20
    "tests/attacks/test_advclip.py",  # ~19
    "tests/test_imports.py",  # ~20 (a subprocess)
    "tests/runs/test_ray.py",  # ~19
    "tests/defenses/test_villa.py",  # ~18
    "tests/attacks/test_effect.py",  # ~16
    "tests/attacks/test_co_attack.py",  # ~12
    "tests/attacks/test_apgd_square.py",  # ~12
    "tests/test_fuzz.py",  # ~12
    "tests/attacks/test_badt2i.py",  # ~12
    "tests/defenses/diffusion/test_ufid.py",  # ~10
    "tests/defenses/diffusion/test_terd.py",  # ~9
    "tests/merging/test_merging_methods.py",  # ~11
)

GROUP_OF = {module: group for group, modules in GROUPS.items() for module in modules}


def group_of(nodeid: str) -> str:
    """The group of a test (its node id) or of a module (its path from the repository root)."""
    module = nodeid.split("::")[0]
    return GROUP_OF.get(module, module)


def scheduler(config, log):
    """An xdist scheduler that hands out whole groups (see the module's docstring), heaviest first."""
    from xdist.scheduler import LoadScopeScheduling

    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}

    class GroupScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return group_of(nodeid)

        def _assign_work_unit(self, node) -> None:
            heaviest = min(self.workqueue, key=lambda scope: rank.get(scope, len(rank)))  # first of equals
            self.workqueue.move_to_end(heaviest, last=False)
            super()._assign_work_unit(node)

    return GroupScheduling(config, log)
