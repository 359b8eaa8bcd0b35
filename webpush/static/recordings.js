/* crmagi call recordings inside SuiteCRM pages.
 *
 * Runs beside popup.js and speaks over its websocket: it collects the Call ids shown on
 * the page (a Call's detail view, the rows of list views and subpanels such as History,
 * and the call popup's history), asks crmagi which have a recording, and puts a player
 * with seek and a download link next to each.  crmagi answers only for Calls the user
 * may see, with short-lived signed URLs on its own server; it renews them before they
 * expire.  A recording that cannot be played says "recording not available": there is
 * never a broken player on the page.
 */
(function () {
  'use strict';
  if (window.__crmagiRecordings) { return; }
  var cfg = window.crmagiConfig, popup = window.__crmagiPopup;
  if (!cfg || !cfg.ws || !popup || !popup.send || !popup.handlers) { return; }
  var base = cfg.ws.replace(/^ws(s?):/, 'http$1:').replace(/\/ws([?#].*)?$/, '');
  var self = window.__crmagiRecordings = { items: {}, pending: {} };
  var t = popup.t || function (text) { return text; };     // the user's language, from popup.js
  var NOT_AVAILABLE = 'recording not available';
  var CALL_LINK = /[?&]module=Calls&action=DetailView&record=([A-Za-z0-9_.-]{1,36})(?:[&#]|$)/;
  var RENEW_BEFORE = 60, MAX_ASK = 100, scanTimer = null, renewTimer = null;

  function callOf(href) {
    if (!href) { return null; }
    var text = href;
    try { text = decodeURIComponent(href); } catch (e) { /* keep it raw */ }
    var match = CALL_LINK.exec(text);      // index.php?module=Calls... or ajaxUI's #ajaxUILoc=index.php%3F...
    return match ? match[1] : null;
  }

  // Where players go: one host element per place, tagged with its Call id.
  function host(parent, callId, before, kind) {
    var found = parent.querySelector(':scope > .crmagi-rec[data-crmagi-rec="' + callId + '"]');
    if (found) { return found; }
    var node = document.createElement(kind === 'detail' ? 'div' : 'span');
    node.className = 'crmagi-rec crmagi-rec-' + kind;
    node.setAttribute('data-crmagi-rec', callId);
    parent.insertBefore(node, before || null);
    return node;
  }

  function detailHost() {
    var form = document.getElementById('formDetailView');
    if (!form || !form.module || form.module.value !== 'Calls' || !form.record || !form.record.value) { return; }
    var view = document.querySelector('.detail-view');
    if (!view || !view.parentNode) { return; }
    var node = host(view.parentNode, form.record.value, view, 'detail');
    if (!node.querySelector('.crmagi-rec-title')) {
      var title = document.createElement('h4');
      title.className = 'crmagi-rec-title';
      title.textContent = t('Recording');
      node.appendChild(title);
    }
  }

  function rowHosts() {
    // List views and subpanels (History, Activities): one player per row, after the subject.
    var rows = document.querySelectorAll('table.list tr');
    for (var i = 0; i < rows.length; i++) {
      var links = rows[i].querySelectorAll('a[href]'), subject = null, callId = null;
      for (var j = 0; j < links.length && !subject; j++) {
        var id = callOf(links[j].getAttribute('href'));
        if (id && links[j].textContent.trim()) { subject = links[j]; callId = id; }
      }
      if (subject) { host(subject.parentNode, callId, subject.nextSibling, 'row'); }
    }
  }

  function popupHosts() {
    var items = document.querySelectorAll('#crmagi-popups [data-crmagi-rec-call]');
    for (var i = 0; i < items.length; i++) {
      host(items[i], items[i].getAttribute('data-crmagi-rec-call'), null, 'row');
    }
  }

  function scan() {
    scanTimer = null;
    detailHost(); rowHosts(); popupHosts();
    var hosts = document.querySelectorAll('.crmagi-rec[data-crmagi-rec]'), ask = [], now = Date.now() / 1000;
    for (var i = 0; i < hosts.length; i++) {
      var callId = hosts[i].getAttribute('data-crmagi-rec'), item = self.items[callId];
      if (item && !(item.url && item.expires - now < RENEW_BEFORE)) { render(hosts[i], item); }
      else if (!self.pending[callId] && ask.indexOf(callId) < 0) { ask.push(callId); }
    }
    request(ask);
  }

  function request(calls) {
    if (!calls.length || popup.state !== 'open') { return; }
    for (var i = 0; i < calls.length; i += MAX_ASK) {
      var part = calls.slice(i, i + MAX_ASK);
      part.forEach(function (c) { self.pending[c] = true; });
      popup.send({ type: 'recordings', calls: part });
    }
  }

  function answered(message) {
    var seen = {};
    (message.items || []).forEach(function (item) {
      if (item && typeof item.call === 'string') { self.items[item.call] = item; seen[item.call] = true; }
    });
    Object.keys(self.pending).forEach(function (callId) {
      if (!seen[callId]) { self.items[callId] = { call: callId, none: true }; }   // no recording, or not yours
      delete self.pending[callId];
    });
    var hosts = document.querySelectorAll('.crmagi-rec[data-crmagi-rec]');
    for (var i = 0; i < hosts.length; i++) {
      var item = self.items[hosts[i].getAttribute('data-crmagi-rec')];
      if (item) { render(hosts[i], item); }
    }
    scheduleRenewal();
  }

  function render(node, item) {
    if (item.none) { node.hidden = true; return; }
    node.hidden = false;
    if (item.missing) { unavailable(node); return; }
    var audio = node.querySelector('audio'), link = node.querySelector('a.crmagi-rec-download');
    if (!audio) {
      clear(node);
      audio = document.createElement('audio');
      audio.controls = true;
      audio.preload = 'metadata';
      audio.addEventListener('error', function () { failed(node, audio); });
      audio.addEventListener('pause', function () { swapPending(audio); });
      link = document.createElement('a');
      link.className = 'crmagi-rec-download';
      link.textContent = t('Download');
      link.setAttribute('download', '');
      link.rel = 'noopener';
      node.appendChild(audio);
      node.appendChild(link);
    }
    link.href = base + item.download;
    setSource(audio, base + item.url);
    node.setAttribute('data-crmagi-rec-state', 'ready');
  }

  function setSource(audio, url) {
    if (audio.getAttribute('src') === url) { return; }
    if (!audio.getAttribute('src') || audio.paused) { swap(audio, url); }
    else { audio.setAttribute('data-crmagi-next', url); }   // playing: the new URL waits for a pause
  }

  function swapPending(audio) {
    var next = audio.getAttribute('data-crmagi-next');
    if (next) { audio.removeAttribute('data-crmagi-next'); swap(audio, next); }
  }

  function swap(audio, url) {
    var at = audio.currentTime || 0;
    audio.src = url;
    if (at > 0) {
      audio.addEventListener('loadedmetadata', function restore() {
        audio.removeEventListener('loadedmetadata', restore);
        audio.currentTime = at;
      });
    }
  }

  function failed(node, audio) {
    // A URL that expired while the page sat idle: ask for a fresh one (once); anything else
    // (file gone, PBX down, refused) reads "recording not available".
    var callId = node.getAttribute('data-crmagi-rec'), item = self.items[callId];
    if (item && item.url && !node.getAttribute('data-crmagi-retried') && item.expires - Date.now() / 1000 < RENEW_BEFORE) {
      node.setAttribute('data-crmagi-retried', '1');
      delete self.items[callId];
      request([callId]);
      return;
    }
    if (audio.error) { self.items[callId] = { call: callId, missing: NOT_AVAILABLE }; }
    unavailable(node);
  }

  function unavailable(node) {
    clear(node);
    var note = document.createElement('span');
    note.className = 'crmagi-rec-missing';
    note.textContent = t('recording not available');
    node.appendChild(note);
    node.setAttribute('data-crmagi-rec-state', 'missing');
  }

  function clear(node) {
    var keep = node.querySelector(':scope > .crmagi-rec-title');
    while (node.lastChild && node.lastChild !== keep) { node.removeChild(node.lastChild); }
  }

  function scheduleRenewal() {
    clearTimeout(renewTimer);
    var soonest = null;
    Object.keys(self.items).forEach(function (c) {
      var item = self.items[c];
      if (item.url && (soonest === null || item.expires < soonest)) { soonest = item.expires; }
    });
    if (soonest === null) { return; }
    var wait = Math.max(5, soonest - RENEW_BEFORE - Date.now() / 1000);
    renewTimer = setTimeout(scan, wait * 1000);     // scan re-asks what is about to expire
  }

  function later() {
    if (!scanTimer) { scanTimer = setTimeout(scan, 200); }
  }

  popup.handlers.recordings = answered;
  document.addEventListener('crmagi:welcome', function () { self.pending = {}; later(); });
  document.addEventListener('crmagi:popup', later);
  if (window.MutationObserver) {
    new MutationObserver(function (changes) {
      for (var i = 0; i < changes.length; i++) {
        var target = changes[i].target;
        // Our own players change the page too: those changes need no new scan.
        if (!(target.closest && target.closest('.crmagi-rec'))) { later(); return; }
      }
    }).observe(document.body, { childList: true, subtree: true });
  }
  later();
})();
