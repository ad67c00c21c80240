// A tiny inline-SVG line chart: the last 15 minutes of one figure, drawn into an <svg viewBox="0 0 120 32">.
'use strict';

const SVG_NS = 'http://www.w3.org/2000/svg';

/**
 * Draw points [{t, v}] (v may be null: a gap) on the time window [now - span, now].
 * The y scale starts at 0 and ends at the window's largest value (at least `floor`).
 */
function sparkline(svg, points, { now = Date.now() / 1000, span = 900, floor = 1, title = '' } = {}) {
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  const W = 120, H = 32, PAD = 1.5;
  const shown = points.filter((p) => p.v !== null && p.v !== undefined && isFinite(p.v) && p.t >= now - span);
  if (title) {
    const t = document.createElementNS(SVG_NS, 'title');
    t.textContent = title;
    svg.appendChild(t);
  }
  // A baseline, so an empty or flat chart still reads as a chart (text would be stretched by the viewBox).
  const base = document.createElementNS(SVG_NS, 'line');
  base.setAttribute('x1', '0'); base.setAttribute('x2', String(W));
  base.setAttribute('y1', String(H - 0.5)); base.setAttribute('y2', String(H - 0.5));
  base.setAttribute('class', shown.length ? 'axis' : 'axis empty');
  svg.appendChild(base);
  if (shown.length === 0) return;
  const top = Math.max(floor, ...shown.map((p) => p.v));
  const x = (t) => ((t - (now - span)) / span) * W;
  const y = (v) => H - PAD - (v / top) * (H - 2 * PAD);
  // Split at gaps (null values) so a missing stretch is not drawn as a straight line.
  const runs = [[]];
  for (const p of points) {
    if (p.t < now - span) continue;
    if (p.v === null || p.v === undefined || !isFinite(p.v)) { if (runs[runs.length - 1].length) runs.push([]); continue; }
    runs[runs.length - 1].push([x(p.t).toFixed(1), y(p.v).toFixed(1)]);
  }
  for (const run of runs) {
    if (!run.length) continue;
    if (run.length === 1) run.push([(Number(run[0][0]) + 1).toFixed(1), run[0][1]]);
    const area = document.createElementNS(SVG_NS, 'path');
    area.setAttribute('d', `M${run[0][0]},${H} L${run.map((p) => p.join(',')).join(' L')} L${run[run.length - 1][0]},${H} Z`);
    svg.appendChild(area);
    const line = document.createElementNS(SVG_NS, 'polyline');
    line.setAttribute('points', run.map((p) => p.join(',')).join(' '));
    svg.appendChild(line);
  }
  // The latest point, marked: with little history the line alone is hard to see.
  const last = shown[shown.length - 1];
  const mark = document.createElementNS(SVG_NS, 'rect');
  mark.setAttribute('x', String(Math.min(W - 2, x(last.t) - 1))); mark.setAttribute('y', String(y(last.v) - 1));
  mark.setAttribute('width', '2'); mark.setAttribute('height', '2'); mark.setAttribute('class', 'last');
  svg.appendChild(mark);
}

window.sparkline = sparkline;
