/*
 * The restore request form shows only the fields of the chosen selection. The select
 * carries the map (data-scope-fields, from governance.admin.restore.SELECTION_FIELDS);
 * a same-origin file, as the Content-Security-Policy allows no inline script.
 * Without script every field shows and the server ignores the other selections'.
 */
document.addEventListener("DOMContentLoaded", () => {
  const scope = document.getElementById("id_selection");
  if (!scope || !scope.dataset.scopeFields) {
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
