"""Anomalies and change points in time series (RED signals, metrics): pure functions over bucketed values.

The method, per series (one signal of one service, one value per time bucket):

1. Baseline, the "normal" each bucket is compared with, in this order of preference:
   - **same time yesterday** when the series has values 24 h earlier for at least half of the range: bucket i is
     compared with yesterday's bucket i (a rolling median over 5 buckets, so one odd bucket yesterday does not
     become the norm). Daily peaks are then not anomalies, and a change that does not follow the daily
     pattern is.
   - **preceding window**: the median of the window just before the range, when it has values in at least
     half of its buckets.
   - **range median**: the median over the range itself. Robust while anomalies cover less than half of the
     range; the caller should say so, since a longer incident would look normal.
2. Noise scale: 1.4826 × the median absolute deviation (MAD) from the baseline (equal to the standard
   deviation for Gaussian noise, but not dragged up by the anomalies it must find), floored at 5% of the
   baseline level so a perfectly flat series does not turn every wiggle into an infinite z.
   robust z = (value - baseline) / scale.
3. Spikes and dips: runs of buckets with |robust z| >= 4 that also change by the signal's minimum magnitude
   (absolute and relative: a p95 30% and 20 ms slower, an error rate doubled and 1 point higher with at least
   5 more errors than the baseline predicts) so small absolute changes on low-traffic series do not rank.
4. Level shifts: change points from binary segmentation (below) on the deviations; a segment whose median
   breaks the baseline (|z| >= 3 on the median of >= 3 buckets, and the minimum magnitude) is a level shift
   from its change point when it lasts 5 buckets or more, or reaches the end of the range; a shorter one is a
   spike or dip. Spike runs inside a shift of the same direction are folded into it.
5. Score, to rank anomalies across series: min(|z|, 30) × (1 + log2(ratio)) × sqrt(buckets, at most 30),
   with ratio = max(value/baseline, baseline/value) capped at 100: unusual for the series' noise, large
   relative to normal, and lasting. MAJOR_SCORE (150) separates incident-sized anomalies from noise.

Change points are found by hand-written binary segmentation with the L2 (mean shift) cost over z-scores
winsorized at ±6, in numpy: the cost of a split is O(n) with cumulative sums, so a series takes well under a
millisecond. `ruptures` was tried first: importing it costs ~2 s (it loads scipy.stats), its PELT takes ~0.4 s
per 120-point series and its Binseg ~40 ms, which breaks the tool's 1 s budget over tens of series; the
winsorizing gives the robustness to single outliers its L1 cost would.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt

Floats = npt.NDArray[np.float64]

BASELINE_YESTERDAY = "same time yesterday"
BASELINE_PRECEDING = "preceding window"
BASELINE_RANGE = "range median"

Z_BUCKET = 4.0  # one bucket must be this unusual to count as a spike or dip
Z_SHIFT = 3.0  # a segment's median (of >= 3 buckets, so far less noisy than one bucket) must be this unusual
MIN_SEGMENT = 3  # buckets: shorter segments are left to spike detection
MIN_SHIFT = 5  # buckets: a shorter deviating segment that ends inside the range is a spike, not a shift
SCALE_FLOOR = 0.05  # the noise scale is at least this share of the baseline level
WINSOR = 6.0  # z-scores are clipped here before segmentation, so one outlier cannot make a segment
MIN_POINTS = 5  # a series needs this many buckets with values to be judged at all
MAD_TO_SIGMA = 1.4826
# A score this high is incident-sized: calibrated on the demo incidents, where the injected faults score
# 230-1000 and one hour of normal noise stays under 100 (a 1-minute p95 spike of x100 alone scores ~230).
MAJOR_SCORE = 150.0


@dataclass(frozen=True)
class Rules:
    """How large a change must be, besides unusual for the series' noise, to be reported."""

    min_abs: float  # in the series' unit
    min_ratio: float  # value/baseline (or baseline/value for dips) at least this
    min_events: float = 0.0  # excess events over the anomaly (value - baseline) × events per bucket
    share: bool = False  # values are shares of events (error rate): binomial noise floor, pooled baseline
    dips: bool = True  # report values below the baseline (not for latency: faster is not an incident)


RULES: dict[str, Rules] = {
    "rate": Rules(min_abs=0.1, min_ratio=1.3),  # req/s
    "error_rate": Rules(min_abs=0.01, min_ratio=2.0, min_events=5.0, share=True),  # share of requests
    "p95": Rules(min_abs=20.0, min_ratio=1.3, dips=False),  # ms
}
METRIC_RULES = Rules(min_abs=0.0, min_ratio=1.2)  # unknown unit: relative change only


@dataclass
class Series:
    """One signal of one service, bucketed: `values[i]` covers [start_ns + i·step_ns, + step_ns)."""

    service: str
    signal: str  # rate | error_rate | p95 | a metric name
    unit: str
    start_ns: int
    step_ns: int
    values: Sequence[float | None]
    before: Sequence[float | None] = ()  # the preceding window's buckets, oldest first
    yesterday: Sequence[float | None] | None = None  # aligned with values, 24 h earlier
    events: Sequence[float] | None = None  # requests per bucket (weights for Rules.min_events and shares)
    before_events: Sequence[float] = ()  # the same for the preceding window
    rules: Rules | None = None  # default: RULES[signal], else METRIC_RULES
    # Buckets each value summarizes (a trailing window, for low-traffic p95s): one odd request then moves
    # `window` consecutive values, so anomalies must last longer than that to count.
    window: int = 1

    @property
    def end_ns(self) -> int:
        return self.start_ns + len(self.values) * self.step_ns

    def bucket_start(self, i: int) -> int:
        return self.start_ns + i * self.step_ns


@dataclass
class Baseline:
    kind: str  # BASELINE_YESTERDAY | BASELINE_PRECEDING | BASELINE_RANGE
    level: float  # median of the baseline over the range
    scale: float  # robust noise scale (same unit as the series)


@dataclass
class Anomaly:
    service: str
    signal: str
    unit: str
    kind: str  # spike | dip | level_shift
    start_ns: int
    end_ns: int
    value: float  # the peak (spike/dip) or the segment median (level shift)
    baseline: float  # what the value breaks
    ratio: float | None  # value / baseline (None when the baseline is 0)
    z: float  # robust z
    score: float
    baseline_kind: str
    buckets: int
    ongoing: bool  # still anomalous in the last bucket of the range


@dataclass
class Verdict:
    """What one series' check found (baseline None: too little data to judge)."""

    series: Series
    baseline: Baseline | None
    anomalies: list[Anomaly] = field(default_factory=list)


def detect(series: Series) -> Verdict:
    """Anomalies of one series against its baseline, most significant first."""
    x = _arr(series.values)
    if int(np.count_nonzero(~np.isnan(x))) < MIN_POINTS:
        return Verdict(series, None)
    rules = series.rules or RULES.get(series.signal, METRIC_RULES)
    base, before_dev, kind = _baseline(series, x, rules)
    dev = x - base
    scale = _scale(dev if kind != BASELINE_PRECEDING else before_dev, base)
    baseline = Baseline(kind, float(np.nanmedian(base)), scale)
    noise = np.full(len(x), scale)
    before_noise = np.full(len(before_dev), scale)
    if rules.share and series.events is not None:
        # Binomial noise of a share of n events: sqrt(p(1-p)/n); with 2 errors in 60 requests at a typical
        # 0.5%, one bucket's 3% is noise, not an anomaly, whatever the MAD of mostly-zero buckets says.
        # p: the typical share, at least half the share pooled over the baseline data (a median of rare
        # events can be 0 while 1 in 250 requests fails; halving keeps an incident inside that data from
        # raising the floor by more than half of its own rate).
        if kind == BASELINE_PRECEDING:
            pool_x, pool_e = _arr(series.before), np.asarray(series.before_events, dtype=np.float64)
        else:
            pool_x, pool_e = x, np.asarray(series.events, dtype=np.float64)
        pooled = float(np.nansum(pool_x * pool_e) / pool_e.sum()) if len(pool_e) == len(pool_x) and pool_e.sum() else 0
        floor = 1.0 / max(1.0, _total(series.events) + _total(series.before_events))
        p = max(float(np.nanmedian(base)), pooled / 2, floor)
        noise = np.maximum(noise, _binomial_sd(p, series.events))
        if len(before_noise) == len(series.before_events):
            before_noise = np.maximum(before_noise, _binomial_sd(p, series.before_events))
    z = dev / noise
    with np.errstate(invalid="ignore"):
        big = _magnitude_ok(x, base, rules)
        up = (z >= Z_BUCKET) & big
        down = (z <= -Z_BUCKET) & big & rules.dips
    found: list[Anomaly] = []
    if int(np.count_nonzero((np.abs(np.nan_to_num(z)) >= Z_SHIFT) & big)) >= 2:
        found.extend(_shifts(series, x, base, dev, before_dev, noise, before_noise, rules, kind))
    for direction, flags in ((1, up), (-1, down)):
        for lo, hi in _runs(flags):
            if series.window > 1 and hi - lo <= series.window:
                continue
            idx = lo + int(np.nanargmax(direction * z[lo:hi]))
            a = _anomaly(series, "spike" if direction > 0 else "dip", lo, hi, x[idx], base[idx], z[idx], kind)
            if _events_ok(series, dev, lo, hi, rules) and not _absorbed(a, found, direction):
                found.append(a)
    found.sort(key=lambda a: -a.score)
    return Verdict(series, baseline, found)


def rank(verdicts: Sequence[Verdict]) -> list[Anomaly]:
    """Every anomaly of every series, highest score first (ties: earliest first)."""
    return sorted((a for v in verdicts for a in v.anomalies), key=lambda a: (-a.score, a.start_ns, a.service))


def score(z: float, ratio: float | None, buckets: int) -> float:
    """min(|z|, 30) × (1 + log2(ratio)) × sqrt(min(buckets, 30)); ratio as a factor >= 1, capped at 100."""
    unbounded = ratio is None or ratio <= 0 or not math.isfinite(ratio)
    factor = 100.0 if unbounded or ratio is None else min(max(ratio, 1.0 / ratio), 100.0)
    return round(min(abs(z), 30.0) * (1.0 + math.log2(factor)) * math.sqrt(min(buckets, 30)), 1)


def change_points(z: Floats, min_size: int = MIN_SEGMENT, penalty: float | None = None) -> list[int]:
    """Indices where the mean of z shifts: binary segmentation with the L2 cost.

    A split at k is kept when it lowers the squared error around segment means by more than `penalty`
    (default 4·ln(n), for z-scores of unit noise: BIC-like, and conservative since every segment is
    judged again on its median afterwards). Gains for every k come from cumulative sums in one pass.
    """
    n = len(z)
    pen = 4.0 * math.log(max(n, 2)) if penalty is None else penalty
    cs = np.concatenate(([0.0], np.cumsum(z)))
    found: list[int] = []
    stack = [(0, n)]
    while stack:
        a, b = stack.pop()
        if b - a < 2 * min_size:
            continue
        ks = np.arange(a + min_size, b - min_size + 1)
        left = cs[ks] - cs[a]
        right = cs[b] - cs[ks]
        total = cs[b] - cs[a]
        gain = left * left / (ks - a) + right * right / (b - ks) - total * total / (b - a)
        best = int(np.argmax(gain))
        if gain[best] > pen:
            k = int(ks[best])
            found.append(k)
            stack.extend(((a, k), (k, b)))
    return sorted(found)


# -- internals ------------------------------------------------------------------------------------------


def _arr(values: Sequence[float | None]) -> Floats:
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _coverage(a: Floats) -> float:
    return float(np.count_nonzero(~np.isnan(a))) / len(a) if len(a) else 0.0


def _rolling_median(a: Floats, width: int) -> Floats:
    half = width // 2
    out = np.full(len(a), np.nan)
    for i in range(len(a)):
        window = a[max(0, i - half) : i + half + 1]
        if np.count_nonzero(~np.isnan(window)):
            out[i] = np.nanmedian(window)
    return out


def _baseline(series: Series, x: Floats, rules: Rules) -> tuple[Floats, Floats, str]:
    """(baseline per bucket, deviations of the preceding window from it, kind)."""
    if series.yesterday is not None and len(series.yesterday) == len(x):
        y = _arr(series.yesterday)
        if _coverage(y) >= 0.5:
            smooth = _rolling_median(y, 5)
            # A bucket without a value yesterday is compared with yesterday's overall median.
            smooth[np.isnan(smooth)] = np.nanmedian(smooth)
            return smooth, np.array([], dtype=np.float64), BASELINE_YESTERDAY
    before = _arr(series.before)
    if len(before) >= MIN_POINTS and _coverage(before) >= 0.5:
        level = _level(before, series.before_events, rules)
        return np.full(len(x), level), before - level, BASELINE_PRECEDING
    return np.full(len(x), _level(x, series.events or (), rules)), np.array([], dtype=np.float64), BASELINE_RANGE


def _level(x: Floats, events: Sequence[float], rules: Rules) -> float:
    """The typical value: the median; for shares, the median of shares pooled over blocks of buckets holding
    ~1000 events, since the median bucket of a rare event (0 errors) says "never" when it is "1 in 300"."""
    if not rules.share or len(events) != len(x):
        return float(np.nanmedian(x))
    e = np.asarray(events, dtype=np.float64)
    hits = np.nan_to_num(x) * e
    busy = e[e > 0]
    if not len(busy):
        return float(np.nanmedian(x))
    k = int(min(max(1, math.ceil(1000 / float(np.median(busy)))), max(1, len(x) // MIN_POINTS)))
    shares = [float(hits[i : i + k].sum() / e[i : i + k].sum()) for i in range(0, len(x), k) if e[i : i + k].sum() > 0]
    return float(np.median(shares)) if shares else float(np.nanmedian(x))


def _total(events: Sequence[float] | None) -> float:
    return float(np.nansum(np.asarray(events, dtype=np.float64))) if events is not None and len(events) else 0.0


def _binomial_sd(p: float, events: Sequence[float]) -> Floats:
    n = np.maximum(np.asarray(events, dtype=np.float64), 1.0)
    sd: Floats = np.sqrt(p * (1.0 - p) / n)
    return sd


def _scale(dev: Floats, base: Floats) -> float:
    d = dev[~np.isnan(dev)]
    mad = float(np.median(np.abs(d - np.median(d)))) * MAD_TO_SIGMA if len(d) else 0.0
    level = float(np.nanmedian(np.abs(base))) if len(base) else 0.0
    return max(mad, SCALE_FLOOR * level, 1e-9)


def _ratio(value: float, base: float) -> float | None:
    if base == 0 or math.isnan(base) or math.isnan(value):
        return None
    return float(value) / float(base)


def _magnitude_ok(x: Floats, base: Floats, rules: Rules) -> npt.NDArray[np.bool_]:
    """Per bucket: the change is at least min_abs and the ratio at least min_ratio (either direction)."""
    diff = np.abs(x - base)
    hi = np.maximum(np.abs(x), np.abs(base))
    lo = np.minimum(np.abs(x), np.abs(base))
    same_sign = np.sign(x) == np.sign(base)
    # lo == 0 (from or to zero) or a sign change is an unbounded ratio.
    factor = np.where(same_sign & (lo > 0), hi / np.where(lo > 0, lo, 1.0), np.inf)
    ok: npt.NDArray[np.bool_] = (diff >= rules.min_abs) & (factor >= rules.min_ratio) & ~np.isnan(x)
    return ok


def _events_ok(series: Series, dev: Floats, lo: int, hi: int, rules: Rules) -> bool:
    if rules.min_events <= 0 or series.events is None:
        return True
    w = np.asarray(series.events[lo:hi], dtype=np.float64)
    excess = float(np.nansum(np.abs(dev[lo:hi]) * w))
    return excess >= rules.min_events


def _runs(flags: npt.NDArray[np.bool_], gap: int = 1) -> list[tuple[int, int]]:
    """[lo, hi) index runs of True, bridging gaps of up to `gap` buckets (noise dipping under the threshold)."""
    runs: list[tuple[int, int]] = []
    for i in np.flatnonzero(flags):
        j = int(i)
        if runs and j - runs[-1][1] <= gap:
            runs[-1] = (runs[-1][0], j + 1)
        else:
            runs.append((j, j + 1))
    return runs


def _anomaly(
    series: Series, kind: str, lo: int, hi: int, value: float, base: float, z: float, baseline_kind: str
) -> Anomaly:
    ratio = _ratio(value, base)
    return Anomaly(
        service=series.service,
        signal=series.signal,
        unit=series.unit,
        kind=kind,
        start_ns=series.bucket_start(lo),
        end_ns=series.bucket_start(hi),
        value=float(value),
        baseline=float(base),
        ratio=None if ratio is None else round(ratio, 3),
        z=round(float(z), 1),
        score=score(float(z), ratio if ratio is None or ratio > 0 else None, hi - lo),
        baseline_kind=baseline_kind,
        buckets=hi - lo,
        ongoing=hi >= len(series.values),
    )


def _shifts(
    series: Series,
    x: Floats,
    base: Floats,
    dev: Floats,
    before_dev: Floats,
    noise: Floats,
    before_noise: Floats,
    rules: Rules,
    baseline_kind: str,
) -> list[Anomaly]:
    """Segments between change points whose median breaks the baseline, adjacent ones of one direction merged."""
    # The preceding window joins the segmentation, so a shift right at the range start has a "before".
    seq = np.concatenate((before_dev / before_noise, dev / noise))
    offset = len(before_dev)
    keep = np.flatnonzero(~np.isnan(seq))
    if len(keep) < 2 * MIN_SEGMENT:
        return []
    cps = change_points(np.clip(seq[keep], -WINSOR, WINSOR))
    bounds = [0, *cps, len(keep)]
    segments: list[tuple[int, int, int]] = []  # (lo, hi) range indices, direction
    for a, b in itertools.pairwise(bounds):
        idx = keep[a:b] - offset
        idx = idx[idx >= 0]
        if len(idx) < max(MIN_SEGMENT, series.window + 1 if series.window > 1 else 0):
            continue
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        med_dev = float(np.nanmedian(dev[lo:hi]))
        value = float(np.nanmedian(x[lo:hi]))
        ref = float(np.nanmedian(base[lo:hi]))
        ok = bool(_magnitude_ok(np.array([value]), np.array([ref]), rules)[0])
        direction = 1 if med_dev > 0 else -1
        if direction < 0 and not rules.dips:
            continue
        if (
            abs(med_dev) / float(np.nanmedian(noise[lo:hi])) >= Z_SHIFT
            and ok
            and _events_ok(series, dev, lo, hi, rules)
        ):
            if segments and segments[-1][2] == direction and segments[-1][1] >= lo - 1:
                segments[-1] = (segments[-1][0], hi, direction)
            else:
                segments.append((lo, hi, direction))
    out: list[Anomaly] = []
    for lo, hi, direction in segments:
        value = float(np.nanmedian(x[lo:hi]))
        ref = float(np.nanmedian(base[lo:hi]))
        z = (value - ref) / float(np.nanmedian(noise[lo:hi]))
        if hi - lo >= max(MIN_SHIFT, series.window + 1) or hi >= len(x):
            kind = "level_shift"
        else:
            kind = "spike" if direction > 0 else "dip"
            peak = lo + int(np.nanargmax(direction * dev[lo:hi] / noise[lo:hi]))
            value, ref, z = float(x[peak]), float(base[peak]), float(dev[peak] / noise[peak])
        out.append(_anomaly(series, kind, lo, hi, value, ref, z, baseline_kind))
    return out


def _absorbed(a: Anomaly, found: list[Anomaly], direction: int) -> bool:
    """A spike run overlapping a shift or segment of the same direction is part of it: extend that one's span."""
    for other in found:
        same = (other.value >= other.baseline) == (direction > 0)
        if same and a.start_ns < other.end_ns and other.start_ns < a.end_ns:
            step = (a.end_ns - a.start_ns) // a.buckets
            other.start_ns = min(other.start_ns, a.start_ns)
            other.end_ns = max(other.end_ns, a.end_ns)
            other.buckets = (other.end_ns - other.start_ns) // step
            if abs(a.z) > abs(other.z) and other.kind != "level_shift":
                other.value, other.baseline, other.z, other.ratio = a.value, a.baseline, a.z, a.ratio
            other.ongoing = other.ongoing or a.ongoing
            other.score = score(other.z, other.ratio, other.buckets)
            return True
    return False
