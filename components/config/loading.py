"""Reading the stack's config once: every `octollm-infra:` key, validated, and the SSH identity files it names."""

from __future__ import annotations

import json
import os
import shlex
from pathlib import Path

import pulumi
from pulumi import runtime

from components.config.schema import ConfigError, Problem, StackConfig, load_stack_config

PROJECT = "octollm-infra"


def read_raw_config(project: str = PROJECT) -> tuple[dict, set[str]]:
    """Every `<project>:<key>` config value, objects decoded from JSON, and which keys are secret.

    The language host hands the program its whole config (PULUMI_CONFIG) and the names of the secret
    keys (PULUMI_CONFIG_SECRET_KEYS); reading all of it, not key by key, lets the schema refuse a
    misspelt key instead of ignoring it.
    """
    merged = runtime.get_config_env()
    secret = set(runtime.get_config_secret_keys_env())
    raw, secret_keys = {}, set()
    for full, value in merged.items():
        ns, _, key = full.partition(":")
        if ns != project or not key:
            continue
        if isinstance(value, str) and value[:1] in "{[":
            try:
                value = json.loads(value)
            except json.JSONDecodeError:
                pass
        raw[key] = value
        if full in secret:
            secret_keys.add(key)
    return raw, secret_keys


def load() -> StackConfig:
    """Validate the stack's config and its SSH identity files, or stop with every problem listed.

    Nothing is registered before this returns, so every refusal comes before the first resource."""
    raw, secret_keys = read_raw_config()
    try:
        cfg, warnings = load_stack_config(raw, secret_keys)
        check_identity_files(cfg)
    except ConfigError as exc:
        raise pulumi.RunError(exc.render()) from None
    require_ssh_agent(cfg)
    for w in warnings:
        pulumi.log.warn(w)
    for name, host in sorted(cfg.hosts.items()):
        if host.ssh and host.ssh.insecure_skip_host_key_check:
            pulumi.log.warn(f"hosts.{name}.ssh.insecureSkipHostKeyCheck is true: the identity of {host.address} "
                            "is not verified, so a machine that answers in its place gets the deployment")
    return cfg


def ssh_hosts(cfg: StackConfig) -> list[str]:
    return sorted(name for name, host in cfg.hosts.items() if host.kind == "ssh")


def identity_files(cfg: StackConfig) -> list[str]:
    """The stack's identity files, expanded, once each in host order: what its ssh-agent must hold."""
    out: list[str] = []
    for name in ssh_hosts(cfg):
        ssh = cfg.hosts[name].ssh
        if ssh is not None and ssh.identity_file:
            path = os.path.expanduser(ssh.identity_file)
            if path not in out:
                out.append(path)
    return out


def require_ssh_agent(cfg: StackConfig) -> None:
    """Remote commands log in through ssh-agent: their inputs hold no key, so a preview made with the
    read-only key and an update made with the write key register the same inputs, and no key is
    written into the state. A preview runs no command, so only an update needs the agent."""
    if runtime.is_dry_run() or not ssh_hosts(cfg) or os.environ.get("SSH_AUTH_SOCK"):
        return
    files = " ".join(shlex.quote(f) for f in identity_files(cfg)) or "<identityFile>"
    raise pulumi.RunError(
        f"the commands on {', '.join(f'hosts.{h}' for h in ssh_hosts(cfg))} log in through ssh-agent, and "
        "SSH_AUTH_SOCK is not set; nothing was changed. Run the update with `make up STACK=<stack>` (it starts "
        f"an agent holding the stack's identity files), or: eval \"$(ssh-agent)\"; ssh-add {files}")


def check_identity_files(cfg: StackConfig) -> None:
    """Each identityFile exists, is a private key and only its owner can read it. ssh reads it (the
    docker provider's `ssh -i`, and ssh-add): the program never puts its content into an input."""
    problems = []
    for name, host in sorted(cfg.hosts.items()):
        if host.kind != "ssh" or host.ssh is None or host.ssh.identity_file is None:
            continue
        path = Path(os.path.expanduser(host.ssh.identity_file))
        key_path = f"hosts.{name}.ssh.identityFile"
        try:
            mode = path.stat().st_mode
            with path.open() as f:
                head = f.read(4096)
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(path=key_path, message=f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"))
            continue
        first = head.lstrip().splitlines()[0] if head.strip() else ""
        if not (first.startswith("-----BEGIN ") and first.endswith("PRIVATE KEY-----")):
            problems.append(Problem(path=key_path, message=(
                f"{path} is not a private key file (it should begin with '-----BEGIN OPENSSH PRIVATE KEY-----'); "
                "give the key whose public half is in the host's authorized_keys")))
        elif mode & 0o077:
            problems.append(Problem(path=key_path, message=(
                f"{path} is readable by other users (mode {mode & 0o777:o}); ssh refuses such a key: chmod 600 {path}")))
    if problems:
        raise ConfigError(problems)
