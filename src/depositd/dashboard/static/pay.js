// The status page's progress, refreshed every 1.5 s from /pay/{order}/progress until the
// order is settled. No library.
"use strict";

const SETTLED = new Set(["paid", "overpaid", "expired", "failed"]);

document.addEventListener("DOMContentLoaded", () => {
  const holder = document.getElementById("progress");
  if (!holder) { return; }
  async function once() {
    try {
      const answer = await fetch(holder.dataset.poll, { headers: { accept: "application/json" } });
      if (answer.ok) {
        const data = await answer.json();
        holder.innerHTML = data.html;
        if (SETTLED.has(data.status) && data.deposits.every((d) => d.status !== "confirming" && d.status !== "pending")) {
          return;
        }
      }
    } catch (error) {
      // offline for a moment: keep trying
    }
    window.setTimeout(once, 1500);
  }
  window.setTimeout(once, 1500);
});
