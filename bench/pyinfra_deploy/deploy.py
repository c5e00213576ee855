"""pyinfra v3 deploy: what ``fleetkit provision`` does on the lab, step for step.

Run by ``bench/bench_vs_pyinfra.py`` in pyinfra's own venv::

    pyinfra -y --parallel 32 RUN/inventory.py bench/pyinfra_deploy/deploy.py

where RUN was written by ``render.py`` (fleetkit's rendered files, packages,
the service command lines, and a manifest of every host's plan). The deploy
takes each host's steps from the manifest in fleetkit's order and refuses a
plan whose shape it does not know, so it never does less than fleetkit.

Control plane: bacalhau binary, data dir, orchestrator config, no env file,
(unit file only under systemd), the agent under start-stop-daemon, then the
API answering. Compute: osquery .deb at the pinned version, osquery.flags,
osqueryd under start-stop-daemon and its socket, then the same Bacalhau part
as a compute node. The control plane's operations come first in this file,
so pyinfra runs them (on orch-1) before any compute host's, as fleetkit does.
Services restart when a file or package they depend on changed (fleetkit's
notify), read at execution time from the operations' results.
"""

import json
import os
import sys

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Directory
from pyinfra.operations import files, python

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import fleetops


class Plan:
    """One host's steps from the manifest, taken in order; a surprise is an error."""

    def __init__(self, name):
        with open(host.data.fleet_manifest, encoding="utf-8") as handle:
            entry = json.load(handle)["hosts"][name]
        self.role = entry["role"]
        self.steps = list(entry["steps"])
        self.watchers = {}  # service name -> operations whose change restarts it

    def take(self, *kinds):
        if not self.steps or self.steps[0]["kind"] not in kinds:
            found = self.steps[0]["kind"] if self.steps else "nothing"
            raise ValueError(f"{host.name}: expected a {'/'.join(kinds)} step, found {found}")
        return self.steps.pop(0)

    def watch(self, step, op):
        for service in step.get("notify", ()):
            self.watchers.setdefault(service, []).append(op)
        return op

    def finish(self):
        if self.steps:
            kinds = ", ".join(s["kind"] for s in self.steps)
            raise ValueError(f"{host.name}: steps left that this deploy does not do: {kinds}")


def put(plan, step, what):
    return plan.watch(
        step,
        files.put(
            name=f"{what} {step['path']}", src=step["src"], dest=step["path"], mode=step["mode"]
        ),
    )


def service(plan, step):
    return fleetops.daemon(
        name=f"{step['name']} running (start-stop-daemon)",
        service=step["name"],
        pidfile=step["pidfile"],
        start=step["start"],
        restart=step["restart"],
        socket=step["socket"],
        restart_if=plan.watchers.get(step["name"], ()),
    )


@deploy("Bacalhau agent")
def bacalhau(plan):
    binary = plan.take("binary")
    plan.watch(
        binary,
        files.put(
            name=f"bacalhau binary {binary['path']} (from {binary['tarball']})",
            src=binary["src"],
            dest=binary["path"],
            mode=binary["mode"],
        ),
    )
    data = plan.take("directory")
    files.directory(name=f"directory {data['path']}", path=data["path"], mode=data["mode"])
    put(plan, plan.take("file"), "config")
    env = plan.take("absent", "file")
    if env["kind"] == "absent":
        plan.watch(env, files.file(name=f"no file {env['path']}", path=env["path"], present=False))
    else:
        put(plan, env, "environment")
    unit = plan.take("file")
    if not unit["systemd_only"]:
        raise ValueError(f"{host.name}: expected the systemd-only unit file, got {unit['path']}")
    service(plan, plan.take("service"))


plan = Plan(host.name)
if host.get_fact(Directory, path="/run/systemd/system"):
    raise ValueError(
        f"{host.name} runs systemd: this deploy mirrors the start-stop-daemon fallback"
    )

if plan.role == "control_plane":
    bacalhau(plan)
    alive = plan.take("alive")
    python.call(
        name=f"orchestrator answers {alive['url']}",
        function=fleetops.wait_alive,
        url=alive["url"],
        timeout=alive["timeout"],
    )

if plan.role == "compute":
    deb = plan.take("deb")
    plan.watch(
        deb,
        fleetops.deb_pinned(
            name=f"package {deb['package']} {deb['version']}",
            src=deb["src"],
            package=deb["package"],
            version=deb["version"],
            sha256=deb["sha256"],
        ),
    )
    put(plan, plan.take("file"), "osquery flags")
    service(plan, plan.take("service"))
    socket = plan.take("socket")
    fleetops.socket_ready(name=f"socket {socket['path']}", path=socket["path"], wait=socket["wait"])
    bacalhau(plan)

plan.finish()
