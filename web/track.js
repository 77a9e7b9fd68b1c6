// Enlace web activity tracking, served at /track.js. Include it on a page:
//   <script src="https://enlace.example.com/track.js" defer></script>
// and call `enlace.consent(true)` once the visitor agreed to tracking (and
// `enlace.consent(false)` when they withdraw). Before that it does nothing: no request, no
// cookie, no storage. After consent it keeps the contact token (which a tracked email link
// brought in the `enl` query parameter) in this site's localStorage, and records each page
// view with its time on page: one beacon to /track when the page is hidden or left. A page
// about a product says so with <meta name="enlace:product" content="SKU">.
// After consent it also asks Enlace for the pop-ups and banners a recipe queued for the
// contact (web.show_message) and shows them without blocking the page (plain text only);
// views, clicks and dismissals are reported back.
(function () {
  "use strict";
  var script = document.currentScript;
  var base = script ? script.src : location.href;
  var endpoint = new URL("/track", base).href;
  var msgs = new URL("/web/messages", base).href;
  var shown = [];
  var KEY = "enlace_contact";
  var fromLink = null;
  try { fromLink = new URL(location.href).searchParams.get("enl"); } catch (e) { fromLink = null; }
  var state = { consented: false, token: null, shownAt: 0, visibleMs: 0, sent: false, view: null };

  function newView() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return String(Date.now()) + "-" + String(Math.random()).slice(2);
  }

  function visibleTime() {
    var ms = state.visibleMs;
    if (state.shownAt) ms += Date.now() - state.shownAt;
    return Math.round(ms);
  }

  function product() {
    var m = document.querySelector('meta[name="enlace:product"]');
    return m ? m.getAttribute("content") : null;
  }

  function post(data) {
    // text/plain: a simple request, no preflight; the server reads it as JSON.
    return new Blob([JSON.stringify(data)], { type: "text/plain;charset=UTF-8" });
  }

  function report(id, action) {
    if (!state.consented || !state.token) return;
    navigator.sendBeacon(msgs + "/event", post({ token: state.token, message: id, action: action, url: location.href }));
  }

  function el(tag, css, text) {
    var e = document.createElement(tag);
    if (css) e.style.cssText = css;
    if (text) e.textContent = text;
    return e;
  }

  function show(m) {
    var banner = m.kind === "banner";
    var box = el("div", banner
      ? "position:fixed;top:0;left:0;right:0;z-index:2147483000;background:#1d1d1f;color:#fff;padding:12px 48px 12px 16px;font:15px/1.4 system-ui,sans-serif"
      : "position:fixed;right:16px;bottom:16px;z-index:2147483000;max-width:min(360px,calc(100vw - 32px));background:#fff;color:#1d1d1f;border-radius:10px;box-shadow:0 6px 24px rgba(0,0,0,.25);padding:18px 44px 18px 18px;font:15px/1.45 system-ui,sans-serif");
    var id = "enlace-msg-" + m.id;
    box.id = id;
    box.setAttribute("role", banner ? "region" : "dialog");
    box.setAttribute("aria-labelledby", id + "-t");
    box.setAttribute("data-enlace-message", m.kind);
    var title = el("strong", "display:block;font-size:17px;margin-bottom:4px", m.title);
    title.id = id + "-t";
    box.appendChild(title);
    box.appendChild(el("p", "margin:0 0 10px;white-space:pre-line", m.body));
    if (m.button_url && /^https?:\/\//.test(m.button_url)) {
      var a = el("a", "display:inline-block;padding:8px 14px;border-radius:6px;background:#1a5fb4;color:#fff;text-decoration:none;font-weight:600", m.button_label);
      a.href = m.button_url;
      a.addEventListener("click", function () { report(m.id, "clicked"); });
      box.appendChild(a);
    }
    var close = el("button", "position:absolute;top:6px;right:6px;width:36px;height:36px;border:0;background:none;color:inherit;font-size:22px;cursor:pointer", "\u00d7");
    close.type = "button";
    close.setAttribute("aria-label", "Close");
    close.addEventListener("click", function () { box.remove(); report(m.id, "dismissed"); });
    box.appendChild(close);
    document.body.appendChild(box);
    shown.push(box);
    report(m.id, "viewed");
  }

  function fetchMessages() {
    if (!window.fetch || !state.token) return;
    fetch(msgs, { method: "POST", body: post({ token: state.token }), credentials: "omit" })
      .then(function (r) { return r.ok ? r.json() : { messages: [] }; })
      .then(function (d) {
        if (!state.consented) return;
        var kinds = {};
        (d.messages || []).forEach(function (m) {
          // One pop-up and one banner a page; the others wait for the next page.
          if (kinds[m.kind]) return;
          kinds[m.kind] = true;
          if (document.body) show(m);
          else document.addEventListener("DOMContentLoaded", function () { show(m); });
        });
      })
      .catch(function () { /* messages are optional */ });
  }

  function send() {
    if (!state.consented || !state.token || state.sent) return;
    state.sent = true;
    var view = {
      token: state.token,
      view: state.view,
      url: location.href,
      title: document.title,
      referrer: document.referrer,
      duration_ms: visibleTime()
    };
    var p = product();
    if (p) view.product = p;
    navigator.sendBeacon(endpoint, post(view));
  }

  function onVisibility() {
    if (document.visibilityState === "hidden") {
      if (state.shownAt) { state.visibleMs += Date.now() - state.shownAt; state.shownAt = 0; }
      send();
    } else if (!state.shownAt) {
      state.shownAt = Date.now();
    }
  }

  window.enlace = {
    consent: function (yes) {
      if (yes) {
        var stored = null;
        try { stored = window.localStorage.getItem(KEY); } catch (e) { stored = null; }
        state.token = fromLink || stored;
        if (fromLink) { try { window.localStorage.setItem(KEY, fromLink); } catch (e) { /* storage refused */ } }
        if (!state.consented) {
          state.consented = true;
          state.view = newView();
          state.shownAt = document.visibilityState === "hidden" ? 0 : Date.now();
          document.addEventListener("visibilitychange", onVisibility);
          window.addEventListener("pagehide", send);
          fetchMessages();
        }
      } else {
        state.consented = false;
        state.token = null;
        try { window.localStorage.removeItem(KEY); } catch (e) { /* nothing stored */ }
        document.removeEventListener("visibilitychange", onVisibility);
        window.removeEventListener("pagehide", send);
        shown.forEach(function (b) { b.remove(); });
        shown = [];
      }
    },
    // For tests and single-page sites: sends the current page view now.
    flush: send
  };
})();
