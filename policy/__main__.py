"""The octollm-infra policy pack: each check of checks.py as a policy with a stable ID."""

from collections.abc import Mapping, Sequence

from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy, Secret
from pulumi_policy.proxy import UnknownValueError

from checks import CHECKS, SECRET_NAME, SECRET_SIG, SECRET_VALUE, UNKNOWN, Opts, run_check, secret_env_report

LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY,
          "remediate": EnforcementLevel.REMEDIATE}


def _item(container, key):
    # The props proxy raises on a value that is unknown until apply; the checks get a placeholder,
    # so every other field is still checked on a first preview.
    try:
        return _wire(container[key])
    except UnknownValueError:
        return UNKNOWN


def _wire(v):
    """Policy props (Secret objects in remediation) back to the wire form the checks read."""
    if isinstance(v, Secret):
        return {SECRET_SIG: SECRET_VALUE, "value": _wire(v.value)}
    if isinstance(v, Mapping):
        return {k: _item(v, k) for k in v}
    if isinstance(v, Sequence) and not isinstance(v, (str, bytes)):
        return [_item(v, i) for i in range(len(v))]
    return v


def _validator(check):
    def validate(args, report_violation):
        opts = Opts(protect=bool(args.opts.protect), delete_before_replace=bool(args.opts.delete_before_replace))
        for message in run_check(check, args.resource_type, _wire(args.props), opts, args.name,
                                 args.get_config()):
            report_violation(f"[{check.id}] {message}")
    return validate


def _secret_env_reporter(check):
    def validate(args, report_violation):
        for message in secret_env_report(args.resource_type, _wire(args.props), None, args.get_config()):
            report_violation(f"[{check.id}] {message}")
    return validate


def _remediate_secret_env(args):
    raw = args.props["__target"] if "__target" in args.props else dict(args.props)
    envs = raw.get("envs")
    if not isinstance(envs, list):
        return None
    fixed = [Secret(e) if isinstance(e, str) and SECRET_NAME.search(e.split("=", 1)[0]) else e for e in envs]
    if fixed == envs:
        return None
    return {**raw, "envs": fixed}


policies = []
for c in CHECKS:
    if c.enforcement == "remediate":
        # pulumi-policy 1.21: a remediation is a ResourceValidationPolicy given `remediate`.
        policies.append(ResourceValidationPolicy(name=f"{c.id.lower()}-{c.name}", description=c.description,
                                                 enforcement_level=LEVELS[c.enforcement],
                                                 remediate=_remediate_secret_env))
        # The same check also reports what a validation can see (no secret markers reach it).
        policies.append(ResourceValidationPolicy(name=f"{c.id.lower()}-{c.name}-report", description=c.description,
                                                 enforcement_level=EnforcementLevel.ADVISORY,
                                                 validate=_secret_env_reporter(c)))
    else:
        policies.append(ResourceValidationPolicy(name=f"{c.id.lower()}-{c.name}", description=c.description,
                                                 enforcement_level=LEVELS[c.enforcement], validate=_validator(c)))

PolicyPack(name="octollm-infra", enforcement_level=EnforcementLevel.MANDATORY, policies=policies)
