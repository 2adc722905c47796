"""A `Platform` without a provider, and a way to run one component under Pulumi's mock engine.

`FakePlatform` implements every method of `components.platforms.base.Platform`. It records each call
(the method, the resource name, the ServiceSpec, the parent, the dependencies and the keyword
arguments) and, where the protocol asks for a Resource, returns a `Stand`: a trivial
ComponentResource named as the component asked, parented to the component, so components can pass
it in `depends_on` and its URN shows where the component put it. Configurable: the host config,
the `telemetry()` answer, and how models get in place (`pulls="load"`: the server pulls into its own
store, as on a Docker host; `pulls="prepare"`: the store is filled before any server starts, as on
Kubernetes).

`run_component(build)` runs `build()` as a Pulumi program under the mock engine (the recording
monitor of tooling/mock_engine.py) and returns what it registered together with build's value;
`resolve(output)` reads an Output's value (and `is_secret` its secret mark) after that run.
"""

from __future__ import annotations

import contextlib
import io
from dataclasses import dataclass, field
from typing import Any, Callable, Literal, Mapping, Sequence

import pulumi
from pulumi.runtime import mocks as pmocks
from pulumi.runtime import settings
from pulumi.runtime.stack import run_in_stack, run_pulumi_func
from pulumi.runtime.sync_await import _sync_await

from components.config import catalog
from components.config.schema import HostConfig, ModelStoreConfig
from components.platforms.base import NodeTelemetry
from components.platforms.workload import Flow, MountSpec, ServiceSpec
from tooling.mock_engine import PROJECT, Mocks, RecordingMonitor, Result


# --------------------------------------------------------------------------- the fake platform


class Stand(pulumi.ComponentResource):
    """What a FakePlatform hands back where the protocol returns a Resource."""

    def __init__(self, kind: str, name: str, parent: pulumi.Resource | None,
                 depends_on: Sequence[pulumi.Resource] = ()):
        super().__init__(f"fake:platform:{kind}", name, None,
                         pulumi.ResourceOptions(parent=parent, depends_on=list(depends_on) or None))
        self.kind = kind
        self.resource_name = name
        self.register_outputs({})

    def __repr__(self) -> str:
        return f"<Stand {self.kind} {self.resource_name}>"


@dataclass
class Call:
    method: str
    name: str | None = None  # the resource name the component asked for
    spec: ServiceSpec | None = None
    parent: pulumi.Resource | None = None
    depends_on: tuple = ()
    kwargs: dict = field(default_factory=dict)  # every other argument, by parameter name
    result: Any = None  # what the fake returned


def host_config(**kw) -> HostConfig:
    """A small local host (no SSH); keyword arguments are HostConfig fields."""
    base = dict(kind="local", address="10.0.0.5", cpu_threads=16, memory_gb=64)
    base.update(kw)
    return HostConfig(**base)


def docker_like_telemetry(cfg: HostConfig) -> NodeTelemetry:
    """What a Docker host answers: node metrics, the configured GPU exporter where there are GPUs."""
    ex = cfg.exporters.gpu_exporter
    return NodeTelemetry(node_metrics=True, gpu_exporter=ex if cfg.gpus and ex != "none" else None,
                         log_discovery="docker")


class FakePlatform:
    """Records what a component asks of its platform; creates no provider resource."""

    def __init__(self, name: str = "fake", cfg: HostConfig | None = None, *,
                 telemetry: NodeTelemetry | None = None,
                 pulls: Literal["load", "prepare", "none"] = "load",
                 images: Mapping[str, str] | None = None,
                 published: Mapping[str, str] | None = None,
                 network_names: Mapping[str, Any] | None = None):
        self.name = name
        self.cfg = cfg if cfg is not None else host_config()
        self._telemetry = telemetry
        self.pulls = pulls
        self.images = dict(images or {})
        self.published = dict(published) if published is not None else None  # what connect() returns
        self.network_names = dict(network_names or {})
        self.calls: list[Call] = []
        self._names: dict[str, str] = {}  # resource name -> method that created it

    # ------------------------------------------------------------------ recording

    def _record(self, method: str, name: str | None = None, **kw) -> Call:
        spec = kw.pop("spec", None)
        parent = kw.pop("parent", None)
        deps = tuple(kw.pop("depends_on", ()) or ())
        call = Call(method, name, spec, parent, deps, kw)
        self.calls.append(call)
        return call

    def _resource(self, call: Call, kind: str) -> Stand:
        if call.name in self._names:
            # The engine refuses two resources of one URN; two children of one name are a naming bug.
            raise ValueError(f"{call.method}({call.name!r}): the name was already used by "
                             f"{self._names[call.name]} on platform {self.name}")
        self._names[call.name] = call.method
        call.result = Stand(kind, call.name, call.parent, [d for d in call.depends_on if d is not None])
        return call.result

    def called(self, method: str) -> list[Call]:
        return [c for c in self.calls if c.method == method]

    def runs(self) -> dict[str, Call]:
        """run() calls by service name (spec.name)."""
        out: dict[str, Call] = {}
        for c in self.called("run"):
            assert c.spec.name not in out, f"two run() calls for service {c.spec.name}"
            out[c.spec.name] = c
        return out

    def agents(self) -> dict[str, Call]:
        return {c.name: c for c in self.called("agent")}

    def by_name(self, name: str) -> Call:
        found = [c for c in self.calls if c.name == name]
        assert len(found) == 1, f"{name}: {len(found)} calls ({[c.name for c in self.calls]})"
        return found[0]

    def resource_names(self) -> list[str]:
        """Names of every resource the components asked this platform for, in call order."""
        return [c.name for c in self.calls if c.result is not None]

    # ------------------------------------------------------------------ addressing

    def image_ref(self, key: str) -> str:
        self._record("image_ref", key=key)
        return self.images.get(key, catalog.IMAGES[key].ref)

    def appdata(self, service: str) -> str:
        self._record("appdata", service=service)
        return f"{self.cfg.appdata_root.rstrip('/')}/{service}"

    def url(self, service: str, port: int, container_port: int | None = None) -> str:
        self._record("url", service=service, port=port, container_port=container_port)
        return f"http://{self.cfg.address}:{port}"

    def network_name(self, network: str) -> pulumi.Input[str]:
        self._record("network_name", network=network)
        return self.network_names.get(network, f"{self.name}-network-{network}")

    def connect(self, name: str, flows: Sequence[Flow], routes: Mapping[str, tuple[str, int]]) -> dict[str, str] | None:
        self._record("connect", name, flows=list(flows), routes=dict(routes))
        return self.published

    # ------------------------------------------------------------------ storage

    def ensure_dirs(self, name: str, parent: pulumi.Resource, paths: list[str],
                    owner: str | None = None) -> pulumi.Resource | None:
        call = self._record("ensure_dirs", name, parent=parent, paths=list(paths), owner=owner)
        return self._resource(call, "EnsureDirs")

    def provision_store(self, name: str, parent: pulumi.Resource, store: ModelStoreConfig,
                        owner: str) -> pulumi.Resource:
        call = self._record("provision_store", name, parent=parent, store=store, owner=owner)
        return self._resource(call, "ProvisionStore")

    # ------------------------------------------------------------------ workloads

    def run(self, name: str, spec: ServiceSpec, parent: pulumi.Resource,
            depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource:
        call = self._record("run", name, spec=spec, parent=parent, depends_on=depends_on)
        return self._resource(call, "Run")

    def agent(self, name: str, spec: ServiceSpec, parent: pulumi.Resource, *, gpu_nodes: bool = False,
              api_read: Sequence[dict] = ()) -> pulumi.Resource:
        call = self._record("agent", name, spec=spec, parent=parent, gpu_nodes=gpu_nodes, api_read=list(api_read))
        return self._resource(call, "Agent")

    # ------------------------------------------------------------------ models

    def prepare_models(self, name: str, parent: pulumi.Resource, *, image: str, models: Sequence[str],
                       mount: MountSpec | None, env: dict[str, str],
                       depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource | None:
        call = self._record("prepare_models", name, parent=parent, depends_on=depends_on, image=image,
                            models=list(models), mount=mount, env=dict(env))
        return self._resource(call, "PrepareModels") if self.pulls == "prepare" else None

    def load_models(self, name: str, parent: pulumi.Resource, *, service: str, models: Sequence[str],
                    depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource | None:
        call = self._record("load_models", name, parent=parent, depends_on=depends_on, service=service,
                            models=list(models))
        return self._resource(call, "LoadModels") if self.pulls == "load" else None

    # ------------------------------------------------------------------ telemetry

    def telemetry(self) -> NodeTelemetry:
        self._record("telemetry")
        return self._telemetry if self._telemetry is not None else docker_like_telemetry(self.cfg)

    # ------------------------------------------------------------------ scheduled work

    def schedule(self, name: str, parent: pulumi.Resource, job: "ScheduledJob",  # noqa: F821 - base.ScheduledJob
                 depends_on: Sequence[pulumi.Resource] = ()) -> pulumi.Resource:
        call = self._record("schedule", name, parent=parent, depends_on=depends_on, job=job)
        return self._resource(call, "Schedule")


# --------------------------------------------------------------------------- the mock engine


@dataclass
class Ran(Result):
    value: Any = None  # what build() returned

    def under(self, parent_name: str) -> list:
        """Registrations whose parent is the resource named `parent_name`."""
        urn = self.urn_of(parent_name)
        return [r for r in self.registrations if r.parent == urn]


def run_component(build: Callable[[], Any], *, stack: str = "test", preview: bool = False,
                  config: Mapping[str, str] | None = None, raise_errors: bool = True) -> Ran:
    """Run `build()` as a program under the mock engine; every registration it made, and its value.

    What tooling.mock_engine.run_stack does for __main__.py, for any callable: a fresh recording monitor,
    the root stack resource, and every RPC and Output awaited before it returns.
    """
    mocks = Mocks()
    monitor = RecordingMonitor(mocks)
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pmocks.set_mocks(mocks, project=PROJECT, stack=stack, preview=preview, monitor=monitor)
    settings.set_root_resource(None)  # type: ignore[arg-type]
    pulumi.runtime.set_all_config({f"{PROJECT}:{k}": v for k, v in (config or {}).items()}, [])
    box: dict[str, Any] = {}
    error: BaseException | None = None

    def program() -> None:
        box["value"] = build()

    try:
        with contextlib.redirect_stdout(io.StringIO()):
            _sync_await(run_pulumi_func(lambda: run_in_stack(program)))
    except BaseException as exc:  # noqa: BLE001 - raised below, or inspected by the test
        error = exc
    if error is not None and raise_errors:
        raise error
    from tooling.mock_engine import unwrap

    return Ran(stack, monitor.registrations, unwrap(monitor.outputs), monitor.outputs, [], error,
               value=box.get("value"))


def resolve(value: Any) -> Any:
    """The value of an Output (or a plain value) once run_component has returned."""
    if isinstance(value, pulumi.Output):
        return _sync_await(value.future())
    return value


def is_secret(value: Any) -> bool:
    """Whether an Output carries the secret mark (a plain value never does)."""
    if isinstance(value, pulumi.Output):
        return bool(_sync_await(value.is_secret()))
    return False
