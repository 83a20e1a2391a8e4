// sqla_jobs dashboard: refresh the page's content while it is visible, and "select all".
// No framework, nothing from elsewhere: the page works without this script, only less live.
(function () {
  "use strict";

  document.addEventListener("change", function (event) {
    var box = event.target;
    if (box instanceof HTMLInputElement && box.hasAttribute("data-select-all")) {
      document.querySelectorAll('input[name="ids"]').forEach(function (one) {
        one.checked = box.checked;
      });
    }
  });

  // A page the user is working in (a box ticked, a field being typed in) is not replaced.
  function busy() {
    if (document.querySelector('input[name="ids"]:checked, input[data-select-all]:checked')) {
      return true;
    }
    var active = document.activeElement;
    return !!active && /^(INPUT|SELECT|TEXTAREA)$/.test(active.tagName);
  }

  function refresh() {
    var main = document.querySelector("main[data-refresh]");
    if (!main || document.visibilityState !== "visible" || busy()) {
      return;
    }
    fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (response) {
        return response.ok ? response.text() : null;
      })
      .then(function (text) {
        if (text === null || busy()) {
          return;
        }
        var fresh = new DOMParser().parseFromString(text, "text/html");
        var replacement = fresh.querySelector("main[data-refresh]");
        if (replacement) {
          main.replaceWith(document.importNode(replacement, true));
        }
      })
      .catch(function () {
        // The server is away for a moment: try again at the next tick.
      });
  }

  var main = document.querySelector("main[data-refresh]");
  if (main) {
    var seconds = Number(main.getAttribute("data-refresh")) || 5;
    window.setInterval(refresh, seconds * 1000);
    document.addEventListener("visibilitychange", refresh);
  }
})();
