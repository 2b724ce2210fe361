"""Where and under which queue limits a scope's run goes: the run tags of one scope.

One function answers it for the schedule, backfills, the CLI and the deployment docs:
``scope_run_tags``; ``scope_run_groups`` puts several scopes in one run (``scopes_per_run``).
The run queue limits runs per unique value of ``SCOPE_TAG`` (one at a
time) and of ``HOST_TOKEN_TAG`` (a code host and the token it is read with, or the host whose
disk a filesystem scope is on). A source's ``placement:`` (``sources.hostconfig.Placement``)
adds the ``dagster-k8s/config`` tag that ``K8sRunLauncher`` reads: the pod is pinned to the
node and a filesystem root is mounted read-only at its own path, so the scope key stays the
same.

``DockerRunLauncher`` (dagster-docker 0.29) reads no run tag: its per-run container settings
are the launcher's and the code location's ``container_context``
(``DAGSTER_CONTAINER_CONTEXT`` of the code server), which ``docker_container_context`` renders.

Tag values are readable (run tags accept any string; only asset and definition tags are held
to 63 characters of ``[A-Za-z0-9_.-]``). No value holds a token: ``token_env`` is the name of
the variable, never its content.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Iterable, Sequence
from typing import Any

from enum_pipeline.defs.constants import HOST_TOKEN_TAG, SCOPE_TAG
from enum_pipeline.defs.scopes import partition_key, run_partition_tags
from enum_pipeline.sources.base import Source

#: The run tag dagster-k8s reads a run's user-defined Kubernetes configuration from.
K8S_CONFIG_TAG = "dagster-k8s/config"
#: The node label that names a node (set by the kubelet on every node).
NODE_NAME_LABEL = "kubernetes.io/hostname"
#: The volume of a filesystem scope's root in the run's pod.
ROOT_VOLUME = "scope-root"


def _placement(source: Source) -> Any:
    return getattr(source, "placement", None)


def _root_of(source: Source, scope_key: str) -> str | None:
    """The filesystem root whose scope is ``scope_key``, or None for a code-host scope."""
    for root in getattr(source, "roots", None) or ():
        if source.scope_key_for(root) == scope_key:  # type: ignore[attr-defined]
            return os.path.abspath(root)
    return None


def host_token_value(source: Source) -> str:
    """The queue value a source's runs share: its code host and token variable (or GitHub App
    installation), or the host whose disk a filesystem source reads (its Kubernetes node or
    node labels, else ``local``)."""
    host = getattr(source, "host", None)
    app_id = getattr(source, "app_id", None)
    if host is not None and app_id is not None:
        # a GitHub App's rate limit is its installation's: given, or the owner's own
        installation = getattr(source, "installation_id", None) or source.owner  # type: ignore[attr-defined]
        return f"{source.kind}:{host}:app-{app_id}/{installation}"
    if host is not None:
        return f"{source.kind}:{host}:{getattr(source, 'token_env', None) or 'anonymous'}"
    placement = _placement(source)
    if placement is None:
        return f"{source.kind}:local"
    labels = ",".join(f"{key}={value}" for key, value in sorted(placement.node_selector.items()))
    return f"{source.kind}:{placement.node or labels or 'local'}"


def k8s_config(source: Source, scope_key: str) -> dict[str, Any] | None:
    """The ``dagster-k8s/config`` of a run of ``scope_key``: the node it must run on, and the
    root mounted read-only at its own path; None when the source has no Kubernetes placement."""
    placement = _placement(source)
    if placement is None:
        return None
    selector = dict(placement.node_selector)
    if placement.node:
        selector[NODE_NAME_LABEL] = placement.node
    pod: dict[str, Any] = {"nodeSelector": selector} if selector else {}
    container: dict[str, Any] = {}
    root = _root_of(source, scope_key)
    if root is not None:
        host_path = getattr(placement, "host_path", None) or root
        pod["volumes"] = [
            {"name": ROOT_VOLUME, "hostPath": {"path": host_path, "type": "Directory"}}
        ]
        container["volumeMounts"] = [{"name": ROOT_VOLUME, "mountPath": root, "readOnly": True}]
    config = {"pod_spec_config": pod, "container_config": container}
    return {key: value for key, value in config.items() if value} or None


def scope_run_tags(source: Source, scope_key: str) -> dict[str, str]:
    """The run tags of a run of ``scope_key`` (read by ``source``): its queue limits, and its
    Kubernetes placement when the source has one."""
    tags = {SCOPE_TAG: scope_key, HOST_TOKEN_TAG: host_token_value(source)}
    k8s = k8s_config(source, scope_key)
    if k8s is not None:
        tags[K8S_CONFIG_TAG] = json.dumps(k8s, sort_keys=True, separators=(",", ":"))
    return tags


def scope_run_groups(
    sources: Iterable[Source],
    partition_order: Sequence[str],
    scopes_per_run: int = 1,
    alone: Collection[str] = (),
) -> list[tuple[list[str], dict[str, str]]]:
    """The schedule's runs, in configuration order: ``(partition keys, run tags)`` each, the
    keys in ``partition_order``.

    Scopes share a run only when they have the same source kind, ``host_token_value`` and
    Kubernetes placement, at most ``scopes_per_run`` of them, and their partitions are
    contiguous in ``partition_order`` (a run over several is a range, and a range covers every
    partition between its ends). A run of one scope has its partition tag and
    ``scope_run_tags``, as before; a run of several has the range's tags, the group's
    ``HOST_TOKEN_TAG`` (and ``dagster-k8s/config``), and ``SCOPE_TAG`` "<first scope key> +N
    more": stable from tick to tick, so the queue holds a group to one run at a time.

    A scope in ``alone`` (scope keys: those whose last reading was incomplete) gets a run of
    its own: a run is flushed once all its scopes are read, so a failing host's retries would
    hold its run-mates back every tick until it recovers."""
    scopes: dict[str, tuple[Source, str]] = {}  # partition key -> (source, scope key)
    for source in sources:
        for key in source.scope_keys():
            scopes.setdefault(partition_key(key), (source, key))
    config_index = {key: i for i, key in enumerate(scopes)}
    position = {key: i for i, key in enumerate(partition_order)}
    kinds: dict[tuple[str, str, str | None], list[str]] = {}
    for key, (source, scope) in scopes.items():
        tags = scope_run_tags(source, scope)
        kind = (source.kind, tags[HOST_TOKEN_TAG], tags.get(K8S_CONFIG_TAG))
        kinds.setdefault(kind, []).append(key)
    chunks: list[list[str]] = []
    for keys in kinds.values():
        placed = sorted((k for k in keys if k in position), key=position.__getitem__)
        chunks.extend([k] for k in keys if k not in position)  # not a partition: alone
        chunks.extend([k] for k in placed if scopes[k][1] in alone)
        run: list[str] = []
        for key in placed:
            if scopes[key][1] in alone:  # its run-mates on either side are two ranges
                if run:
                    chunks.append(run)
                run = []
                continue
            if run and (len(run) >= scopes_per_run or position[key] != position[run[-1]] + 1):
                chunks.append(run)
                run = []
            run.append(key)
        if run:
            chunks.append(run)
    chunks.sort(key=lambda chunk: min(config_index[k] for k in chunk))
    groups = []
    for chunk in chunks:
        source, scope = scopes[chunk[0]]
        tags = scope_run_tags(source, scope)
        if len(chunk) > 1:
            tags[SCOPE_TAG] = f"{scope} +{len(chunk) - 1} more"
        groups.append((chunk, {**tags, **run_partition_tags(chunk)}))
    return groups


def docker_container_context(
    sources: Iterable[Source], config_path: str | None = None
) -> dict[str, Any]:
    """The ``container_context`` of a code location whose runs read ``sources`` in Docker
    containers: every placed filesystem root bound read-only at its own path, the sources
    file ``config_path`` (read-only, same path) and the placements' networks.

    dagster-docker applies it to every run of the location, and its ``container_kwargs``
    replace the launcher's key by key: every volume a run needs is therefore listed here."""
    volumes: dict[str, dict[str, str]] = {}
    if config_path is not None:
        volumes[config_path] = {"bind": config_path, "mode": "ro"}
    networks: list[str] = []
    for source in sources:
        placement = _placement(source)
        if placement is None:
            continue
        networks.extend(n for n in placement.docker_networks if n not in networks)
        for scope_key in source.scope_keys():
            root = _root_of(source, scope_key)
            if root is not None:
                host_path = getattr(placement, "host_path", None) or root
                volumes[host_path] = {"bind": root, "mode": "ro"}
    docker: dict[str, Any] = {}
    if volumes:
        docker["container_kwargs"] = {"volumes": volumes}
    if networks:
        docker["networks"] = networks
    return {"docker": docker} if docker else {}
