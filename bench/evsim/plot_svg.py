#!/usr/bin/env python3
"""Draw zipf_time.sh's CSV as an SVG (python3's standard library only).

    plot_svg.py CSV SVG [--title TEXT] [--subtitle TEXT] [--ref POLICY] [--pool PAGES]

Three panels sharing the time axis, dashed vertical lines where the hot
set moved (the CSV's move column steps up):

  1. the hit ratio of every policy, second by second;
  2. each simulated policy's misses in that second as a ratio of --ref's
     (default evsim:clock): they replayed the same trace, so the ratio is
     the policies' difference, with no run-to-run noise in it;
  3. the engine's s3clock probation target, as a share of the pool
     (--pool pages, default 16384).

CSV columns (header line first): second, policy, hit_ratio, hits, fixes,
lookups_per_s, move, probation. A value is drawn at the middle of its
second.
"""
import argparse
import csv
import math
import sys
from collections import OrderedDict
from xml.sax.saxutils import escape

# policy -> (colour, stroke width, dash pattern or None)
STYLES = {
    "engine:clock": ("#1f77b4", 2.6, None),
    "engine:s3clock": ("#d62728", 2.6, None),
    "evsim:clock": ("#1f77b4", 1.4, "5,3"),
    "evsim:s3clock": ("#d62728", 1.4, "5,3"),
    "evsim:lru": ("#2ca02c", 1.4, None),
    "evsim:2q": ("#9467bd", 1.4, None),
    "evsim:s3fifo": ("#8c564b", 1.6, None),
    "evsim:s3clock-fixed10": ("#ff7f0e", 1.4, None),
    "evsim:s3clock-fixed50": ("#e377c2", 1.4, "2,2"),
}
SPARE = ["#17becf", "#bcbd22", "#7f7f7f", "#393b79", "#637939"]

LABELS = {
    "engine:clock": "engine clock",
    "engine:s3clock": "engine s3clock (adaptive)",
    "evsim:clock": "evsim clock",
    "evsim:s3clock": "evsim s3clock (adaptive)",
    "evsim:lru": "evsim LRU",
    "evsim:2q": "evsim 2Q",
    "evsim:s3fifo": "evsim S3-FIFO",
    "evsim:s3clock-fixed10": "evsim s3clock, probation 10%",
    "evsim:s3clock-fixed50": "evsim s3clock, probation 50%",
}


def nice_step(span, target):
    """A step of 1, 2 or 5 times a power of ten giving about target ticks."""
    raw = span / max(target, 1)
    mag = 10 ** math.floor(math.log10(raw))
    for m in (1, 2, 5, 10):
        if raw <= m * mag:
            return m * mag
    return 10 * mag


def ticks(lo, hi, target):
    step = nice_step(hi - lo, target)
    first = math.ceil(lo / step - 1e-9) * step
    out = []
    v = first
    while v <= hi + 1e-9 * step:
        out.append(round(v, 10))
        v += step
    return out, step


def fmt(v, step):
    digits = max(0, -int(math.floor(math.log10(step)))) if step < 1 else 0
    return f"{v:.{digits}f}"


def padded_range(values, pad=0.05):
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 0.5, hi + 0.5
    d = (hi - lo) * pad
    lo, hi = lo - d, hi + d
    step = nice_step(hi - lo, 10)
    return math.floor(lo / step) * step, math.ceil(hi / step) * step


class Svg:
    def __init__(self, width, height):
        self.w, self.h = width, height
        self.parts = []

    def add(self, s):
        self.parts.append(s)

    def text(self, x, y, s, size=12, anchor="start", weight=None, rotate=None, fill="#222"):
        attrs = f'x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" fill="{fill}"'
        if weight:
            attrs += f' font-weight="{weight}"'
        if rotate is not None:
            attrs += f' transform="rotate({rotate} {x:.1f} {y:.1f})"'
        self.add(f"<text {attrs}>{escape(s)}</text>")

    def line(self, x1, y1, x2, y2, stroke="#000", width=1.0, dash=None):
        d = f' stroke-dasharray="{dash}"' if dash else ""
        self.add(
            f'<line x1="{x1:.1f}" y1="{y1:.1f}" x2="{x2:.1f}" y2="{y2:.1f}" '
            f'stroke="{stroke}" stroke-width="{width}"{d}/>'
        )

    def polyline(self, pts, stroke, width, dash=None):
        if len(pts) < 2:
            return
        d = f' stroke-dasharray="{dash}"' if dash else ""
        p = " ".join(f"{x:.1f},{y:.1f}" for x, y in pts)
        self.add(
            f'<polyline points="{p}" fill="none" stroke="{stroke}" stroke-width="{width}" '
            f'stroke-linejoin="round"{d}/>'
        )

    def render(self):
        head = (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{self.w}" height="{self.h}" '
            f'viewBox="0 0 {self.w} {self.h}" font-family="Helvetica, Arial, sans-serif">\n'
            f'<rect width="{self.w}" height="{self.h}" fill="#fff"/>\n'
        )
        return head + "\n".join(self.parts) + "\n</svg>\n"


class Panel:
    """A plot area at (x0, y0), w x h, mapping data to pixels."""

    def __init__(self, svg, x0, y0, w, h, xlo, xhi, ylo, yhi):
        self.svg, self.x0, self.y0, self.w, self.h = svg, x0, y0, w, h
        self.xlo, self.xhi, self.ylo, self.yhi = xlo, xhi, ylo, yhi

    def px(self, x):
        return self.x0 + (x - self.xlo) / (self.xhi - self.xlo) * self.w

    def py(self, y):
        y = min(max(y, self.ylo), self.yhi)  # clipped: a wild point stays inside
        return self.y0 + self.h - (y - self.ylo) / (self.yhi - self.ylo) * self.h

    def frame(self, ylabel, xticks, yticks, ystep, xlabels=True):
        s = self.svg
        for v in yticks:
            y = self.py(v)
            s.line(self.x0, y, self.x0 + self.w, y, "#e6e6e6", 1)
            s.line(self.x0 - 4, y, self.x0, y, "#444", 1)
            s.text(self.x0 - 7, y + 4, fmt(v, ystep), 11, "end")
        for v in xticks:
            x = self.px(v)
            s.line(x, self.y0 + self.h, x, self.y0 + self.h + 4, "#444", 1)
            if xlabels:
                s.text(x, self.y0 + self.h + 17, f"{v:g}", 11, "middle")
        s.add(
            f'<rect x="{self.x0}" y="{self.y0}" width="{self.w}" height="{self.h}" '
            f'fill="none" stroke="#444" stroke-width="1"/>'
        )
        s.text(self.x0 - 48, self.y0 + self.h / 2, ylabel, 12, "middle", rotate=-90)

    def moves(self, xs):
        for x in xs:
            self.svg.line(self.px(x), self.y0, self.px(x), self.y0 + self.h, "#888", 1.2, "6,4")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("csv")
    ap.add_argument("svg")
    ap.add_argument("--title", default="Zipf 0.9 lookups, hot set moving every 10 s")
    ap.add_argument("--subtitle", default="")
    ap.add_argument("--ref", default="evsim:clock")
    ap.add_argument("--pool", type=float, default=16384)
    a = ap.parse_args()

    series = OrderedDict()  # policy -> {second: row}
    with open(a.csv, newline="") as f:
        for row in csv.DictReader(f):
            series.setdefault(row["policy"], {})[int(row["second"])] = row
    if not series:
        sys.exit("plot_svg.py: no rows in " + a.csv)
    seconds = sorted({s for rows in series.values() for s in rows})
    xlo, xhi = seconds[0], seconds[-1] + 1
    # where a move happened: the first second of each new move count
    first = next(iter(series.values()))
    moves = [s for s in seconds if s - 1 in first and s in first
             and int(first[s]["move"]) > int(first[s - 1]["move"])]

    W, H = 980, 800
    L, PW = 78, 610  # left margin, plot width; the legend sits right of it
    top = 44 + (18 if a.subtitle else 0)
    svg = Svg(W, H)
    svg.text(L, 26, a.title, 16, weight="bold")
    if a.subtitle:
        svg.text(L, 45, a.subtitle, 12, fill="#444")
    xt, _ = ticks(xlo, xhi, 12)

    # 1. hit ratios
    hits = [float(r["hit_ratio"]) for rows in series.values() for r in rows.values()]
    ylo, yhi = padded_range(hits, 0.03)
    yt, ys = ticks(ylo, yhi, 7)
    p1 = Panel(svg, L, top, PW, 380, xlo, xhi, ylo, yhi)
    p1.frame("hit ratio (fixes found resident)", xt, yt, ys)
    p1.moves(moves)
    spare = iter(SPARE)
    styles = {}
    for name in series:
        styles[name] = STYLES.get(name) or (next(spare, "#000"), 1.4, None)
    # engine lines last: on top
    order = [n for n in series if not n.startswith("engine:")] + \
            [n for n in series if n.startswith("engine:")]
    for name in order:
        rows = series[name]
        c, wdt, dash = styles[name]
        svg.polyline([(p1.px(s + 0.5), p1.py(float(rows[s]["hit_ratio"]))) for s in sorted(rows)],
                     c, wdt, dash)
    for x in moves:
        svg.text(p1.px(x) + 3, p1.y0 + 13, "move", 10, fill="#666")

    # legend
    lx, ly = L + PW + 22, top + 14
    svg.text(lx, ly - 6, "measured in the engine:", 11, weight="bold")
    ly += 10
    for name in [n for n in series if n.startswith("engine:")] + [None] + \
            [n for n in series if not n.startswith("engine:")]:
        if name is None:
            ly += 10
            svg.text(lx, ly, "replayed (evsim, s3clock run's trace):", 11, weight="bold")
            ly += 16
            continue
        c, wdt, dash = styles[name]
        svg.line(lx, ly - 4, lx + 30, ly - 4, c, max(wdt, 1.6), dash)
        svg.text(lx + 37, ly, LABELS.get(name, name), 11)
        ly += 19

    # 2. misses against the reference, same trace
    ref = series.get(a.ref)
    p2y = top + 380 + 40
    if ref:
        ratios = {}
        for name, rows in series.items():
            if not name.startswith("evsim:") or name == a.ref:
                continue
            pts = []
            for s in sorted(rows):
                if s in ref and float(ref[s]["hit_ratio"]) < 1:
                    pts.append((s, (1 - float(rows[s]["hit_ratio"])) /
                                (1 - float(ref[s]["hit_ratio"]))))
            ratios[name] = pts
        vals = [v for pts in ratios.values() for _, v in pts] + [1.0]
        vlo, vhi = padded_range(vals, 0.04)
        vt, vs = ticks(vlo, vhi, 5)
        p2 = Panel(svg, L, p2y, PW, 170, xlo, xhi, vlo, vhi)
        p2.frame("misses / " + LABELS.get(a.ref, a.ref), xt, vt, vs)
        p2.moves(moves)
        svg.line(p2.px(xlo), p2.py(1), p2.px(xhi), p2.py(1), "#1f77b4", 1, "5,3")
        for name, pts in ratios.items():
            c, wdt, dash = styles[name]
            svg.polyline([(p2.px(s + 0.5), p2.py(v)) for s, v in pts], c, wdt, dash)
        svg.text(L + PW + 22, p2y + 20, "each second's misses as a", 11)
        svg.text(L + PW + 22, p2y + 35, "ratio of the simulated clock's", 11)
        svg.text(L + PW + 22, p2y + 50, "on the same accesses", 11)
        svg.text(L + PW + 22, p2y + 65, "(lower is better)", 11)

    # 3. s3clock's probation target in the engine
    p3y = p2y + 170 + 40
    prob = series.get("engine:s3clock")
    if prob:
        p3 = Panel(svg, L, p3y, PW, 80, xlo, xhi, 0, 60)
        p3.frame("probation, %", xt, [0, 25, 50], 1)
        p3.moves(moves)
        svg.line(p3.px(xlo), p3.py(50), p3.px(xhi), p3.py(50), "#bbb", 1, "2,2")
        svg.polyline([(p3.px(s + 0.5), p3.py(100 * float(prob[s]["probation"] or 0) / a.pool))
                      for s in sorted(prob)], "#d62728", 2)
        svg.text(L + PW + 22, p3y + 20, "the engine's s3clock: its", 11)
        svg.text(L + PW + 22, p3y + 35, "probation target, % of the", 11)
        svg.text(L + PW + 22, p3y + 50, f"pool ({a.pool:g} pages;", 11)
        svg.text(L + PW + 22, p3y + 65, "it adapts within 5-50%)", 11)
        bottom = p3y + 80
    else:
        bottom = p2y + 170
    svg.text(L + PW / 2, bottom + 36, "seconds since the lookups started", 12, "middle")
    svg.h = bottom + 50

    with open(a.svg, "w") as f:
        f.write(svg.render())


if __name__ == "__main__":
    main()
