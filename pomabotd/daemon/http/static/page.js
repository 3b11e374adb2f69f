// pomabotd's status page: replaces its sections in place when the daemon says something
// changed, over Server-Sent Events, or by asking every few seconds when the stream cannot be
// had. Never reloads the page. The sections arrive as HTML the server rendered and escaped.
(function () {
  "use strict";
  var root = document.documentElement;
  var version = Number(root.getAttribute("data-version")) || 0;
  var streamUrl = root.getAttribute("data-stream");
  var sectionsUrl = root.getAttribute("data-sections");
  var POLL_MS = 5000;
  var polling = false;

  function say(text, state) {
    var live = document.getElementById("live");
    if (live) {
      live.textContent = text;
      live.className = "live-state " + state;
    }
  }

  function apply(update) {
    if (!update || typeof update.version !== "number" || update.version < version) {
      return;
    }
    version = update.version;
    root.setAttribute("data-version", String(version));
    var sections = update.sections || {};
    Object.keys(sections).forEach(function (id) {
      var element = document.getElementById(id);
      if (element && element.tagName === "SECTION") {
        element.innerHTML = sections[id];
      }
    });
    var updated = document.getElementById("updated");
    if (updated && update.generated_at) {
      updated.textContent = update.generated_at;
    }
  }

  function poll() {
    if (polling) {
      return;
    }
    polling = true;
    say("live updates: polling every " + POLL_MS / 1000 + " s", "polling");
    var ask = function () {
      fetch(sectionsUrl, { credentials: "same-origin", cache: "no-store" })
        .then(function (response) {
          if (response.status === 401) {
            throw new Error("signed out");
          }
          if (!response.ok) {
            throw new Error("HTTP " + response.status);
          }
          return response.json();
        })
        .then(function (update) {
          apply(update);
          say("live updates: polling every " + POLL_MS / 1000 + " s", "polling");
        })
        .catch(function (error) {
          if (error && error.message === "signed out") {
            say("live updates: the status token changed; reload the page to sign in", "down");
          } else {
            say("live updates: the daemon does not answer", "down");
          }
        })
        .then(function () {
          window.setTimeout(ask, POLL_MS);
        });
    };
    ask();
  }

  function stream() {
    if (!("EventSource" in window)) {
      poll();
      return;
    }
    var source = new EventSource(streamUrl);
    var failures = 0;
    source.addEventListener("open", function () {
      failures = 0;
      say("live updates: on", "on");
    });
    source.addEventListener("update", function (event) {
      failures = 0;
      apply(JSON.parse(event.data));
    });
    source.addEventListener("error", function () {
      failures += 1;
      if (source.readyState === EventSource.CLOSED || failures >= 3) {
        source.close();
        poll();
      } else {
        say("live updates: reconnecting", "down");
      }
    });
  }

  stream();
})();
