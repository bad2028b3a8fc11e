/*
 * A form shows only the fields of the choice made in its one select that
 * carries the map (data-scope-fields): the hold form's scope
 * (governance.admin.holds.SCOPE_FIELDS), the restore request's selection
 * (governance.admin.restore.SELECTION_FIELDS). A same-origin file, as the
 * Content-Security-Policy allows no inline script. Without script every field
 * shows and the server ignores the other choices' fields.
 */
document.addEventListener("DOMContentLoaded", () => {
  const scope = document.querySelector("select[data-scope-fields]");
  if (!scope) {
    return;
  }
  const fieldsOf = JSON.parse(scope.dataset.scopeFields);
  const scoped = new Set(Object.values(fieldsOf).flat());
  const show = () => {
    const wanted = new Set(fieldsOf[scope.value] || []);
    scoped.forEach((name) => {
      document.querySelectorAll(`.form-row.field-${name}, .fieldBox.field-${name}`).forEach((row) => {
        row.style.display = wanted.has(name) ? "" : "none";
      });
    });
    document.querySelectorAll("fieldset.module").forEach((fieldset) => {
      const rows = [...fieldset.querySelectorAll(".form-row")];
      const empty = rows.length > 0 && rows.every((row) => row.style.display === "none");
      fieldset.style.display = empty ? "none" : "";
    });
  };
  scope.addEventListener("change", show);
  show();
});
