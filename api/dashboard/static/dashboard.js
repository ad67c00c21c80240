// The dashboard page's only script: polls same-origin JSON endpoints and fills the page in.
// Authentication is the HttpOnly session cookie, which this script never sees; every call
// carries the X-Dashboard header the gateway requires of cookie-authenticated calls (CSRF guard).
// Text from the server is only ever set with textContent, never parsed as HTML.
'use strict';
(() => {
  const REFRESH_MS = Math.max(0.5, Number(document.body.dataset.refresh) || 5) * 1000;
  const $ = (id) => document.getElementById(id);

  async function call(method, path, body) {
    const init = { method, headers: { 'X-Dashboard': '1' }, credentials: 'same-origin', cache: 'no-store' };
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    const resp = await fetch(path, init);
    if (resp.status === 401) {
      location.assign('/dashboard/login');
      throw new Error('the session ended');
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { data = null; }
    return { status: resp.status, ok: resp.ok, data };
  }

  function failure(r, what) {
    const message = r.data && r.data.error && r.data.error.message;
    if (r.status === 404) return `${what} answered 404: this gateway does not have that endpoint.`;
    return `${what} answered ${r.status}${message ? ': ' + message : ''}`;
  }

  function notice(id, text) {
    const el = $(id);
    el.hidden = !text;
    el.textContent = text || '';
  }

  const num = (v, digits = 0) => (v === null || v === undefined || !isFinite(v) ? '–'
    : Number(v).toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits }));
  const ms = (v) => (v === null || v === undefined ? '–' : v >= 1000 ? `${num(v / 1000, 2)} s` : `${num(v)} ms`);
  const ago = (seconds) => (seconds < 1 ? 'now' : seconds < 90 ? `${Math.round(seconds)} s ago`
    : seconds < 5400 ? `${Math.round(seconds / 60)} min ago` : `${Math.round(seconds / 3600)} h ago`);
  const limit = (v) => (v === null || v === undefined ? '∞' : num(v));
  const sum = (obj) => Object.values(obj || {}).reduce((a, b) => a + (Number(b) || 0), 0);

  function cell(row, text, cls) {
    const td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    row.appendChild(td);
    return td;
  }

  function emptyRow(tbody, columns, text) {
    const tr = document.createElement('tr');
    const td = cell(tr, text, 'empty');
    td.colSpan = columns;
    tbody.appendChild(tr);
  }

  // Render only when the data changed, so a button is not replaced under the pointer.
  const lastRender = {};
  function changed(name, data) {
    const key = JSON.stringify(data);
    if (lastRender[name] === key) return false;
    lastRender[name] = key;
    return true;
  }

  // ---- live figures ------------------------------------------------------------------------
  const CARDS = [
    ['rps', (s) => s.requests_per_second, 'rps', (v) => num(v, 2)],
    ['ttft50', (s) => s.ttft_p50_ms, 'ttft_p50_ms', ms],
    ['ttft99', (s) => s.ttft_p99_ms, 'ttft_p99_ms', ms],
    ['streams', (s) => s.streams_in_flight, 'streams_in_flight', num],
    ['queue', (s) => s.queue_depth, 'queue_depth', num],
    ['errors', (s) => sum(s.upstream_errors), 'upstream_errors', num],
    ['rejections', (s) => s.rate_limit_rejections, 'rate_limit_rejections', num],
  ];

  async function refreshStats() {
    const r = await call('GET', '/admin/stats');
    if (!r.ok || !r.data) {
      notice('stats-notice', 'Cluster figures unavailable: ' + failure(r, 'GET /admin/stats'));
      return;
    }
    notice('stats-notice', null);
    const s = r.data;
    const history = Array.isArray(s.history) ? s.history : [];
    for (const [id, get, field, format] of CARDS) {
      $('v-' + id).textContent = format(get(s));
      window.sparkline($('c-' + id), history.map((p) => ({ t: p.t, v: p[field] })),
        { now: s.time, title: `${field}, last 15 minutes` });
    }
    $('v-total').textContent = num(s.requests_total);

    const workers = Array.isArray(s.workers) ? s.workers : [];
    const wbody = $('workers').tBodies[0];
    wbody.textContent = '';
    if (!workers.length) emptyRow(wbody, 4, 'no worker has reported');
    for (const w of workers) {
      const tr = document.createElement('tr');
      cell(tr, w.id, 'mono');
      cell(tr, num(w.jobs_running), 'num');
      cell(tr, ago(Math.max(0, s.time - w.last_seen)));
      cell(tr, w.alive ? 'alive' : 'silent', w.alive ? 'ok' : 'fail');
      wbody.appendChild(tr);
    }
    const waiting = Array.isArray(s.waiting_by_key) ? s.waiting_by_key : [];
    const qbody = $('waiting').tBodies[0];
    qbody.textContent = '';
    if (!waiting.length) emptyRow(qbody, 5, 'nothing waiting');
    for (const w of waiting) {
      const tr = document.createElement('tr');
      tr.dataset.keyId = w.key_id;
      cell(tr, w.key);
      cell(tr, num(w.waiting), 'num');
      cell(tr, ms(w.oldest_wait_ms), 'num');
      cell(tr, ms(w.mean_wait_ms), 'num');
      cell(tr, num(w.started), 'num');
      qbody.appendChild(tr);
    }
    const kinds = Object.entries(s.upstream_errors || {});
    if (changed('kinds', kinds)) {
      const kbody = $('error-kinds').tBodies[0];
      kbody.textContent = '';
      if (!kinds.length) emptyRow(kbody, 2, 'none');
      for (const [kind, count] of kinds) {
        const tr = document.createElement('tr');
        cell(tr, kind);
        cell(tr, num(count), 'num');
        kbody.appendChild(tr);
      }
    }
  }

  // ---- keys --------------------------------------------------------------------------------
  const confirming = new Set();

  async function refreshKeys() {
    const r = await call('GET', '/admin/keys');
    if (!r.ok || !r.data) {
      notice('keys-notice', 'Keys unavailable: ' + failure(r, 'GET /admin/keys'));
      $('key-form').hidden = true;
      return;
    }
    notice('keys-notice', null);
    $('key-form').hidden = false;
    const keys = Array.isArray(r.data.data) ? r.data.data : [];
    if (!changed('keys', [keys, [...confirming]])) return;
    const tbody = $('keys-table').tBodies[0];
    tbody.textContent = '';
    if (!keys.length) emptyRow(tbody, 10, 'no keys yet');
    for (const k of keys) {
      const u = k.usage_today || {};
      const tr = document.createElement('tr');
      tr.dataset.keyId = k.id;
      cell(tr, k.name);
      cell(tr, k.id, 'mono');
      cell(tr, limit(k.rpm), 'num');
      cell(tr, limit(k.max_concurrent), 'num');
      cell(tr, limit(k.daily_tokens), 'num');
      cell(tr, num(u.requests), 'num');
      cell(tr, num((u.prompt_tokens || 0) + (u.completion_tokens || 0)), 'num');
      cell(tr, num(u.errors), 'num');
      cell(tr, num(u.rejections), 'num');
      const td = cell(tr, '');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'danger revoke' + (confirming.has(k.id) ? ' confirm' : '');
      button.textContent = confirming.has(k.id) ? 'Confirm revoke' : 'Revoke';
      button.addEventListener('click', () => revoke(k.id, button));
      td.appendChild(button);
      tbody.appendChild(tr);
    }
  }

  async function revoke(id, button) {
    if (!confirming.has(id)) {  // first click arms, second click (within 5 s) revokes
      confirming.add(id);
      button.textContent = 'Confirm revoke';
      button.classList.add('confirm');
      setTimeout(() => { if (confirming.delete(id)) refreshKeys(); }, 5000);
      return undefined;
    }
    confirming.delete(id);
    const r = await call('DELETE', '/admin/keys/' + encodeURIComponent(id));
    notice('key-error', r.ok ? null : failure(r, 'DELETE /admin/keys'));
    return refreshKeys();
  }

  $('key-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const form = new FormData(event.target);
    const optional = (name) => (form.get(name) ? Number(form.get(name)) : null);
    const body = { name: String(form.get('name') || '').trim(), rpm: optional('rpm'),
      max_concurrent: optional('max_concurrent'), daily_tokens: optional('daily_tokens') };
    $('key-create').disabled = true;
    try {
      const r = await call('POST', '/admin/keys', body);
      if (!r.ok || !r.data || !r.data.key) {
        notice('key-error', failure(r, 'POST /admin/keys'));
        return;
      }
      notice('key-error', null);
      $('new-key-name').textContent = r.data.name;
      $('new-key-secret').textContent = r.data.key;
      $('copy-state').textContent = '';
      $('new-key').hidden = false;
      event.target.reset();
      await refreshKeys();
    } finally {
      $('key-create').disabled = false;
    }
  });

  $('copy-key').addEventListener('click', async () => {
    const secret = $('new-key-secret').textContent;
    try {
      await navigator.clipboard.writeText(secret);
    } catch (e) {  // no clipboard API (plain http on another host): select it for Ctrl-C
      const range = document.createRange();
      range.selectNodeContents($('new-key-secret'));
      const selection = window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
      $('copy-state').textContent = 'selected: press Ctrl-C';
      return;
    }
    $('copy-state').textContent = 'copied';
  });

  // ---- fair shares -------------------------------------------------------------------------
  async function refreshWeights() {
    const r = await call('GET', '/admin/weights');
    if (!r.ok || !r.data) {
      notice('shares-notice', 'Weights unavailable: ' + failure(r, 'GET /admin/weights'));
      return;
    }
    const rows = Array.isArray(r.data.data) ? r.data.data : [];
    // Not while the operator is typing a weight: the input would be replaced under the cursor.
    if ($('weights').contains(document.activeElement) || !changed('weights', rows)) return;
    notice('shares-notice', null);
    const tbody = $('weights').tBodies[0];
    tbody.textContent = '';
    for (const w of rows) {
      const tr = document.createElement('tr');
      tr.dataset.keyId = w.key_id;
      cell(tr, w.name);
      cell(tr, w.key_id, 'mono');
      const td = cell(tr, '', 'num');
      const input = document.createElement('input');
      input.type = 'number';
      input.min = '0.01';
      input.max = '1000';
      input.step = 'any';
      input.value = String(w.weight);
      input.className = 'weight';
      td.appendChild(input);
      const act = cell(tr, '');
      const button = document.createElement('button');
      button.type = 'button';
      button.className = 'save-weight';
      button.textContent = 'Save';
      button.addEventListener('click', async () => {
        const res = await call('PUT', '/admin/weights/' + encodeURIComponent(w.key_id), { weight: Number(input.value) });
        delete lastRender.weights;
        button.blur();
        await refreshWeights();
        notice('shares-notice', res.ok ? null : failure(res, 'PUT /admin/weights'));  // after: a refresh clears it
      });
      act.appendChild(button);
      tbody.appendChild(tr);
    }
  }

  // ---- request log -------------------------------------------------------------------------
  // Filled on load and on "Show" (not on every refresh: the operator may be reading a detail).
  let reqCursor = null;

  function reqQuery() {
    const form = new FormData($('req-form'));
    const params = new URLSearchParams();
    for (const name of ['key', 'model', 'status', 'dialect']) {
      const v = String(form.get(name) || '').trim();
      if (v) params.set(name, v);
    }
    for (const name of ['since', 'until']) {  // local time in the form, unix seconds on the wire
      const v = String(form.get(name) || '');
      if (v) params.set(name, String(new Date(v).getTime() / 1000));
    }
    return params;
  }

  function reqRow(tbody, e) {
    const tr = document.createElement('tr');
    tr.dataset.id = e.id;
    cell(tr, new Date(e.time * 1000).toLocaleString());
    cell(tr, e.key_name || e.key_id);
    cell(tr, e.dialect || '');
    cell(tr, e.model || '');
    cell(tr, String(e.status), 'num ' + (e.status >= 400 || e.error_code ? 'fail' : 'ok'));
    cell(tr, e.error_code || '');
    cell(tr, num(e.tokens_in), 'num');
    cell(tr, num(e.tokens_out), 'num');
    cell(tr, ms(e.queue_wait_ms), 'num');
    cell(tr, ms(e.ttft_ms), 'num');
    cell(tr, ms(e.duration_ms), 'num');
    tr.addEventListener('click', () => {
      for (const other of tbody.querySelectorAll('tr.selected')) other.classList.remove('selected');
      tr.classList.add('selected');
      const detail = $('req-detail');
      detail.textContent = JSON.stringify(e, null, 2);
      detail.hidden = false;
    });
    tbody.appendChild(tr);
  }

  async function loadRequests(more) {
    const params = reqQuery();
    params.set('limit', '50');
    if (more && reqCursor) params.set('cursor', reqCursor);
    const r = await call('GET', '/admin/requests?' + params.toString());
    const tbody = $('req-table').tBodies[0];
    if (!r.ok || !r.data) {
      notice('req-notice', 'Request log unavailable: ' + failure(r, 'GET /admin/requests'));
      return;
    }
    notice('req-notice', null);
    if (!more) {
      tbody.textContent = '';
      $('req-detail').hidden = true;
    }
    const entries = Array.isArray(r.data.data) ? r.data.data : [];
    if (!more && !entries.length) emptyRow(tbody, 11, 'no requests match');
    for (const e of entries) reqRow(tbody, e);
    reqCursor = r.data.next_cursor || null;
    $('req-more').hidden = !reqCursor;
  }

  $('req-form').addEventListener('submit', (event) => {
    event.preventDefault();
    loadRequests(false);
  });
  $('req-more').addEventListener('click', () => loadRequests(true));
  $('req-export').addEventListener('click', async () => {
    const params = reqQuery();
    params.set('format', 'jsonl');
    const resp = await fetch('/admin/requests?' + params.toString(),
      { headers: { 'X-Dashboard': '1' }, credentials: 'same-origin', cache: 'no-store' });
    if (!resp.ok) {
      notice('req-notice', `Export failed: GET /admin/requests answered ${resp.status}`);
      return;
    }
    const link = document.createElement('a');
    link.href = URL.createObjectURL(await resp.blob());
    link.download = 'requests.jsonl';
    document.body.appendChild(link);
    link.click();
    link.remove();
  });
  loadRequests(false);

  // ---- try it ------------------------------------------------------------------------------
  $('try-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const out = $('try-output');
    const status = $('try-status');
    out.textContent = '';
    status.textContent = 'waiting for the first token…';
    $('try-send').disabled = true;
    const started = performance.now();
    let first = null;
    let chunks = 0;
    let ended = false;
    try {
      const resp = await fetch('/dashboard/api/chat', {
        method: 'POST', credentials: 'same-origin',
        headers: { 'Content-Type': 'application/json', 'X-Dashboard': '1' },
        body: JSON.stringify({ model: $('try-model').value, stream: true,
          messages: [{ role: 'user', content: $('try-message').value }] }),
      });
      if (!resp.ok) {
        let data = null;
        try { data = await resp.json(); } catch (e) { data = null; }
        status.textContent = failure({ status: resp.status, data }, 'the gateway');
        return;
      }
      const reader = resp.body.getReader();
      const decoder = new TextDecoder();
      let buffer = '';
      while (!ended) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, '\n');
        let cut;
        while (!ended && (cut = buffer.indexOf('\n\n')) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split('\n')) {
            if (!line.startsWith('data:')) continue;  // comments are keep-alive pings
            const payload = line.slice(5).trim();
            if (payload === '[DONE]') { ended = true; break; }
            const chunk = JSON.parse(payload);
            if (chunk.error) throw new Error(chunk.error.message || 'the stream failed');
            const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
            if (delta && delta.content) {
              if (first === null) first = performance.now() - started;
              chunks += 1;
              out.textContent += delta.content;
            }
          }
        }
      }
      const total = performance.now() - started;
      status.textContent = ended
        ? `done: first token after ${ms(first)}, whole answer in ${ms(total)}, ${chunks} chunk(s)`
        : 'the stream ended without [DONE]';
    } catch (err) {
      status.textContent = 'failed: ' + err.message;
    } finally {
      $('try-send').disabled = false;
    }
  });

  // ---- upstreams, breakers and routes ----------------------------------------------------------
  const BREAKER = { closed: 'closed', half_open: 'half-open: one request tries it', open: 'open: skipped' };

  async function refreshUpstreams() {
    const [ups, routes] = await Promise.all([call('GET', '/admin/upstreams'), call('GET', '/admin/routes')]);
    if (!ups.ok || !routes.ok) {
      notice('upstreams-notice', failure(ups.ok ? routes : ups, ups.ok ? 'GET /admin/routes' : 'GET /admin/upstreams'));
      return;
    }
    notice('upstreams-notice', '');
    if (!changed('upstreams', [ups.data, routes.data])) return;
    $('routing-version').textContent = `· version ${routes.data.version}`;
    const targets = $('targets-table').tBodies[0];
    targets.textContent = '';
    const now = Date.now() / 1000;
    for (const up of ups.data.data || []) {
      for (const t of up.targets || []) {
        const tr = document.createElement('tr');
        tr.dataset.target = t.target;
        cell(tr, t.target);
        cell(tr, up.kind + (up.native_tools ? ' (native tools)' : ''));
        cell(tr, BREAKER[t.state] || t.state, t.state === 'closed' ? 'ok' : 'fail');
        cell(tr, num(t.failures), 'num');
        cell(tr, t.last_failure ? `${t.last_failure} (${ago(now - t.last_failure_at)})` : '–', 'verdict');
        cell(tr, t.state === 'open' && t.retry_at ? (t.retry_at > now ? `in ${Math.ceil(t.retry_at - now)} s` : 'now') : '–');
        targets.appendChild(tr);
      }
    }
    if (!targets.rows.length) emptyRow(targets, 6, 'No route targets.');
    const upstreams = $('upstreams-table').tBodies[0];
    upstreams.textContent = '';
    for (const up of ups.data.data || []) {
      const tr = document.createElement('tr');
      tr.dataset.upstream = up.name;
      cell(tr, up.name + (up.builtin ? ' (built in)' : ''));
      cell(tr, up.kind);
      cell(tr, up.base_url);
      cell(tr, up.api_key_env || '–');
      cell(tr, up.native_tools ? 'yes' : 'no');
      const td = cell(tr, '');
      if (!up.builtin) {
        const del = document.createElement('button');
        del.type = 'button';
        del.className = 'link';
        del.textContent = 'Delete';
        del.addEventListener('click', async () => {
          const r = await call('DELETE', '/admin/upstreams/' + encodeURIComponent(up.name));
          notice('upstream-error', r.ok ? '' : failure(r, 'DELETE /admin/upstreams'));
          await refreshUpstreams();
        });
        td.appendChild(del);
      }
      upstreams.appendChild(tr);
    }
    const tbody = $('routes-table').tBodies[0];
    tbody.textContent = '';
    for (const route of routes.data.data || []) {
      const tr = document.createElement('tr');
      tr.dataset.route = route.id;
      cell(tr, route.id + (route.default ? ' (default)' : ''));
      cell(tr, route.targets.map((t) => `${t.upstream}/${t.model}`).join(' → '));
      const td = cell(tr, '');
      if (!route.default) {
        const del = document.createElement('button');
        del.type = 'button';
        del.className = 'link';
        del.textContent = 'Delete';
        del.addEventListener('click', async () => {
          const r = await call('DELETE', '/admin/routes/' + encodeURIComponent(route.id));
          notice('route-error', r.ok ? '' : failure(r, 'DELETE /admin/routes'));
          await refreshUpstreams();
        });
        td.appendChild(del);
      }
      tbody.appendChild(tr);
    }
  }

  $('route-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const id = $('route-id').value.trim();
    const targets = $('route-targets').value.split(',').map((s) => s.trim()).filter(Boolean).map((s) => {
      const cut = s.indexOf('/');
      return cut < 0 ? { upstream: s, model: '' } : { upstream: s.slice(0, cut), model: s.slice(cut + 1) };
    });
    const known = lastRender.upstreams && JSON.parse(lastRender.upstreams)[1].data.some((r) => r.id === id);
    const r = known
      ? await call('PUT', '/admin/routes/' + encodeURIComponent(id), { targets })
      : await call('POST', '/admin/routes', { id, targets });
    notice('route-error', r.ok ? '' : failure(r, known ? 'PUT /admin/routes' : 'POST /admin/routes'));
    await refreshUpstreams();
  });

  $('upstream-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    const body = {
      name: $('upstream-name').value.trim(),
      kind: $('upstream-kind').value,
      base_url: $('upstream-url').value.trim(),
      native_tools: $('upstream-native').checked,
    };
    const keyEnv = $('upstream-key-env').value.trim();
    if (keyEnv) body.api_key_env = keyEnv;
    const r = await call('POST', '/admin/upstreams', body);
    notice('upstream-error', r.ok ? '' : failure(r, 'POST /admin/upstreams'));
    await refreshUpstreams();
  });

  // ---- doctor ------------------------------------------------------------------------------
  let doctorPending = false;

  async function refreshDoctor() {
    const r = await call('GET', '/admin/doctor');
    if (!r.ok || !r.data) {
      $('doctor-summary').textContent = failure(r, 'GET /admin/doctor');
      return;
    }
    const { last, pending } = r.data;
    doctorPending = Boolean(pending);
    $('doctor-run').disabled = doctorPending;
    $('doctor-state').textContent = pending
      ? `a worker is running it (asked ${ago(Date.now() / 1000 - pending.requested)})…` : '';
    if (!changed('doctor', last)) return;
    const summary = $('doctor-summary');
    const tbody = $('doctor-steps').tBodies[0];
    tbody.textContent = '';
    if (!last) {
      summary.textContent = 'No doctor report yet: press "Run again", or run `python -m worker doctor` on a worker host.';
      summary.className = 'muted';
      return;
    }
    const when = new Date((last.finished || last.started) * 1000).toLocaleString();
    summary.textContent = `${last.summary} (${when}, ${last.source} on ${last.host}, ${ms(last.took_ms)})`;
    summary.className = last.ok ? 'ok' : 'fail';
    for (const step of last.steps || []) {
      const tr = document.createElement('tr');
      tr.dataset.step = step.step;
      cell(tr, { ok: 'ok', fail: 'FAIL', skip: '–' }[step.status] || step.status, step.status);
      cell(tr, step.step);
      cell(tr, step.ms === null ? '' : num(step.ms), 'num');
      const td = cell(tr, step.verdict, 'verdict');
      if (step.status === 'fail' && (step.body || step.http_status)) {
        const answered = document.createElement('span');
        answered.className = 'answered';
        answered.textContent = `upstream answered ${step.http_status ? 'HTTP ' + step.http_status : ''}`
          + (step.body ? ': ' + step.body : '');
        td.appendChild(answered);
      }
      tbody.appendChild(tr);
    }
  }

  $('doctor-run').addEventListener('click', async () => {
    $('doctor-run').disabled = true;
    $('doctor-state').textContent = 'asking a worker…';
    const r = await call('POST', '/admin/doctor');
    if (!r.ok) $('doctor-state').textContent = failure(r, 'POST /admin/doctor');
    await refreshDoctor();
    const poll = async () => {  // follow the run closely rather than at the page's refresh pace
      await refreshDoctor();
      if (doctorPending) setTimeout(poll, 1000);
    };
    if (doctorPending) setTimeout(poll, 1000);
  });

  // ---- the refresh loop --------------------------------------------------------------------
  async function tick() {
    const parts = await Promise.allSettled([
      refreshStats(), refreshKeys(), refreshUpstreams(), refreshDoctor(), refreshWeights(),
    ]);
    const failed = parts.filter((p) => p.status === 'rejected');
    $('updated').textContent = failed.length
      ? `update failed at ${new Date().toLocaleTimeString()}: ${failed[0].reason.message}`
      : `updated ${new Date().toLocaleTimeString()} · every ${REFRESH_MS / 1000} s`;
    setTimeout(tick, REFRESH_MS);
  }
  tick();
})();
