"""Reading the stack's config once: every `octollm-infra:` key, validated, plus the SSH keys it names."""

from __future__ import annotations

import json
import os
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


def load() -> tuple[StackConfig, dict[str, str]]:
    """Validate the stack's config and read the SSH keys it names, or stop with every problem listed."""
    raw, secret_keys = read_raw_config()
    try:
        cfg, warnings = load_stack_config(raw, secret_keys)
        keys = read_private_keys(cfg)
    except ConfigError as exc:
        raise pulumi.RunError(exc.render()) from None
    for w in warnings:
        pulumi.log.warn(w)
    for name, host in sorted(cfg.hosts.items()):
        if host.ssh and host.ssh.insecure_skip_host_key_check:
            pulumi.log.warn(f"hosts.{name}.ssh.insecureSkipHostKeyCheck is true: the identity of {host.address} "
                            "is not verified, so a machine that answers in its place gets the deployment")
    return cfg, keys


def read_private_keys(cfg: StackConfig) -> dict[str, str]:
    keys, problems = {}, []
    for name, host in sorted(cfg.hosts.items()):
        if host.kind != "ssh" or host.ssh is None or host.ssh.identity_file is None:
            continue
        path = Path(os.path.expanduser(host.ssh.identity_file))
        key_path = f"hosts.{name}.ssh.identityFile"
        try:
            mode = path.stat().st_mode
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(Problem(path=key_path, message=f"cannot read {path}: {getattr(exc, 'strerror', None) or exc}"))
            continue
        # Its content becomes the private key of every command on the host: only a private key file
        # will do, and ssh itself refuses one that others can read.
        first = text.lstrip().splitlines()[0] if text.strip() else ""
        if not (first.startswith("-----BEGIN ") and first.endswith("PRIVATE KEY-----")):
            problems.append(Problem(path=key_path, message=(
                f"{path} is not a private key file (it should begin with '-----BEGIN OPENSSH PRIVATE KEY-----'); "
                "give the key whose public half is in the host's authorized_keys")))
        elif mode & 0o077:
            problems.append(Problem(path=key_path, message=(
                f"{path} is readable by other users (mode {mode & 0o777:o}); ssh refuses such a key: chmod 600 {path}")))
        else:
            keys[name] = text
    if problems:
        raise ConfigError(problems)
    return keys
