"""The one reader of torchrun's environment."""

import pytest

from moviefib.distributed import DistributedEnv, LaunchError, distributed_env


@pytest.mark.parametrize("environ, expected", [
    ({}, DistributedEnv()),
    ({"WORLD_SIZE": "1", "RANK": "0"}, DistributedEnv()),
    ({"RANK": "3"}, DistributedEnv()),  # no WORLD_SIZE: not a torchrun launch
    ({"WORLD_SIZE": "4", "RANK": "2", "LOCAL_RANK": "0"}, DistributedEnv(rank=2, world=4, local_rank=0)),
    ({"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1"}, DistributedEnv(rank=1, world=2, local_rank=1)),
])
def test_reads_the_launch(environ, expected):
    env = distributed_env(environ)
    assert env == expected
    assert env.distributed == (expected.world > 1) and env.is_main == (expected.rank == 0)


@pytest.mark.parametrize("environ, says", [
    ({"WORLD_SIZE": "two"}, "WORLD_SIZE='two': expected an integer"),
    ({"WORLD_SIZE": "2", "RANK": "x"}, "RANK='x': expected an integer"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "expected 0 <= RANK < WORLD_SIZE"),
    ({"WORLD_SIZE": "0"}, "WORLD_SIZE=0: expected at least 1 process"),
    ({"WORLD_SIZE": "-2", "RANK": "0"}, "WORLD_SIZE=-2: expected at least 1 process"),
    ({"WORLD_SIZE": "2", "RANK": "0", "LOCAL_RANK": "-1"}, "LOCAL_RANK >= 0"),
])
def test_nonsense_is_one_line(environ, says):
    with pytest.raises(LaunchError, match=says.replace("(", r"\(")):
        distributed_env(environ)
