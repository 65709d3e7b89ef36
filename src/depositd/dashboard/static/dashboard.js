// The overview's live parts: the deposits feed (every 1.5 s) and the charts (every 10 s),
// each swapped in from a small JSON view. No library; nothing runs without these elements.
"use strict";

function poll(url, everyMs, apply) {
  async function once() {
    try {
      const answer = await fetch(url, { credentials: "same-origin", headers: { accept: "application/json" } });
      if (answer.status === 401) { window.location.reload(); return; }
      if (answer.ok) { apply(await answer.json()); }
    } catch (error) {
      // the server is restarting or the network is down: try again on the next tick
    }
    window.setTimeout(once, everyMs);
  }
  window.setTimeout(once, everyMs);
}

document.addEventListener("DOMContentLoaded", () => {
  const feed = document.getElementById("feed");
  if (feed) {
    poll(feed.dataset.poll, 1500, (data) => { feed.innerHTML = data.rows; });
  }
  const charts = document.querySelector(".charts[data-poll]");
  if (charts) {
    poll(charts.dataset.poll, 10000, (data) => {
      for (const [name, svg] of Object.entries(data)) {
        const holder = charts.querySelector(`[data-chart="${name}"]`);
        if (holder) { holder.innerHTML = svg; }
      }
    });
  }
});
