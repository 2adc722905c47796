"""Which resources a config change replaces, and in what order the engine runs the steps.

A model of the Pulumi engine's step generation for replacements (pkg/resource/deploy/step_generator.go):
a resource is replaced when an input its provider marks ForceNew changes. When a replaced resource is
delete-before-replace, the engine first deletes every dependent whose inputs take a value from it and
would themselves need replacing once that value is unknown (calculateDependentReplacements), in
reverse dependency order; then it deletes the resource, creates its replacement, and creates the
dependents again in dependency order (pulumi's own "delete_before_create" integration test asserts
exactly this order). Without delete-before-replace, the replacement is created first.
"""

from __future__ import annotations

from dataclasses import dataclass

# Inputs the docker provider can change in place (resourceDockerContainerUpdate's attribute list,
# and fields without ForceNew in resource_docker_container.go v4.5.0). Everything else it sets is ForceNew.
CONTAINER_IN_PLACE = {"restart", "memory", "healthcheck", "tmpfs", "wait", "waitTimeout", "destroyGraceSeconds",
                      "maxRetryCount", "cpuShares", "memoryReservation", "cpuSet", "memorySwap"}
FORCE_NEW_EXCEPT = {
    "docker:index/container:Container": CONTAINER_IN_PLACE,
    "docker:index/network:Network": set(),  # every field ForceNew (resource_docker_network.go)
    "docker:index/volume:Volume": set(),  # name, driver, driver_opts, labels: ForceNew
    "docker:index/remoteImage:RemoteImage": {"keepLocally", "forceRemove"},
}


@dataclass
class Step:
    op: str  # "delete-replaced" | "create-replacement" | "update"
    name: str


def _changed_keys(a: dict, b: dict) -> set[str]:
    return {k for k in set(a) | set(b) if a.get(k) != b.get(k)}


def _replaces(type_: str, keys: set[str]) -> bool:
    if type_ not in FORCE_NEW_EXCEPT:
        return False
    return bool(keys - FORCE_NEW_EXCEPT[type_])


def plan(old, new) -> list[Step]:
    """The replacement steps from `old` to `new` (two mock-engine Results), in the engine's order."""
    before = {r.urn: r for r in old.registrations}
    after = {r.urn: r for r in new.registrations}
    steps: list[Step] = []
    replaced: set[str] = set()
    for urn, r in after.items():
        if urn in before:
            keys = _changed_keys(before[urn].raw, r.raw)
            if _replaces(r.type, keys):
                replaced.add(urn)
            elif keys:
                steps.append(Step("update", r.name))

    # Dependents of a delete-before-replace resource that would be replaced once its outputs are unknown.
    dbr_deleted: set[str] = set()
    frontier = [u for u in replaced if after[u].delete_before_replace]
    while frontier:
        base = frontier.pop()
        dbr_deleted.add(base)
        for urn, r in after.items():
            if urn in dbr_deleted:
                continue
            keys = {k for k, deps in r.property_dependencies.items() if base in deps}
            if keys and _replaces(r.type, keys):
                replaced.add(urn)
                frontier.append(urn)

    order = _topological([u for u in after if u in replaced], after)
    deletes = [u for u in reversed(order) if u in dbr_deleted]
    steps += [Step("delete-replaced", after[u].name) for u in deletes]
    for u in order:
        steps.append(Step("create-replacement", after[u].name))
        if u not in dbr_deleted:
            steps.append(Step("delete-replaced", after[u].name))  # create-before-delete
    return steps


def _topological(urns: list[str], regs: dict) -> list[str]:
    """Dependencies first, ties by name (the engine runs independent steps in parallel)."""
    chosen, out, seen = set(urns), [], set()

    def visit(u: str) -> None:
        if u in seen:
            return
        seen.add(u)
        r = regs[u]
        deps = set(r.dependencies) | {d for ds in r.property_dependencies.values() for d in ds}
        if r.parent:
            deps.add(r.parent)
        for d in sorted(deps, key=lambda x: regs[x].name if x in regs else x):
            if d in chosen:
                visit(d)
        out.append(u)

    for u in sorted(urns, key=lambda x: regs[x].name):
        visit(u)
    return out
