// Enlace web activity tracking, served at /track.js. Include it on a page:
//   <script src="https://enlace.example.com/track.js" defer></script>
// and call `enlace.consent(true)` once the visitor agreed to tracking (and
// `enlace.consent(false)` when they withdraw). Before that it does nothing: no request, no
// cookie, no storage. After consent it keeps the contact token (which a tracked email link
// brought in the `enl` query parameter) in this site's localStorage, and records each page
// view with its time on page: one beacon to /track when the page is hidden or left.
(function () {
  "use strict";
  var script = document.currentScript;
  var endpoint = new URL("/track", script ? script.src : location.href).href;
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

  function send() {
    if (!state.consented || !state.token || state.sent) return;
    state.sent = true;
    var body = JSON.stringify({
      token: state.token,
      view: state.view,
      url: location.href,
      title: document.title,
      referrer: document.referrer,
      duration_ms: visibleTime()
    });
    // text/plain: a simple request, no preflight; the server reads it as JSON.
    navigator.sendBeacon(endpoint, new Blob([body], { type: "text/plain;charset=UTF-8" }));
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
        }
      } else {
        state.consented = false;
        state.token = null;
        try { window.localStorage.removeItem(KEY); } catch (e) { /* nothing stored */ }
        document.removeEventListener("visibilitychange", onVisibility);
        window.removeEventListener("pagehide", send);
      }
    },
    // For tests and single-page sites: sends the current page view now.
    flush: send
  };
})();
