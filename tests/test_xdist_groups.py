"""The scheduling of ``pytest -n 2`` (tests/xdist_groups.py): modules that share a trained model run on one
worker, whole groups are handed out, the heaviest first."""

from pathlib import Path

import pytest

import xdist_groups

REPO = Path(__file__).resolve().parents[1]


def test_every_module_using_a_shared_trained_model_is_in_that_model_s_group(request):
    users: dict[str, set[str]] = {}
    for item in request.session.items:
        for fixture in xdist_groups.SHARED:
            if fixture in item.fixturenames:
                users.setdefault(fixture, set()).add(item.nodeid.split("::")[0])
    for fixture, modules in users.items():
        group = xdist_groups.SHARED[fixture]
        stray = sorted(m for m in modules if xdist_groups.group_of(m) != group)
        assert not stray, f"{stray} use {fixture}: add them to GROUPS[{group!r}] in tests/xdist_groups.py"
    assert xdist_groups.group_of("tests/attacks/test_badencoder.py::test_contract") == "badencoder"
    assert xdist_groups.group_of("tests/data/test_shapes.py::test_x[a::b]") == "tests/data/test_shapes.py"


def test_every_named_module_exists():
    named = [m for modules in xdist_groups.GROUPS.values() for m in modules]
    named += [h for h in xdist_groups.HEAVY_FIRST if h not in xdist_groups.GROUPS]
    missing = [m for m in named if not (REPO / m).is_file()]
    assert not missing, f"tests/xdist_groups.py names modules that do not exist: {missing}"
    assert set(xdist_groups.SHARED.values()) <= set(xdist_groups.GROUPS)


class _Node:
    """A worker as the scheduler sees it: it is sent test indices, and told to shut down."""

    def __init__(self, name):
        self.gateway = type("Gateway", (), {"id": name})()
        self.shutting_down = False
        self.sent: list[int] = []

    def send_runtest_some(self, indices):
        self.sent += indices

    def shutdown(self):
        self.shutting_down = True


class _Config:
    def __init__(self):
        self.option = type("Option", (), {"loadscopereorder": True})()

    def getvalue(self, name):
        return {"tx": ["2*popen"]}[name]


def test_the_scheduler_sends_whole_groups_heaviest_first():
    pytest.importorskip("xdist")
    collection = ["tests/attacks/test_apgd_square.py::test_a", "tests/attacks/test_apgd_square.py::test_b",
                  "tests/attacks/test_badencoder.py::test_c", "tests/data/test_shapes.py::test_d",
                  "tests/defenses/test_mudjacking.py::test_e", "tests/defenses/test_tecoa_fare.py::test_f",
                  "tests/runs/test_backdoor_defenses.py::test_g", "tests/runs/test_backdoor_task.py::test_h"]
    sched = xdist_groups.scheduler(_Config(), None)
    a, b = _Node("gw0"), _Node("gw1")
    for node in (a, b):
        sched.add_node(node)
        sched.add_node_collection(node, collection)
    sched.schedule()
    groups = [[xdist_groups.group_of(collection[i]) for i in node.sent] for node in (a, b)]
    # the first worker gets the heaviest group (both runner modules), the second the next (TeCoA / FARE);
    # each worker asks for more while it has at most two tests pending, and gets the heaviest left
    assert groups[0][:2] == ["runs-backdoor"] * 2 and groups[1][0] == "tests/defenses/test_tecoa_fare.py"
    assert groups[0][2:4] == ["badencoder"] * 2 or groups[1][1:3] == ["badencoder"] * 2, groups
    sent = sorted(a.sent + b.sent)
    assert sent == sorted(set(sent))  # each test to one worker only
    for group in {g for gs in groups for g in gs}:
        assert group in groups[0] or group in groups[1]
        assert not (group in groups[0] and group in groups[1]), group  # a group never split between workers
