"""Preflight checks without Ray: names, inside-the-results-dir, address probe, resource fit, progress notes."""

import io
import socket

import pytest

from orchestrator.engine.preflight import ClusterOffer, check_fit, probe_address
from orchestrator.engine.progress import Progress
from orchestrator.errors import BadInput
from orchestrator.stores.paths import check_name, inside

CPU_NODE = {"CPU": 8.0, "memory": 1e10}
GPU_NODE = {"CPU": 8.0, "GPU": 4.0}


@pytest.mark.parametrize("name", ["smoke", "bp_mlp-fmnist.v2", "A1", "x" * 64])
def test_good_names_pass(name):
    assert check_name(name, "name") == name


@pytest.mark.parametrize(
    "name", ["", "..", "../x", "a/b", "/abs", "a\\b", ".hidden", "-x", "a..b", "x" * 65, "a b", "a\nb", "é"]
)
def test_bad_names_are_refused(name):
    with pytest.raises(BadInput, match="not a valid name"):
        check_name(name, "name")


def test_inside_follows_symbolic_links(tmp_path):
    root = tmp_path / "results"
    (root / "ok").mkdir(parents=True)
    (root / "link").symlink_to(tmp_path)  # a link inside the results dir that points out of it
    assert inside(root / "ok" / "tune", root, "x") == (root / "ok" / "tune").resolve()
    with pytest.raises(BadInput, match="outside the results directory"):
        inside(root / "link" / "tune", root, "Tune storage")
    with pytest.raises(BadInput, match="outside the results directory"):
        inside(root / ".." / "escaped", root, "x")


def test_probe_accepts_a_listening_port_and_names_a_closed_one():
    with socket.socket() as srv:
        srv.bind(("127.0.0.1", 0))
        srv.listen()
        port = srv.getsockname()[1]
        probe_address(f"127.0.0.1:{port}")
        probe_address(f"ray://127.0.0.1:{port}")
    with pytest.raises(BadInput, match=f"--address 127.0.0.1:{port}: nothing answers"):
        probe_address(f"127.0.0.1:{port}")


def test_probe_leaves_auto_and_embedded_to_ray(monkeypatch):
    """No address, ``auto`` and ``local`` are not probed (Ray answers them itself); $RAY_ADDRESS is."""
    import orchestrator.engine.preflight as preflight

    tried = []

    def refuse(addr, timeout=None):
        tried.append(addr)
        raise ConnectionRefusedError(111, "Connection refused")

    monkeypatch.setattr(preflight.socket, "create_connection", refuse)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    for address in (None, "auto", "local"):
        assert probe_address(address) is None
    assert tried == []
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:6379")
    with pytest.raises(BadInput, match="RAY_ADDRESS=127.0.0.1:6379: nothing answers"):
        probe_address(None)
    assert tried == [("127.0.0.1", 6379)]


def test_fit_now_on_a_node_that_has_the_resources():
    assert check_fit(1, 1, ClusterOffer(nodes=[CPU_NODE, GPU_NODE]), "s.yaml", embedded=False) is None
    assert check_fit(2, 0, ClusterOffer(nodes=[CPU_NODE]), "s.yaml", embedded=True) is None


def test_gpu_on_embedded_ray_without_one_is_refused_at_once():
    with pytest.raises(BadInput, match="gpu=1 per trial, but no node of this machine"):
        check_fit(1, 1, ClusterOffer(nodes=[CPU_NODE], node_types=[GPU_NODE]), "s.yaml", embedded=True)


def test_cluster_whose_autoscaler_may_add_gpu_nodes_waits_with_a_note():
    offer = ClusterOffer(nodes=[CPU_NODE], node_types=[CPU_NODE, GPU_NODE])
    note = check_fit(1, 2, offer, "s.yaml", embedded=False)
    assert note and "trials wait for resources" in note and "autoscaler" in note


def test_cluster_that_cannot_grow_a_big_enough_node_is_refused():
    with pytest.raises(BadInput, match="nor may its autoscaler add one"):
        check_fit(1, 8, ClusterOffer(nodes=[CPU_NODE], node_types=[GPU_NODE]), "s.yaml", embedded=False)
    with pytest.raises(BadInput, match="no node of the cluster"):
        check_fit(1, 1, ClusterOffer(nodes=[CPU_NODE]), "s.yaml", embedded=False)
    with pytest.raises(BadInput, match="cpu=16"):
        check_fit(16, 0, ClusterOffer(nodes=[CPU_NODE, GPU_NODE]), "s.yaml", embedded=False)


def test_unknown_node_types_but_a_running_autoscaler_waits():
    note = check_fit(1, 1, ClusterOffer(nodes=[CPU_NODE], autoscaling=True), "s.yaml", embedded=False)
    assert note and "an autoscaler is running" in note


def test_progress_line_counts_retries_and_shows_the_wait_until_a_trial_starts():
    p = Progress(total=2, stream=io.StringIO(), min_interval=0)
    p.waiting = "trials wait for resources (gpu=1)"
    assert "retries 0" in p.line() and "trials wait for resources" in p.line()
    p.started("a")
    assert "trials wait" not in p.line()
    p.retried("a")
    p.finished("a", "failed", {})
    assert "retries 1" in p.line() and "failed 1" in p.line()


def test_autoscaler_v1_of_ray_start_is_read_only():
    import json

    from orchestrator.engine.tune_runner import _v1_autoscaler_may_add_nodes

    def status(mapping):
        return json.dumps({"autoscaler_report": {"node_type_mapping": mapping}}).encode()

    assert not _v1_autoscaler_may_add_nodes(None)
    assert not _v1_autoscaler_may_add_nodes(status({"abc": "node_abc"}))  # `ray start`: read-only
    assert _v1_autoscaler_may_add_nodes(status({"abc": "head", "def": "gpu_worker"}))
