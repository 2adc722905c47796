"""The octollm-infra policy pack: each check of checks.py as a policy with a stable ID."""

from pulumi_policy import EnforcementLevel, PolicyPack, ResourceValidationPolicy, Secret

from checks import CHECKS, SECRET_NAME, SECRET_SIG, SECRET_VALUE, Opts, run_check

LEVELS = {"mandatory": EnforcementLevel.MANDATORY, "advisory": EnforcementLevel.ADVISORY,
          "remediate": EnforcementLevel.REMEDIATE}


def _wire(v):
    """Policy props (Secret objects in remediation) back to the wire form the checks read."""
    if isinstance(v, Secret):
        return {SECRET_SIG: SECRET_VALUE, "value": _wire(v.value)}
    if isinstance(v, dict):
        return {k: _wire(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_wire(x) for x in v]
    return v


def _validator(check):
    def validate(args, report_violation):
        opts = Opts(protect=bool(args.opts.protect), delete_before_replace=bool(args.opts.delete_before_replace))
        for message in run_check(check, args.resource_type, _wire(dict(args.props)), opts, args.name,
                                 args.get_config()):
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
        # The same check also reports, so a preview shows what it would remediate.
        policies.append(ResourceValidationPolicy(name=f"{c.id.lower()}-{c.name}-report", description=c.description,
                                                 enforcement_level=EnforcementLevel.ADVISORY,
                                                 validate=_validator(c)))
    else:
        policies.append(ResourceValidationPolicy(name=f"{c.id.lower()}-{c.name}", description=c.description,
                                                 enforcement_level=LEVELS[c.enforcement], validate=_validator(c)))

PolicyPack(name="octollm-infra", enforcement_level=EnforcementLevel.MANDATORY, policies=policies)
