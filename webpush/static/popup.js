/* crmagi call popups inside SuiteCRM pages.
 *
 * The SuiteCRM hook prints window.crmagiConfig (user, websocket URL, short-lived
 * token) and this script.  ajaxUI navigations re-run the hook's output on full
 * page loads, so everything is guarded: one socket per tab, whatever happens.
 * The popup HTML comes rendered and escaped from the server; this script only
 * places it, wires its buttons and reports where the user is working, so the
 * server can put the popup in the focused tab and nowhere else.
 */
(function () {
  'use strict';
  if (window.__crmagiPopup) { return; }
  var cfg = window.crmagiConfig;
  if (!cfg || !cfg.ws || !cfg.token) { return; }
  window.__crmagiPopup = { shown: {}, refused: null, state: 'connecting', dials: {}, texts: {}, t: t };
  var status = window.__crmagiPopup;

  // This script's own texts in the user's SuiteCRM language: the server sends them in
  // "welcome" (crmlocale, the t() entries of the catalogues); English until then.
  function t(text) { return status.texts[text] || text; }

  var tabId = Math.random().toString(36).slice(2) + Date.now().toString(36);
  var socket = null, retry = 1000, pinger = null, flasher = null, baseTitle = document.title;
  var PING_MS = 25000, MAX_RETRY = 30000, lastRenewal = 0;
  var TOKEN_URL = 'index.php?entryPoint=crmagiToken';

  function send(message) {
    if (socket && socket.readyState === 1) { socket.send(JSON.stringify(message)); }
  }

  function tabState() {
    return { visible: document.visibilityState === 'visible', focused: document.hasFocus() };
  }

  function connect() {
    status.state = 'connecting';
    socket = new WebSocket(cfg.ws);
    socket.onopen = function () {
      var hello = tabState();
      // user: the page's user, so the server refuses a token minted for someone else.
      hello.type = 'hello'; hello.token = cfg.token; hello.tab = tabId; hello.user = cfg.user;
      socket.send(JSON.stringify(hello));
    };
    socket.onmessage = function (event) {
      var message;
      try { message = JSON.parse(event.data); } catch (e) { return; }
      var handler = handlers[message.type];
      if (handler) { handler(message); }
    };
    socket.onclose = function (event) {
      clearInterval(pinger);
      status.state = 'closed';
      document.documentElement.classList.remove('crmagi-c2c');   // tel: links are the browser's again
      if (status.refused === 'expired token') {
        renewToken();   // the tab was away longer than its token lives: ask SuiteCRM for a new one
        return;
      }
      if (event.code === 4403 || event.code === 4401 || status.refused) {
        return;   // refused: the same token and origin would be refused again; a page load brings a new token
      }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, MAX_RETRY);
    };
  }

  function offline(m) {
    // The user must know popups stopped (an expired token after a long sleep, a deactivated
    // user): a full page load mints a new token.  The server says it in the user's language.
    var badge = document.getElementById('crmagi-offline') || document.createElement('div');
    badge.id = 'crmagi-offline';
    badge.className = 'crmagi-offline';
    badge.textContent = m.text || ('Call popups stopped (' + m.reason + '). Reload the page to start them again.');
    if (!badge.parentNode) { document.body.appendChild(badge); }
  }

  function renewToken() {
    // SuiteCRM's crmagiToken entry point answers only a logged-in session (the cookie goes
    // along); at most once a minute, so a broken install cannot make a request loop.
    var now = Date.now();
    if (!window.fetch || now - lastRenewal < 60000) { return; }
    lastRenewal = now;
    fetch(TOKEN_URL, { credentials: 'same-origin', cache: 'no-store' })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (data) {
        if (!data || typeof data.token !== 'string') { return; }
        cfg.token = data.token;
        status.refused = null;
        var badge = document.getElementById('crmagi-offline');
        if (badge) { badge.parentNode.removeChild(badge); }
        connect();
      })
      .catch(function () { /* the badge already says to reload */ });
  }

  function container() {
    var box = document.getElementById('crmagi-popups');
    if (!box) {
      box = document.createElement('div');
      box.id = 'crmagi-popups';
      box.className = 'crmagi-popups';
      box.addEventListener('click', onClick);
      box.addEventListener('input', onSearch);
      document.body.appendChild(box);
    }
    return box;
  }

  function findPopup(callId) {
    var box = document.getElementById('crmagi-popups');
    if (!box) { return null; }
    var nodes = box.querySelectorAll('[data-crmagi-call]');
    for (var i = 0; i < nodes.length; i++) {
      if (nodes[i].getAttribute('data-crmagi-call') === callId) { return nodes[i]; }
    }
    return null;
  }

  function show(message) {
    var holder = document.createElement('div');
    holder.innerHTML = message.html;      // server-rendered, autoescaped Jinja
    var node = holder.firstElementChild;
    if (!node) { return; }
    var old = findPopup(message.call);
    if (old) { old.parentNode.replaceChild(node, old); } else { container().appendChild(node); }
    status.shown[message.call] = Date.now();
    attention(message);
    document.dispatchEvent(new CustomEvent('crmagi:popup', { detail: { call: message.call } }));
  }

  function attention(message) {
    if (document.hidden || !document.hasFocus()) {
      flashTitle(message.title || t('Incoming call'));
      if (window.Notification && Notification.permission === 'granted') {
        var note = new Notification(message.title || t('Incoming call'), { body: message.notify || '', tag: message.call });
        note.onclick = function () { window.focus(); note.close(); };
      }
    }
    try { window.focus(); } catch (e) { /* browsers may refuse: the title still flashes */ }
  }

  function flashTitle(text) {
    stopFlash();
    var on = false;
    flasher = setInterval(function () {
      on = !on;
      document.title = on ? '\u260E ' + text : baseTitle;
    }, 1000);
  }

  function stopFlash() {
    if (flasher) { clearInterval(flasher); flasher = null; document.title = baseTitle; }
  }

  function setState(message) {
    var node = findPopup(message.call);
    if (!node) { return; }
    var line = node.querySelector('[data-crmagi-state]');
    if (line) { line.textContent = message.text || ''; }
    node.setAttribute('data-crmagi-status', message.state || '');
  }

  function remove(callId) {
    var node = findPopup(callId);
    if (node) { node.parentNode.removeChild(node); }
    delete status.shown[callId];
    if (!document.querySelector('#crmagi-popups [data-crmagi-call]')) { stopFlash(); }
  }

  function removeAll() {
    var nodes = document.querySelectorAll('#crmagi-popups [data-crmagi-call]');
    for (var i = 0; i < nodes.length; i++) { remove(nodes[i].getAttribute('data-crmagi-call')); }
  }

  // The missed-calls list beside the popups: rendered and escaped by the server
  // (templates/missed.html.j2), replaced whole on every change; empty when nothing is open.
  function showMissed(message) {
    var box = document.getElementById('crmagi-missed');
    if (!box) {
      box = document.createElement('div');
      box.id = 'crmagi-missed';
      box.className = 'crmagi-missed';
      document.body.appendChild(box);
    }
    box.innerHTML = message.html || '';      // dates already in the user's format and zone
    status.missed = message.count || 0;
    document.dispatchEvent(new CustomEvent('crmagi:missed', { detail: { count: status.missed } }));
  }

  var handlers = {
    // After a reconnect the server shows this tab what belongs here (it moved this tab's
    // popups to another tab when the socket dropped): what is on screen now is stale.
    welcome: function (m) { status.state = 'open'; status.user = m.user; retry = 1000; removeAll();
                            status.texts = m.texts || {}; status.lang = m.lang || 'en';
                            document.documentElement.classList.add('crmagi-c2c');
                            pinger = setInterval(function () { send({ type: 'ping' }); }, PING_MS);
                            document.dispatchEvent(new CustomEvent('crmagi:welcome')); },
    refused: function (m) { status.refused = m.reason; offline(m);
                            if (window.console) { console.warn('crmagi popups refused: ' + m.reason); } },
    token: function (m) { cfg.token = m.token; },
    popup: show,
    update: setState,
    result: function (m) { setState({ call: m.call, state: m.ok ? 'transfer_ok' : 'transfer_failed', text: m.text }); },
    close: function (m) { remove(m.call); },
    dial_status: dialStatus,
    missed: showMissed
  };

  // For the page's other crmagi scripts (recordings.js): the socket and its message handlers.
  status.send = send;
  status.handlers = handlers;

  // -- click-to-call ---------------------------------------------------------------
  // While the socket is open, every tel: link of the page (SuiteCRM renders phone fields as
  // <a href="tel:..."> in list and detail views and subpanels; the popup's call-back link and
  // phone book extensions are tel: links too) dials through crmagi: the user's own phone rings
  // first, then the number.  When it is not open the click is left alone: the link does what
  // it did before (the OS tel: handler).
  var dialSeq = 0, pendingDial = null, DOUBLE_CLICK_MS = 300, DIAL_FINAL = { refused: 1, failed: 1, ended: 1 };

  function hrefRecord(href) {
    try {
      var url = new URL(href, window.location.href);
      var q = url.searchParams;
      if (q.get('record') && q.get('module') && (q.get('action') || '').toLowerCase() === 'detailview') {
        return { module: q.get('module'), record: q.get('record') };
      }
    } catch (e) { /* not a URL: no record */ }
    return null;
  }

  function recordOf(link) {
    // A hint only: crmagi links the call to it only if the CRM says it carries the number.
    var module = link.getAttribute('data-crmagi-module'), record = link.getAttribute('data-crmagi-record');
    if (module && record) { return { module: module, record: record }; }
    if (link.closest('#crmagi-popups, #crmagi-missed')) { return { module: '', record: '' }; }
    var row = link.closest('tr');
    if (row) {
      var box = row.querySelector('input[name="mass[]"]');         // a list view row
      if (box && box.value && window.module_sugar_grp1) { return { module: window.module_sugar_grp1, record: box.value }; }
      var links = row.querySelectorAll('a[href*="record="]');     // a subpanel row
      for (var i = 0; i < links.length; i++) {
        var found = hrefRecord(links[i].getAttribute('href'));
        if (found) { return found; }
      }
    }
    var form = document.getElementById('formDetailView');          // a detail view
    if (form && form.elements.module && form.elements.record) {
      return { module: form.elements.module.value, record: form.elements.record.value };
    }
    return { module: '', record: '' };
  }

  function dialBox() {
    var box = document.getElementById('crmagi-dial');
    if (!box) {
      box = document.createElement('div');
      box.id = 'crmagi-dial';
      box.className = 'crmagi-dial';
      box.setAttribute('role', 'status');
      box.setAttribute('aria-live', 'polite');
      box.addEventListener('click', function (event) {
        var item = event.target.closest('[data-crmagi-dial-ref]');
        if (item && event.target.closest('.crmagi-dial-close')) { item.parentNode.removeChild(item); }
      });
      document.body.appendChild(box);
    }
    return box;
  }

  function dialItem(ref) {
    var items = document.querySelectorAll('#crmagi-dial [data-crmagi-dial-ref]');
    for (var i = 0; i < items.length; i++) {
      if (items[i].getAttribute('data-crmagi-dial-ref') === ref) { return items[i]; }
    }
    return null;
  }

  function showDial(ref, number, state, text) {
    var item = dialItem(ref);
    if (!item) {
      item = document.createElement('div');
      item.setAttribute('data-crmagi-dial-ref', ref);
      item.className = 'crmagi-dial-item';
      var head = document.createElement('strong');
      head.className = 'crmagi-dial-number';
      head.textContent = '\u260E ' + number;
      var line = document.createElement('span');
      line.className = 'crmagi-dial-text';
      var close = document.createElement('button');
      close.type = 'button'; close.className = 'crmagi-dial-close'; close.textContent = '\u00D7';
      close.setAttribute('aria-label', t('Close'));
      item.appendChild(head); item.appendChild(line); item.appendChild(close);
      dialBox().appendChild(item);
    }
    item.setAttribute('data-crmagi-dial-state', state);
    item.querySelector('.crmagi-dial-text').textContent = text;   // text, never markup
    if (DIAL_FINAL[state]) {
      setTimeout(function () { if (item.parentNode) { item.parentNode.removeChild(item); } }, 15000);
    }
  }

  function dialStatus(m) {
    var dial = status.dials[m.ref];
    if (!dial) { return; }
    dial.state = m.state; dial.reason = m.reason; dial.text = m.text; dial.call = m.call || dial.call;
    dial.states.push(m.state);
    dial.after.push(Date.now() - dial.sent);       // ms since the click, per state
    showDial(m.ref, dial.number, m.state, m.text);
  }

  function dialLink(link, clickedAt) {
    var href = link.getAttribute('href').slice(4), number;
    try { number = decodeURIComponent(href); } catch (e) { number = href; }   // a stray % in the CRM field
    var where = recordOf(link);
    var ref = 'd' + (++dialSeq) + '-' + tabId;
    status.dials[ref] = { number: number, module: where.module, record: where.record, state: 'sent', states: [],
                          after: [], sent: clickedAt };
    send({ type: 'dial', number: number, module: where.module, record: where.record, ref: ref });
    showDial(ref, number, 'sent', t('asking crmagi to call\u2026'));
  }

  function onTelClick(event) {
    if (status.state !== 'open' || event.defaultPrevented || event.button !== 0 ||
        event.ctrlKey || event.metaKey || event.shiftKey || event.altKey) { return; }
    var link = event.target.closest ? event.target.closest('a[href^="tel:"], a[href^="TEL:"]') : null;
    if (!link) { return; }
    event.preventDefault();
    event.stopPropagation();
    if (event.detail > 1) {       // the second click of a double click: SuiteCRM's inline edit, not a call
      clearTimeout(pendingDial);
      pendingDial = null;
      return;
    }
    var clickedAt = Date.now();
    if (link.closest('.inlineEdit')) {
      // SuiteCRM edits a field on double click and waits 500 ms before following its link: a
      // double click on the number must edit it, not call it.
      clearTimeout(pendingDial);
      pendingDial = setTimeout(function () { pendingDial = null; dialLink(link, clickedAt); }, DOUBLE_CLICK_MS);
    } else {
      dialLink(link, clickedAt);
    }
  }
  document.addEventListener('click', onTelClick, true);

  function onClick(event) {
    var target = event.target.closest ? event.target : null;
    if (!target) { return; }
    var popupNode = target.closest('[data-crmagi-call]');
    if (!popupNode) { return; }
    var callId = popupNode.getAttribute('data-crmagi-call');
    askNotifications();
    var dismiss = target.closest('[data-crmagi-dismiss]');
    if (dismiss) { send({ type: 'dismiss', call: callId }); remove(callId); return; }
    var transfer = target.closest('[data-crmagi-transfer]');
    if (transfer) {
      send({ type: 'transfer', call: callId, exten: transfer.getAttribute('data-crmagi-transfer') });
      setState({ call: callId, state: 'transferring', text: t('Transferring\u2026') });
    }
  }

  function onSearch(event) {
    var input = event.target;
    if (!input.hasAttribute || !input.hasAttribute('data-crmagi-search')) { return; }
    var words = input.value.toLowerCase().split(/\s+/).filter(Boolean);
    var root = input.closest('[data-crmagi-call]') || document;
    var rows = root.querySelectorAll('[data-crmagi-staff]');
    for (var i = 0; i < rows.length; i++) {
      var text = rows[i].getAttribute('data-crmagi-staff');
      var match = words.every(function (w) { return text.indexOf(w) !== -1; });
      rows[i].hidden = !match;
    }
  }

  function askNotifications() {
    // Browsers grant this only from a click; the first click in a popup asks once.
    if (window.Notification && Notification.permission === 'default') { Notification.requestPermission(); }
  }

  function reportState() { send({ type: 'state', visible: tabState().visible, focused: tabState().focused });
                           if (!document.hidden && document.hasFocus()) { stopFlash(); } }
  document.addEventListener('visibilitychange', reportState);
  window.addEventListener('focus', reportState);
  window.addEventListener('blur', reportState);
  connect();
})();
