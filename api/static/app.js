// Live badges: each capture still running follows its task's events (server-sent events), or polls the
// task's document where the stream is not there, and redraws its badges without a reload.
"use strict";

const TERMINAL = new Set(["success", "failed", "cancelled"]);

function redraw(element, task) {
  for (const [archiver, sub] of Object.entries(task.subtasks || {})) {
    const badge = element.querySelector(`[data-archiver="${CSS.escape(archiver)}"]`);
    if (!badge) continue;
    badge.className = `badge s-${sub.status}`;
    badge.title = `${archiver}: ${sub.status}${sub.error ? " — " + sub.error : ""}`;
    badge.querySelector(".state").textContent = ` ${sub.status}`;
  }
  const done = Object.values(task.subtasks || {}).every((sub) => TERMINAL.has(sub.status));
  if (done) element.removeAttribute("data-live");
  return done;
}

function poll(element, id) {
  fetch(`/api/v2/tasks/${encodeURIComponent(id)}`, {credentials: "same-origin"})
    .then((response) => response.ok ? response.json() : Promise.reject(response.status))
    .then((task) => { if (!redraw(element, task)) setTimeout(() => poll(element, id), 1000); })
    .catch(() => setTimeout(() => poll(element, id), 3000));
}

function follow(element) {
  const id = element.dataset.taskId;
  if (!window.EventSource) return poll(element, id);
  const events = new EventSource(`/api/v2/tasks/${encodeURIComponent(id)}/events`);
  let heard = false;
  events.onmessage = (event) => {
    heard = true;
    if (redraw(element, JSON.parse(event.data))) events.close();
  };
  events.onerror = () => {
    events.close();
    if (element.hasAttribute("data-live")) poll(element, id);  // no stream here (or it ended early)
  };
  // Named events (e.g. "task") carry the same document.
  events.addEventListener("task", events.onmessage);
  return heard;
}

function followImport(element) {
  const id = element.dataset.importId;
  fetch(`/api/v2/imports/${encodeURIComponent(id)}?limit=1`, {credentials: "same-origin"})
    .then((response) => response.json())
    .then((found) => {
      for (const [outcome, count] of Object.entries(found.counts || {})) {
        const cell = element.querySelector(`[data-count="${outcome}"]`);
        if (cell) cell.textContent = count;
      }
      if (found.status !== "done") setTimeout(() => followImport(element), 2000);
    });
}

document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("[data-live]").forEach(follow);
  document.querySelectorAll("[data-import-id]").forEach(followImport);
});
