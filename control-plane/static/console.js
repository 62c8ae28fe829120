// Codex Gateway console: the only script, for the "copy" buttons (the pages work without it).
document.addEventListener("click", (event) => {
  const button = event.target.closest("[data-copy]");
  if (!button) return;
  const field = document.getElementById(button.dataset.copy);
  if (!field) return;
  const done = () => { button.textContent = button.dataset.done || button.textContent; };
  const select = () => { field.select(); document.execCommand("copy"); done(); };
  if (navigator.clipboard && window.isSecureContext) {
    navigator.clipboard.writeText(field.value).then(done, select);
  } else {
    select();
  }
});
