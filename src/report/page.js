// The cards, drawn from the page's JSON block (see src/report/data.rs for its
// shape) a screenful at a time as the list scrolls: a batch of 100,000 jobs opens
// as fast as one of 100. Filters, search and sort work on the data, then draw the
// first screen of what they keep. Every text is written with textContent, never
// as markup, and a link is made only of an http(s) URL.
"use strict";
(() => {
  const data = JSON.parse(document.getElementById("data").textContent);
  const dict = data.dict;
  const looks = data.looks.map(([key, label, icon]) => ({ key, label, icon }));
  const labels = data.labels;
  const code = new Set(data.code);
  const FINISHED = labels.indexOf("Finished");
  const cards = data.cards;
  const grid = document.getElementById("cards");
  const search = document.getElementById("search");
  const sort = document.getElementById("sort");
  const shown = document.getElementById("shown");
  const more = document.getElementById("more");
  const buttons = Array.from(document.querySelectorAll("[data-filter]"));
  // Cards drawn per step: more than a tall screen holds.
  const STEP = 60;
  const fmt = (n) => n.toLocaleString("en-US");
  const text = (v) => (typeof v === "number" ? dict[v] : v);
  const web = (u) => (typeof u === "string" && /^https?:\/\//i.test(u) ? u : null);
  let state = "all";
  let list = [];
  let drawn = 0;
  let texts = null;
  let times = null;
  document.getElementById("controls").hidden = false;

  function el(tag, cls, content) {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (content !== undefined) e.textContent = content;
    return e;
  }
  function icon(s) {
    const e = el("span", "", s);
    e.setAttribute("aria-hidden", "true");
    return e;
  }
  function link(href, content) {
    const a = el("a", "", content);
    a.href = href;
    a.rel = "noreferrer noopener";
    a.target = "_blank";
    return a;
  }
  // A card's sort time: when it finished, or was last touched.
  function timeOf(c) {
    const f = c[6];
    for (let i = 0; i < f.length; i += 2) if (f[i] === FINISHED) return text(f[i + 1]);
    return c[8] ? c[8].replace("T", " ").replace(/Z$/, " UTC") : "";
  }
  function haystack(c) {
    const parts = [c[0], c[2], text(c[3]) || ""];
    const f = c[6];
    for (let i = 1; i < f.length; i += 2) {
      const v = f[i];
      parts.push(Array.isArray(v) ? v.map((x) => x[0]).join(" ") : text(v));
    }
    return parts.join("\n").toLowerCase();
  }

  function card(i) {
    const c = cards[i];
    const look = looks[c[1]] || looks[0];
    const a = el("article", "card s-" + look.key + (c[7] & 1 ? " portrait" : ""));
    a.id = "job-" + (i + 1);
    a.dataset.n = i + 1;
    a.dataset.state = look.key;
    a.dataset.time = timeOf(c);
    const videos = c[4].map(([dir, file, label]) => {
      const src = text(dir) + file;
      let name = file;
      try { name = decodeURIComponent(file); } catch (_) { /* shown as written */ }
      return { src, name, label: text(label) };
    });
    if (videos.length) {
      const v = videos[0];
      const fig = el("figure", "frame");
      fig.dataset.src = v.src;
      fig.dataset.label = c[0] + ": " + v.label;
      const play = el("a", "play");
      play.href = v.src;
      play.title = v.name;
      play.append(icon("▶"), " " + v.label);
      const missing = el("figcaption", "missing", "File not found: " + v.name);
      missing.hidden = true;
      fig.append(play, missing);
      a.append(fig);
    } else {
      const empty = el("div", "frame empty");
      const big = el("span", "big", look.icon);
      big.setAttribute("aria-hidden", "true");
      empty.append(big, el("span", "", look.label));
      a.append(empty);
    }
    const body = el("div", "body");
    const title = el("div", "title");
    const badge = el("span", "badge s-" + look.key);
    badge.append(icon(look.icon), " " + look.label);
    title.append(el("h2", "id", c[0]), badge);
    body.append(title);
    if (videos.length > 1) {
      const files = el("p", "files");
      videos.forEach((v, k) => {
        const f = el("a", "", v.label);
        f.href = v.src;
        f.title = v.name;
        f.dataset.video = "";
        if (k === 0) f.setAttribute("aria-current", "true");
        f.addEventListener("click", (e) => {
          e.preventDefault();
          switchTo(a, f, v);
        });
        files.append(f);
      });
      body.append(files);
    }
    const note = text(c[3]);
    if (note) body.append(el("p", "note", note));
    if (c[5].length) {
      const remote = el("p", "files remote", "On the service: ");
      c[5].forEach((u, k) => {
        const href = web(u);
        remote.append(href ? link(href, "video " + (k + 1)) : el("span", "", u), " ");
      });
      body.append(remote);
    }
    body.append(el("p", "prompt", c[2]));
    const dl = el("dl", "facts");
    const f = c[6];
    for (let k = 0; k < f.length; k += 2) {
      const dd = el("dd", code.has(f[k]) ? "code" : "");
      const v = f[k + 1];
      if (Array.isArray(v)) {
        v.forEach(([t, h], n) => {
          if (n) dd.append(el("br"));
          const href = web(h);
          dd.append(href ? link(href, t) : t);
        });
      } else {
        dd.textContent = text(v);
      }
      dl.append(el("dt", "", labels[f[k]]), dd);
    }
    body.append(dl);
    a.append(body);
    return a;
  }

  // A card's player is made when the card first comes near the screen: thousands
  // of <video> elements take a browser many seconds, even with preload="none".
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
  function switchTo(card, a, v) {
    const frame = card.querySelector("figure[data-src]");
    frame.dataset.src = v.src;
    frame.querySelector(".play").href = v.src;
    frame.querySelector(".missing").textContent = "File not found: " + v.name;
    const player = frame.querySelector("video");
    if (player) player.src = v.src;
    else attach(frame);
    for (const o of card.querySelectorAll("a[data-video]")) o.removeAttribute("aria-current");
    a.setAttribute("aria-current", "true");
  }
  const near = new IntersectionObserver((seen) => {
    for (const e of seen) {
      if (!e.isIntersecting) continue;
      near.unobserve(e.target);
      attach(e.target);
    }
  }, { rootMargin: "600px 0px" });

  // Draws the next cards of the list while its end is near the screen.
  function fill() {
    while (drawn < list.length && more.getBoundingClientRect().top < innerHeight + 1200) {
      const f = document.createDocumentFragment();
      const end = Math.min(list.length, drawn + STEP);
      for (; drawn < end; drawn++) f.append(card(list[drawn]));
      grid.append(f);
    }
    // The cards on the first screen get their player at once, without waiting
    // for the observer's first report (which needs a frame drawn).
    for (const frame of grid.querySelectorAll("figure[data-src]:not([data-seen])")) {
      frame.dataset.seen = "";
      if (frame.getBoundingClientRect().top < innerHeight + 600) attach(frame);
      else near.observe(frame);
    }
    more.textContent = drawn < list.length ? fmt(drawn) + " of " + fmt(list.length) + " drawn; scroll for more" : "";
  }
  new IntersectionObserver((seen) => {
    if (seen.some((e) => e.isIntersecting)) fill();
  }, { rootMargin: "1200px 0px" }).observe(more);

  function apply() {
    const q = search.value.trim().toLowerCase();
    if (q && !texts) texts = cards.map(haystack);
    list = [];
    for (let i = 0; i < cards.length; i++) {
      const c = cards[i];
      if (state !== "all" && (looks[c[1]] || looks[0]).key !== state) continue;
      if (q && !texts[i].includes(q)) continue;
      list.push(i);
    }
    const by = sort.value;
    if (by !== "order") {
      if (!times) times = cards.map(timeOf);
      const dir = by === "new" ? -1 : 1;
      // Jobs with no time yet go last either way.
      list.sort((a, b) => {
        const ta = times[a], tb = times[b];
        if (!ta || !tb) return (!ta) - (!tb) || a - b;
        return dir * (ta < tb ? -1 : ta > tb ? 1 : 0) || a - b;
      });
    }
    grid.replaceChildren();
    drawn = 0;
    document.getElementById("empty").hidden = list.length > 0;
    shown.textContent = list.length === cards.length ? "" : fmt(list.length) + " of " + fmt(cards.length) + " shown";
    fill();
  }
  for (const b of buttons) {
    b.addEventListener("click", () => {
      state = b.dataset.filter;
      for (const o of buttons) o.setAttribute("aria-pressed", String(o === b));
      apply();
    });
  }
  search.addEventListener("input", apply);
  sort.addEventListener("change", apply);
  addEventListener("resize", fill);
  apply();
})();
