// The /send and /receive pages: the browser side of `duplex send` /
// `duplex receive` (docs/transfer.md), with the protocol in
// transfer-core.js. Names from files and from the sender's manifest only
// ever reach the page through textContent and attributes: never innerHTML.

import {
  MAX_ENTRIES, ReceiveSession, SendSession, parseCode, relayUrl, safePath,
} from './transfer-core.js';

const $ = (id) => document.getElementById(id);

// ------------------------------------------------------------------ shared

function formatBytes(n) {
  if (!Number.isFinite(n)) return '?';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u += 1;
  }
  return u === 0 ? `${n} B` : `${n.toFixed(n < 10 ? 1 : 0)} ${units[u]}`;
}

function formatDuration(s) {
  if (!Number.isFinite(s) || s < 0) return '';
  s = Math.ceil(s);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor((s % 3600) / 60)} min`;
}

/** Bytes per second over the last few seconds. */
class RateMeter {
  constructor() {
    this.samples = [];
  }

  add(bytes) {
    const now = performance.now();
    this.samples.push([now, bytes]);
    while (this.samples.length > 2 && now - this.samples[0][0] > 5000) this.samples.shift();
  }

  rate() {
    if (this.samples.length < 2) return 0;
    const [t0, b0] = this.samples[0];
    const [t1, b1] = this.samples[this.samples.length - 1];
    return t1 > t0 ? ((b1 - b0) * 1000) / (t1 - t0) : 0;
  }

  /** "45% · 3.1 MiB of 7.0 MiB · 12 MiB/s · 1 s left" */
  describe(bytes, total) {
    const pct = total > 0 ? Math.floor((bytes / total) * 100) : 100;
    const rate = this.rate();
    let text = `${pct}% · ${formatBytes(bytes)} of ${formatBytes(total)}`;
    if (rate > 0 && bytes < total) {
      text += ` · ${formatBytes(rate)}/s · ${formatDuration((total - bytes) / rate)} left`;
    }
    return text;
  }
}

function setStatus(state, text) {
  $('status').dataset.state = state;
  $('status-text').textContent = text;
}

function showError(el, message) {
  el.textContent = message;
  el.hidden = !message;
}

function makeEl(tag, className, text) {
  const e = document.createElement(tag);
  if (className) e.className = className;
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A row of a file list: name, folder, size, progress, state. */
function fileRow({ path, dir, size }) {
  const li = makeEl('li', dir ? 'file dir' : 'file');
  const slash = path.lastIndexOf('/');
  const name = makeEl('span', 'file-name', path.slice(slash + 1) + (dir ? '/' : ''));
  const head = makeEl('div', 'file-head');
  head.append(name);
  if (slash > 0) head.append(makeEl('span', 'file-folder', `in ${path.slice(0, slash)}/`));
  head.append(makeEl('span', 'file-size', dir ? 'folder' : formatBytes(size)));
  const state = makeEl('span', 'file-state');
  head.append(state);
  li.append(head);
  let progress = null;
  if (!dir) {
    progress = makeEl('progress');
    progress.max = Math.max(size, 1);
    progress.value = 0;
    progress.setAttribute('aria-label', `${path}: progress`);
    li.append(progress);
  }
  return { li, state, progress };
}

/** Copies text to the clipboard (falls back to a selection and copy). */
async function copyText(text) {
  try {
    await navigator.clipboard.writeText(text);
    return true;
  } catch {
    const area = document.createElement('textarea');
    area.value = text;
    area.setAttribute('readonly', '');
    area.className = 'visually-hidden';
    document.body.append(area);
    area.select();
    let ok = false;
    try {
      ok = document.execCommand('copy');
    } catch {
      ok = false;
    }
    area.remove();
    return ok;
  }
}

/** Calls `fn` at most every `ms` (and once more at the end of a burst). */
function throttle(fn, ms) {
  let last = 0;
  let timer = null;
  return () => {
    const now = performance.now();
    if (now - last >= ms) {
      last = now;
      fn();
    } else if (!timer) {
      timer = setTimeout(() => {
        timer = null;
        last = performance.now();
        fn();
      }, ms - (now - last));
    }
  };
}

// -------------------------------------------------------------------- send

function sendPage() {
  const FILE_MODE = 0o644;
  const DIR_MODE = 0o755;
  /** [{path, dir, size, mode, blob}] in the order they will be sent. */
  let selection = [];
  const paths = new Set();
  let session = null;

  const el = {
    dropzone: $('dropzone'),
    fileInput: $('file-input'),
    folderInput: $('folder-input'),
    pickError: $('pick-error'),
    list: $('selection'),
    summary: $('selection-summary'),
    start: $('start'),
    clear: $('clear'),
    pick: $('pick'),
    share: $('share'),
    code: $('code'),
    copyCode: $('copy-code'),
    copyLink: $('copy-link'),
    copied: $('copied'),
    receiveLink: $('receive-link'),
    cliHint: $('cli-hint'),
    noReceivers: $('no-receivers'),
    receivers: $('receivers'),
    files: $('files'),
    sendError: $('send-error'),
    stop: $('stop'),
  };

  /** Adds items found under one top-level name; refuses clashes and unsafe names. */
  function add(items) {
    const problems = [];
    for (const item of items) {
      if (!safePath(item.path)) {
        problems.push(`"${item.path}" cannot be sent (its name has a backslash or an odd component)`);
        continue;
      }
      if (paths.has(item.path)) {
        if (!item.dir) problems.push(`"${item.path}" is already in the list`);
        continue;
      }
      if (selection.length >= MAX_ENTRIES) {
        problems.push(`one transfer carries at most ${MAX_ENTRIES} files and folders; send an archive or fewer folders at a time`);
        break;
      }
      paths.add(item.path);
      selection.push({ ...item, mode: item.dir ? DIR_MODE : FILE_MODE, size: item.dir ? 0 : item.blob.size });
    }
    showError(el.pickError, problems.slice(0, 3).join('; '));
    renderSelection();
  }

  function renderSelection() {
    el.list.replaceChildren();
    // One row per top-level name: a file, or a folder with its totals.
    const groups = new Map();
    for (const item of selection) {
      const top = item.path.split('/')[0];
      const g = groups.get(top) || { path: top, dir: false, size: 0, files: 0 };
      if (item.path !== top || item.dir) g.dir = true;
      if (!item.dir) {
        g.size += item.size;
        g.files += 1;
      }
      groups.set(top, g);
    }
    for (const g of groups.values()) {
      const li = makeEl('li', g.dir ? 'file dir' : 'file');
      const head = makeEl('div', 'file-head');
      head.append(makeEl('span', 'file-name', g.dir ? `${g.path}/` : g.path));
      head.append(makeEl('span', 'file-size', g.dir
        ? `folder · ${g.files} file${g.files === 1 ? '' : 's'} · ${formatBytes(g.size)}`
        : formatBytes(g.size)));
      li.append(head);
      el.list.append(li);
    }
    const files = selection.filter((i) => !i.dir);
    const total = files.reduce((n, i) => n + i.size, 0);
    el.summary.textContent = selection.length
      ? `${files.length} file${files.length === 1 ? '' : 's'}, ${formatBytes(total)}`
      : '';
    el.start.disabled = selection.length === 0;
    el.clear.hidden = selection.length === 0;
    setStatus('idle', selection.length ? 'ready to send' : 'choose files to send');
  }

  // Drag and drop: folders are walked with webkitGetAsEntry, keeping paths.
  function entryFile(entry) {
    return new Promise((resolve, reject) => entry.file(resolve, reject));
  }

  async function readAll(dirEntry) {
    const reader = dirEntry.createReader();
    const all = [];
    // readEntries returns batches until an empty one; bounded by the entry limit.
    for (let i = 0; i <= MAX_ENTRIES; i++) {
      const batch = await new Promise((resolve, reject) => reader.readEntries(resolve, reject));
      if (batch.length === 0) break;
      all.push(...batch);
    }
    return all.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  }

  async function walk(entry, prefix, out) {
    if (out.length > MAX_ENTRIES) return;
    const path = prefix ? `${prefix}/${entry.name}` : entry.name;
    if (entry.isFile) {
      out.push({ path, dir: false, blob: await entryFile(entry) });
    } else if (entry.isDirectory) {
      out.push({ path, dir: true });
      for (const child of await readAll(entry)) await walk(child, path, out);
    }
  }

  el.dropzone.addEventListener('dragover', (ev) => {
    if (session) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = 'copy';
    el.dropzone.classList.add('over');
  });
  el.dropzone.addEventListener('dragleave', () => el.dropzone.classList.remove('over'));
  el.dropzone.addEventListener('drop', async (ev) => {
    ev.preventDefault();
    el.dropzone.classList.remove('over');
    if (session) return;
    // Entries must be taken while the event is dispatched.
    const entries = [];
    const plain = [];
    for (const item of ev.dataTransfer.items) {
      if (item.kind !== 'file') continue;
      const entry = item.webkitGetAsEntry ? item.webkitGetAsEntry() : null;
      if (entry) entries.push(entry);
      else {
        const file = item.getAsFile();
        if (file) plain.push(file);
      }
    }
    const out = [];
    try {
      for (const entry of entries) await walk(entry, '', out);
    } catch (e) {
      showError(el.pickError, `Could not read what was dropped: ${e.message || e}`);
      return;
    }
    for (const file of plain) out.push({ path: file.name, dir: false, blob: file });
    add(out);
  });
  // Dropping outside the zone must not navigate away to the file.
  window.addEventListener('dragover', (ev) => ev.preventDefault());
  window.addEventListener('drop', (ev) => ev.preventDefault());

  el.fileInput.addEventListener('change', () => {
    add(Array.from(el.fileInput.files, (f) => ({ path: f.name, dir: false, blob: f })));
    el.fileInput.value = '';
  });
  el.folderInput.addEventListener('change', () => {
    const files = Array.from(el.folderInput.files)
      .map((f) => ({ path: f.webkitRelativePath || f.name, dir: false, blob: f }))
      .sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
    const out = [];
    const dirs = new Set();
    for (const f of files) {
      const parts = f.path.split('/');
      for (let i = 1; i < parts.length; i++) {
        const dir = parts.slice(0, i).join('/');
        if (!dirs.has(dir)) {
          dirs.add(dir);
          out.push({ path: dir, dir: true });
        }
      }
      out.push(f);
    }
    add(out);
    el.folderInput.value = '';
  });
  $('choose-files').addEventListener('click', () => el.fileInput.click());
  $('choose-folder').addEventListener('click', () => el.folderInput.click());
  el.clear.addEventListener('click', () => {
    selection = [];
    paths.clear();
    showError(el.pickError, '');
    renderSelection();
  });

  el.start.addEventListener('click', () => start().catch((e) => {
    setStatus('stopped', 'not sending');
    showError(el.pickError, e.message || String(e));
    el.start.disabled = false;
    session = null;
  }));

  async function start() {
    if (session || selection.length === 0) return;
    session = 'starting';
    el.start.disabled = true;
    el.clear.hidden = true;
    showError(el.pickError, '');
    // No pass over the files first: each is digested as it is sent.
    setStatus('connecting', 'connecting to the relay');
    const s = new SendSession({ url: relayUrl(location), items: selection, onEvent });
    buildSharing(s);
    session = s;
    await s.start();
  }

  // ----------------------------------------------------- while sending
  const receivers = new Map();
  let fileRows = [];
  let starts = [];

  function buildSharing(s) {
    fileRows = [];
    starts = [];
    let sum = 0;
    el.files.replaceChildren();
    for (const item of s.items) {
      starts.push(sum);
      sum += item.dir ? 0 : item.size;
      const row = fileRow(item);
      fileRows.push(row);
      el.files.append(row.li);
    }
    s.sentMax = 0;
  }

  function receiverRow(peer) {
    let r = receivers.get(peer);
    if (r) return r;
    const li = makeEl('li', 'receiver');
    li.dataset.peer = String(peer);
    const head = makeEl('div', 'file-head');
    head.append(makeEl('span', 'file-name', `Receiver ${peer}`));
    const state = makeEl('span', 'file-state');
    head.append(state);
    const progress = makeEl('progress');
    progress.max = 1;
    progress.value = 0;
    progress.setAttribute('aria-label', `Receiver ${peer}: progress`);
    const text = makeEl('p', 'total-text');
    li.append(head, progress, text);
    el.receivers.append(li);
    el.noReceivers.hidden = true;
    r = { li, state, progress, text, meter: new RateMeter(), bytes: 0 };
    receivers.set(peer, r);
    return r;
  }

  const renderFiles = throttle(() => {
    // A file's bar shows how far the furthest receiver has got in it.
    const furthest = Math.max(0, ...[...receivers.values()].map((r) => r.bytes));
    session.items.forEach((item, i) => {
      const row = fileRows[i];
      if (!row.progress) return;
      const got = Math.min(Math.max(furthest - starts[i], 0), item.size);
      row.progress.value = item.size ? got : 1;
      row.state.textContent = got >= item.size ? 'sent' : got > 0 ? `${Math.floor((got / item.size) * 100)}%` : '';
    });
    for (const r of receivers.values()) {
      if (r.stateName === 'sending') r.text.textContent = r.meter.describe(r.bytes, session.total);
    }
  }, 150);

  function setReceiverState(r, name, text) {
    r.stateName = name;
    r.li.dataset.state = name;
    r.state.textContent = text;
  }

  function onEvent(ev) {
    switch (ev.type) {
      case 'code': {
        const link = `${location.origin}/receive#${ev.code}`;
        el.code.textContent = ev.code;
        el.receiveLink.textContent = link;
        el.receiveLink.href = link;
        el.cliHint.textContent = `duplex receive ${ev.code} --server ${location.origin}`;
        el.pick.hidden = true;
        el.share.hidden = false;
        el.copyCode.focus();
        break;
      }
      case 'status':
        if (ev.state === 'waiting') setStatus('connected', 'sending: waiting for receivers');
        else if (ev.state === 'reconnecting') setStatus('reconnecting', ev.message);
        break;
      case 'peer': {
        const r = receiverRow(ev.peer);
        if (ev.state === 'verifying') setReceiverState(r, 'verifying', 'checking the code…');
        else if (ev.state === 'sending') {
          setReceiverState(r, 'sending', 'receiving');
          r.meter = new RateMeter();
        } else if (ev.state === 'done') {
          setReceiverState(r, 'done', '✓ done: has every file, verified');
          r.bytes = session.total;
          r.progress.value = 1;
          r.text.textContent = `${formatBytes(session.total)} received`;
          const done = [...receivers.values()].filter((x) => x.stateName === 'done').length;
          setStatus('connected', `${done} receiver${done === 1 ? '' : 's'} done; the code still works for more`);
        } else if (ev.state === 'wrong_code') {
          setReceiverState(r, 'wrong', '✗ tried a wrong code');
          r.progress.hidden = true;
        } else if (ev.state === 'left') {
          if (r.stateName !== 'done' && r.stateName !== 'wrong') setReceiverState(r, 'left', ev.message || 'left before the end');
        } else if (ev.state === 'failed') {
          setReceiverState(r, 'failed', `✗ failed: ${ev.message || ''}`);
        }
        renderFiles();
        break;
      }
      case 'progress': {
        const r = receiverRow(ev.peer);
        r.bytes = ev.bytes;
        r.meter.add(ev.bytes);
        r.progress.value = session.total ? ev.bytes / session.total : 1;
        renderFiles();
        break;
      }
      case 'error':
        showError(el.sendError, `Sending stopped: ${ev.message}`);
        setStatus('stopped', 'not sending');
        el.stop.hidden = true;
        break;
      default:
    }
  }

  el.copyCode.addEventListener('click', async () => {
    el.copied.textContent = (await copyText(el.code.textContent)) ? 'Code copied' : 'Select the code and copy it';
  });
  el.copyLink.addEventListener('click', async () => {
    el.copied.textContent = (await copyText(el.receiveLink.href)) ? 'Link copied' : 'Select the link and copy it';
  });
  el.stop.addEventListener('click', () => {
    if (session && session.stop) session.stop();
    setStatus('stopped', 'stopped: the code no longer works');
    el.stop.hidden = true;
  });
  // Leaving while a receiver is part-way through ends its transfer: ask first.
  window.addEventListener('beforeunload', (ev) => {
    if ([...receivers.values()].some((r) => r.stateName === 'sending' || r.stateName === 'verifying')) {
      ev.preventDefault();
      ev.returnValue = '';
    }
  });
  window.addEventListener('pagehide', () => {
    if (session && session.stop) session.stop();
  });
}

// ----------------------------------------------------------------- receive

function receivePage() {
  const el = {
    enter: $('enter'),
    form: $('code-form'),
    input: $('code-input'),
    codeError: $('code-error'),
    transfer: $('transfer'),
    rxCode: $('rx-code'),
    totalBox: $('total'),
    total: $('total-progress'),
    totalText: $('total-text'),
    error: $('rx-error'),
    done: $('rx-done'),
    folders: $('rx-folders'),
    files: $('rx-files'),
    again: $('rx-again'),
  };
  let session = null;
  let rows = [];
  let entries = [];
  let total = 0;
  let received = 0;
  let meter = new RateMeter();
  const urls = [];

  function downloadNames(list) {
    // The base name, unless two files share it: then the path with '_'.
    const count = new Map();
    for (const e of list) {
      if (e.dir) continue;
      const base = e.path.slice(e.path.lastIndexOf('/') + 1);
      count.set(base, (count.get(base) || 0) + 1);
    }
    return list.map((e) => {
      const base = e.path.slice(e.path.lastIndexOf('/') + 1);
      return count.get(base) > 1 ? e.path.replaceAll('/', '_') : base;
    });
  }

  function drawTotal() {
    el.total.value = total ? received / total : 1;
    el.totalText.textContent = meter.describe(received, total);
  }
  const renderTotal = throttle(drawTotal, 150);

  function onEvent(ev) {
    switch (ev.type) {
      case 'status': {
        const state = { connecting: 'connecting', verifying: 'connecting', connected: 'connected', receiving: 'connected', reconnecting: 'reconnecting' }[ev.state] || 'connecting';
        setStatus(state, ev.message);
        break;
      }
      case 'manifest': {
        el.totalBox.hidden = false;
        entries = ev.entries;
        total = ev.total;
        received = 0;
        meter = new RateMeter();
        const names = downloadNames(entries);
        el.files.replaceChildren();
        rows = entries.map((e, i) => {
          const row = fileRow(e);
          row.name = names[i];
          if (!e.dir) row.state.textContent = 'waiting';
          el.files.append(row.li);
          return row;
        });
        el.folders.hidden = !entries.some((e) => e.path.includes('/'));
        renderTotal();
        break;
      }
      case 'progress': {
        received = ev.bytes;
        meter.add(ev.bytes);
        const row = rows[ev.file];
        if (row && row.progress) {
          row.progress.value = ev.fileBytes;
          row.state.textContent = `${Math.floor((ev.fileBytes / Math.max(entries[ev.file].size, 1)) * 100)}%`;
        }
        renderTotal();
        break;
      }
      case 'file': {
        const row = rows[ev.index];
        const url = URL.createObjectURL(ev.blob);
        urls.push(url);
        row.progress.value = row.progress.max;
        row.state.textContent = '✓ verified';
        row.li.dataset.state = 'verified';
        const a = makeEl('a', 'download', 'Download');
        a.href = url;
        a.download = row.name;
        a.setAttribute('aria-label', `Download ${entries[ev.index].path}`);
        row.li.querySelector('.file-head').append(a);
        break;
      }
      case 'done': {
        received = total;
        drawTotal();
        const files = entries.filter((e) => !e.dir).length;
        el.done.textContent = files === 1
          ? `The file was received (${formatBytes(total)}) and its hashes verified. Save it with its Download link.`
          : `All ${files} files received (${formatBytes(total)}); every hash verified. Save each one with its Download link.`;
        el.done.hidden = false;
        setStatus('connected', 'received and verified');
        el.again.hidden = false;
        break;
      }
      case 'error':
        showError(el.error, ev.message);
        setStatus('stopped', 'stopped');
        el.again.hidden = false;
        for (const row of rows) {
          if (row.li.dataset.state !== 'verified' && row.progress) row.state.textContent = 'not received';
        }
        break;
      default:
    }
  }

  function start(code) {
    code = code.trim().toLowerCase().replace(/\s+/g, '-');
    if (parseCode(code) === null) {
      showError(el.codeError, 'That is not a code: it looks like 7-violet-anchor (a number and two words).');
      el.input.setAttribute('aria-invalid', 'true');
      el.input.focus();
      return;
    }
    el.input.removeAttribute('aria-invalid');
    showError(el.codeError, '');
    el.enter.hidden = true;
    el.transfer.hidden = false;
    el.rxCode.textContent = code;
    showError(el.error, '');
    el.done.hidden = true;
    el.again.hidden = true;
    el.files.replaceChildren();
    el.totalBox.hidden = true;
    rows = [];
    session = new ReceiveSession({ url: relayUrl(location), code, onEvent });
    session.run();
  }

  el.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    start(el.input.value);
  });
  el.again.addEventListener('click', () => {
    if (session) session.cancel();
    session = null;
    for (const url of urls.splice(0)) URL.revokeObjectURL(url);
    el.transfer.hidden = true;
    el.enter.hidden = false;
    el.input.value = '';
    history.replaceState(null, '', '/receive');
    setStatus('idle', 'enter a code');
    el.input.focus();
  });
  window.addEventListener('pagehide', () => {
    if (session) session.cancel();
  });
  let fromLink = location.hash.slice(1);
  try {
    fromLink = decodeURIComponent(fromLink);
  } catch {
    // not percent-encoded: use it as it is
  }
  if (fromLink) {
    el.input.value = fromLink;
    start(fromLink);
  } else {
    el.input.focus();
  }
}

if (document.body.dataset.page === 'send') sendPage();
else if (document.body.dataset.page === 'receive') receivePage();
