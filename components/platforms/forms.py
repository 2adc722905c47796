"""Inputs in the form the providers read back.

After create, the docker provider reads each container back from the engine and stores what it
reports; where that text differs from the input, the next `pulumi up` shows a diff, and for a
ForceNew field (`cpus`) a replacement. So every value the program sets is written here in the
provider's own spelling. The README's read-back table lists each field, its upstream source and
the test that proves it.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

NANO = Decimal(10) ** 9


def docker_cpus(cpus: float) -> str:
    """`cpus` as the docker provider stores it from the engine's NanoCPUs.

    The provider prints NanoCPUs / 1e9 with nine decimals; when that text holds exactly nine
    zeros in all it keeps one decimal ("2.0", "0.5"), otherwise it strips trailing zeros. So a
    whole number whose own digits hold a zero loses every decimal ("10.", "20."), and a value such
    as 10.05 is rounded to one decimal ("10.1"): config refuses those (see `cpus_round_trips`).
    """
    nano = (Decimal(str(cpus)) * NANO).to_integral_value(rounding=ROUND_HALF_UP)
    if nano == 0:
        return "0"
    nine = f"{nano / NANO:.9f}"
    if nine.count("0") == 9:
        return f"{(nano / NANO).quantize(Decimal('0.1'), rounding=ROUND_HALF_UP)}"
    return nine.rstrip("0")


def cpus_round_trips(cpus: float) -> bool:
    """Whether the engine, and then the provider, give back exactly this many CPUs."""
    return Decimal(docker_cpus(cpus)) == Decimal(str(cpus))


def go_duration(seconds: int) -> str:
    """Whole seconds as Go's time.Duration.String() prints them: 30s, 1m0s, 10m0s, 1h0m0s."""
    if seconds < 0:
        raise ValueError(f"a duration cannot be negative: {seconds}")
    if seconds == 0:
        return "0s"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def mebibytes(gb: float) -> int:
    """Memory limits in MiB: the provider reads HostConfig.Memory back as bytes / 1024 / 1024."""
    return int(round(gb * 1024))
