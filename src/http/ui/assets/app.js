// The status page's live parts: relative times, and a running job's output
// and status through its event stream (the pages read fine without this).
"use strict";

function relative(then) {
  const seconds = Math.round((Date.now() - then) / 1000);
  if (seconds < 60) return "just now";
  if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
  if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
  return Math.floor(seconds / 86400) + " d ago";
}

function showRelativeTimes() {
  for (const element of document.querySelectorAll("time[datetime]")) {
    const then = Date.parse(element.getAttribute("datetime"));
    if (!Number.isNaN(then)) {
      element.title = element.getAttribute("datetime");
      element.textContent = relative(then);
    }
  }
}

// Ansible's SGR colours as spans, as the server renders them (ansi.rs).
const style = { colour: null, bold: false };
function appendAnsi(target, text) {
  const parts = text.split(/\x1b\[([0-9;]*)([@-~])/);
  for (let i = 0; i < parts.length; i += 3) {
    if (parts[i]) {
      const classes = [];
      if (style.colour !== null) classes.push("ansi-" + style.colour);
      if (style.bold) classes.push("ansi-bold");
      const node = classes.length ? document.createElement("span") : document.createTextNode(parts[i]);
      if (classes.length) { node.className = classes.join(" "); node.textContent = parts[i]; }
      target.appendChild(node);
    }
    if (i + 2 < parts.length && parts[i + 2] === "m") {
      for (const param of parts[i + 1].split(";")) {
        const code = Number(param || 0);
        if (code === 0) { style.colour = null; style.bold = false; }
        else if (code === 1) style.bold = true;
        else if (code === 22) style.bold = false;
        else if (code === 39) style.colour = null;
        else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) style.colour = code;
      }
    }
  }
}

function setStatus(job, status) {
  job.dataset.status = status;
  for (const badge of job.querySelectorAll(".status")) {
    badge.className = "status status-" + status;
    badge.textContent = status;
  }
}

function followJob(job) {
  const output = document.getElementById("output");
  const source = new EventSource(job.dataset.live);
  // The page holds the output up to the offset its stream URL starts at.
  source.addEventListener("output", (event) => {
    const atBottom = output.scrollTop + output.clientHeight >= output.scrollHeight - 4;
    appendAnsi(output, event.data);
    if (atBottom) output.scrollTop = output.scrollHeight;
  });
  source.addEventListener("status", (event) => setStatus(job, event.data));
  source.addEventListener("end", (event) => {
    setStatus(job, event.data);
    source.close();
    const cancel = document.getElementById("cancel");
    if (cancel) cancel.closest("form").remove();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  showRelativeTimes();
  const job = document.querySelector("[data-live]");
  if (job) followJob(job);
});
