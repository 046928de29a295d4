// relaybook console: the few behaviours the server-rendered pages need. No inline script
// anywhere (the Content-Security-Policy forbids it): pages mark elements with data-*
// attributes and this file gives them their behaviour.
"use strict";

document.documentElement.classList.add("js");

// The sign-in form sends the browser's time zone: dates are shown in it.
for (const field of document.querySelectorAll("[data-time-zone]")) {
  try { field.value = Intl.DateTimeFormat().resolvedOptions().timeZone || ""; } catch (e) { /* the server's default */ }
}

// A select that applies itself (the agency picker): its submit button is for no-script.
for (const select of document.querySelectorAll("select[data-autosubmit]")) {
  select.addEventListener("change", () => select.form.requestSubmit());
}

// Dialogs: a button with data-opens="ID" opens the <dialog id=ID> as a modal (the page
// behind is inert, so focus stays inside; Escape closes it, and so does data-closes).
// Listened to on the document: a button a live refresh put in the page works too.
document.addEventListener("click", (event) => {
  const opener = event.target.closest("[data-opens]");
  if (opener) {
    const dialog = document.getElementById(opener.dataset.opens);
    if (!dialog) return;
    event.preventDefault();
    dialog.dispatchEvent(new CustomEvent("relaybook:opening", { detail: opener }));
    dialog.showModal();
    const first = dialog.querySelector("[autofocus], input:not([disabled]):not([type=hidden]), button:not([disabled])");
    if (first) first.focus();
    return;
  }
  const closer = event.target.closest("[data-closes]");
  if (closer) closer.closest("dialog").close();
});

// Live parts: an element with data-live="URL" listens to that server-sent-events stream;
// on each "changed" event the page is fetched again and every element with
// data-live-part (and an id) is replaced by its new version, at most once a second.
const live = document.querySelector("[data-live]");
if (live && window.EventSource) {
  let pending = false;
  let last = 0;
  const refresh = async () => {
    pending = false;
    last = Date.now();
    const answer = await fetch(window.location.href, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
    if (!answer.ok) return;
    const fresh = new DOMParser().parseFromString(await answer.text(), "text/html");
    for (const part of document.querySelectorAll("[data-live-part]")) {
      const next = fresh.getElementById(part.id);
      if (!next) continue;
      // keep what the person is doing: ticked boxes stay ticked
      const ticked = new Set([...part.querySelectorAll("input[type=checkbox]:checked")].map((box) => box.value));
      part.replaceWith(next);
      for (const box of next.querySelectorAll("input[type=checkbox]")) {
        if (ticked.has(box.value)) box.checked = true;
      }
    }
    document.dispatchEvent(new CustomEvent("relaybook:refreshed"));
  };
  const stream = new EventSource(live.dataset.live);
  // the session ended (signed out, disabled, expired): the next click signs in again
  stream.addEventListener("ended", () => stream.close());
  stream.addEventListener("changed", () => {
    if (pending) return;
    pending = true;
    setTimeout(refresh, Math.max(0, 1000 - (Date.now() - last)));
  });
}
