"""Test set-up: one torch thread (two cores shared with other work), deterministic seeds."""

import os

os.environ.setdefault("MMSEC_QUIET", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def zoo_resnet():
    from mmsec.zoo import load_model

    return load_model("shapes-clip-resnet")


@pytest.fixture(scope="session")
def zoo_vit():
    from mmsec.zoo import load_model

    return load_model("shapes-clip-vit")
