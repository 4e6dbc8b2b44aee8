"""Inline SVG charts for the analyst console, drawn on the server (no JavaScript chart library).

Each function returns markup for ``{{ svg | safe }}``; every text it embeds is escaped here.
"""

from __future__ import annotations

import datetime as dt
import math
from html import escape

PALETTE = ["#2563eb", "#dc2626", "#16a34a", "#9333ea", "#ea580c", "#0891b2", "#ca8a04", "#db2777"]


def _num(value: float) -> str:
    return f"{value:.1f}"


def timeline(events: list[dict], threshold: float | None = None, width: int = 860, height: int = 260) -> str:
    """Event scores over time: one dot per event (``ts``, ``ensemble_score``), coloured by service."""
    if not events:
        return '<p class="muted">No events to draw.</p>'
    left, right, top, bottom = 48, 16, 14, 40
    plot_w, plot_h = width - left - right, height - top - bottom
    start = min(e["ts"] for e in events)
    end = max(e["ts"] for e in events)
    span = max((end - start).total_seconds(), 1.0)
    services = sorted({e["source_service"] or "?" for e in events})
    colour = {s: PALETTE[i % len(PALETTE)] for i, s in enumerate(services)}

    def x(ts: dt.datetime) -> float:
        return left + (ts - start).total_seconds() / span * plot_w

    def y(score: float) -> float:
        return top + (1 - max(0.0, min(1.0, score))) * plot_h

    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="event scores over time">',
        f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="#f8fafc" stroke="#cbd5e1"/>',
    ]
    for tick in (0, 0.25, 0.5, 0.75, 1.0):
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_num(y(tick))}" y2="{_num(y(tick))}" stroke="#e2e8f0"/>'
            f'<text x="{left - 6}" y="{_num(y(tick) + 4)}" text-anchor="end" class="tick">{tick:g}</text>'
        )
    for i in range(5):
        ts = start + dt.timedelta(seconds=span * i / 4)
        parts.append(
            f'<text x="{_num(x(ts))}" y="{height - bottom + 16}" text-anchor="middle" class="tick">'
            f"{ts:%H:%M:%S}</text>"
        )
    if threshold is not None:
        parts.append(
            f'<line x1="{left}" x2="{left + plot_w}" y1="{_num(y(threshold))}" y2="{_num(y(threshold))}" '
            f'stroke="#dc2626" stroke-dasharray="4 3"/><text x="{left + plot_w - 4}" y="{_num(y(threshold) - 4)}" '
            f'text-anchor="end" class="tick">flag threshold {threshold:g}</text>'
        )
    for e in events:
        service = e["source_service"] or "?"
        parts.append(
            f'<circle cx="{_num(x(e["ts"]))}" cy="{_num(y(float(e["ensemble_score"])))}" r="3.5" '
            f'fill="{colour[service]}" fill-opacity="0.75"><title>{escape(str(e["event_id"]))} '
            f"{e['ts']:%H:%M:%S} {escape(service)} score {float(e['ensemble_score']):.3f}</title></circle>"
        )
    parts.append(
        f'<text x="{left}" y="{height - 6}" class="tick">{start:%Y-%m-%d} UTC · ensemble score (0..1)</text>'
    )
    legend_x = left + 230
    for s in services:
        parts.append(
            f'<circle cx="{legend_x}" cy="{height - 10}" r="4" fill="{colour[s]}"/>'
            f'<text x="{legend_x + 8}" y="{height - 6}" class="tick">{escape(s)}</text>'
        )
        legend_x += 16 + 7 * len(s)
    parts.append("</svg>")
    return "".join(parts)


def deviation_bars(features: list[dict], width: int = 640) -> str:
    """Top features as horizontal bars of their deviation from normal (IQRs; signed, centred on 0)."""
    if not features:
        return '<p class="muted">No contributing features recorded.</p>'
    row, label_w, value_w = 26, 220, 70
    height = row * len(features) + 24
    plot_w = width - label_w - value_w
    values = [float(f.get("deviation") or 0.0) for f in features]
    scale = max(max(abs(v) for v in values), 1e-9)
    mid = label_w + plot_w / 2
    parts = [
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
        f'aria-label="deviation from normal of the top features">',
        f'<line x1="{_num(mid)}" x2="{_num(mid)}" y1="0" y2="{height - 20}" stroke="#94a3b8"/>',
    ]
    for i, (feature, value) in enumerate(zip(features, values, strict=True)):
        y0 = i * row + 4
        length = abs(value) / scale * (plot_w / 2 - 4)
        x0 = mid if value >= 0 else mid - length
        fill = "#dc2626" if value >= 0 else "#2563eb"
        name = escape(str(feature.get("feature")))
        parts.append(
            f'<text x="{label_w - 8}" y="{y0 + 15}" text-anchor="end" class="label">{name}</text>'
            f'<rect x="{_num(x0)}" y="{y0 + 3}" width="{_num(max(length, 1))}" height="{row - 10}" '
            f'fill="{fill}"><title>{name}: {value:+.2f}</title></rect>'
            f'<text x="{width - 4}" y="{y0 + 15}" text-anchor="end" class="label">{value:+.2f}</text>'
        )
    parts.append(
        f'<text x="{_num(mid)}" y="{height - 4}" text-anchor="middle" class="tick">'
        "deviation from the training normal (IQRs): right = above normal, left = below</text></svg>"
    )
    return "".join(parts)


def operating_points(
    points: dict[str, tuple[float, float]],
    curves: dict[str, list[tuple[float, float]]] | None = None,
    size: int = 320,
) -> str:
    """Each model's (recall, precision) at its deployed threshold on a precision-recall plane, over its
    precision-recall curve (``curves``: model -> [(recall, precision)]) when there is one."""
    curves = curves or {}
    usable = {name: (r, p) for name, (r, p) in points.items() if not (math.isnan(r) or math.isnan(p))}
    if not usable:
        return '<p class="muted">No precision and recall in the snapshot to draw.</p>'
    pad = 40
    plot = size - 2 * pad
    parts = [
        f'<svg class="chart" viewBox="0 0 {size + 170} {size}" width="{size + 170}" height="{size}" role="img" '
        'aria-label="precision and recall of each model at its threshold">',
        f'<rect x="{pad}" y="{pad // 2}" width="{plot}" height="{plot}" fill="#f8fafc" stroke="#cbd5e1"/>',
        f'<text x="{pad + plot / 2}" y="{size - 6}" text-anchor="middle" class="tick">recall</text>',
        f'<text x="12" y="{pad // 2 + plot / 2}" class="tick" transform="rotate(-90 12 {pad // 2 + plot / 2})" '
        'text-anchor="middle">precision</text>',
    ]
    for tick in (0, 0.5, 1):
        parts.append(
            f'<text x="{pad + tick * plot}" y="{pad // 2 + plot + 14}" text-anchor="middle" class="tick">{tick:g}</text>'
            f'<text x="{pad - 4}" y="{pad // 2 + (1 - tick) * plot + 4}" text-anchor="end" class="tick">{tick:g}</text>'
        )
    for i, (name, (recall, precision)) in enumerate(sorted(usable.items())):
        colour = PALETTE[i % len(PALETTE)]
        if curves.get(name):
            line = " ".join(
                f"{_num(pad + r * plot)},{_num(pad // 2 + (1 - p) * plot)}" for r, p in curves[name]
            )
            parts.append(
                f'<polyline class="pr-curve" points="{line}" fill="none" stroke="{colour}" stroke-width="1.5"/>'
            )
        cx, cy = pad + recall * plot, pad // 2 + (1 - precision) * plot
        parts.append(
            f'<circle cx="{_num(cx)}" cy="{_num(cy)}" r="6" fill="{colour}"><title>{escape(name)}: '
            f"precision {precision:.3f}, recall {recall:.3f}</title></circle>"
            f'<circle cx="{size + 4}" cy="{pad + 18 * i}" r="5" fill="{colour}"/>'
            f'<text x="{size + 14}" y="{pad + 18 * i + 4}" class="label">{escape(name)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)
