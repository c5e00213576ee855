"""``invoke`` entry point: the fleetkit commands, plus the local lab for the quick start."""

from invoke import Collection

from fleetkit.cli import namespace as _fleetkit

ns = Collection()
for _name, _task in _fleetkit.tasks.items():
    ns.add_task(_task, _name)
for _name, _collection in _fleetkit.collections.items():
    ns.add_collection(_collection, _name)

try:  # the lab ships with the repository, not with the fleetkit package
    from lab.tasks import namespace as _lab
except ImportError:  # pragma: no cover - an installed fleetkit without the repo
    pass
else:
    ns.add_collection(_lab, "lab")
