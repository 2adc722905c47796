"""SharedModelStore on a FakePlatform: who provisions it, with which owner, and how each host mounts it."""

from __future__ import annotations

import pytest

from components.config.schema import ModelStoreConfig
from components.services.shared_model_store import SharedModelStore, SharedModelStoreArgs
from fakes import FakePlatform, host_config, run_component

NFS = dict(kind="nfs", path="/export/models", client_cidr="10.0.0.0/24", clients=["client"],
           mount_options="nfsvers=4.1,hard,timeo=900")


def make(platform: FakePlatform, cfg: ModelStoreConfig, name: str = "models") -> SharedModelStore:
    return run_component(lambda: SharedModelStore(name, SharedModelStoreArgs(cfg, platform))).value


@pytest.mark.parametrize("extra", [
    {},
    {"kind": "zfs", "dataset": "tank/models", "recordsize": "1M", "compression": "lz4"},
    {"kind": "nfs", "client_cidr": "10.0.0.0/24"},
    {"kind": "pvc", "storage_class": "filestore", "size_gb": 100},
])
def test_the_server_provisions_the_store_once_and_that_is_when_it_is_ready(extra):
    p = FakePlatform("nas", host_config(data_owner="1000:1000"))
    cfg = ModelStoreConfig(host="nas", path="/srv/models", **extra)
    st = make(p, cfg)
    (call,) = p.called("provision_store")
    assert call.name == "models" and call.parent is st
    assert call.kwargs["store"] is cfg
    assert call.kwargs["owner"] == "1000:1000"  # the host's data owner, when the store names none
    assert st.ready is call.result
    assert (st.path, st.kind, st.server_host) == ("/srv/models", cfg.kind, "nas")


def test_a_store_s_own_owner_wins_over_the_host_s():
    p = FakePlatform("nas", host_config(data_owner="1000:1000"))
    make(p, ModelStoreConfig(host="nas", owner="2000:2001"))
    assert p.called("provision_store")[0].kwargs["owner"] == "2000:2001"


@pytest.mark.parametrize("read_only", [False, True])
def test_a_host_path_store_is_a_bind_mount(read_only):
    st = make(FakePlatform("server"), ModelStoreConfig(host="server", path="/srv/models"))
    m = st.mount("server", "/models", read_only)
    assert (m.kind, m.source, m.target, m.read_only, m.nfs) == ("bind", "/srv/models", "/models", read_only, None)


@pytest.mark.parametrize("read_only,mode", [(True, "ro"), (False, "rw")])
def test_an_nfs_store_is_nfs_from_a_client_and_a_bind_mount_on_its_server(read_only, mode):
    server = FakePlatform("nas", host_config(address="192.168.1.20"))
    st = make(server, ModelStoreConfig(host="nas", **NFS))
    remote = st.mount("client", "/models", read_only)
    assert remote.kind == "nfs" and remote.read_only is read_only
    assert remote.nfs.server == "192.168.1.20" and remote.nfs.export == "/export/models"
    assert remote.nfs.options == f"addr=192.168.1.20,{mode},{NFS['mount_options']}"
    assert remote.source == "models-nfs"  # named from the store
    local = st.mount("nas", "/models", read_only)
    assert (local.kind, local.source, local.read_only) == ("bind", "/export/models", read_only)


def test_a_claim_store_is_mounted_by_its_claim_name():
    st = make(FakePlatform("gke"), ModelStoreConfig(host="gke", kind="pvc", storage_class="filestore", size_gb=50),
              name="shared-models")
    m = st.mount("gke", "/models", True)
    assert (m.kind, m.source, m.read_only) == ("claim", "shared-models", True)


def test_two_stores_on_one_platform_are_provisioned_under_their_own_names():
    p = FakePlatform("server")

    def build():
        return (SharedModelStore("models", SharedModelStoreArgs(ModelStoreConfig(host="server"), p)),
                SharedModelStore("scratch", SharedModelStoreArgs(ModelStoreConfig(host="server", path="/tmp/x"), p)))
    a, b = run_component(build).value
    assert [c.name for c in p.called("provision_store")] == ["models", "scratch"]
    assert a.ready is not b.ready
