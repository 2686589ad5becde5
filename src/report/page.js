// Filters, search and sort for the cards, and videos that load as they come into
// view. Without it the page still works: every card shown, in manifest order.
"use strict";
(() => {
  const grid = document.getElementById("cards");
  const cards = Array.from(grid.children);
  const search = document.getElementById("search");
  const sort = document.getElementById("sort");
  const shown = document.getElementById("shown");
  const buttons = Array.from(document.querySelectorAll("[data-filter]"));
  let state = "all";
  let texts = null;
  document.getElementById("controls").hidden = false;

  function apply() {
    const q = search.value.trim().toLowerCase();
    if (q && !texts) texts = cards.map((c) => c.textContent.toLowerCase());
    let n = 0;
    cards.forEach((c, i) => {
      const ok = (state === "all" || c.dataset.state === state) && (!q || texts[i].includes(q));
      c.hidden = !ok;
      if (ok) n++;
    });
    document.getElementById("empty").hidden = n > 0;
    shown.textContent = n === cards.length ? "" : n + " of " + cards.length + " shown";
  }
  for (const b of buttons) {
    b.addEventListener("click", () => {
      state = b.dataset.filter;
      for (const o of buttons) o.setAttribute("aria-pressed", String(o === b));
      apply();
    });
  }
  search.addEventListener("input", apply);
  sort.addEventListener("change", () => {
    const by = sort.value;
    const order = cards.slice();
    if (by !== "order") {
      const dir = by === "new" ? -1 : 1;
      // Jobs with no time yet go last either way.
      order.sort((a, b) => {
        const ta = a.dataset.time, tb = b.dataset.time;
        if (!ta || !tb) return (!ta) - (!tb) || a.dataset.n - b.dataset.n;
        return dir * ta.localeCompare(tb) || a.dataset.n - b.dataset.n;
      });
    }
    const f = document.createDocumentFragment();
    for (const c of order) f.appendChild(c);
    grid.appendChild(f);
  });

  // A card's player is made when the card first comes near the screen: a page of
  // 10,000 <video> elements takes a browser many seconds to open, even with
  // preload="none". Without this script, the frame's link opens the file instead.
  function attach(frame) {
    if (frame.querySelector("video")) return;
    const v = document.createElement("video");
    v.controls = true;
    v.playsInline = true;
    // "auto", not "metadata": metadata alone leaves the player black.
    v.preload = "auto";
    v.setAttribute("aria-label", frame.dataset.label);
    v.addEventListener("loadedmetadata", () => {
      frame.dataset.media = "ok";
      frame.querySelector(".missing").hidden = true;
    });
    v.addEventListener("error", () => {
      frame.dataset.media = "missing";
      frame.querySelector(".missing").hidden = false;
    });
    v.src = frame.dataset.src;
    frame.querySelector(".play").hidden = true;
    frame.prepend(v);
  }
  const near = new IntersectionObserver((seen) => {
    for (const e of seen) {
      if (!e.isIntersecting) continue;
      near.unobserve(e.target);
      attach(e.target);
    }
  }, { rootMargin: "600px 0px" });
  // The cards on the first screen get theirs at once, without waiting for the
  // observer's first report (which needs a frame drawn).
  const frames = Array.from(document.querySelectorAll("figure[data-src]"));
  let first = true;
  for (const frame of frames) {
    if (first && frame.getBoundingClientRect().top < innerHeight + 600) attach(frame);
    else {
      first = false;
      near.observe(frame);
    }
  }

  // A job with several files (an original beside its upgrade): the links switch
  // the player; without this script they open the file.
  for (const a of document.querySelectorAll("a[data-video]")) {
    a.addEventListener("click", (e) => {
      const card = a.closest("article");
      const frame = card.querySelector("figure[data-src]");
      e.preventDefault();
      frame.dataset.src = a.getAttribute("href");
      frame.querySelector(".play").href = frame.dataset.src;
      frame.querySelector(".missing").textContent = "File not found: " + a.title;
      const v = frame.querySelector("video");
      if (v) v.src = frame.dataset.src;
      else attach(frame);
      for (const o of card.querySelectorAll("a[data-video]")) o.removeAttribute("aria-current");
      a.setAttribute("aria-current", "true");
    });
  }
})();
