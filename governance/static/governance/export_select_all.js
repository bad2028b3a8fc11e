/*
 * The config export's "Select all" toggle.
 *
 * django-import-export wires it with an inline onchange attribute, which our
 * Content-Security-Policy (script-src 'self', no inline handlers) rightly
 * blocks; this same-origin file attaches the same behaviour as a listener.
 */
document.addEventListener("DOMContentLoaded", () => {
  document.querySelectorAll("input.select-toggle").forEach((toggle) => {
    toggle.addEventListener("change", () => {
      document
        .querySelectorAll('.selectable-field-export-row input[type="checkbox"]')
        .forEach((box) => {
          box.checked = toggle.checked;
        });
    });
  });
});
