// Saves each answer the moment it is chosen. Saves run one after another, so two quick changes
// to the same question always reach the server in the order they were made.
(() => {
  "use strict";
  const form = document.getElementById("answers");
  if (!form) return;
  const status = document.getElementById("save-status");
  const progressText = document.getElementById("progress-text");
  const progressBar = document.getElementById("progress-bar");
  const csrfToken = form.elements.namedItem("csrf_token").value;
  let queue = Promise.resolve();
  let pending = 0;
  let failed = false;

  function show(text, isError) {
    status.textContent = text;
    status.classList.toggle("error", isError);
  }

  async function save(criterion, value) {
    const response = await fetch(form.dataset.saveUrl, {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json", "X-CSRF-Token": csrfToken },
      body: JSON.stringify({ criterion, value }),
    });
    if (response.status === 401) throw new Error("Your session has ended: sign in again. This answer was not saved.");
    if (response.status === 403) throw new Error("This page has expired: reload it. This answer was not saved.");
    if (!response.ok) throw new Error("This answer was not saved (error " + response.status + "). Please choose again.");
    const result = await response.json();
    progressText.textContent = result.done + " of " + result.total + " items done";
    progressBar.value = result.done;
    return result;
  }

  form.addEventListener("change", (event) => {
    const input = event.target;
    if (!(input instanceof HTMLInputElement) || input.type !== "radio") return;
    pending += 1;
    form.dataset.pending = String(pending);
    show("Saving…", false);
    queue = queue
      .then(() => save(input.name, input.value))
      .then((result) => {
        if (!failed && pending === 1) show(result.item_complete ? "All answers saved. This item is done." : "Answer saved.", false);
      })
      .catch((error) => {
        failed = true;
        show(error.message || "This answer was not saved. Check the connection and choose again.", true);
      })
      .finally(() => {
        pending -= 1;
        form.dataset.pending = String(pending);
        if (pending === 0) failed = false;
      });
  });
})();
