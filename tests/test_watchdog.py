"""The peer watchdog's timing rules (the two-process behaviour is tested in test_multiprocess.py)."""

import pytest

from gldfa_jax import watchdog


@pytest.mark.parametrize("timeout", [1, 3, 15, 300, 3600])
def test_a_silent_peer_is_named_inside_the_timeout(timeout):
    interval, limit = watchdog.limits(timeout)
    assert 0 < interval < limit and limit + 2 * interval < timeout


def test_only_peers_silent_for_longer_than_the_limit_are_named():
    assert watchdog.silent_peers({1: 100.0, 2: 95.0, 3: 91.0}, now=100.0, limit=7.5) == {3: 9.0}
    assert watchdog.silent_peers({}, now=100.0, limit=7.5) == {}


def test_the_message_names_the_process_the_timeout_and_the_fix():
    message = watchdog.lost_message(1, "pid 42 on node1", 8.04, 15, me=0)
    for needle in ("process 1 (pid 42 on node1) stopped responding", "8.0 s", "--distributed_timeout=15", "restart"):
        assert needle in message
