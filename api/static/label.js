// The labelling page: one key per answer; the server holds all state (the log), so a reload resumes.
"use strict";
const KEYS = { m: "music", d: "dialogue", b: "both" };
const player = document.getElementById("player");
const speed = document.getElementById("speed");
let state = null;
let busy = false;
// Keypress -> next clip playing, in ms (read by the tests and the latency check).
window.labelTimings = [];
let pressedAt = null;

function text(id, value) { document.getElementById(id).textContent = value; }

function show(s) {
  state = s;
  const p = s.progress;
  text("progress", `${p.labelled} of ${p.total} labelled (${p.heard} heard, ${p.skipped} skipped)`);
  text("counts", Object.entries(p.counts).map(([c, n]) => `${c} ${n}`).join(" · "));
  document.querySelectorAll("#choices button").forEach(b =>
    b.classList.toggle("guessed", !!s.guess && s.guess.class === b.dataset.class));
  text("guess", s.guess ? `index guess: ${s.guess.class} (${Math.round(100 * s.guess.confidence)} %)` : "");
  if (!s.clip) {
    text("clipname", "All clips are labelled or skipped.");
    text("group", "");
    player.removeAttribute("src");
    return;
  }
  text("clipname", s.clip.name);
  text("group", s.group ? `group of ${s.group.size} clips: check ${s.group.heard + 1} of ${s.group.checks}`
    : s.review ? `review: labelled ${s.review.labelled} with its group, but its labelled neighbours disagree` : "");
  const src = `/clip/${s.clip.id}`;
  if (player.getAttribute("src") !== src) {
    player.setAttribute("src", src);
    player.playbackRate = Number(speed.value);
  }
  player.play().catch(() => text("message", "press R to play"));
}

async function call(path, body) {
  busy = true;
  try {
    const r = await fetch(path, { method: body === undefined ? "GET" : "POST",
      headers: { "Content-Type": "application/json" }, body: body === undefined ? undefined : JSON.stringify(body) });
    const s = await r.json();
    text("message", s.error || "");
    show(s.state || s);
  } catch (e) {
    text("message", `server unreachable: ${e}`);
  } finally {
    busy = false;
  }
}

player.addEventListener("playing", () => {
  if (pressedAt !== null) {
    window.labelTimings.push(performance.now() - pressedAt);
    pressedAt = null;
  }
});
player.addEventListener("ratechange", () => text("speedval", `${player.playbackRate}×`));
speed.addEventListener("input", () => { player.playbackRate = Number(speed.value); });

function answer(klass) {
  if (!state || !state.clip) return;
  pressedAt = performance.now();
  call("/api/answer", { hash: state.clip.hash, class: klass, guess: state.guess });
}

document.querySelectorAll("#choices button").forEach(b => b.addEventListener("click", () => answer(b.dataset.class)));

document.addEventListener("keydown", ev => {
  if (ev.ctrlKey || ev.metaKey || ev.altKey || busy) return;
  const k = ev.key.toLowerCase();
  const hash = state && state.clip ? state.clip.hash : null;
  if (KEYS[k]) answer(KEYS[k]);
  else if (k === "s" && hash) { pressedAt = performance.now(); call("/api/skip", { hash }); }
  else if (k === "x" && hash) { pressedAt = performance.now(); call("/api/mixed", { hash }); }
  else if (k === "u") call("/api/undo", {});
  else if (k === "r") { player.currentTime = 0; player.play(); }
  else if (ev.key === "ArrowLeft") player.currentTime = Math.max(0, player.currentTime - 2);
  else if (ev.key === "ArrowRight") player.currentTime = Math.min(player.duration || 0, player.currentTime + 2);
  else if (ev.key === " ") { if (player.paused) player.play(); else player.pause(); }
  else if (ev.key === "[" || ev.key === "]") {
    const v = Math.min(2, Math.max(0.5, Number(speed.value) + (ev.key === "]" ? 0.25 : -0.25)));
    speed.value = v;
    player.playbackRate = v;
  } else return;
  ev.preventDefault();
});

call("/api/state");
