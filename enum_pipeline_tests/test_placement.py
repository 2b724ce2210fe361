"""Where each scope's run goes, rendered by Dagster's own launchers, and the run queue's limits.

The Kubernetes pod comes from a real ``K8sRunLauncher`` built from ``deploy/k8s/dagster.yaml``
(its container context for the run, then ``construct_dagster_k8s_job``, as its ``launch_run``
does); the Docker container from a real ``DockerRunLauncher`` built from
``deploy/docker/dagster.yaml`` and the Docker SDK's own argument builder. Nothing reaches a
cluster or a Docker daemon. The queue limits are read from ``dagster.yaml`` by a real instance
and applied by Dagster's own ``TagConcurrencyLimitsCounter``.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from dagster import DagsterInstance
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.storage.dagster_run import DagsterRun
from dagster._serdes.config_class import ConfigurableClassData
from dagster._utils.tags import TagConcurrencyLimitsCounter

from enum_pipeline.config import ConfigError, load_config_file, parse_config
from enum_pipeline.defs.constants import HOST_TOKEN_TAG, SCOPE_TAG
from enum_pipeline.defs.placement import (
    K8S_CONFIG_TAG,
    docker_container_context,
    scope_run_tags,
)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "deploy" / "placement-example.yaml"
IMAGE = "registry.example.com/enum-pipeline:1.0"
#: The command line whose output docs/DEPLOYMENT.md shows.
RENDER_ARGS = ["--config-path", "/etc/enum-pipeline/sources.yaml"]

PINNED = {
    "sources": [
        {
            "kind": "filesystem",
            "roots": ["/srv/src"],
            "placement": {
                "node": "build-7",
                "host_path": "/data/src",
                "docker_networks": ["build-net"],
            },
        },
        {"kind": "github", "owner": "acme", "token_env": "GITHUB_TOKEN"},
        {"kind": "github", "owner": "acme-labs", "token_env": "GITHUB_TOKEN"},
    ]
}


def _scopes(config: dict) -> list[tuple[object, str]]:
    sources = parse_config(config, "test.yaml").build_sources()
    return [(source, key) for source in sources for key in source.scope_keys()]


def _launcher_section(path: Path) -> dict:
    return yaml.safe_load(path.read_text())["run_launcher"]


def _run(tags: dict[str, str], container_context: dict | None = None) -> DagsterRun:
    origin = JobPythonOrigin(
        "enumerate_projects",
        RepositoryPythonOrigin(
            executable_path=sys.executable,
            code_pointer=ModuleCodePointer("enum_pipeline.definitions", "defs", str(REPO)),
            container_image=IMAGE,
            container_context=container_context,
        ),
    )
    return DagsterRun(
        job_name="enumerate_projects",
        run_id=str(uuid.uuid4()),
        tags=tags,
        job_code_origin=origin,
    )


# --- Kubernetes ------------------------------------------------------------------------------


@pytest.fixture
def k8s_launcher(tmp_path):
    """``K8sRunLauncher`` from deploy/k8s/dagster.yaml, on a kubeconfig instead of the
    in-cluster account (the only change); it never calls the API here."""
    from dagster_k8s import K8sRunLauncher

    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:6443"}}],
                "users": [{"name": "u", "user": {}}],
                "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
                "current-context": "x",
            }
        )
    )
    section = _launcher_section(REPO / "deploy" / "k8s" / "dagster.yaml")
    config = {**section["config"], "load_incluster_config": False}
    config["kubeconfig_file"] = str(kubeconfig)
    data = ConfigurableClassData(section["module"], section["class"], yaml.safe_dump(config))
    return data.rehydrate(K8sRunLauncher)


def _k8s_pod(launcher, run: DagsterRun):
    """The pod spec of the Job ``launcher.launch_run`` would create for ``run``."""
    from dagster_k8s.job import construct_dagster_k8s_job

    context = launcher.get_container_context_for_run(run)
    job = construct_dagster_k8s_job(
        job_config=context.get_k8s_job_config(job_image=IMAGE, run_launcher=launcher),
        args=["dagster", "api", "execute_run"],
        job_name=f"dagster-run-{run.run_id}",
        pod_name=f"dagster-run-{run.run_id}",
        component="run_worker",
        user_defined_k8s_config=context.run_k8s_config,
    )
    return job.spec.template.spec


def test_a_pinned_filesystem_scope_runs_on_its_node_with_the_root_read_only(k8s_launcher):
    source, scope = _scopes(PINNED)[0]
    pod = _k8s_pod(k8s_launcher, _run(scope_run_tags(source, scope)))

    assert pod.node_selector == {"kubernetes.io/hostname": "build-7"}
    volumes = {v.name: v for v in pod.volumes}
    assert volumes["scope-root"].host_path.path == "/data/src"
    assert volumes["scope-root"].host_path.type == "Directory"
    mounts = {m.name: m for m in pod.containers[0].volume_mounts}
    # mounted at the root's own path, so the scope key and project paths do not change
    assert mounts["scope-root"].mount_path == "/srv/src"
    assert mounts["scope-root"].read_only is True
    # the launcher's own settings (the sources file) are kept beside the scope's
    assert mounts["sources-config"].read_only is True
    assert pod.containers[0].image == IMAGE


def test_a_node_selector_and_an_unplaced_scope(k8s_launcher):
    config = {
        "sources": [
            {
                "kind": "gitlab",
                "group": "platform",
                "base_url": "https://gitlab.example.com",
                "placement": {"node_selector": {"example.com/egress": "gitlab"}},
            },
            {"kind": "filesystem", "roots": ["/srv/other"]},
        ]
    }
    (gitlab, gitlab_scope), (fs, fs_scope) = _scopes(config)
    pod = _k8s_pod(k8s_launcher, _run(scope_run_tags(gitlab, gitlab_scope)))
    assert pod.node_selector == {"example.com/egress": "gitlab"}
    assert "scope-root" not in {v.name for v in pod.volumes}

    unplaced = scope_run_tags(fs, fs_scope)
    assert K8S_CONFIG_TAG not in unplaced
    pod = _k8s_pod(k8s_launcher, _run(unplaced))
    assert pod.node_selector is None
    assert "scope-root" not in {v.name for v in pod.volumes}


# --- Docker ----------------------------------------------------------------------------------


def test_docker_run_containers_bind_the_placed_roots_read_only():
    from dagster_docker import DockerRunLauncher
    from docker.models.containers import _create_container_args

    section = _launcher_section(REPO / "deploy" / "docker" / "dagster.yaml")
    data = ConfigurableClassData(
        section["module"], section["class"], yaml.safe_dump(section["config"])
    )
    launcher = data.rehydrate(DockerRunLauncher)
    sources = parse_config(PINNED, "test.yaml").build_sources()
    location_context = docker_container_context(sources, "/etc/enum-pipeline/sources.yaml")
    source, scope = _scopes(PINNED)[0]
    # dagster-docker reads no run tag: the scope's settings come with its code location
    context = launcher.get_container_context(_run(scope_run_tags(source, scope), location_context))

    created = _create_container_args(
        {
            "image": IMAGE,
            "command": ["dagster", "api", "execute_run"],
            "network": context.networks[0],
            "version": "1.41",
            **context.container_kwargs,
        }
    )
    binds = created["host_config"]["Binds"]
    assert "/data/src:/srv/src:ro" in binds
    assert "/etc/enum-pipeline/sources.yaml:/etc/enum-pipeline/sources.yaml:ro" in binds
    assert all(bind.endswith(":ro") for bind in binds)
    # the launcher's network first (the container is created on it), then the placement's
    assert context.networks == ["enum-pipeline", "build-net"]
    assert created["host_config"]["NetworkMode"] == "enum-pipeline"
    assert "GITHUB_TOKEN" in context.env_vars  # by name; the daemon's value is copied


# --- tags ------------------------------------------------------------------------------------


def test_no_token_value_in_any_tag(monkeypatch):
    token = "ghp_" + "Q7x" * 12
    monkeypatch.setenv("GITHUB_TOKEN", token)
    monkeypatch.setenv("GITLAB_TOKEN", token)
    sources = load_config_file(EXAMPLE).build_sources()
    every_tag = [scope_run_tags(s, k) for s in sources for k in s.scope_keys()]
    assert every_tag
    for tags in every_tag:
        for key, value in tags.items():
            assert token not in key and token not in value
    host_tokens = {tags[HOST_TOKEN_TAG] for tags in every_tag}
    assert "github:github.com:GITHUB_TOKEN" in host_tokens
    assert token not in json.dumps(docker_container_context(sources))


def test_a_github_app_queues_per_installation_and_no_key_is_in_a_tag(monkeypatch):
    from enum_pipeline_tests.fake_github_app import new_key_pair

    private, _ = new_key_pair()
    monkeypatch.setenv("APP_KEY", private)
    app = {"kind": "github", "app_id": 7, "private_key_env": "APP_KEY", "token_env": None}
    config = {
        "sources": [
            {**app, "owner": "acme"},
            {**app, "owner": "acme-labs"},
            {**app, "owner": "partner", "installation_id": 99},
        ]
    }
    tags = [scope_run_tags(s, k) for s, k in _scopes(config)]
    assert [t[HOST_TOKEN_TAG] for t in tags] == [
        "github:github.com:app-7/acme",
        "github:github.com:app-7/acme-labs",
        "github:github.com:app-7/99",
    ]
    body = private.split("-----")[2].strip().splitlines()[0]
    assert all(body not in value for t in tags for value in t.values())


def test_tag_values_are_readable_and_shared_per_host_and_token():
    tags = [scope_run_tags(s, k) for s, k in _scopes(PINNED)]
    assert [t[SCOPE_TAG] for t in tags] == [
        "fs:/srv/src",
        "github:github.com/acme",
        "github:github.com/acme-labs",
    ]
    assert [t[HOST_TOKEN_TAG] for t in tags] == [
        "filesystem:build-7",
        "github:github.com:GITHUB_TOKEN",
        "github:github.com:GITHUB_TOKEN",
    ]
    assert json.loads(tags[0][K8S_CONFIG_TAG])["pod_spec_config"]["nodeSelector"] == {
        "kubernetes.io/hostname": "build-7"
    }


@pytest.mark.parametrize(
    ("placement", "roots", "where"),
    [
        ({"node": "Build_7"}, ["/srv/src"], "placement.node"),
        ({"node_selector": {"bad key!": "x"}}, ["/srv/src"], "placement.node_selector"),
        ({"host_path": "data/src"}, ["/srv/src"], "placement.host_path"),
        ({"host_path": "/data"}, ["/srv/a", "/srv/b"], "sources.0.filesystem"),
        ({"nodes": "build-7"}, ["/srv/src"], "placement.nodes"),
    ],
)
def test_a_bad_placement_names_the_key_and_the_file(tmp_path, placement, roots, where):
    path = tmp_path / "sources.yaml"
    path.write_text(
        yaml.safe_dump(
            {"sources": [{"kind": "filesystem", "roots": roots, "placement": placement}]}
        )
    )
    with pytest.raises(ConfigError) as err:
        load_config_file(path)
    assert str(path) in str(err.value)
    assert where in str(err.value)


# --- the run queue ---------------------------------------------------------------------------


@pytest.fixture
def queue_limits(tmp_path):
    """The run queue's tag limits as a real instance reads the project's dagster.yaml."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    instance = DagsterInstance.from_config(str(home))
    try:
        config = instance.get_concurrency_config()
        assert config.run_queue_config is not None
        yield config
    finally:
        instance.dispose()


def _blocked(limits, running: list[dict], candidate: dict) -> bool:
    in_progress = [DagsterRun(job_name="j", run_id=str(uuid.uuid4()), tags=t) for t in running]
    counter = TagConcurrencyLimitsCounter(limits, in_progress)
    return counter.is_blocked(DagsterRun(job_name="j", run_id=str(uuid.uuid4()), tags=candidate))


def test_the_queue_runs_one_run_per_scope_and_a_few_per_host_and_token(queue_limits):
    limits = list(queue_limits.run_queue_config.tag_concurrency_limits)
    org = [scope_run_tags(s, k) for s, k in _scopes(PINNED)]
    fs, acme, labs = org

    assert _blocked(limits, [acme], acme)  # the same scope waits
    assert not _blocked(limits, [acme], labs)  # another org on the same token goes
    assert not _blocked(limits, [acme, labs], fs)  # another host goes
    more = [
        scope_run_tags(s, k)
        for s, k in _scopes({"sources": [{"kind": "github", "owner": f"org{i}"} for i in range(4)]})
    ]
    assert not _blocked(limits, more[:2], more[2])
    assert _blocked(limits, more[:3], more[3])  # three per host and token
    assert queue_limits.run_queue_config.max_concurrent_runs == 4
    # no inventory-wide limit on enumeration runs; one cleanup at a time
    keys = {limit["key"] for limit in limits}
    assert "enum_pipeline/inventory" not in keys
    assert _blocked(limits, [{"enum_pipeline/cleanup": "default"}], {"enum_pipeline/cleanup": "x"})
    assert queue_limits.pool_config.default_pool_limit == 1


def test_every_deployment_has_the_projects_queue_limits():
    project = yaml.safe_load((REPO / "dagster.yaml").read_text())["concurrency"]
    for name in ("dagster.postgres.yaml", "docker/dagster.yaml", "k8s/dagster.yaml"):
        deployed = yaml.safe_load((REPO / "deploy" / name).read_text())["concurrency"]
        limits = deployed["runs"]["tag_concurrency_limits"]
        assert limits == project["runs"]["tag_concurrency_limits"], name
        assert deployed["pools"] == project["pools"], name
    helm = yaml.safe_load((REPO / "deploy" / "k8s" / "values.yaml").read_text())["concurrency"]
    assert helm["runs"]["tagConcurrencyLimits"] == project["runs"]["tag_concurrency_limits"]
    assert helm["pools"] == {"defaultLimit": 1, "granularity": "run"}


def test_the_deployment_files_parse_with_dagsters_schemas(tmp_path, monkeypatch):
    from dagster._core.instance.config import dagster_instance_config
    from dagster._core.workspace.config_schema import ensure_workspace_config

    for var in ("USERNAME", "PASSWORD", "HOST", "PORT", "DB"):
        monkeypatch.setenv(f"DAGSTER_PG_{var}", "5432" if var == "PORT" else "x")
    for name in ("dagster.postgres.yaml", "docker/dagster.yaml", "k8s/dagster.yaml"):
        home = tmp_path / name.replace("/", "_")
        home.mkdir()
        shutil.copy(REPO / "deploy" / name, home / "dagster.yaml")
        config, _ = dagster_instance_config(str(home))
        assert config["run_coordinator"]["class"] == "QueuedRunCoordinator", name

    for name in ("docker/workspace.yaml", "host-local/workspace.yaml"):
        path = REPO / "deploy" / name
        ensure_workspace_config(yaml.safe_load(path.read_text()), str(path.parent))
    compose = yaml.safe_load((REPO / "deploy" / "docker" / "docker-compose.yaml").read_text())
    launcher = _launcher_section(REPO / "deploy" / "docker" / "dagster.yaml")["config"]
    assert launcher["network"] in {n["name"] for n in compose["networks"].values()}
    code = compose["services"]["enum_pipeline_code"]
    assert "--container-context" in code["command"][-1]  # the rendered container context


# --- the deployment doc ----------------------------------------------------------------------


def test_the_deployment_doc_shows_what_the_render_script_prints_now():
    printed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "render_placement.py"), *RENDER_ARGS],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    ).stdout
    doc = (REPO / "docs" / "DEPLOYMENT.md").read_text()
    begin = "<!-- render_placement.py output -->\n```text\n"
    start = doc.index(begin) + len(begin)
    assert doc[start : doc.index("```\n", start)] == printed
