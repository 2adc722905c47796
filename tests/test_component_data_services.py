"""DataServices on a FakePlatform: which services run, where their data lives, how passwords reach them."""

from __future__ import annotations

from components.config.schema import DataServicesConfig, Limits, PostgresConfig, QdrantConfig, RedisConfig
from components.services.data_services import DataServices, DataServicesArgs
from fakes import FakePlatform, host_config, is_secret, resolve, run_component

CFG = DataServicesConfig(
    host="db", network=None,
    postgres=PostgresConfig(port=15432, database="octo_db", user="octo_user", limits=Limits(cpus=3, memory_gb=6)),
    redis=RedisConfig(port=16379, limits=Limits(cpus=1.5, memory_gb=3)),
    qdrant=QdrantConfig(http_port=16333, grpc_port=16334, limits=Limits(cpus=2, memory_gb=5)))


def deploy(platform: FakePlatform, cfg: DataServicesConfig = CFG, name: str = "data", **kw):
    ran = run_component(lambda: DataServices(name, DataServicesArgs(config=cfg, platform=platform, **kw)))
    return ran.value, ran


def test_only_postgres_gets_its_password_applied_after_a_change():
    p = FakePlatform("db")
    deploy(p)
    runs = p.runs()
    pa = runs["postgres"].spec.password_apply
    assert pa is not None and pa.service == "postgres"
    assert (pa.user, pa.database) == (CFG.postgres.user, CFG.postgres.database)
    assert pa.env in runs["postgres"].spec.secret_env  # the key that holds the password
    assert runs["redis"].spec.password_apply is None
    assert runs["qdrant"].spec.password_apply is None


def test_each_service_keeps_its_data_in_its_appdata_directory_made_first():
    p = FakePlatform("db", host_config(appdata_root="/mnt/app", data_owner="1001:1002"))
    deploy(p)
    (dirs,) = p.called("ensure_dirs")
    assert dirs.name == "data-data-dirs"
    assert sorted(dirs.kwargs["paths"]) == ["/mnt/app/postgres", "/mnt/app/qdrant", "/mnt/app/redis"]
    runs = p.runs()
    for svc, target in (("postgres", "/var/lib/postgresql/data"), ("redis", "/data"), ("qdrant", "/qdrant/storage")):
        spec = runs[svc].spec
        assert [(m.target, m.source) for m in spec.mounts] == [(target, f"/mnt/app/{svc}")], svc
        assert dirs.result in runs[svc].depends_on, f"{svc} starts before its directory exists"
        assert spec.stateful is True, svc
        assert spec.user == "1001:1002", svc  # the host's data owner owns the data


def test_a_service_set_to_null_is_not_deployed_and_gets_no_directory():
    p = FakePlatform("db")
    ds, _ = deploy(p, CFG.model_copy(update={"redis": None}))
    assert set(p.runs()) == {"postgres", "qdrant"}
    assert not any(path.endswith("/redis") for path in p.called("ensure_dirs")[0].kwargs["paths"])
    assert ds.redis_password is None and "redis" not in ds.urls


def test_ports_limits_and_urls_come_from_the_config():
    p = FakePlatform("db", host_config(address="10.1.1.1", publish_address="10.1.1.1"))
    ds, _ = deploy(p)
    runs = p.runs()
    assert [(x.container, x.host, x.bind) for x in runs["postgres"].spec.ports] == [(5432, 15432, "10.1.1.1")]
    assert [(x.container, x.host) for x in runs["redis"].spec.ports] == [(6379, 16379)]
    assert [(x.container, x.host) for x in runs["qdrant"].spec.ports] == [(6333, 16333), (6334, 16334)]
    for svc, section in (("postgres", CFG.postgres), ("redis", CFG.redis), ("qdrant", CFG.qdrant)):
        assert (runs[svc].spec.cpus, runs[svc].spec.memory_gb) == (section.limits.cpus, section.limits.memory_gb)
    assert runs["postgres"].spec.env["POSTGRES_DB"] == "octo_db" and runs["postgres"].spec.env["POSTGRES_USER"] == "octo_user"
    assert ds.urls["postgres"] == "postgresql://10.1.1.1:15432/octo_db"
    assert ds.urls["redis"] == "redis://10.1.1.1:16379"
    assert ds.urls["qdrant"] == "http://10.1.1.1:16333/dashboard"


def test_redis_without_a_port_stays_on_its_network():
    p = FakePlatform("db")
    deploy(p, CFG.model_copy(update={"redis": RedisConfig(port=None)}))
    assert p.runs()["redis"].spec.ports == ()


def test_configured_passwords_are_used_secret_and_never_on_a_command_line():
    p = FakePlatform("db")
    ds, ran = deploy(p, postgres_password="pg-pw", redis_password="redis-pw", qdrant_api_key="qd-key")
    runs = p.runs()
    for svc, key, value in (("postgres", "POSTGRES_PASSWORD", "pg-pw"), ("redis", "REDISCLI_AUTH", "redis-pw"),
                            ("qdrant", "QDRANT__SERVICE__API_KEY", "qd-key")):
        spec = runs[svc].spec
        assert key not in spec.env, svc
        assert resolve(spec.secret_env[key]) == value and is_secret(spec.secret_env[key]), svc
        assert not any(value in part for part in spec.command), f"{svc}: the password is on its command line"
    assert not ran.of_type("random:index/randomPassword:RandomPassword")  # nothing generated


def test_missing_passwords_are_generated_once_and_rotate_on_request():
    p = FakePlatform("db")
    ds, ran = deploy(p, rotate={"redis": "2026-01"})
    generated = {r.name: r for r in ran.of_type("random:index/randomPassword:RandomPassword")}
    assert set(generated) == {"data-postgres-password", "data-redis-password", "data-qdrant-api-key"}
    assert generated["data-redis-password"].inputs.get("keepers") == {"rotation": "2026-01"}
    assert not generated["data-postgres-password"].inputs.get("keepers")
    assert all(r.parent == ran.urn_of("data") for r in generated.values())
    assert is_secret(ds.postgres_password)
    assert resolve(p.runs()["postgres"].spec.secret_env["POSTGRES_PASSWORD"]) == resolve(ds.postgres_password)


def test_two_instances_on_one_platform_have_distinct_children():
    p = FakePlatform("db")

    def build():
        return (DataServices("data", DataServicesArgs(config=CFG, platform=p)),
                DataServices("analytics", DataServicesArgs(config=CFG.model_copy(update={"redis": None, "qdrant": None}),
                                                           platform=p)))
    ran = run_component(build)
    names = p.resource_names()
    assert len(names) == len(set(names)), names
    assert {c.name for c in p.called("run")} == {"data-postgres", "data-redis", "data-qdrant", "analytics-postgres"}
    secrets = [r.name for r in ran.of_type("random:index/randomPassword:RandomPassword")]
    assert len(secrets) == len(set(secrets)) and "analytics-postgres-password" in secrets
