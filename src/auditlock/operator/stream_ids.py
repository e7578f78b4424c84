"""Stream ids of the collectors the operator runs: `<cluster>_<namespace>_<pod>`
(docs/FORMAT.md, "Stream ids"; docs/operator.md, "Cluster identity").

The cluster is part of the id so that clusters writing one bucket and prefix never write
the same stream: pods of the same name in namespaces of the same name are common across
clusters (a StatefulSet's `db-0` in `prod`). None of the three parts can contain `_`
(namespace and pod names are DNS names, the cluster name is checked here), so the split is
unambiguous. Ids without a cluster (`<namespace>_<pod>`) were written before the cluster
was part of the id; the operator still reads them as its own namespace's streams.
"""

from __future__ import annotations

import re

# A DNS label: what a namespace name may be, so also safe in an object name.
CLUSTER_PATTERN = r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$"
_CLUSTER = re.compile(CLUSTER_PATTERN)
_DERIVED_PREFIX = "uid-"
_DERIVED_DIGITS = 12  # 48 bits of the kube-system namespace's UID


class ClusterNameError(ValueError):
    pass


def check_cluster_name(name: str) -> str:
    if not _CLUSTER.match(name):
        raise ClusterNameError(
            f"cluster name {name!r} is not a DNS label (lower-case letters, digits and '-', "
            "at most 63, starting and ending with a letter or digit); it is part of every "
            "stream id, so it may not be empty or contain '_'"
        )
    return name


def derived_cluster_name(kube_system_uid: str) -> str:
    """The default cluster name: from the kube-system namespace's UID, which is made once
    per cluster and never changes."""
    digits = kube_system_uid.replace("-", "").lower()[:_DERIVED_DIGITS]
    return check_cluster_name(_DERIVED_PREFIX + digits)


def pod_stream_env(cluster: str) -> str:
    """The stream id as a container env value, completed by the kubelet from the
    downward API ($(VAR) expands variables defined earlier in the env list)."""
    return f"{check_cluster_name(cluster)}_$(POD_NAMESPACE)_$(POD_NAME)"


def stream_id(cluster: str, namespace: str, pod: str) -> str:
    return f"{cluster}_{namespace}_{pod}"


def pod_of_stream(cluster: str, namespace: str, stream: str) -> str | None:
    """The pod name in a stream id of this cluster and namespace, or None for a stream
    of another cluster, another namespace, or not written by an operator's collector."""
    parts = stream.split("_")
    if len(parts) == 3 and parts[0] == cluster and parts[1] == namespace and parts[2]:
        return parts[2]
    if len(parts) == 2 and parts[0] == namespace and parts[1]:
        return parts[1]  # written before the cluster was part of the id
    return None
