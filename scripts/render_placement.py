"""Print what each scope's run gets on Kubernetes and Docker, rendered by dagster-k8s and
dagster-docker themselves (docs/DEPLOYMENT.md shows this script's output).

    python scripts/render_placement.py [SOURCES_YAML] [--config-path PATH]
    python scripts/render_placement.py --docker-context SOURCES_YAML   # the code server's JSON

SOURCES_YAML defaults to deploy/placement-example.yaml; ``--config-path`` is where the run
containers find it (ENUM_PIPELINE_CONFIG; default: the file's own absolute path).

For every scope: its run tags (``enum_pipeline.defs.placement.scope_run_tags``), and the pod of
the Kubernetes Job ``K8sRunLauncher`` would create for a run with those tags (node selector,
volumes, the container's mounts). For the Docker code location: its ``container_context`` and
the host configuration the Docker SDK builds from it for every run's container.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "placement-example.yaml"
IMAGE = "registry.example.com/enum-pipeline:1.0"


def k8s_pod(tags: dict[str, str]) -> dict[str, Any]:
    """The run worker pod dagster-k8s builds for a run with ``tags`` (the parts a placement
    sets), in Kubernetes' own field names."""
    import kubernetes
    from dagster_k8s.job import (
        DagsterK8sJobConfig,
        construct_dagster_k8s_job,
        get_user_defined_k8s_config,
    )

    job = construct_dagster_k8s_job(
        job_config=DagsterK8sJobConfig(
            job_image=IMAGE,
            dagster_home="/opt/dagster/dagster_home",
            instance_config_map="enum-pipeline-dagster-instance",
        ),
        args=["dagster", "api", "execute_run"],
        job_name="dagster-run-example",
        user_defined_k8s_config=get_user_defined_k8s_config(tags),
    )
    spec = kubernetes.client.ApiClient().sanitize_for_serialization(job)["spec"]["template"]
    pod = spec["spec"]
    mounts = [
        m for m in pod["containers"][0].get("volumeMounts", []) if m["name"] != "dagster-instance"
    ]
    volumes = [v for v in pod.get("volumes", []) if v["name"] != "dagster-instance"]
    rendered: dict[str, Any] = {}
    if pod.get("nodeSelector"):
        rendered["nodeSelector"] = pod["nodeSelector"]
    if volumes:
        rendered["volumes"] = volumes
    if mounts:
        rendered["containers[0].volumeMounts"] = mounts
    return rendered


def docker_host_config(container_context: dict[str, Any]) -> dict[str, Any]:
    """What the Docker SDK sends for a run container of a code location with
    ``container_context`` (as ``DockerRunLauncher`` creates it)."""
    from dagster_docker.container_context import DockerContainerContext
    from docker.constants import MINIMUM_DOCKER_API_VERSION
    from docker.models.containers import _create_container_args

    context = DockerContainerContext.create_from_config(container_context)
    kwargs = dict(context.container_kwargs)
    created = _create_container_args(
        {
            "image": IMAGE,
            "command": ["dagster", "api", "execute_run"],
            "network": context.networks[0] if context.networks else None,
            "version": MINIMUM_DOCKER_API_VERSION,
            **kwargs,
        }
    )
    return {"HostConfig": dict(created["host_config"]), "networks": list(context.networks)}


def _dump(value: Any) -> str:
    return json.dumps(value, sort_keys=True)


def render(config_path: Path, mounted_at: str) -> str:
    """The per-scope configuration of ``config_path``'s sources (found at ``mounted_at`` in
    the run containers), as text."""
    from enum_pipeline.config import load_config_file
    from enum_pipeline.defs.placement import docker_container_context, scope_run_tags

    config = load_config_file(config_path)
    sources = config.build_sources()
    lines: list[str] = []
    for source in sources:
        for scope_key in source.scope_keys():
            tags = scope_run_tags(source, scope_key)
            lines.append(f"scope {scope_key}")
            lines.append("  run tags:")
            lines.extend(f"    {key}: {value}" for key, value in tags.items())
            pod = k8s_pod(tags)
            lines.append("  Kubernetes run pod (dagster-k8s construct_dagster_k8s_job):")
            if not pod:
                lines.append("    (any node, no scope volume)")
            lines.extend(f"    {key}: {_dump(value)}" for key, value in pod.items())
            lines.append("")
    context = docker_container_context(sources, mounted_at)
    lines.append("Docker code location (DAGSTER_CONTAINER_CONTEXT of the code server):")
    lines.append(f"  {_dump(context)}")
    lines.append("Docker run container (dagster-docker container context, Docker SDK host config):")
    lines.append(f"  {_dump(docker_host_config(context))}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("config", nargs="?", default=str(EXAMPLE), help="sources YAML file")
    parser.add_argument(
        "--docker-context",
        action="store_true",
        help="print only the Docker code location's container_context (JSON)",
    )
    parser.add_argument("--config-path", help="the sources file's path in the run containers")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(REPO))
    from enum_pipeline.config import ConfigError, load_config_file
    from enum_pipeline.defs.placement import docker_container_context

    mounted_at = args.config_path or str(Path(args.config).resolve())
    try:
        if args.docker_context:
            sources = load_config_file(args.config).build_sources()
            print(json.dumps(docker_container_context(sources, mounted_at), sort_keys=True))
        else:
            sys.stdout.write(render(Path(args.config), mounted_at))
    except ConfigError as err:
        print(f"render_placement: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
