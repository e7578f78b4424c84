"""Stream ids name the cluster, the namespace and the pod, and parse back unambiguously."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from auditlock.ledger.names import STREAM_PATTERN
from auditlock.operator.stream_ids import (
    ClusterNameError,
    check_cluster_name,
    derived_cluster_name,
    pod_of_stream,
    pod_stream_env,
    stream_id,
)

DNS_LABEL = st.from_regex(r"\A[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?\Z")
POD = st.from_regex(r"\A[a-z0-9]([-a-z0-9.]{0,40}[a-z0-9])?\Z")


@given(DNS_LABEL, DNS_LABEL, DNS_LABEL, POD, POD)
def test_a_stream_id_belongs_to_exactly_its_cluster_and_namespace(
    cluster: str, other: str, namespace: str, pod: str, other_pod: str
) -> None:
    import re

    stream = stream_id(cluster, namespace, pod)
    assert re.fullmatch(STREAM_PATTERN, stream)
    assert pod_of_stream(cluster, namespace, stream) == pod
    if other != cluster:
        assert pod_of_stream(other, namespace, stream) is None
        assert stream != stream_id(other, namespace, other_pod)
    if other != namespace:
        assert pod_of_stream(cluster, other, stream) is None


def test_ids_without_a_cluster_are_read_as_this_clusters() -> None:
    assert pod_of_stream("prod", "shop", "shop_orders-0") == "orders-0"
    assert pod_of_stream("prod", "shop", "other_orders-0") is None
    assert pod_of_stream("prod", "shop", "operator") is None


def test_the_cluster_name_is_never_empty_and_never_holds_the_separator() -> None:
    for bad in ("", "prod_eu", "Prod", "-x", "x" * 64):
        with pytest.raises(ClusterNameError, match="DNS label"):
            check_cluster_name(bad)
    with pytest.raises(ClusterNameError):
        pod_stream_env("")
    assert pod_stream_env("prod-eu") == "prod-eu_$(POD_NAMESPACE)_$(POD_NAME)"


def test_the_derived_name_is_stable_and_short() -> None:
    uid = "3F2A9B1C-77DE-4a51-9c3e-0123456789ab"
    assert derived_cluster_name(uid) == "uid-3f2a9b1c77de"
    assert derived_cluster_name(uid) == derived_cluster_name(uid.lower())


def test_the_operator_refuses_a_bad_cluster_name_at_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from auditlock.cli.main import EXIT_USAGE, main

    assert main(["operator", "run", "--cluster-name", "prod_eu", "--webhook-port", "0"]) == (
        EXIT_USAGE
    )
    assert "--cluster-name: cluster name 'prod_eu' is not a DNS label" in capsys.readouterr().err
