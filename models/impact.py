"""Business impact and recommended actions of an alert: documented rules over service context.

These are not models: they turn what the models said (category, severity, forecast, cluster) and
what Redis knows of the service (owner, criticality, revenue and users per minute) into figures
and next steps a person on call can act on. The rules are plain so that they can be audited.
"""

from __future__ import annotations

from typing import Any

SEVERITY_WEIGHT = {"critical": 1.0, "high": 0.6, "medium": 0.3, "low": 0.1}
# How much of a service's revenue and users an incident of each category puts at risk.
CATEGORY_REVENUE = {"errors": 1.0, "traffic": 0.8, "latency": 0.4, "saturation": 0.3, "peer_drift": 0.15}
CATEGORY_UX = {"errors": 1.0, "latency": 0.8, "traffic": 0.6, "saturation": 0.3, "peer_drift": 0.2}
DEFAULT_CONTEXT: dict[str, Any] = {
    "owner": None,
    "criticality": 0.5,
    "revenue_per_min": 0.0,
    "users": 0,
    "description": "",
}


def _level(x: float) -> str:
    return "high" if x >= 0.5 else ("medium" if x >= 0.15 else "low")


def business_impact(
    category: str, severity: str, ctx: dict[str, Any], affected_fraction: float
) -> dict[str, Any]:
    """Revenue at risk per minute, users affected, and a level per impact dimension.

    ``affected_fraction`` is the share of the service's entities involved (1.0 service-wide).
    """
    sev = SEVERITY_WEIGHT.get(severity, 0.1)
    frac = min(max(affected_fraction, 0.0), 1.0)
    crit = float(ctx.get("criticality", 0.5))
    rev = float(ctx.get("revenue_per_min", 0.0)) * frac * sev * CATEGORY_REVENUE.get(category, 0.3)
    users = int(round(float(ctx.get("users", 0)) * frac * CATEGORY_UX.get(category, 0.3) * sev))
    ux = CATEGORY_UX.get(category, 0.3) * sev * (0.5 + 0.5 * crit)
    operational = (1.0 if category in ("saturation", "peer_drift") else 0.5) * sev
    desc = str(ctx.get("description", "")).lower()
    security = sev * (0.8 if category == "errors" and any(w in desc for w in ("auth", "payment", "billing")) else 0.05)
    return {
        "revenue_per_min_at_risk": round(rev, 2),
        "users_affected": users,
        "revenue": _level(rev / max(float(ctx.get("revenue_per_min", 0.0)), 1e-9) if rev else 0.0),
        "user_experience": _level(ux),
        "operational": _level(operational),
        "security": _level(security),
        "score": round(min(1.0, 0.4 * crit + 0.3 * sev + 0.3 * frac), 3),
    }


def recommended_actions(
    category: str, metric: str, service: str, entity: str | None, trigger: str, time_to_breach_s: float | None,
    limit: float | None, related: int,
) -> list[str]:
    """Concrete next steps, most useful first."""
    where = f"{service}/{entity}" if entity else service
    acts: list[str] = []
    if trigger == "forecast" and time_to_breach_s is not None:
        hours = time_to_breach_s / 3600.0
        acts.append(f"{metric} of {where} is forecast to reach {limit:g} in {hours:.1f} h: act before then.")
    if category == "saturation":
        if metric.startswith("memory"):
            acts += [f"Compare heap/RSS growth of {where} since its last deploy; a steady climb means a leak.",
                     f"Schedule a rolling restart of {where} as a stopgap and capture a heap dump first."]
        elif metric.startswith("disk"):
            acts += [f"Find what fills the disk on {where} (logs, caches); rotate or expand the volume."]
        else:
            acts += [f"Check load balance and autoscaling of {service}; add capacity if demand is real."]
    elif category == "errors":
        acts += [f"Check {service}'s recent deploys and feature flags; roll back if the errors began with one.",
                 f"Inspect the error logs of {where} and its downstream dependencies."]
    elif category == "latency":
        acts += [f"Look at slow traces of {where}: downstream calls, GC pauses, lock contention.",
                 f"Check whether {where} is hot compared with its peers (load balancing)."]
    elif category == "traffic":
        acts += [f"Confirm whether the traffic change on {service} is real demand, a client retry storm or a "
                 "routing fault upstream."]
    elif category == "peer_drift":
        acts += [f"{where} behaves unlike its peers: compare its config, version and host with theirs.",
                 f"Drain {where} from the load balancer if it keeps diverging."]
    if related > 2:
        acts.append(f"{related} related series move together: treat it as one {service}-wide incident.")
    return acts or [f"Review {metric} of {where} on its dashboard."]
