"""The Bacalhau part: binary, config, unit and agent, as orchestrator or compute node."""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from fleetkit.foundation.inventory import Host
from fleetkit.foundation.settings import Settings
from fleetkit.foundation.status import ConfigError
from fleetkit.hostfacts.changes import StepPlan
from fleetkit.hostfacts.facts import Fact, FactView, Hostname
from fleetkit.hostfacts.identity import (
    HOST_LABEL,
    HOSTNAME_LABEL,
    RESERVED_LABELS,
    machine_hostname,
)
from fleetkit.hostfacts.packages import PackageRef
from fleetkit.hostfacts.roles import RoleContext
from fleetkit.hostfacts.services import ServiceSpec
from fleetkit.hostfacts.steps import (
    AbsentFileStep,
    DirectoryStep,
    FileStep,
    OrchestratorAliveStep,
    PlanContext,
    ServiceStep,
    Step,
    TarballBinaryStep,
)

UNIT_PATH = "/etc/systemd/system/bacalhau.service"
MEMBER = "bacalhau"
#: How long the orchestrator may take to answer /api/v1/agent/alive after (re)start.
ALIVE_TIMEOUT = 60.0
_RESTART = (("bacalhau", "restart"),)
_RELOAD = (("bacalhau", "restart"), ("bacalhau", "reload"))


def env_file_path(settings: Settings) -> str:
    return posixpath.join(posixpath.dirname(settings.bacalhau.config_path), "env")


def bacalhau_service(
    settings: Settings, node_name: str | None = None, api_port: int | None = None
) -> ServiceSpec:
    """The agent's command line, shared by the systemd unit and the fallback.

    ``api_port``: where the agent listens once it serves (a start waits for it).

    It runs as root on purpose: a compute node's agent hands the query job
    osqueryd's extensions socket, which osqueryd (root) creates in
    ``/var/osquery`` readable by root only. Open question: a dedicated user
    in a group owning the socket would be tighter, but osquery offers no
    flag for the socket's group or mode.
    """
    b = settings.bacalhau
    spec = ServiceSpec(
        name="bacalhau",
        argv=(b.install_path, "serve", "--config", b.config_path),
        unit="bacalhau.service",
        env_file=env_file_path(settings),
        ready_port=api_port,
    )
    return named_service(spec, node_name)


def named_service(spec: ServiceSpec, node_name: str | None) -> ServiceSpec:
    """The agent's command line for one node: ``--name <inventory name>``.

    The identity rule (:mod:`fleetkit.hostfacts.identity`): the flag is the
    only way to name a node (there is no config key), and Bacalhau uses it
    only while no name is persisted in ``$DataDir/system_metadata.yaml``.
    """
    if not node_name:
        return spec
    return replace(spec, argv=(*spec.argv, "--name", node_name))


def _common(host: Host, context: RoleContext) -> dict[str, Any]:
    b = context.settings.bacalhau
    return {
        "host": host,
        "version": b.version,
        "data_dir": b.data_dir,
        "api_port": context.api_port(host),
        "token": context.token,
    }


def orchestrator_config(host: Host, context: RoleContext) -> str:
    b = context.settings.bacalhau
    api_user: dict[str, str] | None = None
    if b.api_key is not None:
        api_user = {"api_key": b.api_key.reveal()}
    elif b.api_username and b.api_password is not None:
        api_user = {"username": b.api_username, "password": b.api_password.reveal()}
    return context.renderer.render(
        "bacalhau-orchestrator.yaml.j2",
        {
            **_common(host, context),
            "nats_port": b.nats_port,
            "disconnect_timeout": b.disconnect_timeout,
            "manual_approval": b.manual_approval,
            "api_user": api_user,
        },
    )


def node_labels(host: Host, machine: str | None) -> list[tuple[str, str]]:
    """The compute node's ``Labels``: the inventory's, and fleetkit's identity labels.

    ``fleetkit-host`` maps the node to ``host`` whatever its node ID; and
    ``fleetkit-hostname`` carries the machine's own hostname (None: unknown
    yet, left out) so merged answers keep it.
    """
    for key in RESERVED_LABELS:
        if key in host.labels:
            raise ConfigError(
                f"label {key} is set by fleetkit (node identity); remove it from the inventory",
                file=host.source or None,
                key=f"{host.name}.labels.{key}",
            )
    labels = {**host.labels, HOST_LABEL: host.name}
    if machine:
        labels[HOSTNAME_LABEL] = machine
    return sorted(labels.items())


def compute_config(host: Host, context: RoleContext, machine: str | None = None) -> str:
    """The compute node's config; ``machine`` is its hostname (``uname -n``) when known."""
    b = context.settings.bacalhau
    return context.renderer.render(
        "bacalhau-compute.yaml.j2",
        {
            **_common(host, context),
            "labels": node_labels(host, machine_hostname(machine)),
            "orchestrator": context.nats_url,
            "socket_dir": context.settings.osquery.socket_dir,
            "heartbeat_interval": b.heartbeat_interval,
        },
    )


def env_variables(context: RoleContext) -> list[tuple[str, str]] | None:
    """AWS variables for the S3 publisher; None when results are not published to S3."""
    query = context.settings.query
    if query.publisher != "s3" or query.s3 is None:
        return None
    s3 = query.s3
    variables: list[tuple[str, str]] = []
    if s3.access_key_id is not None:
        variables.append(("AWS_ACCESS_KEY_ID", s3.access_key_id.reveal()))
    if s3.secret_access_key is not None:
        variables.append(("AWS_SECRET_ACCESS_KEY", s3.secret_access_key.reveal()))
    variables.append(("AWS_REGION", s3.region))
    if s3.endpoint:
        variables.append(("AWS_ENDPOINT_URL", s3.endpoint))
    return variables


def unit_content(host: Host, context: RoleContext) -> str:
    service = bacalhau_service(context.settings, host.name)
    return context.renderer.render(
        "bacalhau.service.j2",
        {
            "host": host,
            "role": host.role,
            "socket_dir": context.settings.osquery.socket_dir,
            "env_file": service.env_file,
            "exec_start": service.exec_start,
        },
    )


def _binary_step(context: RoleContext) -> TarballBinaryStep:
    b = context.settings.bacalhau
    return TarballBinaryStep(
        path=b.install_path,
        ref=PackageRef("bacalhau tarball", "bacalhau.package", b.package, member=MEMBER),
        transfer_mode=context.settings.transfer_mode,
        notify=_RESTART,
    )


@dataclass(frozen=True)
class MachineFileStep(FileStep):
    """A file whose content also depends on the host's own hostname (``uname -n``).

    The compute config's ``fleetkit-hostname`` label: the content is rendered
    once while planning (a template mistake stops the run before any host is
    contacted) and again from the hostname read in the host's one probe, so
    no extra round trip is spent on it.
    """

    render: Callable[[str | None], str] | None = field(default=None, compare=False, repr=False)

    def looks(self, context: PlanContext) -> tuple[Fact[Any], ...]:
        machine = (Hostname(),) if self.render is not None else ()
        return (*super().looks(context), *machine)

    def plan(self, facts: FactView, context: PlanContext) -> StepPlan:
        if self.render is None:
            return super().plan(facts, context)
        rendered = replace(self, content=self.render(facts[Hostname()]), render=None)
        return rendered.plan(facts, context)


def _config_step(
    context: RoleContext,
    content: str,
    template: str,
    render: Callable[[str | None], str] | None = None,
) -> FileStep:
    """The agent's config file (mode 0600: it holds the node token)."""
    return MachineFileStep(
        path=context.settings.bacalhau.config_path,
        content=content,
        mode=0o600,
        notify=_RESTART,
        secret=True,
        template=template,
        render=render,
    )


def _tail(host: Host, context: RoleContext, config: FileStep) -> list[Step]:
    b = context.settings.bacalhau
    env_path = env_file_path(context.settings)
    variables = env_variables(context) if host.is_compute else None
    env_step: Step
    if variables is None:
        env_step = AbsentFileStep(env_path, notify=_RESTART)
    else:
        env_step = FileStep(
            path=env_path,
            content=context.renderer.render(
                "bacalhau.env.j2", {"host": host, "variables": variables}
            ),
            mode=0o600,
            notify=_RESTART,
            secret=True,
            template="bacalhau.env.j2",
        )
    return [
        _binary_step(context),
        DirectoryStep(b.data_dir, mode=0o700),
        config,
        env_step,
        FileStep(
            path=UNIT_PATH,
            content=unit_content(host, context),
            mode=0o644,
            notify=_RELOAD,
            systemd_only=True,
            template="bacalhau.service.j2",
        ),
        ServiceStep(bacalhau_service(context.settings, host.name, context.api_port(host))),
    ]


def orchestrator_steps(host: Host, context: RoleContext) -> list[Step]:
    template = "bacalhau-orchestrator.yaml.j2"
    config = _config_step(context, orchestrator_config(host, context), template)
    steps = _tail(host, context, config)
    steps.append(OrchestratorAliveStep(context.orchestrator_url, timeout=ALIVE_TIMEOUT))
    return steps


def compute_steps(host: Host, context: RoleContext) -> list[Step]:
    """The compute node's steps; its config is rendered again with the host's own hostname."""

    def render(machine: str | None) -> str:
        return compute_config(host, context, machine)

    config = _config_step(context, render(None), "bacalhau-compute.yaml.j2", render)
    return _tail(host, context, config)
