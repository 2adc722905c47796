"""restore: put one service of a stack back as it was in one backup, on its host, over SSH.

    python -m tooling.restore -s unraid --list
    python -m tooling.restore -s unraid --service postgres --backup 20250101T033000Z
    python -m tooling.restore -s unraid --service redis --backup latest --yes

The backup's sha256 sums are checked first; nothing is touched when they do not match. Then:
PostgreSQL: the other sessions are ended and `pg_restore --clean --if-exists --single-transaction`
runs into the database (the server must run for that). Redis (redis, and the workers' worker-redis, by the
same steps): the container is stopped, the RDB is
put in place (also as the base of its AOF, which Redis 7 loads instead of the RDB), the container is
started. Grafana: stopped, grafana.db swapped, started. Qdrant: each collection is recovered from its
uploaded snapshot while the server runs. What a restore replaces on disk is moved to
<data>/before-restore-<time>/, never deleted. Every step is printed.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from components import host_scripts as scripts
from components.config.schema import BACKUP_SERVICES, ConfigError
from .backup import KUBERNETES_REFUSED, load_config, run_script, spec_for


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tooling.restore", description=__doc__.split("\n\n")[0])
    ap.add_argument("-s", "--stack", required=True)
    ap.add_argument("--file", type=Path, default=None, help="a Pulumi.<stack>.yaml (default: from -s)")
    ap.add_argument("--list", action="store_true", help="list the stack's backups")
    ap.add_argument("--service", choices=BACKUP_SERVICES)
    ap.add_argument("--backup", metavar="ID", help="a backup id (as --list shows it), or latest")
    ap.add_argument("--yes", action="store_true", help="do not ask before restoring")
    ap.add_argument("--timeout", type=int, default=3600)
    a = ap.parse_args(argv)
    if not a.list and not (a.service and a.backup):
        ap.error("give --list, or --service and --backup")
    try:
        cfg = load_config(a.stack, a.file)
    except (ConfigError, OSError) as exc:
        print(exc.render() if isinstance(exc, ConfigError) else str(exc), file=sys.stderr)
        return 2
    if cfg.platform == "kubernetes":
        print(KUBERNETES_REFUSED.format(stack=a.stack), file=sys.stderr)
        return 2
    if cfg.backups is None:
        print(f"stack {a.stack!r} has no backups: configuration", file=sys.stderr)
        return 2
    spec = spec_for(cfg, a.stack)
    if a.list:
        rc, _ = run_script(cfg, scripts.backup_list(spec), {}, a.timeout)
        return rc
    if a.service not in spec.services:
        print(f"{a.service} is not among the services the backups hold ({', '.join(spec.services)})", file=sys.stderr)
        return 2
    if not a.yes:
        if not sys.stdin.isatty():
            print("restoring replaces the service's current data (it is moved aside, not deleted): "
                  "confirm with --yes", file=sys.stderr)
            return 2
        answer = input(f"Restore {a.service} of {a.stack} on {cfg.backups.host} from backup {a.backup}? [y/N] ")
        if answer.strip().lower() != "y":
            return 1
    print(f"restoring {a.service} of stack {a.stack} on {cfg.backups.host} from backup {a.backup}")
    rc, _ = run_script(cfg, scripts.restore(spec, a.service, a.backup), {}, a.timeout)
    if rc != 0:
        print(f"the restore of {a.service} failed (status {rc})", file=sys.stderr)
    return rc


if __name__ == "__main__":
    sys.exit(main())
