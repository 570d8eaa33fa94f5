"""Business rules: peak hours, deployment windows and maintenance windows, judged in event time.

- **Peak hours** (``rules.peak_hours``, per service or for all, hours of weekdays in a time zone)
  make a series' bar more sensitive: the margin between the series' usual score ``u`` (the running
  mean its adaptive threshold keeps) and its bar ``t`` is divided by the ``sensitivity``, so the bar
  becomes ``u + (t - u) / sensitivity``: 2.0 halves the margin, 0.5 doubles it.
- **Deployment windows** (a ``deploy`` event on the events topic, or ``deploy_until`` in the
  service's Redis hash) divide it by ``rules.deploy_sensitivity`` the same way, and mark the
  service's alerts ``deploying``.
- **Maintenance windows** (``rules.maintenance``, recurring; a ``maintenance`` event; or
  ``maintenance_until`` in Redis) suppress the service's alerts; the alert says by which window.

Sensitivities of several rules multiply. Windows are judged by the sample's event time, so a
replay gives the same outputs. A rule shows in an alert's ``explanation.rules`` when it applied to
the sample, with ``changed_outcome`` true when the alert would not be what it is without it (raised
only because the bar was lowered, suppressed only because of maintenance).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from models.config import DAYS, RulesConfig, WeeklyHours

DEPLOY, MAINTENANCE = "deploy", "maintenance"


class Window(NamedTuple):
    """A window of one kind over ``[start_ms, end_ms)`` of event time; ``source`` says who opened it."""

    kind: str
    start_ms: int
    end_ms: int
    reason: str
    source: str  # "events" (the events topic), "redis" or "config"


class Effects(NamedTuple):
    """What the rules do to one sample of one service."""

    sensitivity: float  # divides the bar's margin over the series' usual score (1.0: unchanged)
    peak: float | None  # the peak-hours sensitivity, when the sample falls in peak hours
    deploy: Window | None
    maintenance: Window | None

    def notes(self) -> list[tuple[str, str]]:
        """``(rule, effect)`` of every rule that applied, in a fixed order."""
        out = []
        if self.peak is not None:
            out.append(("peak_hours", f"bar's margin /{self.peak:g} in peak hours"))
        if self.deploy is not None:
            out.append(("deploy", f"deploying until {_iso(self.deploy.end_ms)} ({self.deploy.source}); "
                                  f"bar's margin /{self.sensitivity / (self.peak or 1.0):g}"))
        if self.maintenance is not None:
            why = f": {self.maintenance.reason}" if self.maintenance.reason else ""
            out.append(("maintenance", f"suppressed by maintenance until {_iso(self.maintenance.end_ms)} "
                                       f"({self.maintenance.source}){why}"))
        return out


NONE = Effects(1.0, None, None, None)


def lowered(threshold: float, sensitivity: float, usual: float) -> float:
    """The bar ``threshold`` with its margin over the series' ``usual`` score divided by ``sensitivity``
    (within [0, 1]; a bar at or below the usual score stays)."""
    if threshold <= usual:
        return threshold
    return min(max(usual + (threshold - usual) / sensitivity, 0.0), 1.0)


class Rules:
    """Judges the configured rules and a service's open windows for one sample."""

    def __init__(self, cfg: RulesConfig) -> None:
        self.cfg = cfg
        self._zones = {w.timezone: ZoneInfo(w.timezone) for w in (*cfg.peak_hours, *cfg.maintenance)}
        self._local: dict[tuple[str, int], tuple[int, int]] = {}  # (zone, minute) -> (weekday, hour)

    def _covers(self, w: WeeklyHours, service: str, ts_ms: int) -> bool:
        if w.services and service not in w.services:
            return False
        day, hour = self._day_hour(w.timezone, ts_ms)
        start, end = w.hours
        if start < end:
            return start <= hour < end and DAYS[day] in w.days
        # wraps past midnight: the late part on a chosen day, the early part on the day after one
        return (hour >= start and DAYS[day] in w.days) or (hour < end and DAYS[(day - 1) % 7] in w.days)

    def _day_hour(self, zone: str, ts_ms: int) -> tuple[int, int]:
        key = (zone, ts_ms // 60_000)
        got = self._local.get(key)
        if got is None:
            if len(self._local) > 4096:
                self._local.clear()
            t = datetime.fromtimestamp(ts_ms / 1000, tz=self._zones[zone])
            got = self._local[key] = (t.weekday(), t.hour)
        return got

    def _run_end(self, w: WeeklyHours, service: str, ts_ms: int) -> int:
        """When the run of ``w``'s hours that holds ``ts_ms`` ends (the first local hour it does not cover)."""
        t = datetime.fromtimestamp(ts_ms / 1000, tz=self._zones[w.timezone])
        hour_ms = ts_ms - ((t.minute * 60 + t.second) * 1000 + t.microsecond // 1000)
        for k in range(1, 8 * 24 + 1):
            if not self._covers(w, service, hour_ms + k * 3_600_000):
                return hour_ms + k * 3_600_000
        return hour_ms + 8 * 24 * 3_600_000  # every hour of the week: a window that never ends

    def effects(self, service: str, ts_ms: int, windows: list[Window], ctx: dict[str, Any] | None) -> Effects:
        """The rules that apply to a sample of ``service`` at ``ts_ms``, given the service's open
        ``windows`` (from the events topic) and its Redis context ``ctx``."""
        cfg = self.cfg
        if not (cfg.peak_hours or cfg.maintenance or windows or (ctx and _HAS_WINDOW_FIELDS & ctx.keys())):
            return NONE
        peak = None
        for w in cfg.peak_hours:
            if self._covers(w, service, ts_ms):
                peak = w.sensitivity if peak is None else peak * w.sensitivity
        deploy = maintenance = None
        for win in [*windows, *_redis_windows(ctx)]:
            if win.start_ms <= ts_ms < win.end_ms:
                if win.kind == DEPLOY:
                    deploy = deploy or win
                else:
                    maintenance = maintenance or win
        if maintenance is None:
            for m in cfg.maintenance:
                if self._covers(m, service, ts_ms):
                    maintenance = Window(MAINTENANCE, ts_ms, self._run_end(m, service, ts_ms), m.reason, "config")
                    break
        sens = (peak or 1.0) * (cfg.deploy_sensitivity if deploy is not None else 1.0)
        if peak is None and deploy is None and maintenance is None:
            return NONE
        return Effects(sens, peak, deploy, maintenance)


def fold_window(windows: list[Window], kind: str, start_ms: int, end_ms: int, reason: str, keep: int,
                clock_ms: int) -> list[Window]:
    """The service's windows after an event opens ``[start_ms, end_ms)`` of ``kind`` (an empty one,
    duration 0, closes the open window of that kind at ``start_ms``); ended windows older than the
    shard's clock are dropped first, and only the latest ``keep`` are kept."""
    out = [w for w in windows if w.end_ms > clock_ms]
    if end_ms <= start_ms:
        out = [w._replace(end_ms=start_ms) if w.kind == kind and w.start_ms <= start_ms < w.end_ms else w for w in out]
        out = [w for w in out if w.end_ms > w.start_ms]
    else:
        out.append(Window(kind, start_ms, end_ms, reason, "events"))
    out.sort(key=lambda w: (w.start_ms, w.end_ms))
    return out[-keep:]


_HAS_WINDOW_FIELDS = {"deploy_until", "maintenance_until"}


def _redis_windows(ctx: dict[str, Any] | None) -> list[Window]:
    """Windows in a service's Redis hash: ``<kind>_until`` (epoch seconds or ms, or ISO-8601), with an
    optional ``<kind>_from`` (default: always) and ``maintenance_reason``."""
    if not ctx:
        return []
    out = []
    for kind in (DEPLOY, MAINTENANCE):
        until = _epoch_ms(ctx.get(f"{kind}_until"))
        if until is None:
            continue
        start = _epoch_ms(ctx.get(f"{kind}_from"))
        out.append(Window(kind, 0 if start is None else start, until, str(ctx.get(f"{kind}_reason", "")), "redis"))
    return out


def _epoch_ms(v: Any) -> int | None:
    """Epoch seconds or milliseconds (by magnitude), or an ISO-8601 time with a zone; None if neither."""
    if v is None or v == "":
        return None
    try:
        f = float(v)
        return int(f if abs(f) >= 1e11 else f * 1000)
    except (TypeError, ValueError):
        pass
    try:
        t = datetime.fromisoformat(str(v).replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if t.tzinfo is None else int(t.timestamp() * 1000)


def _iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
