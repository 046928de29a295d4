// relaybook console, a notice's page: the resend dialog's counts for the recipients
// ticked in the table. Without this script the page still works: the dialog opens as a
// page of its own (?resend=open) and posts the ticked boxes with the chosen scope.
"use strict";

(() => {
  const dialog = document.getElementById("resend-dialog");
  const scopes = document.getElementById("resend-scopes");
  if (!dialog || !scopes) return;
  const boxes = () => document.querySelectorAll("input[type=checkbox][name=recipient_id]");
  const ticked = () => [...boxes()].filter((box) => box.checked).map((box) => box.value);

  // "Selected recipients" can be chosen once a box is ticked
  const applySelection = () => {
    const selected = scopes.querySelector("input[type=radio][value=selected]");
    if (!selected) return;
    const none = ticked().length === 0;
    selected.disabled = none;
    if (none && selected.checked) {
      const first = scopes.querySelector("input[type=radio]:not([disabled])");
      if (first) first.checked = true;
    }
  };

  // the counts of each scope, as they are now, for the boxes ticked now
  let asked = 0;
  const load = async () => {
    const mine = ++asked;
    const chosen = scopes.querySelector("input[type=radio]:checked");
    const url = new URL(scopes.dataset.scopes, window.location.href);
    const ids = ticked();
    if (ids.length) url.searchParams.set("recipient_ids", ids.join(","));
    let text = null;
    try {
      const answer = await fetch(url, { headers: { "Accept": "text/html" }, credentials: "same-origin" });
      if (answer.ok) text = await answer.text();
    } catch (e) { /* told below */ }
    if (mine !== asked) return;  // a newer question is on its way
    const focused = scopes.contains(document.activeElement);
    if (text === null) {
      scopes.textContent = scopes.dataset.failed;
      return;
    }
    scopes.innerHTML = text;
    if (chosen) {
      const again = scopes.querySelector(`input[type=radio][value="${chosen.value}"]`);
      if (again) again.checked = true;
    }
    applySelection();
    if (focused) {
      // what had the focus was replaced: give it to the scope chosen
      const radio = scopes.querySelector("input[type=radio]:checked");
      if (radio) radio.focus();
    }
  };

  dialog.addEventListener("relaybook:opening", load);
  document.addEventListener("change", (event) => {
    const target = event.target;
    if (target.matches("input[data-pick-all]")) {
      for (const box of boxes()) box.checked = target.checked;
    } else if (!target.matches("input[type=checkbox][name=recipient_id]")) {
      return;
    }
    applySelection();
    if (dialog.open) load();
  });
  document.addEventListener("relaybook:refreshed", applySelection);
  applySelection();
})();
